"""A digit with a mark around it, as people send one: written in a form's printed box,
underlined, or circled. Renderings for :data:`training.variants.VARIANTS`.

Each takes one (28, 28) uint8 MNIST digit (white on black) and a seed, and returns a JPEG of
dark ink on paper at 4-6 times MNIST's scale. The mark is placed from the digit's own ink
box, with gaps drawn so that some marks touch or cross the strokes, as they do on paper: a
digit that overflows its cell, an underline drawn against the digit, a circle drawn tight.
Pillow and numpy only.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["circled", "form_box", "underlined"]

_INK_BOX = 128  # an ink pixel of the enlarged digit, for its box


def _written(arr: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, tuple, float]:
    """The digit in dark ink in the middle of a sheet 1.8 times its size: the sheet (grey,
    float), the digit's ink box (x0, y0, x1, y1) and the pen's width."""
    scale = int(rng.integers(4, 7))
    size = 28 * scale
    side = int(size * 1.8)
    ink = np.asarray(Image.fromarray(arr).resize((size, size), Image.Resampling.BICUBIC))
    paper, pen = float(rng.uniform(215, 245)), float(rng.uniform(25, 60))
    grey = np.full((side, side), paper, np.float32)
    at = (side - size) // 2
    k = ink.astype(np.float32) / 255
    grey[at : at + size, at : at + size] = paper * (1 - k) + pen * k
    ys, xs = np.nonzero(ink >= _INK_BOX)
    box = (at + xs.min(), at + ys.min(), at + xs.max(), at + ys.max())
    return grey, box, 0.8 * scale  # MNIST's strokes are about 2-3 px at 28 px


def _drawn(grey: np.ndarray, mark: Image.Image, level: float) -> np.ndarray:
    """``grey`` with the mark (drawn white on black in ``mark``) put down at ``level``."""
    m = np.asarray(mark, np.float32) / 255
    return np.minimum(grey, grey * (1 - m) + level * m)


def _photographed(grey: np.ndarray, rng: np.random.Generator) -> bytes:
    noisy = grey + rng.normal(0, rng.uniform(3, 6), grey.shape).astype(np.float32)
    buf = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def form_box(arr: np.ndarray, seed: int = 0) -> bytes:
    """The digit in a form's printed cell: a thin grey box, each side 0.03 of the digit's
    height inside its ink (the strokes cross it) to 0.2 outside."""
    rng = np.random.default_rng(seed)
    grey, (x0, y0, x1, y1), _ = _written(arr, rng)
    tall = y1 - y0
    gaps = rng.uniform(-0.03, 0.2, 4) * tall
    mark = Image.new("L", grey.shape[::-1], 0)
    width = int(rng.integers(1, 4))
    corners = [x0 - gaps[0], y0 - gaps[1], x1 + gaps[2], y1 + gaps[3]]
    ImageDraw.Draw(mark).rectangle(corners, outline=255, width=width)
    return _photographed(_drawn(grey, mark, float(rng.uniform(80, 160))), rng)


def underlined(arr: np.ndarray, seed: int = 0) -> bytes:
    """A pen line under the digit: 0 to 0.3 of its height below its ink (0 touches it),
    reaching 0.1 of its width short of either end to 0.3 beyond, tilted by up to ±4 %."""
    rng = np.random.default_rng(seed)
    grey, (x0, y0, x1, y1), pen = _written(arr, rng)
    wide, tall = x1 - x0, y1 - y0
    y = y1 + rng.uniform(0, 0.3) * tall + pen / 2
    left, right = x0 - rng.uniform(-0.1, 0.3) * wide, x1 + rng.uniform(-0.1, 0.3) * wide
    tilt = rng.uniform(-0.04, 0.04) * (right - left)
    mark = Image.new("L", grey.shape[::-1], 0)
    ImageDraw.Draw(mark).line([(left, y), (right, y + tilt)], fill=255, width=round(pen))
    return _photographed(_drawn(grey, mark, float(grey.min())), rng)


def circled(arr: np.ndarray, seed: int = 0) -> bytes:
    """A pen ellipse round the digit: through its ink box's corners, made 0.85 to 1.2 times
    as large (under 1, it can cut across the strokes near the corners)."""
    rng = np.random.default_rng(seed)
    grey, (x0, y0, x1, y1), pen = _written(arr, rng)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    # Through the corners: each half-axis the half-side times sqrt(2).
    grow = rng.uniform(0.85, 1.2) * np.sqrt(2) / 2
    rx, ry = max(x1 - x0, 0.6 * (y1 - y0)) * grow, (y1 - y0) * grow
    mark = Image.new("L", grey.shape[::-1], 0)
    ImageDraw.Draw(mark).ellipse(
        [cx - rx, cy - ry, cx + rx, cy + ry], outline=255, width=round(pen)
    )
    return _photographed(_drawn(grey, mark, float(grey.min())), rng)
