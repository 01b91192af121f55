"""Logging the trained network as the ``pyfunc`` model and registering a version."""

from __future__ import annotations

import base64
import io
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import numpy as np
import pandas as pd
from PIL import Image

import pyfunc
from pyfunc.contract import DigitPyfunc
from pyfunc.model import IMAGE_COLUMN, KERAS_ARTIFACT, ONNX_ARTIFACT, THREADS_CONFIG, DigitModel
from pyfunc.reject import REJECT_ARTIFACT, SCORED_ARTIFACT, Rejector
from pyfunc.signature import SIGNATURE
from training.rejector import fit_artifact
from training.rejector_onnx import write_scored_graph

if TYPE_CHECKING:
    import keras

MODEL_ARTIFACT_PATH = "model"


def _installed(*candidates: str) -> str | None:
    for name in candidates:
        try:
            return f"{name}=={metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return None


def pip_requirements(with_onnx: bool = True) -> list[str]:
    """What the pyfunc imports at load time, pinned to what trained it. With its ONNX
    weights it runs on ONNX Runtime alone; Keras (and TensorFlow) only without them."""
    wanted = [
        ("mlflow", "mlflow-skinny"),
        ("numpy",),
        ("pillow",),
        ("scipy",),
        ("pandas",),
        ("onnxruntime",),
    ]
    if not with_onnx:
        wanted += [("tensorflow-cpu", "tensorflow"), ("keras",)]
    return [req for names in wanted if (req := _installed(*names))]


def input_example(digit: np.ndarray) -> pd.DataFrame:
    """One base64 PNG, the form clients of ``mlflow models serve`` send."""
    buf = io.BytesIO()
    Image.fromarray(digit).save(buf, format="PNG")
    return pd.DataFrame({IMAGE_COLUMN: [base64.b64encode(buf.getvalue()).decode("ascii")]})


def export_onnx(model: keras.Model, path: Path) -> Path:
    """The same weights as ONNX, for ONNX Runtime in the pyfunc (tf2onnx via Keras)."""
    model.export(str(path), format="onnx", verbose=False)
    return path


def log_pyfunc(
    keras_path: Path,
    example_digit: np.ndarray,
    registered_name: str | None,
    onnx_path: Path | None = None,
    family: str = DigitModel.family,
):
    """Log a Keras network's pyfunc (with its code, weights and a rejector fitted for them
    now) as ``family`` and optionally register it."""
    artifacts = {KERAS_ARTIFACT: str(keras_path)}
    if onnx_path is not None:
        artifacts[ONNX_ARTIFACT] = str(onnx_path)
    # The no-digit rejector, fitted for these very weights (training.rejector).
    artifacts[REJECT_ARTIFACT] = str(fit_artifact(Path(keras_path), onnx_path))
    return log_family(
        DigitModel(family=family),
        artifacts,
        example_digit,
        registered_name,
        pip_requirements(with_onnx=onnx_path is not None),
    )


def log_copy(
    keras_path: Path,
    example_digit: np.ndarray,
    registered_name: str,
    onnx_path: Path | None,
    family: str,
    run_name: str,
    params: dict[str, object],
) -> str:
    """Register a copy of a network taken from a registered version (with a rejector fitted
    for it now) in a run of its own; returns its version. It is the same network, so it names
    the source's family, as a trained version does (run tag, MLmodel metadata, version tag)."""
    with mlflow.start_run(run_name=run_name):
        mlflow.log_params(params)
        mlflow.set_tag("family", family)
        info = log_pyfunc(keras_path, example_digit, registered_name, onnx_path, family)
    version = str(info.registered_model_version)
    mlflow.MlflowClient().set_model_version_tag(registered_name, version, "family", family)
    return version


def log_family(
    python_model: DigitPyfunc,
    artifacts: dict[str, str],
    example_digit: np.ndarray,
    registered_name: str | None,
    requirements: list[str],
):
    """Log any family's pyfunc with its artifacts, the project's signature, an input
    example and its family in the MLmodel metadata; register it if ``registered_name``.

    A Keras/ONNX network logged with a rejector also gets the two in one ONNX graph
    (training.rejector_onnx), which the pyfunc runs in one call a pass."""
    artifacts = with_scored_graph(python_model, artifacts)
    return mlflow.pyfunc.log_model(
        name=MODEL_ARTIFACT_PATH,
        python_model=python_model,
        artifacts=artifacts,
        code_paths=[str(Path(pyfunc.__file__).parent)],
        # MLflow lets a loader override only the model_config keys logged here: the server
        # passes its thread count at load time; 0 (the runtime's default) for other loaders.
        model_config={THREADS_CONFIG: 0},
        signature=SIGNATURE,
        input_example=input_example(example_digit),
        pip_requirements=requirements,
        metadata=python_model.metadata(),
        registered_model_name=registered_name,
    )


def with_scored_graph(python_model: DigitPyfunc, artifacts: dict[str, str]) -> dict[str, str]:
    """``artifacts`` with :data:`~pyfunc.reject.SCORED_ARTIFACT` added, written beside the
    network's ONNX file, when ``python_model`` is the Keras/ONNX family and the artifacts
    hold both the ONNX network and a rejector (unchanged otherwise)."""
    onnx_path, rejector_path = artifacts.get(ONNX_ARTIFACT), artifacts.get(REJECT_ARTIFACT)
    if not (isinstance(python_model, DigitModel) and onnx_path and rejector_path):
        return artifacts
    if SCORED_ARTIFACT in artifacts:
        return artifacts
    scored = Path(onnx_path).with_name(Path(onnx_path).stem + "_scored.onnx")
    write_scored_graph(onnx_path, Rejector.load(rejector_path), scored)
    return {**artifacts, SCORED_ARTIFACT: str(scored)}
