"""Loading a registered version the way the service loads it.

The service (serving/registry.py) and the promotion gate (training/promote.py) both call
this, so a version the gate promotes is one the servers can load: the same download, the
same ``model_config``, the same checks. It lives with the model (``pyfunc/``) because
training must not import serving.

Downloads go into a directory this function creates and removes: after ``load_context``
the model holds everything it needs in memory (ONNX Runtime and Keras read their files
while loading, the rejector is read into arrays), so nothing reads the files afterwards.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

from pyfunc.contract import THREADS_CONFIG, DigitPyfunc, is_digit_model

log = logging.getLogger(__name__)


class NotADigitModel(TypeError):
    """The version loads, but does not implement the digit-model contract (pyfunc.contract)."""


def registry_client(tracking_uri: str):
    """A client of the registry at ``tracking_uri``; MLflow's process-wide URIs untouched."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def load_version(
    tracking_uri: str,
    name: str,
    version: str,
    threads: int = 0,
    keep: Callable[[Path], None] | None = None,
    work_dir: Path | None = None,
) -> DigitPyfunc:
    """Version ``version`` of ``name`` from the registry at ``tracking_uri``, loaded and
    warmed up in this process with ``threads`` runtime threads (0: the runtime's default).

    ``keep(path)`` is called with the downloaded model directory (its MLmodel declaring the
    thread count) once it has loaded, before that directory is removed: the caller may copy
    it. ``work_dir`` is where the temporary download goes (default: the system's)."""
    import mlflow

    # Where the version's files are, asked of this registry: a models:/ URI would be looked
    # up in MLflow's process-wide registry whatever URI download_artifacts is given.
    location = registry_client(tracking_uri).get_model_version_download_uri(name, version)
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="digits-model-", dir=work_dir) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            local = mlflow.artifacts.download_artifacts(
                location, dst_path=tmp, tracking_uri=tracking_uri, registry_uri=tracking_uri
            )
        model = load_directory(Path(local), threads)
        if keep is not None:
            keep(Path(local))
    return model


def load_directory(path: Path, threads: int = 0) -> DigitPyfunc:
    """A model directory on disk (a download, or a kept copy), loaded as
    :func:`load_version` loads it. The directory's MLmodel is made to declare the thread
    count if it does not (see :func:`declare_threads`): pass a copy you own."""
    import mlflow

    declare_threads(path)
    # MLflow puts the model's code directory first on sys.path, once per load; the
    # ``pyfunc`` package is already imported from the project, and the directory may be
    # removed right after, so the path is put back as it was.
    saved_path = list(sys.path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            pyfunc_model = mlflow.pyfunc.load_model(
                str(path), model_config={THREADS_CONFIG: threads}
            )
    finally:
        sys.path[:] = saved_path
    python_model = pyfunc_model.unwrap_python_model()
    # Any family: the contract, not a class, decides (pyfunc.contract.is_digit_model).
    if not is_digit_model(python_model):
        raise NotADigitModel(f"not a digit model (got {type(python_model).__name__})")
    return python_model


def declare_threads(path: Path) -> bool:
    """Make the MLmodel at ``path`` declare the thread count as a ``model_config`` key, for
    versions logged before it was one: MLflow lets a loader set only the keys a model was
    logged with, and would load it with the runtime's default. True if it was changed."""
    import mlflow
    from mlflow.models import Model
    from mlflow.models.model import MLMODEL_FILE_NAME, MODEL_CONFIG

    meta = Model.load(str(path))
    flavor = meta.flavors[mlflow.pyfunc.FLAVOR_NAME]
    declared = flavor.get(MODEL_CONFIG) or {}
    if THREADS_CONFIG in declared:
        return False
    flavor[MODEL_CONFIG] = {**declared, THREADS_CONFIG: 0}
    meta.save(str(path / MLMODEL_FILE_NAME))
    log.info("the model was logged without model_config %r: declared it", THREADS_CONFIG)
    return True


def copy_directory(source: Path, target: Path) -> bool:
    """Copy a model directory to ``target`` all at once (a copy beside it, then a rename):
    a reader never sees half a model. False if ``target`` exists already (another process
    kept the same version first)."""
    if target.exists():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        staging.rename(target)
    except OSError:
        if target.exists():
            return False
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True
