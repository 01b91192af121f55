"""Resolving ``MODEL_URI`` against the MLflow registry and loading that version."""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pyfunc.model import THREADS_CONFIG, DigitModel
from serving.config import Settings

log = logging.getLogger(__name__)
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<ref>[^/]+)|@(?P<alias>[^/]+))/?$")


class NoModel(LookupError):
    """The registry has no version behind the configured URI (yet)."""


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class LoadedModel:
    ref: ModelRef
    # Anything with DigitModel's classify(images, limits): the pyfunc itself, or a client
    # of a remote scoring server in predictor mode.
    model: DigitModel | Any


def client_for(settings: Settings) -> MlflowClient:
    """A client of the registry ``settings`` name; MLflow's process-wide URIs stay untouched."""
    uri = settings.mlflow_tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def resolve(client: MlflowClient, model_uri: str) -> ModelRef:
    """The concrete version a stage/alias/latest URI points at right now."""
    match = _MODELS_URI.match(model_uri)
    if not match:
        raise ValueError(
            f"MODEL_URI must look like models:/NAME/STAGE or models:/NAME@ALIAS, got {model_uri!r}"
        )
    name, ref, alias = match["name"], match["ref"], match["alias"]
    try:
        if alias:
            return ModelRef(name, str(client.get_model_version_by_alias(name, alias).version))
        if ref.isdigit():
            return ModelRef(name, str(client.get_model_version(name, ref).version))
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise NoModel(f"{model_uri}: {exc.message}") from None
        raise
    if ref.lower() != "latest":
        versions = [v for v in versions if (v.current_stage or "").lower() == ref.lower()]
    if not versions:
        raise NoModel(f"no version of {name!r} is in {ref}")
    return ModelRef(name, str(max(int(v.version) for v in versions)))


def load(
    ref: ModelRef, settings: Settings, on_batch: Callable[[int], None] | None = None
) -> LoadedModel:
    """The version, ready to answer: weights loaded and warmed up in this process, or, in
    remote mode, a client for the scoring server that hosts it (checked by a warm-up call).

    The registry is the one ``settings`` names, not MLflow's process-wide default; with
    batching, ``on_batch(n)`` hears the size of every forward pass."""
    if settings.predictor == "remote":
        from serving.remote import RemotePredictor

        remote = RemotePredictor(settings)
        try:
            remote.warm_up()
        except Exception as exc:
            # The adapter stays up and answers 502/504 while the scorer is away, rather
            # than flapping between ready and not ready with it.
            log.warning("remote predictor %s not answering yet: %s", remote.url, exc)
        return LoadedModel(ref, remote)
    uri = settings.mlflow_tracking_uri
    # Where the version's files are, asked of our registry: a models:/ URI would be looked
    # up in MLflow's process-wide registry whatever URI download_artifacts is given.
    location = client_for(settings).get_model_version_download_uri(ref.name, ref.version)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        local_path = mlflow.artifacts.download_artifacts(
            location, tracking_uri=uri, registry_uri=uri
        )
        # ONNX Runtime or TensorFlow threads, read by the model as it loads in this worker.
        pyfunc_model = mlflow.pyfunc.load_model(
            _declaring_threads(local_path),
            model_config={THREADS_CONFIG: settings.inference_threads},
        )
    python_model = pyfunc_model.unwrap_python_model()
    if not isinstance(python_model, DigitModel):
        raise TypeError(f"{ref.uri} is not a digit model (got {type(python_model).__name__})")
    if settings.batching:
        from serving.batching import BatchingModel

        return LoadedModel(
            ref,
            BatchingModel(
                python_model,
                settings.batch_max_size,
                settings.batch_max_wait_us,
                on_batch=on_batch,
            ),
        )
    return LoadedModel(ref, python_model)


def _declaring_threads(local_path: str) -> str:
    """``local_path``, or, for a version logged before the thread count was one of its
    ``model_config`` keys, a copy whose MLmodel declares the key: MLflow lets a loader set
    only the keys a model was logged with, and would load it with the runtime's default.

    The copy stays, as MLflow's own downloads do: the loaded model may read its files."""
    from mlflow.models import Model
    from mlflow.models.model import MLMODEL_FILE_NAME, MODEL_CONFIG

    meta = Model.load(local_path)
    flavor = meta.flavors[mlflow.pyfunc.FLAVOR_NAME]
    declared = flavor.get(MODEL_CONFIG) or {}
    if THREADS_CONFIG in declared:
        return local_path
    copy = Path(tempfile.mkdtemp(prefix="digits-model-")) / "model"
    shutil.copytree(local_path, copy)
    flavor[MODEL_CONFIG] = {**declared, THREADS_CONFIG: 0}
    meta.save(str(copy / MLMODEL_FILE_NAME))
    log.info(
        "%s was logged without model_config %r: loading a copy that declares it",
        local_path,
        THREADS_CONFIG,
    )
    return str(copy)
