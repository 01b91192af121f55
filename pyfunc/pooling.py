"""Block pooling of 2-D maps: the small copies pre-processing finds pieces of ink on.

Shared by :mod:`pyfunc.preprocess` and :mod:`pyfunc.marks` (which preprocess imports, so
neither can take it from the other).
"""

from __future__ import annotations

import numpy as np


def pool_any(mask: np.ndarray, f: int) -> np.ndarray:
    """Whether each f×f block of ``mask`` has a set pixel (edge blocks padded with False);
    ``mask`` itself when f is 1. Strided slices OR-ed together: ~6× faster than ``any``
    over a 4-D reshape."""
    if f == 1:
        return mask
    h, w = mask.shape
    padded = np.zeros((-(-h // f) * f, -(-w // f) * f), dtype=bool)
    padded[:h, :w] = mask
    cols = np.logical_or.reduce([padded[:, j::f] for j in range(f)])
    return np.asarray(np.logical_or.reduce([cols[i::f] for i in range(f)]))


def pool_max(ink: np.ndarray, f: int) -> np.ndarray:
    """The brightest value of each f×f block (edge blocks padded with 0); ``ink`` itself
    when f is 1."""
    if f == 1:
        return ink
    h, w = ink.shape
    padded = np.zeros((-(-h // f) * f, -(-w // f) * f), dtype=ink.dtype)
    padded[:h, :w] = ink
    return padded.reshape(padded.shape[0] // f, f, padded.shape[1] // f, f).max(axis=(1, 3))
