"""Loading a registered version: from the registry the settings name (MLflow's process-wide
URIs untouched), with the inference thread count passed as the model's ``model_config``, for
versions logged before that key existed too."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

import pyfunc
from pyfunc import model as digit_model
from serving import registry
from serving.config import Settings
from tests import tiny_model
from tests.support import Registry


def _register(reg: Registry, onnx_path: Path, model_config: dict | None) -> registry.ModelRef:
    """A new version of ``digits`` in ``reg``, saved with (or, as versions logged before the
    thread count was a model_config key, without) ``model_config``."""
    client = MlflowClient(reg.tracking_uri, reg.tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "model"
        mlflow.pyfunc.save_model(
            path=str(local),
            python_model=digit_model.DigitModel(),
            artifacts={digit_model.ONNX_ARTIFACT: str(onnx_path)},
            code_paths=[str(Path(pyfunc.__file__).parent)],
            signature=tiny_model.signature(),
            model_config=model_config,
            pip_requirements=["mlflow", "onnxruntime"],
        )
        experiment_id = client.get_experiment_by_name("digits").experiment_id
        run = client.create_run(experiment_id)
        client.log_artifacts(run.info.run_id, str(local), "model")
    if not client.search_registered_models("name = 'digits'"):
        client.create_registered_model("digits")
    version = client.create_model_version(
        "digits", source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    )
    return registry.ModelRef("digits", str(version.version))


@pytest.fixture(scope="module")
def versions(tmp_path_factory, tiny_onnx) -> tuple[Registry, registry.ModelRef, registry.ModelRef]:
    reg = Registry.create(tmp_path_factory.mktemp("threads-registry"))
    current = _register(reg, tiny_onnx, {digit_model.THREADS_CONFIG: 0})
    old = _register(reg, tiny_onnx, None)
    return reg, current, old


@pytest.fixture
def threads_seen(monkeypatch) -> list[int]:
    seen: list[int] = []
    real = digit_model._onnx_forward

    def spy(path: str, threads: int):
        seen.append(threads)
        return real(path, threads)

    monkeypatch.setattr(digit_model, "_onnx_forward", spy)
    return seen


def test_the_thread_count_reaches_the_model_from_the_named_registry(
    versions, threads_seen, seed_png
):
    reg, current, _ = versions
    assert mlflow.get_registry_uri() != reg.tracking_uri  # found without the global URI
    settings = Settings(mlflow_tracking_uri=reg.tracking_uri, inference_threads=3, batching=False)
    loaded = registry.load(current, settings)
    assert threads_seen == [3]
    assert loaded.model.classify([seed_png])[0].digit in range(10)


def test_a_version_logged_without_the_key_gets_the_thread_count_too(
    versions, threads_seen, seed_png
):
    reg, _, old = versions
    settings = Settings(mlflow_tracking_uri=reg.tracking_uri, inference_threads=3, batching=False)
    loaded = registry.load(old, settings)
    assert threads_seen == [3]
    assert loaded.model.classify([seed_png])[0].digit in range(10)
    # The registry's own copy is left as it was logged.
    location = registry.client_for(settings).get_model_version_download_uri("digits", old.version)
    meta = mlflow.models.Model.load(location.removeprefix("file://"))
    assert not meta.flavors["python_function"].get("config")


def test_batches_are_reported_to_the_callback_given(versions, seed_png):
    reg, current, _ = versions
    sizes: list[int] = []
    settings = Settings(mlflow_tracking_uri=reg.tracking_uri, batching=True)
    loaded = registry.load(current, settings, on_batch=sizes.append)
    try:
        loaded.model.classify([seed_png])
    finally:
        loaded.model.close()
    assert sizes == [1]
