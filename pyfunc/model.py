"""The digit model as MLflow sees it: a custom PythonModel around the Keras CNN.

Decoding and normalisation live in :mod:`pyfunc.preprocess`; this class only adapts
MLflow's input shapes to it and turns the network's softmax into answers.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext

from pyfunc import reject
from pyfunc.errors import ImageError, NoDigit
from pyfunc.preprocess import Limits
from pyfunc.preprocess import pre_process as _pre_process

KERAS_ARTIFACT = "keras_model"
# The same weights exported to ONNX, run by ONNX Runtime when it is installed: about 5×
# cheaper per call than TensorFlow for this network, and no TensorFlow in the process.
ONNX_ARTIFACT = "onnx_model"
# The ``model_config`` key (``mlflow.pyfunc.load_model(uri, model_config=...)``) for the
# threads the runtime may use per model (absent or 0: the runtime's default).
THREADS_CONFIG = "inference_threads"
IMAGE_COLUMN = "image"


@dataclass(frozen=True)
class Prediction:
    digit: int
    confidence: float
    probabilities: list[float]
    # P(no digit) from the model's rejector (pyfunc.reject); None without one.
    not_digit_score: float | None = None


class DigitModel(PythonModel):
    """Encoded images (bytes/base64) or decoded arrays in, digit + probabilities out."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._forward: Callable[[np.ndarray], Any] | None = None
        self.runtime: str | None = None
        self.rejector: reject.Rejector | None = None

    def load_context(self, context: PythonModelContext) -> None:
        threads = int((context.model_config or {}).get(THREADS_CONFIG) or 0)
        onnx_path = context.artifacts.get(ONNX_ARTIFACT)
        if onnx_path and _has_onnxruntime():
            self._forward = _onnx_forward(onnx_path, threads)
            self.runtime = "onnxruntime"
        else:  # versions logged before the ONNX export, or no onnxruntime installed
            self._forward = _keras_forward(context.artifacts[KERAS_ARTIFACT], threads)
            self.runtime = "tensorflow"
        self.rejector = reject.load(context.artifacts.get(reject.REJECT_ARTIFACT))
        # The first call allocates and plans; do it now rather than on a user's request.
        self.probabilities(np.zeros((1, 28, 28, 1), dtype=np.float32))

    def pre_process(self, model_input: Any, limits: Limits | None = None) -> np.ndarray:
        """Any accepted input → the network's ``(N, 28, 28, 1)`` float32 batch."""
        return _pre_process(_images_of(model_input), limits=limits or self.limits)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Softmax output for a pre-processed batch, ``(N, 10)``."""
        forward = getattr(self, "_forward", None)  # absent on objects pickled before it existed
        if forward is None:
            raise RuntimeError("model weights are not loaded; load through mlflow.pyfunc")
        return np.asarray(forward(np.asarray(batch, dtype=np.float32)), dtype=np.float64)

    def classify(self, model_input: Any, limits: Limits | None = None) -> list[Prediction]:
        """One :class:`Prediction` per input image."""
        batch = self.pre_process(model_input, limits)
        return self.answer(batch, self.probabilities(batch))

    def judge(self, batch: np.ndarray, probs: np.ndarray) -> list[Prediction | NoDigit]:
        """Per image of a pre-processed batch and its softmax: the prediction, or the
        :class:`NoDigit` the rejector refuses it with."""
        rejector = getattr(self, "rejector", None)  # absent on objects pickled before it
        if rejector is None:
            return list(predictions(probs))
        scores = rejector.scores(batch, probs)
        refusals = rejector.refusals_for(scores)
        return [
            refusal or replace(p, not_digit_score=float(s))
            for p, s, refusal in zip(predictions(probs), scores, refusals, strict=True)
        ]

    def answer(self, batch: np.ndarray, probs: np.ndarray) -> list[Prediction]:
        """:meth:`judge`, raising the first refusal (naming the image in a batch)."""
        judged = self.judge(batch, probs)
        for i, item in enumerate(judged):
            if isinstance(item, NoDigit):
                raise item if len(judged) == 1 else NoDigit(f"image {i}: {item}")
        return judged  # type: ignore[return-value]  # no refusal left in it

    def predict(
        self,
        context: PythonModelContext | None,
        # Unannotated on purpose: MLflow would otherwise derive a signature from the hint.
        model_input,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        batch = self.pre_process(model_input)
        probs = self.probabilities(batch)
        # One row per image, refused or not, so one image spoils no other.
        judged = self.judge(batch, probs)
        rows = predictions(probs)
        return pd.DataFrame(
            {
                "digit": [p.digit for p in rows],
                "confidence": [p.confidence for p in rows],
                "probabilities": [p.probabilities for p in rows],
                "no_digit": [isinstance(j, NoDigit) for j in judged],
                "not_digit_score": [_score(j) for j in judged],
            }
        )


def _score(judged: Prediction | NoDigit) -> float | None:
    return getattr(judged, "not_digit_score", None)  # a reject.Refused carries one too


def _has_onnxruntime() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def _onnx_forward(path: str, threads: int) -> Callable[[np.ndarray], Any]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]


def _keras_forward(path: str, threads: int) -> Callable[[np.ndarray], Any]:
    # TensorFlow is imported where the model is loaded, never before a fork.
    import keras
    import tensorflow as tf

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            pass  # TensorFlow already started in this process: keep its setting
    net = keras.models.load_model(path, compile=False)
    # One graph traced for any batch size, called directly: Keras' predict_on_batch
    # re-runs its data adapter and function dispatch on every call (~0.3 ms of 1 ms).
    return tf.function(lambda batch: net(batch, training=False)).get_concrete_function(
        tf.TensorSpec([None, 28, 28, 1], tf.float32)
    )


def predictions(probs: np.ndarray) -> list[Prediction]:
    """Softmax rows → answers."""
    digits = probs.argmax(axis=1)
    return [
        Prediction(int(d), float(p[d]), [float(v) for v in p])
        for d, p in zip(digits, probs, strict=True)
    ]


def _images_of(model_input: Any) -> Sequence[Any] | np.ndarray:
    """The images inside whatever MLflow handed us (DataFrame, dict, array, list)."""
    if isinstance(model_input, pd.DataFrame):
        if IMAGE_COLUMN not in model_input.columns:
            raise ImageError(f"expected a column named {IMAGE_COLUMN!r}")
        model_input = model_input[IMAGE_COLUMN].tolist()
    elif isinstance(model_input, dict):
        if IMAGE_COLUMN not in model_input:
            raise ImageError(f"expected a key named {IMAGE_COLUMN!r}")
        model_input = model_input[IMAGE_COLUMN]
    if isinstance(model_input, list):
        # MLflow's schema enforcement turns array columns into nested lists.
        return [np.asarray(item) if isinstance(item, list) else item for item in model_input]
    return model_input
