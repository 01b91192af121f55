"""pyfunc.paper's cheaper forms of a step give the answers of the forms they replaced."""

from __future__ import annotations

import numpy as np

from pyfunc import paper


def _otsu_by_histogram(values: np.ndarray, bins: int = 64) -> float:
    """The threshold as it was worked out before, through np.histogram."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    p = hist.astype(np.float64) / max(1, hist.sum())
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)
    mu = np.cumsum(p * centres)
    total = mu[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total * w0 - mu) ** 2 / (w0 * (1 - w0))
    between[~np.isfinite(between)] = -1
    return float(edges[int(np.argmax(between)) + 1])


def test_otsu_by_bincount_is_otsu_by_histogram() -> None:
    """Random greys, greys on the bin edges exactly (k/64, 1.0) and greys outside [0, 1]."""
    rng = np.random.default_rng(0)
    for i in range(300):
        a = rng.random((80, 107), dtype=np.float32)
        if i % 3 == 0:
            a = (np.round(a * 64) / 64).astype(np.float32)
        if i % 5 == 0:
            a = np.clip(a * 1.2 - 0.1, -0.05, 1.05).astype(np.float32)
        if i % 7 == 0:  # two-peaked, as paper and desk
            a = np.where(a > 0.5, 0.8, 0.3).astype(np.float32) + a * np.float32(0.05)
        assert paper._otsu(a) == _otsu_by_histogram(a), i
