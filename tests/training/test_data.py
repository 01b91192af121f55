from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.data import DataError, load_mnist


def _save(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _good(n_train: int = 12, n_test: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def test_loads_real_mnist(mnist_path: Path):
    data = load_mnist(mnist_path)
    assert data.x_train.shape == (60000, 28, 28)
    assert data.x_test.shape == (10000, 28, 28)
    assert list(data.y_test[:10]) == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_env_var_names_the_file(monkeypatch, tmp_path: Path):
    path = _save(tmp_path / "small.npz", **_good())
    monkeypatch.setenv("MNIST_PATH", str(path))
    assert load_mnist().x_train.shape == (12, 28, 28)


def test_explicit_path_beats_env(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("MNIST_PATH", str(tmp_path / "absent.npz"))
    path = _save(tmp_path / "small.npz", **_good())
    assert len(load_mnist(path).x_test) == 6


def test_limit_keeps_first_training_images(tmp_path: Path):
    arrays = _good()
    data = load_mnist(_save(tmp_path / "s.npz", **arrays)).limited(5)
    assert np.array_equal(data.x_train, arrays["x_train"][:5])
    assert len(data.x_test) == 6


def _without(key: str) -> dict[str, np.ndarray]:
    arrays = _good()
    del arrays[key]
    return arrays


def _replace(key: str, value: np.ndarray) -> dict[str, np.ndarray]:
    return {**_good(), key: value}


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (_without("y_test"), "lacks array(s) y_test"),
        (_replace("x_train", np.zeros((12, 32, 32), np.uint8)), "x_train has shape"),
        (_replace("y_train", np.zeros(11, np.uint8)), "y_train has shape"),
        (_replace("y_test", np.full(6, 12, np.uint8)), "labels 0-9"),
        (_replace("x_test", np.zeros((6, 28, 28), np.float64)), "dtype float64"),
    ],
    ids=["missing-key", "wrong-shape", "label-count", "label-range", "dtype"],
)
def test_malformed_arrays_are_named(tmp_path: Path, arrays, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_mnist(_save(tmp_path / "bad.npz", **arrays))


def test_missing_file(tmp_path: Path):
    with pytest.raises(DataError, match="not found"):
        load_mnist(tmp_path / "nope.npz")


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04broken"])
def test_not_an_npz(tmp_path: Path, content: bytes):
    path = tmp_path / "junk.npz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"not a readable \.npz"):
        load_mnist(path)
