"""A tiny real digit model for the fast test tier, built in the test process in a second.

Training the CNN with ``mlflow run`` takes minutes and imports TensorFlow; the in-process
serving tests need a registered model that recognises digits, not a good one. This one is a
softmax regression over the 784 pre-processed pixels, fitted with numpy on a few thousand
MNIST training digits (more than eight in ten test digits right), written as an ONNX graph with
``onnx.helper`` and logged as the same ``pyfunc.model.DigitModel`` pyfunc the real training
logs (ONNX artifact, the ``pyfunc`` package as code, the signature), so the service loads it
through its real registry code path. tests/integration/test_tiny_model.py checks that it
stays logged like the trained model.

A second family, :class:`PooledLogistic` (scikit-learn on 14×14 pooled digits, a family
with its own normalisation), shows that the service serves any contract pyfunc.
"""

from __future__ import annotations

import contextlib
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

import pyfunc
from pyfunc.contract import THREADS_CONFIG, DigitPyfunc, InputSpec, images_of
from pyfunc.preprocess import Limits, pre_process

MODEL_NAME = "digits"
ARTIFACT_PATH = "model"  # as training logs it
# Logged through the Keras/ONNX family's class (DigitModel), under a name of its own.
FAMILY = "tiny_softmax"
PIXELS = 28 * 28
CLASSES = 10
# About 86 % of MNIST test digits right, fitted in about a tenth of a second on a quiet core.
TRAIN_DIGITS = 3000
STEPS = 40
LEARNING_RATE = 0.5
MOMENTUM = 0.9
ONNX_OPSET = 17


def fit_softmax(
    x: np.ndarray, y: np.ndarray, steps: int = STEPS, lr: float = LEARNING_RATE
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression by full-batch gradient descent with momentum:
    ``(N, 784)`` inputs in [0, 1], ``(N,)`` labels → weights ``(784, 10)``, bias ``(10,)``."""
    x = np.asarray(x, dtype=np.float32)
    onehot = np.eye(CLASSES, dtype=np.float32)[np.asarray(y)]
    weights = np.zeros((x.shape[1], CLASSES), np.float32)
    bias = np.zeros(CLASSES, np.float32)
    step_w, step_b = np.zeros_like(weights), np.zeros_like(bias)
    for _ in range(steps):
        grad = (softmax(x @ weights + bias) - onehot) / len(x)
        step_w = MOMENTUM * step_w - lr * (x.T @ grad)
        step_b = MOMENTUM * step_b - lr * grad.sum(axis=0)
        weights += step_w
        bias += step_b
    return weights, bias


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def onnx_graph(weights: np.ndarray, bias: np.ndarray):
    """``(N, 28, 28, 1)`` float32 in, softmax ``(N, 10)`` out, as the exported CNN."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Reshape", ["input", "flat_shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "weights", "bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    initializers = [
        numpy_helper.from_array(np.array([-1, PIXELS], dtype=np.int64), "flat_shape"),
        numpy_helper.from_array(np.asarray(weights, dtype=np.float32), "weights"),
        numpy_helper.from_array(np.asarray(bias, dtype=np.float32), "bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_digits",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 28, 28, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", CLASSES])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    # The IR version of this opset, not onnx's newest, which an older onnxruntime refuses.
    model.ir_version = onnx.helper.find_min_ir_version_for([model.opset_import[0]])
    onnx.checker.check_model(model)
    return model


def write_onnx(x_train: np.ndarray, y_train: np.ndarray, path: Path) -> Path:
    """Fit on raw MNIST digits (pre-processed as the pyfunc does) and save the graph."""
    import onnx

    n = min(TRAIN_DIGITS, len(x_train))
    x = pre_process(np.asarray(x_train[:n])).reshape(n, PIXELS)
    weights, bias = fit_softmax(x, y_train[:n])
    onnx.save(onnx_graph(weights, bias), str(path))
    return path


def _pinned(*names: str) -> list[str]:
    pins = []
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            pins.append(f"{name}=={metadata.version(name)}")
    return pins


def signature():
    """The serving signature training logs (from pyfunc, without training's Keras import)."""
    from pyfunc.signature import SIGNATURE

    return SIGNATURE


def register(tracking_uri: str, onnx_path: Path, experiment: str = "digits") -> str:
    """Save the ONNX graph as the ``DigitModel`` pyfunc, log it to a run of ``experiment``,
    register it as a new version of ``digits`` and make that version Production (stage and
    alias); returns the version. Through a client, so the process's MLflow settings (the
    fluent API's tracking URI, which also sets ``MLFLOW_TRACKING_URI``) stay as they were."""
    from pyfunc.model import ONNX_ARTIFACT, DigitModel

    return register_model(
        tracking_uri,
        DigitModel(family=FAMILY),
        {ONNX_ARTIFACT: str(onnx_path)},
        ["onnxruntime"],
        experiment,
    )


def register_model(
    tracking_uri: str,
    model: DigitPyfunc,
    artifacts: dict[str, str],
    requirements: list[str],
    experiment: str = "digits",
) -> str:
    """Any family's pyfunc, logged as training logs one (the ``pyfunc`` package as code, the
    signature, the family as metadata and as a tag), registered as a new version of
    ``digits`` and made Production; returns the version."""
    import mlflow
    from mlflow import MlflowClient

    from training.promote import make_production

    with tempfile.TemporaryDirectory(prefix="tiny-model-") as tmp:
        local = Path(tmp) / "model"
        mlflow.pyfunc.save_model(
            path=str(local),
            python_model=model,
            artifacts=artifacts,
            code_paths=[str(Path(pyfunc.__file__).parent)],
            # As training logs it (training/register.py): the loader sets the thread count,
            # and a load need not rewrite the MLmodel to declare the key.
            model_config={THREADS_CONFIG: 0},
            signature=signature(),
            metadata=model.metadata(),
            # Given, so MLflow does not load the model in a subprocess to infer them.
            pip_requirements=_pinned("mlflow", "numpy", "pillow", "scipy", "pandas", *requirements),
        )
        client = MlflowClient(tracking_uri, tracking_uri)
        experiment_id = client.get_experiment_by_name(experiment).experiment_id
        run = client.create_run(
            experiment_id, run_name=f"tiny-{model.family}", tags={"family": model.family}
        )
        client.log_artifacts(run.info.run_id, str(local), ARTIFACT_PATH)
        client.set_terminated(run.info.run_id)
    if not client.search_registered_models(f"name = '{MODEL_NAME}'"):
        client.create_registered_model(MODEL_NAME)
    version = client.create_model_version(
        MODEL_NAME,
        source=f"{run.info.artifact_uri}/{ARTIFACT_PATH}",
        run_id=run.info.run_id,
        tags={"family": model.family},
    ).version
    make_production(client, MODEL_NAME, str(version))
    return str(version)


# --------------------------------------------------------------------- a second family

POOLED_FAMILY = "tiny_pooled_logistic"
POOLED_SPEC = InputSpec(height=14, width=14, channels=1, normalisation="mnist-pooled-2x2")
POOLED_TRAIN_DIGITS = 2000


class PooledLogistic(DigitPyfunc):
    """Another package and another input: scikit-learn's ``LogisticRegression`` on the
    MNIST-normalised digit averaged down to 14×14, its own normalisation, so the service
    runs this family's ``pre_process`` and never the shared MNIST split. The fitted
    estimator is pickled with the object; there are no artifacts to read."""

    family = POOLED_FAMILY
    input_spec = POOLED_SPEC

    def __init__(self, classifier: Any) -> None:
        super().__init__(family=POOLED_FAMILY, input_spec=POOLED_SPEC)
        self.classifier = classifier

    def load_context(self, context: Any) -> None:
        """Nothing to read: the estimator came with the pickle."""

    def pre_process(self, model_input: Any, limits: Limits | None = None) -> np.ndarray:
        mnist = pre_process(images_of(model_input), limits=limits or self.limits)
        return pool(mnist)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        flat = np.asarray(batch, dtype=np.float32).reshape(len(batch), -1)
        return np.asarray(self.classifier.predict_proba(flat), dtype=np.float64)


def pool(batch: np.ndarray) -> np.ndarray:
    """``(N, 28, 28, 1)`` → ``(N, 14, 14, 1)``, each pixel the mean of a 2×2 block."""
    n = len(batch)
    return batch.reshape(n, 14, 2, 14, 2, 1).mean(axis=(2, 4)).astype(np.float32)


def fit_pooled(x_train: np.ndarray, y_train: np.ndarray) -> PooledLogistic:
    """The second family fitted on the first training digits (a second or two)."""
    from sklearn.linear_model import LogisticRegression

    n = min(POOLED_TRAIN_DIGITS, len(x_train))
    x = pool(pre_process(np.asarray(x_train[:n]))).reshape(n, -1)
    classifier = LogisticRegression(max_iter=200).fit(x, y_train[:n])
    return PooledLogistic(classifier)


def register_pooled(tracking_uri: str, model: PooledLogistic) -> str:
    """The second family as a new Production version of ``digits``; returns the version."""
    return register_model(tracking_uri, model, {}, ["scikit-learn"])
