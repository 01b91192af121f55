"""pyfunc.paper.ink_once: a request's single-digit check and the model's normalisation work
out the ink map of one photo once between them, and nothing else changes: the same
28×28, a map taken once only, never a map of other pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pyfunc import paper, segment
from pyfunc.preprocess import DEFAULT_LIMITS, decode_images, pre_process


def _photo(seed: int = 0, x: int = 250) -> bytes:
    """A 640×480 JPEG of a dark "7" on unevenly lit, noisy paper (the bench's photo kind)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:480, 0:640]
    paper_grey = 200 + 30 * xx / 640 - 20 * yy / 480 + rng.normal(0, 4, (480, 640))
    img = Image.fromarray(np.clip(paper_grey, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    draw.line([(x, 150), (x + 120, 150), (x + 50, 330)], fill=40, width=14)
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=85)
    return buf.getvalue()


class _Counted:
    """The real ink map, counting how often it is worked out."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, grey: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
        from pyfunc.preprocess import _ink_from

        self.calls += 1
        return _ink_from(grey, alpha)


@pytest.fixture(autouse=True)
def _empty() -> None:
    # Entries another test left (a check without its normalisation) must not be taken here.
    paper._shared = paper._SharedInk()


def _grey(data: bytes) -> np.ndarray:
    return decode_images([data], DEFAULT_LIMITS)[0].grey


def test_the_check_then_the_model_give_the_same_28x28_as_the_model_alone() -> None:
    """As serving/views.py does it: the check on the decoded pixels, then the model's
    pre-processing of them. The second look takes the first's map: bit for bit the same
    input as without the check, and no entry is left behind."""
    data = _photo()
    alone = pre_process([_grey(data)])
    assert not paper._shared._entries
    decoded = _grey(data)
    segment.require_single(decoded, DEFAULT_LIMITS)
    assert len(paper._shared._entries) == 1
    after_check = pre_process([decoded])
    assert np.array_equal(after_check, alone)
    assert not paper._shared._entries


def test_a_map_is_worked_out_once_for_two_looks_and_taken_once_only() -> None:
    grey = _grey(_photo())
    compute = _Counted()
    first = paper.ink_once(grey, None, compute, keep=True)
    second = paper.ink_once(grey, None, compute, keep=False)
    assert compute.calls == 1
    assert np.array_equal(first, second)
    # The same picture once more (a benchmark sends one photo again and again): worked out
    # again, not served from what an earlier request left.
    third = paper.ink_once(grey, None, compute, keep=False)
    assert compute.calls == 2
    assert np.array_equal(third, first)


def test_the_kept_map_is_the_checks_result_even_if_the_check_changes_its_own() -> None:
    grey = _grey(_photo())
    compute = _Counted()
    first = paper.ink_once(grey, None, compute, keep=True)
    expected = first.copy()
    first[:] = 0  # the check's caller owns its array
    grey_copy = grey.copy()
    assert np.array_equal(paper.ink_once(grey_copy, None, compute, keep=False), expected)


def test_other_pixels_with_the_same_sums_are_worked_out_afresh() -> None:
    """The key (shape and sums) only narrows the search: a match is checked on the pixels,
    so a picture with the same sum (here the same pixels mirrored) never gets another's map."""
    grey = _grey(_photo(x=150))
    mirrored = np.ascontiguousarray(grey[:, ::-1])
    assert paper._key(grey, None) == paper._key(mirrored, None)
    compute = _Counted()
    kept = paper.ink_once(grey, None, compute, keep=True)
    got = paper.ink_once(mirrored, None, compute, keep=False)
    assert compute.calls == 2
    assert not np.array_equal(got, kept)
    # An alpha channel is part of the pixels too.
    alpha = np.ones_like(grey)
    paper.ink_once(grey, alpha, compute, keep=False)
    assert compute.calls == 3


def test_maps_nobody_takes_are_dropped_oldest_first() -> None:
    compute = _Counted()
    greys = [np.full((70, 90), i / 100, dtype=np.float32) for i in range(paper._SHARED_ENTRIES + 3)]
    for g in greys:
        paper.ink_once(g, None, lambda g, a: np.zeros_like(g), keep=True)
    assert len(paper._shared._entries) == paper._SHARED_ENTRIES
    paper.ink_once(greys[0], None, compute, keep=False)  # dropped: worked out again
    assert compute.calls == 1
    paper.ink_once(greys[-1], None, compute, keep=False)  # still kept
    assert compute.calls == 1


def test_the_kept_maps_stay_within_their_byte_budget() -> None:
    side = 512  # the largest work size: 1 MiB of float32 each, grey and map
    for i in range(20):
        grey = np.full((side, side), i / 100, dtype=np.float32)
        paper.ink_once(grey, None, lambda g, a: np.zeros_like(g), keep=True)
    held = sum(x.nbytes for entry in paper._shared._entries for x in entry[1:] if x is not None)
    assert held == paper._shared._bytes <= paper._SHARED_BYTES
    assert len(paper._shared._entries) < 20


def test_without_a_check_no_key_is_worked_out() -> None:
    """Offline batches (training, reports) only normalise: nothing is kept, nothing looked up."""
    grey = _grey(_photo())
    calls = []
    real_key = paper._key
    try:
        paper._key = lambda g, a: calls.append(1) or real_key(g, a)  # type: ignore[assignment]
        paper.ink_once(grey, None, _Counted(), keep=False)
    finally:
        paper._key = real_key  # type: ignore[assignment]
    assert not calls


def test_small_pictures_are_not_kept() -> None:
    """A 28×28 digit's check leaves nothing behind: its normalisation takes the MNIST fast
    path and would never take it, so keeping it would only churn the kept maps."""
    compute = _Counted()
    small = np.zeros((28, 28), dtype=np.float32)
    small[8:20, 12:16] = 1
    paper.ink_once(small, None, compute, keep=True)
    assert not paper._shared._entries
    paper.ink_once(small, None, compute, keep=False)
    assert compute.calls == 2
