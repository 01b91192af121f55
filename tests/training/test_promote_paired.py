"""The promotion gate's statistics on constructed paired outcomes (training.paired)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from training.paired import Paired, restricted_q_c, tango_z

MARGIN = 0.001  # the gate's default: 0.1 point
N = 22_000  # about the gate's evidence: MNIST test, validation and 12 x 500 variant images


def _outcomes(n: int, both_wrong: int, b: int, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidate and champion outcomes with ``b`` candidate-alone and ``c`` champion-alone
    right answers, ``both_wrong`` images both miss, the rest both right."""
    cand = np.ones(n, bool)
    champ = np.ones(n, bool)
    cand[:both_wrong] = champ[:both_wrong] = False
    champ[both_wrong : both_wrong + b] = False
    cand[both_wrong + b : both_wrong + b + c] = False
    return cand, champ


def test_the_counts_are_the_discordant_pairs() -> None:
    paired = Paired.of(*_outcomes(100, both_wrong=5, b=7, c=3))
    assert (paired.n, paired.b, paired.c, paired.both) == (100, 7, 3, 85)
    assert paired.candidate_accuracy == pytest.approx(0.92)
    assert paired.champion_accuracy == pytest.approx(0.88)
    assert paired.difference == pytest.approx(0.04)


def test_a_candidate_ahead_on_all_digits_is_promoted() -> None:
    # The old gate's failure: ahead everywhere, yet refused on a 500-digit sample.
    paired = Paired.of(*_outcomes(N, both_wrong=100, b=40, c=0))
    lower, upper = paired.interval
    assert 0 < lower < paired.difference < upper
    assert paired.non_inferior(MARGIN)


def test_a_candidate_clearly_behind_is_refused() -> None:
    paired = Paired.of(*_outcomes(N, both_wrong=100, b=10, c=120))  # 0.5 point behind
    assert paired.interval[1] < -MARGIN
    assert not paired.non_inferior(MARGIN)
    assert paired.p_worse_than(MARGIN) < paired.alpha


def test_equal_within_noise_is_promoted() -> None:
    paired = Paired.of(*_outcomes(N, both_wrong=100, b=30, c=40))
    lower, upper = paired.interval
    assert lower < 0 < upper
    assert paired.non_inferior(MARGIN)
    assert paired.mcnemar_p > 0.2


def test_behind_by_less_than_the_margin_is_promoted_and_by_more_is_not() -> None:
    # Behind by 0.05 point (11 images of 22,000) with few discordant pairs: within the margin.
    assert Paired.of(*_outcomes(N, both_wrong=50, b=2, c=13)).non_inferior(MARGIN)
    # Behind by 0.3 point with the same kind of evidence: refused.
    assert not Paired.of(*_outcomes(N, both_wrong=50, b=5, c=71)).non_inferior(MARGIN)


def test_no_discordant_pair_gives_a_narrow_interval_around_zero() -> None:
    paired = Paired.of(*_outcomes(N, both_wrong=100, b=0, c=0))
    lower, upper = paired.interval
    assert lower < 0 < upper < MARGIN
    assert paired.non_inferior(MARGIN)
    assert paired.mcnemar_p == 1.0


def test_at_no_difference_the_statistic_is_mcnemars() -> None:
    b, c = 37, 12
    assert tango_z(1000, b, c, 0.0) == pytest.approx((b - c) / math.sqrt(b + c))


@pytest.mark.parametrize(("b", "c", "delta"), [(30, 10, 0.01), (3, 25, -0.004), (0, 0, 0.002)])
def test_the_restricted_estimate_maximises_the_likelihood(b: int, c: int, delta: float) -> None:
    n = 1000
    rest = n - b - c

    def minus_loglik(q_c: float) -> float:
        q_b = q_c + delta
        terms = [(b, q_b), (c, q_c), (rest, 1 - q_b - q_c)]
        return -sum(k * math.log(q) for k, q in terms if k)

    low = max(0.0, -delta) + 1e-12
    high = (1 - delta) / 2 - 1e-12
    best = minimize_scalar(minus_loglik, bounds=(low, high), method="bounded").x
    assert restricted_q_c(n, b, c, delta) == pytest.approx(best, abs=1e-5)


def test_the_upper_bound_covers_the_true_difference_about_as_often_as_it_says() -> None:
    # 2,000 draws of 2,000 pairs from known cell shares: the one-sided 95 % upper bound is
    # above the true difference in about 95 % of them.
    rng = np.random.default_rng(19)
    shares = np.array([0.004, 0.008, 0.95, 0.038])  # b, c, both right, both wrong
    truth = shares[0] - shares[1]
    draws = rng.multinomial(2000, shares, size=2000)
    covered = [Paired(2000, int(b), int(c), int(r)).interval[1] >= truth for b, c, r, _ in draws]
    assert 0.93 <= np.mean(covered) <= 0.975


def test_outcomes_of_different_images_are_refused() -> None:
    with pytest.raises(ValueError, match="paired"):
        Paired.of(np.ones(3, bool), np.ones(4, bool))
