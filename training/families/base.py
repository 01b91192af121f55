"""What train.py hands a family's ``fit`` and what it gets back."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pyfunc.contract import DigitPyfunc


@dataclass(frozen=True)
class Job:
    """One training: the resolved options and the data, already MNIST-normalised by
    :func:`pyfunc.preprocess.pre_process` (``(N, 28, 28, 1)`` float32, as served)."""

    args: argparse.Namespace
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray  # the validation tail of the training split (may be empty)
    y_val: np.ndarray
    x_test: np.ndarray  # the MNIST test split: final scores only, never for choices
    y_test: np.ndarray
    # The raw uint8 MNIST digits behind the first len(digits) rows of x_train (the rest,
    # if any, are users' feedback images): the pen and photo augmentations start from them.
    digits: np.ndarray
    out_dir: Path  # where the family writes its artifacts
    # Keras callbacks for a network's fit (per-epoch metrics into the run), by metric prefix.
    callbacks: Callable[[str], list[Any]] = field(default=lambda prefix: [])


@dataclass
class Fitted:
    """A trained family, ready to be logged: the pyfunc (not loaded) and its artifacts."""

    python_model: DigitPyfunc
    artifacts: dict[str, str]
    pip_requirements: list[str]
    train_seconds: float
    params: dict[str, Any]  # the family's own resolved options, for the run
    # Learning curves (Keras ``History.history`` keys), empty for families without epochs.
    history: dict[str, list[float]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # family-specific extras
