"""The tiny model of the in-process tests is logged as training logs the real one, so what
those tests load through the registry is what the service loads in production."""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow.models import Model

from tests import tiny_model
from tests.support import Registry


def test_the_tiny_model_is_logged_like_the_trained_one(
    model_dir: Path, tiny_onnx: Path, tmp_path: Path
):
    reg = Registry.create(tmp_path / "reg")
    tiny_model.register(reg.tracking_uri, tiny_onnx)
    source = (
        mlflow.MlflowClient(reg.tracking_uri, reg.tracking_uri)
        .get_model_version(tiny_model.MODEL_NAME, "1")
        .source
    )
    tiny_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=source))

    trained, tiny = Model.load(model_dir), Model.load(tiny_dir)
    assert tiny.signature == trained.signature
    trained_pyfunc = trained.flavors["python_function"]
    tiny_pyfunc = tiny.flavors["python_function"]
    for key in ("loader_module", "python_model", "code", "config"):  # config: model_config
        assert tiny_pyfunc[key] == trained_pyfunc[key], key
    assert set(tiny_pyfunc["artifacts"]) < set(trained_pyfunc["artifacts"])  # ONNX, no Keras
    assert sorted(p.name for p in (tiny_dir / "code").iterdir()) == sorted(
        p.name for p in (model_dir / "code").iterdir()
    )
