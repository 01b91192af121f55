"""The renderings of a digit with a mark round it: what they send, that a seed fixes them,
and that the mark is where each says it is."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from training import marked
from training.variants import VARIANTS

BUILDERS = {"form_box": marked.form_box, "underlined": marked.underlined, "circled": marked.circled}


def _digit() -> np.ndarray:
    """A plain "7": a bar along the top of the 20 px box and a slanted stem."""
    arr = np.zeros((28, 28), np.uint8)
    arr[4:8, 6:22] = 255
    for row in range(8, 24):
        col = 21 - (row - 8) // 2
        arr[row, col - 2 : col + 2] = 255
    return arr


def _ink_box(side: int) -> tuple[int, int, int, int]:
    """Where the "7" lands on a sheet of ``side`` px (1.8 times the digit's 28·scale): the
    rows and columns of its ink, (y0, y1, x0, x1)."""
    scale = round(side / 28 / 1.8)
    at = (side - 28 * scale) // 2
    return at + 4 * scale, at + 24 * scale, at + 6 * scale, at + 22 * scale


def _grey(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    assert img.format == "JPEG"
    return np.asarray(img.convert("L"), dtype=np.float32)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_each_is_a_variant_and_a_seed_fixes_its_bytes(name: str) -> None:
    build = BUILDERS[name]
    assert VARIANTS[name] is build
    assert build(_digit(), 7) == build(_digit(), 7)
    assert len({build(_digit(), seed) for seed in range(4)}) == 4


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_the_digit_is_in_the_middle_and_a_mark_beside_it(name: str) -> None:
    """Dark ink inside the digit's box, and dark ink (the mark) outside it, where there is
    nothing but paper without a mark."""
    for seed in range(6):
        grey = _grey(BUILDERS[name](_digit(), seed))
        h, w = grey.shape
        assert h == w and h >= 28 * 4 * 1.8 - 1
        paper = np.median(grey[:10, :10])
        y0, y1, x0, x1 = _ink_box(h)
        dark = grey < paper - 50
        assert dark[y0:y1, x0:x1].mean() > 0.1
        dark[y0 - 3 : y1 + 3, x0 - 3 : x1 + 3] = False
        assert dark.sum() > h // 4, (name, seed)


def test_the_underline_is_under_the_digit() -> None:
    for seed in range(6):
        grey = _grey(marked.underlined(_digit(), seed))
        paper = np.median(grey[:10, :10])
        y0, y1, _, _ = _ink_box(grey.shape[0])
        dark = grey < paper - 50
        dark[y0 - 3 : y1 + 3] = False
        rows = np.flatnonzero(dark.any(axis=1))
        assert len(rows) and rows.min() >= y1 and rows.max() < y1 + 0.4 * (y1 - y0) + 20
