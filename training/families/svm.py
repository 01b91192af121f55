"""The scikit-learn family (``pca_svm``): PCA of the MNIST-normalised pixels, then an SVM
with an RBF kernel, its scores made probabilities by a softmax whose temperature is fitted
on the validation digits (:class:`pyfunc.sklearn_family.SklearnDigitModel` serves it)."""

from __future__ import annotations

import time
from importlib import metadata
from pathlib import Path

import numpy as np

from pyfunc.sklearn_family import SKLEARN_ARTIFACT, SklearnDigitModel, softmax
from training.families.base import Fitted, Job

# Temperatures tried for the softmax of the SVM's one-vs-rest scores (log-spaced).
TEMPERATURES = np.geomspace(0.02, 5.0, 60)


def pipeline(components: int, c: float, seed: int):
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import SVC

    return make_pipeline(
        PCA(n_components=components, random_state=seed),
        # gamma "scale": 1 / (features * variance), the usual start for an RBF kernel.
        SVC(C=c, kernel="rbf", gamma="scale", cache_size=1000, random_state=seed),
    )


def fit_temperature(scores: np.ndarray, labels: np.ndarray) -> float:
    """The temperature with the least cross-entropy on held-out ``scores``."""
    if len(labels) == 0:
        return 1.0
    rows = np.arange(len(labels))

    def nll(t: float) -> float:
        return float(-np.mean(np.log(softmax(scores, t)[rows, labels] + 1e-12)))

    return float(min(TEMPERATURES, key=nll))


def pip_requirements() -> list[str]:
    from training.register import pip_requirements as common

    # The network runtime is not needed; scikit-learn (and joblib, its dependency) is.
    base = [r for r in common(with_onnx=True) if not r.startswith("onnxruntime")]
    return [*base, f"scikit-learn=={metadata.version('scikit-learn')}"]


def fit(job: Job) -> Fitted:
    import joblib

    args = job.args
    x_train = job.x_train.reshape(len(job.x_train), -1)
    started = time.perf_counter()
    model = pipeline(args.pca_components, args.svm_c, args.seed).fit(x_train, job.y_train)
    train_seconds = time.perf_counter() - started
    metrics: dict[str, float] = {}
    temperature = 1.0
    if len(job.x_val):
        scores = model.decision_function(job.x_val.reshape(len(job.x_val), -1))
        temperature = fit_temperature(scores, job.y_val)
        metrics["val_accuracy"] = float(np.mean(scores.argmax(axis=1) == job.y_val))
    path = Path(job.out_dir) / "pca_svm.joblib"
    joblib.dump({"pipeline": model, "temperature": temperature}, path)
    svc = model[-1]
    metrics["support_vectors"] = float(len(svc.support_))
    return Fitted(
        python_model=SklearnDigitModel(),
        artifacts={SKLEARN_ARTIFACT: str(path)},
        pip_requirements=pip_requirements(),
        train_seconds=train_seconds,
        params={
            "opt_pca_components": args.pca_components,
            "opt_svm_c": args.svm_c,
            "svm_kernel": "rbf",
            "svm_gamma": "scale",
            "softmax_temperature": temperature,
        },
        metrics=metrics,
    )
