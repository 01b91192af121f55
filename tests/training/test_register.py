from __future__ import annotations

import pytest

from training.register import pip_requirements

pytestmark = pytest.mark.integration  # TensorFlow: training.register imports Keras

TENSORFLOW = {"tensorflow", "tensorflow-cpu", "keras"}


def _names(requirements: list[str]) -> set[str]:
    return {req.split("==")[0].lower() for req in requirements}


def test_a_model_with_onnx_weights_asks_for_onnx_runtime_and_no_tensorflow():
    names = _names(pip_requirements(with_onnx=True))
    assert {"onnxruntime", "numpy", "pillow", "scipy", "pandas"} <= names
    assert names & {"mlflow", "mlflow-skinny"}
    assert not names & TENSORFLOW


def test_a_model_with_keras_weights_only_asks_for_tensorflow():
    names = _names(pip_requirements(with_onnx=False))
    assert names & {"tensorflow", "tensorflow-cpu"}
    assert "keras" in names
