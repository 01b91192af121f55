"""The phone-photo renderings: what they send, that a seed fixes them, that the digit is in them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from training import photos
from training.variants import VARIANTS

BUILDERS = {
    "desk_photo": photos.desk_photo,
    "ruled_paper": photos.ruled_paper,
    "squared_paper": photos.squared_paper,
    "shadow": photos.shadow,
}


def _digit() -> np.ndarray:
    """A plain upright "1": a bar down the middle of the 20 px box."""
    arr = np.zeros((28, 28), np.uint8)
    arr[4:24, 12:16] = 255
    return arr


def _open(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_each_is_a_colour_jpeg_of_a_phone_photo_size(name: str) -> None:
    img = _open(BUILDERS[name](_digit(), 3))
    assert img.format == "JPEG" and img.mode == "RGB"
    assert min(img.size) >= 160 and max(img.size) <= 640


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_a_seed_gives_the_same_bytes_and_seeds_differ(name: str) -> None:
    build = BUILDERS[name]
    assert build(_digit(), 7) == build(_digit(), 7)
    assert len({build(_digit(), seed) for seed in range(4)}) == 4


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_the_digit_is_drawn(name: str) -> None:
    """Without the digit the picture is the same scene with less dark ink in it."""
    build = BUILDERS[name]
    with_digit = np.asarray(_open(build(_digit(), 5)).convert("L"), np.float32)
    blank = np.asarray(_open(build(np.zeros((28, 28), np.uint8), 5)).convert("L"), np.float32)
    assert with_digit.shape == blank.shape
    darker = blank - with_digit > 60  # pen ink over paper, not JPEG noise
    assert darker.sum() >= 30, f"{name}: {darker.sum()} px of ink"


def test_they_are_in_the_evaluated_variants() -> None:
    for name, build in BUILDERS.items():
        assert VARIANTS[name] is build


def test_a_wrong_digit_array_is_refused() -> None:
    with pytest.raises(ValueError, match="28, 28"):
        photos.ruled_paper(np.zeros((27, 28), np.uint8))


def test_training_copies_are_seeded_normalised_and_still_the_digit() -> None:
    """Photo copies of training digits: a seed fixes them, they are 28×28 ink maps as
    pre_process makes them, and each is still the digit (close to its clean form) without
    being the clean form itself."""
    from pyfunc.preprocess import pre_process

    digits = np.stack([_digit(), np.rot90(_digit()).copy()])
    copies = photos.preprocessed(digits, seed=4, workers=1)
    assert copies.shape == (2, 28, 28, 1) and copies.dtype == np.float32
    assert np.array_equal(copies, photos.preprocessed(digits, seed=4, workers=1))
    assert not np.array_equal(copies, photos.preprocessed(digits, seed=5, workers=1))
    clean = pre_process(digits)
    for copy, plain in zip(copies, clean, strict=True):
        assert copy.min() >= 0.0 and copy.max() <= 1.0
        assert not np.array_equal(copy, plain)
        assert np.corrcoef(copy.ravel(), plain.ravel())[0, 1] > 0.5
