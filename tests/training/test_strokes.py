"""Pen-width augmentation: drawn at page scale, normalised by the product's pre_process."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from pyfunc.preprocess import pre_process
from training import strokes
from training.augment import Augmentation, dataset
from training.strokes import _rank, repen

pytestmark = pytest.mark.integration  # TensorFlow, through training.augment


@pytest.fixture(scope="module")
def digits(mnist) -> np.ndarray:
    return mnist.x_train[:40]


@pytest.mark.parametrize("kernel", [3, 5, 7, 9])
@pytest.mark.parametrize("bolder", [True, False])
def test_rank_filter_equals_pillows(digits: np.ndarray, kernel: int, bolder: bool) -> None:
    pillow = ImageFilter.MaxFilter(kernel) if bolder else ImageFilter.MinFilter(kernel)
    for digit in digits[:10]:
        page = Image.fromarray(digit).resize((101, 117), Image.Resampling.BICUBIC)
        assert np.array_equal(_rank(np.asarray(page), kernel, bolder), page.filter(pillow))


def test_repen_is_normalised_like_an_upload(digits: np.ndarray) -> None:
    out = repen(digits, seed=3, workers=1)
    assert out.shape == (len(digits), 28, 28, 1) and out.dtype == np.float32
    assert np.array_equal(out, repen(digits, seed=3, workers=1))  # reproducible by seed
    # MNIST's 20 px box holds whatever the pen: the longer side of the ink is 20 px (21 with
    # anti-aliasing), where dilating the 28×28 digit itself would overflow it.
    for ink in out[..., 0] > 0.1:
        rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
        assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 in (20, 21)


def test_repen_changes_pens_both_ways(digits: np.ndarray) -> None:
    """Ink per digit (relative to the same digit as MNIST draws it) both grows and shrinks."""
    ratio = repen(digits, seed=0, workers=1).sum(axis=(1, 2, 3)) / pre_process(digits).sum(
        axis=(1, 2, 3)
    )
    assert (ratio > 1.3).sum() >= 10, ratio
    assert (ratio < 0.85).sum() >= 5, ratio


def test_repen_in_worker_processes_matches_serial(digits: np.ndarray) -> None:
    serial = repen(digits, seed=7, workers=1, chunk=16)
    assert np.array_equal(repen(digits, seed=7, workers=2, chunk=16), serial)


def test_dataset_draws_augmented_images_from_the_pen_copy(digits: np.ndarray) -> None:
    """With only the pen change switched on and every image augmented, each image is either
    its MNIST self or its pen copy, and most are the pen copy (three in four)."""
    x = pre_process(digits)
    pen = repen(digits, seed=1, workers=1)
    only_pen = Augmentation(rotation_deg=0, shift=0, scale=0, stroke=True, fraction=1.0)
    ds = dataset(x, np.arange(len(x)), batch_size=len(x), aug=only_pen, seed=0, x_pen=pen)
    images, index = next(iter(ds))
    images, index = images.numpy(), index.numpy()
    from_pen = [np.allclose(img, pen[i]) for img, i in zip(images, index, strict=True)]
    as_is = [np.allclose(img, x[i]) for img, i in zip(images, index, strict=True)]
    assert all(p or a for p, a in zip(from_pen, as_is, strict=True))
    assert sum(from_pen) >= len(x) // 2


def test_a_pen_the_pipeline_refuses_leaves_the_digit_as_it_was(digits, monkeypatch):
    """A page pre_process would refuse (here: the pen wiped out everything) must not stop
    training: that digit keeps its own pen."""
    monkeypatch.setattr(strokes, "_repen", lambda digit, rng: np.zeros((112, 112), np.uint8))
    out = repen(digits[:5], seed=0, workers=1)
    assert np.array_equal(out, pre_process(digits[:5]))
