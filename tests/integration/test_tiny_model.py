"""The tiny model of the in-process tests is logged as training logs the real one, so what
those tests load through the registry is what the service loads in production."""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow.models import Model

from tests import tiny_model
from tests.support import Registry
from training.data import Mnist


def test_the_tiny_model_is_logged_like_the_trained_one(model_dir: Path, mnist: Mnist, tmp_path):
    reg = Registry.create(tmp_path / "reg")
    onnx_path = tiny_model.write_onnx(mnist.x_train, mnist.y_train, tmp_path / "tiny.onnx")
    tiny_model.register(reg.tracking_uri, onnx_path)
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
    for key in ("loader_module", "python_model", "code"):
        assert tiny_pyfunc[key] == trained_pyfunc[key], key
    assert set(tiny_pyfunc["artifacts"]) < set(trained_pyfunc["artifacts"])  # ONNX, no Keras
    assert sorted(p.name for p in (tiny_dir / "code").iterdir()) == sorted(
        p.name for p in (model_dir / "code").iterdir()
    )
