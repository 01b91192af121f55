"""Two models on the same images: how far apart are their accuracies, and how sure is that?

Each image gives a pair of binary outcomes (candidate right?, champion right?). Only the
discordant pairs carry information about the difference: ``b`` images the candidate alone
gets right, ``c`` images the champion alone gets right, of ``n``. The difference in accuracy
is ``(b - c) / n``; its interval is Tango's score interval for paired proportions (Tango
1998, Statistics in Medicine 17:891-908), which stays sound when ``b`` or ``c`` is small or
zero, unlike the Wald interval; at a difference of 0 its statistic is McNemar's.

The gate's rule (``non_inferior``): refuse only when the candidate is worse than the
champion by more than ``margin`` with confidence ``1 - alpha``, i.e. when the one-sided
``1 - alpha`` upper bound of the difference is below ``-margin``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest, norm

ALPHA = 0.05
# Bisection on the difference (a share in [-1, 1]) to well below a millionth of a point.
_ITERATIONS = 60
_EDGE = 1e-12


@dataclass(frozen=True)
class Paired:
    """The counts of a paired comparison and what follows from them."""

    n: int
    b: int  # the candidate alone right
    c: int  # the champion alone right
    both: int  # both right
    alpha: float = ALPHA

    @classmethod
    def of(cls, candidate: np.ndarray, champion: np.ndarray, alpha: float = ALPHA) -> Paired:
        """Counts from per-image outcomes (booleans, the same images in the same order)."""
        cand = np.asarray(candidate, dtype=bool)
        champ = np.asarray(champion, dtype=bool)
        if cand.shape != champ.shape or cand.ndim != 1:
            raise ValueError(f"outcomes must be paired 1-d arrays, got {cand.shape} {champ.shape}")
        return cls(
            n=len(cand),
            b=int(np.sum(cand & ~champ)),
            c=int(np.sum(~cand & champ)),
            both=int(np.sum(cand & champ)),
            alpha=alpha,
        )

    @property
    def candidate_accuracy(self) -> float:
        return (self.both + self.b) / self.n if self.n else math.nan

    @property
    def champion_accuracy(self) -> float:
        return (self.both + self.c) / self.n if self.n else math.nan

    @property
    def difference(self) -> float:
        """Candidate minus champion accuracy (a share, not points)."""
        return (self.b - self.c) / self.n if self.n else math.nan

    @property
    def interval(self) -> tuple[float, float]:
        """One-sided ``1 - alpha`` lower and upper bounds of the difference (together a
        ``1 - 2 alpha`` two-sided interval)."""
        z = float(norm.ppf(1 - self.alpha))
        return self._bound(z), self._bound(-z)

    def p_worse_than(self, margin: float) -> float:
        """One-sided p-value of "the candidate is worse by more than ``margin``" (small:
        strong evidence it is)."""
        return float(norm.cdf(tango_z(self.n, self.b, self.c, -margin)))

    @property
    def mcnemar_p(self) -> float:
        """Exact McNemar test (two-sided, binomial on the discordant pairs) of "no
        difference at all": shown for reading, the gate decides on the interval."""
        m = self.b + self.c
        return float(binomtest(self.b, m, 0.5).pvalue) if m else 1.0

    def non_inferior(self, margin: float) -> bool:
        """The gate's rule: True unless the upper bound is below ``-margin``."""
        return self.interval[1] >= -margin

    def _bound(self, z: float) -> float:
        """The difference d at which ``tango_z(d) == z`` (the statistic falls as d rises)."""
        lo, hi = -1 + _EDGE, 1 - _EDGE
        if self.n == 0:
            return math.nan
        if tango_z(self.n, self.b, self.c, lo) <= z:
            return lo
        if tango_z(self.n, self.b, self.c, hi) >= z:
            return hi
        for _ in range(_ITERATIONS):
            mid = (lo + hi) / 2
            if tango_z(self.n, self.b, self.c, mid) > z:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2


def restricted_q_c(n: int, b: int, c: int, delta: float) -> float:
    """Maximum-likelihood share of champion-alone pairs under ``q_b - q_c = delta`` (the
    positive root of ``2n q^2 + B q + C = 0``, Tango 1998)."""
    big_b = -(b + c) + (2 * n - b + c) * delta
    big_c = -c * delta * (1 - delta)
    root = (-big_b + math.sqrt(max(big_b * big_b - 8 * n * big_c, 0.0))) / (4 * n)
    return max(root, 0.0)


def tango_z(n: int, b: int, c: int, delta: float) -> float:
    """Tango's score statistic for the hypothesis "the difference is ``delta``"."""
    q_c = restricted_q_c(n, b, c, delta)
    variance = n * (2 * q_c + delta * (1 - delta))
    if variance <= 0:  # delta = 0 and no discordant pair: nothing against it
        return 0.0
    return (b - c - n * delta) / math.sqrt(variance)
