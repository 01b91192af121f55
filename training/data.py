"""Loading MNIST in the Keras ``.npz`` layout, with errors that name the problem."""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

KEYS = ("x_train", "y_train", "x_test", "y_test")
# Share of the training split held out (its tail) to validate on; evaluate can score it.
VALIDATION_SPLIT = 0.1


class DataError(Exception):
    """The data set is missing or not in the expected layout."""


@dataclass(frozen=True)
class Mnist:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def limited(self, limit: int | None) -> Mnist:
        """Only the first ``limit`` training images (``None``/0 keeps all)."""
        if not limit:
            return self
        if limit < 0:
            raise DataError(f"limit must be positive, got {limit}")
        return Mnist(self.x_train[:limit], self.y_train[:limit], self.x_test, self.y_test)


def validation_size(n_train: int, fraction: float) -> int:
    """How many of ``n_train`` training images, at the tail, are held out for validation."""
    return int(n_train * fraction)


def resolve_path(data_path: str | os.PathLike | None) -> Path | None:
    """The explicit path, else env ``MNIST_PATH``, else ``None`` (download via Keras)."""
    chosen = data_path or os.environ.get("MNIST_PATH")
    return Path(chosen).expanduser() if chosen else None


def load_mnist(data_path: str | os.PathLike | None = None) -> Mnist:
    """MNIST from an ``.npz`` (argument or ``MNIST_PATH``), else ``keras.datasets.mnist``."""
    path = resolve_path(data_path)
    if path is None:
        import keras  # only needed for the online fallback

        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
        return _validated(
            {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test},
            "keras.datasets.mnist",
        )
    if not path.is_file():
        raise DataError(f"MNIST file not found: {path} (set data_path or MNIST_PATH)")
    return _validated(_read_npz(path), str(path))


def load_feedback(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """The ``x_train``, ``y_train`` of a feedback export (``training.export_feedback``): the
    MNIST layout, but the test split is empty and the training split may be."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"feedback file not found: {path}")
    data = _validated(_read_npz(path), str(path), allow_empty=True)
    return data.x_train, data.y_train


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in KEYS if k not in npz.files]
            if missing:
                raise DataError(
                    f"{path} lacks array(s) {', '.join(missing)}; expected keys {', '.join(KEYS)}"
                )
            return {k: npz[k] for k in KEYS}
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path} is not a readable .npz archive: {exc}") from None


def _validated(arrays: dict[str, np.ndarray], source: str, allow_empty: bool = False) -> Mnist:
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or x.shape[1:] != (28, 28):
            raise DataError(f"{source}: x_{split} has shape {x.shape}, expected (N, 28, 28)")
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(
                f"{source}: y_{split} has shape {y.shape}, expected ({len(x)},) to match x_{split}"
            )
        if len(x) == 0 and not allow_empty:
            raise DataError(f"{source}: x_{split} is empty")
        if not np.issubdtype(y.dtype, np.integer) or (len(y) and (y.min() < 0 or y.max() > 9)):
            raise DataError(f"{source}: y_{split} must hold integer labels 0-9")
        if x.dtype != np.uint8:
            raise DataError(f"{source}: x_{split} has dtype {x.dtype}, expected uint8")
    return Mnist(
        arrays["x_train"],
        arrays["y_train"].astype(np.int64),
        arrays["x_test"],
        arrays["y_test"].astype(np.int64),
    )
