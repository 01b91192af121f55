"""Resolving ``MODEL_URI`` against the MLflow registry and loading that version.

Any registered pyfunc that honours the digit-model contract (pyfunc.contract) is served,
whatever its family: promoting a version of another family swaps it in like any other."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from pyfunc import loading
from pyfunc.contract import DigitPyfunc, family_of
from serving.config import Settings

log = logging.getLogger(__name__)
MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<ref>[^/]+)|@(?P<alias>[^/]+))/?$")


class NoModel(LookupError):
    """The registry has no version behind the configured URI (yet)."""


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


# The family of a remote model whose registry entry names none.
UNKNOWN_FAMILY = "unknown"
# The tag naming a version's family, on the model version or on the run that logged it.
FAMILY_TAG = "family"


@dataclass(frozen=True)
class LoadedModel:
    ref: ModelRef
    # Anything with the contract's classify(images, limits): the pyfunc itself (any family),
    # the micro-batcher around it, or a client of a remote scoring server in predictor mode.
    model: DigitPyfunc | Any
    # The model family (pyfunc.contract), named by /recognize, /ready and the metrics.
    family: str = UNKNOWN_FAMILY


def client_for(settings: Settings) -> MlflowClient:
    """A client of the registry ``settings`` name; MLflow's process-wide URIs stay untouched."""
    return loading.registry_client(settings.mlflow_tracking_uri)


def resolve(client: MlflowClient, model_uri: str) -> ModelRef:
    """The concrete version a stage/alias/latest URI points at right now."""
    match = MODELS_URI.match(model_uri)
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
        versions: list[ModelVersion] = list(client.search_model_versions(f"name = '{name}'"))
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
    ref: ModelRef,
    settings: Settings,
    on_batch: Callable[[int], None] | None = None,
    keep: Callable[[Path], None] | None = None,
    work_dir: Path | None = None,
) -> LoadedModel:
    """The version, ready to answer: weights loaded and warmed up in this process, or, in
    remote mode, a client for the scoring server that hosts it (checked by a warm-up call).

    The registry is the one ``settings`` names, not MLflow's process-wide default; with
    batching, ``on_batch(n)`` hears the size of every forward pass. ``keep`` and
    ``work_dir`` are :func:`pyfunc.loading.load_version`'s: the download is removed once
    loaded, after ``keep(path)`` has had a chance to copy it."""
    if settings.predictor == "remote":
        from serving.remote import RemotePredictor

        remote = RemotePredictor(settings)
        try:
            remote.warm_up()
        except Exception as exc:
            # The adapter stays up and answers 502/504 while the scorer is away, rather
            # than flapping between ready and not ready with it.
            log.warning("remote predictor %s not answering yet: %s", remote.url, exc)
        return LoadedModel(ref, remote, _registered_family(settings, ref))
    python_model = loading.load_version(
        settings.mlflow_tracking_uri,
        ref.name,
        ref.version,
        # ONNX Runtime or TensorFlow threads, read by the model as it loads in this worker.
        threads=settings.inference_threads,
        keep=keep,
        work_dir=work_dir,
    )
    return _serving(ref, python_model, settings, on_batch)


def load_directory(
    ref: ModelRef,
    path: Path,
    settings: Settings,
    on_batch: Callable[[int], None] | None = None,
) -> LoadedModel:
    """Version ``ref`` from a copy kept on this machine (serving/last_good.py), loaded as
    :func:`load` loads it from the registry."""
    python_model = loading.load_directory(path, threads=settings.inference_threads)
    return _serving(ref, python_model, settings, on_batch)


def _serving(
    ref: ModelRef,
    python_model: DigitPyfunc,
    settings: Settings,
    on_batch: Callable[[int], None] | None,
) -> LoadedModel:
    family = family_of(python_model)
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
            family,
        )
    return LoadedModel(ref, python_model, family)


def _registered_family(settings: Settings, ref: ModelRef) -> str:
    """The family the registry names for ``ref`` (the version's tag, else its run's): in
    predictor mode the model itself is in another process."""
    try:
        client = client_for(settings)
        version = client.get_model_version(ref.name, ref.version)
        family = (version.tags or {}).get(FAMILY_TAG)
        if not family and version.run_id:
            family = client.get_run(version.run_id).data.tags.get(FAMILY_TAG)
    except MlflowException as exc:
        log.warning("the family of %s could not be read: %s", ref.uri, exc)
        return UNKNOWN_FAMILY
    return family or UNKNOWN_FAMILY
