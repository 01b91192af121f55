"""The scikit-learn family: a fitted scikit-learn pipeline on the MNIST-normalised pixels.

``pre_process`` is the shared decode and MNIST normalisation of :mod:`pyfunc.preprocess`,
as for the networks, so the no-digit rejector (which scores normalised images) works here
too; the family's own feature step (flattening, PCA) is the first step of the pipeline, run
by :meth:`SklearnDigitModel.probabilities`. The pipeline is an artifact written with joblib by
this project's training (``training.families.svm``): loading it unpickles, so load versions
from a registry you trust, as for any MLflow model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mlflow.pyfunc import PythonModelContext

from pyfunc import reject
from pyfunc.contract import THREADS_CONFIG, DigitPyfunc, images_of
from pyfunc.preprocess import Limits
from pyfunc.preprocess import pre_process as _pre_process

SKLEARN_ARTIFACT = "sklearn_model"
FAMILY = "pca_svm"


def softmax(scores: np.ndarray, temperature: float) -> np.ndarray:
    """Rows of ``scores`` to probabilities: ``softmax(scores / temperature)``."""
    z = np.asarray(scores, dtype=np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class SklearnDigitModel(DigitPyfunc):
    """A scikit-learn classifier behind the digit contract.

    The artifact holds ``{"pipeline": <fitted Pipeline>, "temperature": float}``: the
    pipeline's ``decision_function`` (one score per digit) becomes probabilities by a softmax
    at a temperature fitted on the validation digits (an SVM has no probabilities of its own;
    scikit-learn's ``probability=True`` would train it six times over)."""

    family = FAMILY
    # pre_process below is the shared one: the service's micro-batcher may normalise for it.
    shared_pre_process = True

    def __init__(self, limits: Limits | None = None, family: str = FAMILY) -> None:
        super().__init__(limits, family=family)
        self._pipeline: Any = None
        self._temperature = 1.0

    def load_context(self, context: PythonModelContext) -> None:
        import joblib

        saved = joblib.load(context.artifacts[SKLEARN_ARTIFACT])
        self._pipeline, self._temperature = saved["pipeline"], float(saved["temperature"])
        # PCA and the SVM's kernel run in BLAS: held to the runtime's threads as the
        # rejector is (DigitPyfunc.hold_blas_to).
        self.hold_blas_to(int((context.model_config or {}).get(THREADS_CONFIG) or 0))
        self.rejector = reject.load(context.artifacts.get(reject.REJECT_ARTIFACT))
        self.probabilities(np.zeros((1, 28, 28, 1), dtype=np.float32))

    def pre_process(self, model_input: Any, limits: Limits | None = None) -> np.ndarray:
        """Any accepted input → MNIST-normalised ``(N, 28, 28, 1)`` float32."""
        return _pre_process(images_of(model_input), limits=limits or self.limits)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        if self._pipeline is None:
            raise RuntimeError("model is not loaded; load through mlflow.pyfunc")
        flat = np.asarray(batch, dtype=np.float32).reshape(len(batch), -1)
        with self.blas_limit():
            scores = self._pipeline.decision_function(flat)
        return softmax(scores, self._temperature)
