"""The digit model as MLflow sees it: a custom PythonModel around the Keras CNN.

Decoding and normalisation live in :mod:`pyfunc.preprocess`; this class only adapts
MLflow's input shapes to it and turns the network's softmax into answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from pyfunc.errors import ImageError
from pyfunc.preprocess import Limits
from pyfunc.preprocess import pre_process as _pre_process

KERAS_ARTIFACT = "keras_model"
IMAGE_COLUMN = "image"


@dataclass(frozen=True)
class Prediction:
    digit: int
    confidence: float
    probabilities: list[float]


class DigitModel(mlflow.pyfunc.PythonModel):
    """Encoded images (bytes/base64) or decoded arrays in, digit + probabilities out."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._net: Any = None
        self._forward: Any = None

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        # TensorFlow is imported where the model is loaded, never before a fork.
        import keras
        import tensorflow as tf

        net = keras.models.load_model(context.artifacts[KERAS_ARTIFACT], compile=False)
        # One graph traced for any batch size, called directly: Keras' predict_on_batch
        # re-runs its data adapter and function dispatch on every call (~0.3 ms of 1 ms).
        self._forward = tf.function(lambda batch: net(batch, training=False)).get_concrete_function(
            tf.TensorSpec([None, 28, 28, 1], tf.float32)
        )
        self._net = net
        # The first call builds the graph; do it now rather than on a user's request.
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
        return predictions(self.probabilities(self.pre_process(model_input, limits)))

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext | None,
        # Unannotated on purpose: MLflow would otherwise derive a signature from the hint.
        model_input,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        predictions = self.classify(model_input)
        return pd.DataFrame(
            {
                "digit": [p.digit for p in predictions],
                "confidence": [p.confidence for p in predictions],
                "probabilities": [p.probabilities for p in predictions],
            }
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
