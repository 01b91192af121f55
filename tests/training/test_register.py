from __future__ import annotations

from pathlib import Path

import joblib
import mlflow
from mlflow.models import Model

from pyfunc.contract import FAMILY_METADATA
from pyfunc.loading import load_version
from pyfunc.preprocess import pre_process
from pyfunc.sklearn_family import SKLEARN_ARTIFACT, SklearnDigitModel
from tests.support import blank_tracking_database
from training.data import Mnist
from training.families import svm
from training.register import input_example, log_family, pip_requirements

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


def test_a_family_is_logged_with_its_name_signature_and_example_and_loads_back(
    tmp_path: Path, mnist: Mnist
) -> None:
    """Any family goes through log_family: the scikit-learn one here (no TensorFlow)."""
    x = pre_process(mnist.x_train[:600]).reshape(600, -1)
    fitted = svm.pipeline(20, 10.0, 0).fit(x, mnist.y_train[:600])
    path = tmp_path / "svm.joblib"
    joblib.dump({"pipeline": fitted, "temperature": 0.5}, path)
    uri = blank_tracking_database(tmp_path / "mlflow.db")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        experiment = mlflow.create_experiment("t", artifact_location=(tmp_path / "a").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            info = log_family(
                SklearnDigitModel(),
                {SKLEARN_ARTIFACT: str(path)},
                mnist.x_train[0],
                "digits",
                svm.pip_requirements(),
            )
        meta = Model.load(info.model_uri)
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    assert meta.metadata[FAMILY_METADATA] == "pca_svm"
    assert meta.signature is not None and meta.saved_input_example_info is not None
    model = load_version(uri, "digits", str(info.registered_model_version))
    assert model.family == "pca_svm"
    png = input_example(mnist.x_test[0])["image"][0]
    assert model.classify([png])[0].digit == int(mnist.y_test[0])  # a 7
