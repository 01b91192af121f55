"""Users' labelled images as extra training data (``-P include_feedback=true``)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data import DataError, load_feedback

ARTIFACT_DIR = "feedback"
FILE_NAME = "feedback.npz"


@dataclass(frozen=True)
class FeedbackSet:
    """MNIST-form digits (uint8, ``(N, 28, 28)``) and their labels."""

    x: np.ndarray
    y: np.ndarray
    request_ids: np.ndarray
    source: str  # the file given, or "" when exported from the image log for this run

    def __len__(self) -> int:
        return len(self.y)


def load_for_training(path: str = "") -> FeedbackSet:
    """The given export, or a fresh export of the configured image log."""
    if path:
        x, y = load_feedback(path)
        return FeedbackSet(x, y, _request_ids(path, len(y)), str(Path(path).resolve()))
    from imagelog import StorageError
    from training.export_feedback import export_configured  # reads the image log settings

    with tempfile.TemporaryDirectory() as tmp:
        try:
            exported = export_configured(Path(tmp) / FILE_NAME)
        except StorageError as exc:
            raise DataError(f"cannot export feedback from the image log: {exc}") from exc
        x, y = load_feedback(exported.path)
        return FeedbackSet(x, y, _request_ids(exported.path, len(y)), "")


def _request_ids(path: str | Path, n: int) -> np.ndarray:
    with np.load(path, allow_pickle=False) as npz:
        if "request_ids" in npz.files and len(npz["request_ids"]) == n:
            return npz["request_ids"]
    return np.asarray([""] * n, dtype=str)


def log_input(feedback: FeedbackSet) -> None:
    """Keep the exact images in the run and name them as its ``feedback`` data set."""
    import mlflow
    from mlflow.data.numpy_dataset import from_numpy

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / FILE_NAME
        np.savez_compressed(
            path,
            x_train=feedback.x,
            y_train=feedback.y,
            x_test=np.zeros((0, *feedback.x.shape[1:]), np.uint8),
            y_test=np.zeros((0,), np.uint8),
            request_ids=feedback.request_ids,
        )
        mlflow.log_artifact(str(path), ARTIFACT_DIR)
    if not len(feedback):
        return  # an empty data set says nothing the param feedback_images=0 does not
    source = feedback.source or mlflow.get_artifact_uri(f"{ARTIFACT_DIR}/{FILE_NAME}")
    mlflow.log_input(
        from_numpy(feedback.x, targets=feedback.y, name="feedback", source=source),
        context="training",
    )
