"""training.rejection: the policy's trade-off table (rejector threshold × low-confidence
flag against non-digits caught and digits refused or flagged)."""

from __future__ import annotations

import numpy as np

from pyfunc.reject import Rejector
from training.rejection import (
    Scored,
    answered,
    digit_table,
    load_sets,
    other_rejector,
    rescored,
    right_and_confidently_wrong,
    save_sets,
    tradeoff,
)


def _scored(name: str, scores: np.ndarray, confidence: np.ndarray, labels: list[str]) -> Scored:
    n = len(scores)
    probs = np.full((n, 10), 0.0, dtype=np.float32)
    probs[:, 0] = confidence
    probs[:, 1:] = ((1 - confidence) / 9)[:, None]
    return Scored(
        name,
        np.zeros(n, dtype=bool),
        np.zeros((n, 28, 28, 1), np.float32),
        probs,
        scores.astype(np.float64),
        np.asarray(labels),
    )


def _sets() -> tuple[list[Scored], Scored]:
    rng = np.random.default_rng(0)
    digits = [
        _scored("a", rng.uniform(0, 0.5, 1000), rng.uniform(0.6, 0.95, 1000), ["1"] * 1000),
        _scored("b", rng.uniform(0, 0.9, 1000), rng.uniform(0.2, 0.95, 1000), ["2"] * 1000),
    ]
    # Non-digits: half score high; the lookalike "O" scores like a digit.
    others = _scored(
        "non-digits",
        np.r_[rng.uniform(0.5, 1.0, 200), rng.uniform(0, 0.5, 200)],
        rng.uniform(0.3, 0.95, 400),
        ["printed:A"] * 300 + ["printed:O"] * 100,
    )
    return digits, others


def _rates(row: str) -> tuple[float, float, float]:
    cells = [c.strip() for c in row.strip("|").split("|")]
    return float(cells[0].split()[0]), float(cells[2].split()[0]), float(cells[4].split()[0])


def test_a_higher_threshold_catches_fewer_and_costs_fewer_digits() -> None:
    digits, others = _sets()
    rows = tradeoff(digits, others, [0.0], own=0.7)
    rates = [_rates(r) for r in rows]
    thresholds = [t for t, _, _ in rates]
    assert thresholds == sorted(thresholds) and len(thresholds) >= 3
    caught = [c for _, c, _ in rates]
    refused = [d for _, _, d in rates]
    assert caught == sorted(caught, reverse=True)
    assert refused == sorted(refused, reverse=True)
    assert sum("(own)" in r for r in rows) == 1


def test_a_flag_only_adds_to_what_is_caught_and_to_the_digits_cost() -> None:
    digits, others = _sets()
    rows = tradeoff(digits, others, [0.0, 0.5], own=0.7)
    for without, with_flag in zip(rows[::2], rows[1::2], strict=True):
        assert _rates(with_flag)[1] >= _rates(without)[1]
        assert _rates(with_flag)[2] >= _rates(without)[2]
    # The worst set is the one with low scores' spread and low confidence: "b".
    assert rows[-1].rstrip(" |").endswith("(b)")


def test_without_a_rejector_there_is_no_table() -> None:
    digits, others = _sets()
    for s in [*digits, others]:
        s.scores[:] = np.nan
    assert tradeoff(digits, others, [0.5], own=np.inf) == []


def test_sets_scored_again_take_the_other_rejectors_scores_and_keep_refusals() -> None:
    rng = np.random.default_rng(1)
    convs = (
        (rng.normal(0, 0.3, (3, 3, 1, 2)).astype(np.float32), np.zeros(2, np.float32)),
        (rng.normal(0, 0.3, (3, 3, 2, 2)).astype(np.float32), np.zeros(2, np.float32)),
    )
    dense = (
        (rng.normal(0, 0.3, (5 * 5 * 2 + 10, 4)).astype(np.float32), np.zeros(4, np.float32)),
        (rng.normal(0, 0.3, (4, 1)).astype(np.float32), np.zeros(1, np.float32)),
    )
    other = Rejector(convs, dense, 0.5)
    digits, _ = _sets()
    s = digits[0]
    s.batch[:] = rng.uniform(0, 1, s.batch.shape)
    s.refused[:3] = True
    again = rescored([s], other)[0]
    assert np.isnan(again.scores[:3]).all()
    expected = other.scores(s.batch[3:], s.probs[3:])
    np.testing.assert_allclose(again.scores[3:], expected, rtol=1e-6)
    assert not np.allclose(again.scores[3:], s.scores[3:])  # not the old scores
    assert again.probs is s.probs and again.labels is s.labels


def test_another_rejector_is_read_from_its_file(tmp_path) -> None:
    rng = np.random.default_rng(2)
    convs = (
        (rng.normal(0, 0.3, (3, 3, 1, 2)).astype(np.float32), np.zeros(2, np.float32)),
        (rng.normal(0, 0.3, (3, 3, 2, 2)).astype(np.float32), np.zeros(2, np.float32)),
    )
    dense = ((rng.normal(0, 0.3, (5 * 5 * 2 + 10, 1)).astype(np.float32), np.zeros(1, np.float32)),)
    path = Rejector(convs, dense, 0.25).save(tmp_path / "r.npz")
    loaded = other_rejector(str(path))
    assert loaded.threshold == 0.25
    np.testing.assert_array_equal(loaded.dense[0][0], dense[0][0])


class _Fixed:
    """A model whose answer is one digit for every image, with the given confidence."""

    def __init__(self, digit: int, confidence: float) -> None:
        self.digit, self.confidence = digit, confidence

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        probs = np.full((len(batch), 10), (1 - self.confidence) / 9)
        probs[:, self.digit] = self.confidence
        return probs


def test_a_cache_read_with_another_model_is_answered_by_that_model(tmp_path) -> None:
    # The cache keeps the pre-processed images *and* one model's answers: read back for
    # another model, those answers must not pass for the new model's.
    digits, others = _sets()
    glyphs = digits[1].subset(np.arange(len(digits[1])) < 5, "glyphs")
    digits[0].refused[:4] = True
    path = str(tmp_path / "sets.npz")
    save_sets(path, [*digits, others, glyphs], "uuid-a")
    back, back_others, back_glyphs, answered_by = load_sets(path)
    assert answered_by == "uuid-a"
    np.testing.assert_array_equal(back[0].probs, digits[0].probs)

    again = answered([*back, back_others, back_glyphs], _Fixed(7, 0.9))  # type: ignore[arg-type]
    first = again[0]
    assert (first.probs[4:].argmax(axis=1) == 7).all()
    np.testing.assert_allclose(first.probs[:4], 0.1)  # refused stays refused, uniform
    assert first.refused[:4].all() and np.isnan(first.scores).all()  # no rejector: no scores
    np.testing.assert_array_equal(first.batch, digits[0].batch)  # the very same images
    assert len(again) == 4 and again[-1].name == "glyphs"


def test_a_cache_written_before_the_model_id_was_kept_reads_as_nobodys(tmp_path) -> None:
    digits, others = _sets()
    path = tmp_path / "old.npz"
    save_sets(str(path), [*digits, others, others])
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k != "model"}
    np.savez_compressed(path, **arrays)
    assert load_sets(str(path))[-1] == ""


def test_right_counts_a_refusal_as_a_miss_and_confidently_wrong_leaves_out_the_flagged() -> None:
    probs = np.full((5, 10), 0.01)
    probs[[0, 1, 2, 3, 4], [3, 3, 5, 5, 3]] = [0.91, 0.91, 0.91, 0.40, 0.91]
    s = Scored(
        "d",
        np.array([False, False, False, False, True]),  # the last: no ink found
        np.zeros((5, 28, 28, 1), np.float32),
        probs,
        np.array([0.1, 0.9, 0.1, 0.1, np.nan]),  # the second: refused by the rejector
        np.array([3, 3, 3, 3, 3]),
    )
    right, misled = right_and_confidently_wrong(s, low_confidence=0.5, threshold=0.5)
    assert right.tolist() == [True, False, False, False, False]
    # Wrong and sure: only the third; the fourth is wrong but flagged, the last refused.
    assert misled.tolist() == [False, False, True, False, False]
    row = digit_table([s], 0.5, 0.5)[2]
    assert row.startswith("| d | 5 | 20.00 % | 20.00 % | 20.00 % | 20.00 % | 20.00 % |")
