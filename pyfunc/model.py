"""The Keras/ONNX digit-model family: a :class:`~pyfunc.contract.DigitPyfunc` around a
Keras network (run by ONNX Runtime when it is installed).

Decoding and normalisation live in :mod:`pyfunc.preprocess`, answers and ``predict`` in
:mod:`pyfunc.contract`; this class only loads the network and runs it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np
from mlflow.pyfunc import PythonModelContext

from pyfunc import reject

# Re-exported: these lived here before the contract, and callers import them from here.
from pyfunc.contract import (  # noqa: F401
    DEFAULT_FAMILY,
    IMAGE_COLUMN,
    THREADS_CONFIG,
    DigitPyfunc,
    Prediction,
    images_of,
    predictions,
)
from pyfunc.preprocess import Limits
from pyfunc.preprocess import pre_process as _pre_process

KERAS_ARTIFACT = "keras_model"
# The same weights exported to ONNX, run by ONNX Runtime when it is installed: about 5×
# cheaper per call than TensorFlow for this network, and no TensorFlow in the process.
ONNX_ARTIFACT = "onnx_model"


class DigitModel(DigitPyfunc):
    """The Keras/ONNX family: a network taking MNIST-normalised ``(N, 28, 28, 1)``.

    ``family`` names the network (the Keras example by default; other Keras networks logged
    through this class name theirs). Objects pickled before families existed have no
    ``family`` or ``input_spec`` of their own: the class defaults answer for them."""

    family = DEFAULT_FAMILY
    shared_pre_process = True  # pre_process below is the shared one, nothing added

    def __init__(self, limits: Limits | None = None, family: str = DEFAULT_FAMILY) -> None:
        super().__init__(limits, family=family)
        self._forward: Callable[[np.ndarray], Any] | None = None
        self.runtime: str | None = None
        # The scores of the scored graph's last pass in each thread (set by load_context).
        self._scored: reject.PassScores | None = None

    def load_context(self, context: PythonModelContext) -> None:
        threads = int((context.model_config or {}).get(THREADS_CONFIG) or 0)
        self.hold_blas_to(threads)  # the rejector's numpy
        self.rejector = reject.load(context.artifacts.get(reject.REJECT_ARTIFACT))
        onnx_path = context.artifacts.get(ONNX_ARTIFACT)
        scored_path = context.artifacts.get(reject.SCORED_ARTIFACT)
        self._scored = None
        if onnx_path and _has_onnxruntime():
            if scored_path and self.rejector is not None:
                # The network and its rejector in one graph: one call for both.
                self._forward = _onnx_forward(scored_path, threads, outputs=2)
                self._scored = reject.PassScores(self.rejector)
            else:  # versions logged before the scored graph: the numpy rejector
                self._forward = _onnx_forward(onnx_path, threads)
            self.runtime = "onnxruntime"
        else:  # versions logged before the ONNX export, or no onnxruntime installed
            self._forward = _keras_forward(context.artifacts[KERAS_ARTIFACT], threads)
            self.runtime = "tensorflow"
        # The first call allocates and plans; do it now rather than on a user's request.
        self.probabilities(np.zeros((1, 28, 28, 1), dtype=np.float32))

    def pre_process(self, model_input: Any, limits: Limits | None = None) -> np.ndarray:
        """Any accepted input → the network's ``(N, 28, 28, 1)`` float32 batch."""
        return _pre_process(images_of(model_input), limits=limits or self.limits)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Softmax output for a pre-processed batch, ``(N, 10)``. With the scored graph
        (pyfunc.reject), the same call scored the batch for the rejector too: the scores are
        kept for :meth:`not_digit_scores`, for this very array, in this thread."""
        forward = getattr(self, "_forward", None)  # absent on objects pickled before it existed
        if forward is None:
            raise RuntimeError("model weights are not loaded; load through mlflow.pyfunc")
        out = forward(np.asarray(batch, dtype=np.float32))
        scored = getattr(self, "_scored", None)
        if scored is None:
            return np.asarray(out, dtype=np.float64)
        probs = np.asarray(out[0], dtype=np.float64)
        scored.keep(probs, out[1][:, 0].astype(np.float64))
        return probs

    def not_digit_scores(self, batch: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """The scores the scored graph gave with ``probs`` (see :meth:`probabilities`), or
        the numpy rejector's for any other probabilities."""
        scored = getattr(self, "_scored", None)
        scores = scored.take(probs, self.rejector) if scored is not None else None
        return super().not_digit_scores(batch, probs) if scores is None else scores


def _has_onnxruntime() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def _onnx_forward(path: str, threads: int, outputs: int = 1) -> Callable[[np.ndarray], Any]:
    """The graph's first output for a batch; with ``outputs=2``, its first two (a list)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    if outputs == 2:
        return lambda batch: session.run(None, {name: batch})
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
