"""The tiny model the in-process tests serve: it recognises digits, and the registry holds it
as the service expects (Production stage and alias, a ``DigitModel`` pyfunc on ONNX)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from mlflow import MlflowClient

from pyfunc.model import DigitModel
from pyfunc.preprocess import pre_process
from tests import tiny_model
from tests.support import Registry
from training.data import Mnist
from training.promote import ALIAS, STAGE


def test_the_fit_recognises_most_held_out_digits(mnist: Mnist, tmp_path):
    path = tiny_model.write_onnx(mnist.x_train, mnist.y_train, tmp_path / "tiny.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x, y = mnist.x_test[:2000], mnist.y_test[:2000]
    probs = session.run(None, {session.get_inputs()[0].name: pre_process(x)})[0]
    assert probs.shape == (2000, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert np.mean(probs.argmax(axis=1) == y) > 0.8  # chance is 0.1


def test_gradient_descent_lowers_the_loss(mnist: Mnist):
    n = 500
    x = pre_process(mnist.x_train[:n]).reshape(n, -1)
    y = mnist.y_train[:n]

    def loss(steps: int) -> float:
        weights, bias = tiny_model.fit_softmax(x, y, steps=steps)
        probs = tiny_model.softmax(x @ weights + bias)
        return float(-np.log(probs[np.arange(n), y]).mean())

    assert loss(0) == pytest.approx(np.log(10))  # all-zero weights: uniform answers
    assert loss(5) < loss(0) and loss(40) < loss(5)


def test_the_registered_version_is_production_and_loads_as_the_digit_model(
    registry: Registry, seed_png: bytes
):
    import mlflow

    client = MlflowClient(registry.tracking_uri, registry.tracking_uri)
    version = client.get_model_version_by_alias(tiny_model.MODEL_NAME, ALIAS)
    assert (str(version.version), version.current_stage) == ("1", STAGE)
    local = mlflow.artifacts.download_artifacts(artifact_uri=version.source)
    model = mlflow.pyfunc.load_model(local).unwrap_python_model()
    assert isinstance(model, DigitModel)
    assert model.runtime == "onnxruntime"
    assert model.classify([seed_png])[0].digit == 9
