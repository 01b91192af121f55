"""Which digits `mlflow run . -e evaluate` scores: the test split, or training's validation tail."""

from __future__ import annotations

import numpy as np
import pytest

from training.data import DataError, Mnist
from training.evaluate import held_out, parse_args


def _mnist(n_train: int = 50, n_test: int = 7) -> Mnist:
    return Mnist(
        np.arange(n_train * 784, dtype=np.int64).reshape(n_train, 28, 28).astype(np.uint8),
        np.arange(n_train) % 10,
        np.zeros((n_test, 28, 28), np.uint8),
        np.ones(n_test, np.int64),
    )


def test_the_test_split_is_the_default() -> None:
    data = _mnist()
    x, y = held_out(data, parse_args([]).split, 0.1)
    assert x is data.x_test and y is data.y_test


def test_validation_is_the_tail_training_holds_out() -> None:
    data = _mnist(n_train=50)
    x, y = held_out(data, "validation", 0.1)
    # training keeps the first 45 and validates on the last 5 (train.py's split)
    np.testing.assert_array_equal(x, data.x_train[45:])
    np.testing.assert_array_equal(y, data.y_train[45:])


def test_an_empty_validation_split_is_a_data_error() -> None:
    with pytest.raises(DataError, match="empty"):
        held_out(_mnist(n_train=5), "validation", 0.1)


def test_an_unknown_split_is_refused() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--split", "train"])
