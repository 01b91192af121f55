"""training.copies: the prepared copies are drawn once per digits, seed and source."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from training import copies, strokes


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "cache"
    monkeypatch.setenv(copies.CACHE_ENV, str(where))
    return where


def _counting(calls: list[int]):
    def make(x: np.ndarray, seed: int) -> np.ndarray:
        calls.append(seed)
        return strokes.repen(x, seed, workers=1)

    return make


def _digits(n: int = 6) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = np.zeros((n, 28, 28), np.uint8)
    x[:, 8:20, 12:16] = rng.integers(150, 255, size=(n, 12, 4), dtype=np.uint8)
    return x


def test_a_second_identical_call_reads_the_first_ones_file(cache: Path) -> None:
    calls: list[int] = []
    x = _digits()
    first = copies.cached("pens", x, 3, strokes.__file__, _counting(calls))
    again = copies.cached("pens", x, 3, strokes.__file__, _counting(calls))
    assert calls == [3]
    assert np.array_equal(first, again)
    assert np.array_equal(first, strokes.repen(x, 3, workers=1))
    assert [p.suffix for p in cache.iterdir()] == [".npy"]  # no temporary file left behind


def test_other_digits_seed_or_source_are_drawn_anew(cache: Path, tmp_path: Path) -> None:
    calls: list[int] = []
    x = _digits()
    copies.cached("pens", x, 3, strokes.__file__, _counting(calls))
    copies.cached("pens", x, 4, strokes.__file__, _counting(calls))
    other = x.copy()
    other[0, 0, 0] = 1
    copies.cached("pens", other, 3, strokes.__file__, _counting(calls))
    edited = tmp_path / "strokes.py"
    edited.write_text(Path(strokes.__file__).read_text() + "\n# an edit\n")
    copies.cached("pens", x, 3, str(edited), _counting(calls))
    assert calls == [3, 4, 3, 3]
    assert len(list(cache.iterdir())) == 4


def test_a_damaged_file_is_drawn_again_and_replaced(cache: Path) -> None:
    calls: list[int] = []
    x = _digits()
    good = copies.cached("pens", x, 5, strokes.__file__, _counting(calls))
    (path,) = cache.iterdir()
    path.write_bytes(b"not an npy file")
    again = copies.cached("pens", x, 5, strokes.__file__, _counting(calls))
    assert calls == [5, 5]
    assert np.array_equal(again, good)
    assert np.array_equal(np.load(path), good)


def test_an_empty_setting_switches_the_cache_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(copies.CACHE_ENV, "")
    monkeypatch.chdir(tmp_path)
    calls: list[int] = []
    x = _digits()
    copies.cached("pens", x, 1, strokes.__file__, _counting(calls))
    copies.cached("pens", x, 1, strokes.__file__, _counting(calls))
    assert calls == [1, 1]
    assert copies.cache_dir() is None


def test_is_cached_says_whether_the_copies_would_be_read(cache: Path) -> None:
    x = _digits()
    assert not copies.is_cached("pens", x, 2, strokes.__file__)
    copies.cached("pens", x, 2, strokes.__file__, _counting([]))
    assert copies.is_cached("pens", x, 2, strokes.__file__)
    assert not copies.is_cached("pens", x, 9, strokes.__file__)


def test_the_estimate_scales_a_timed_sample_to_all_digits_on_every_core(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[int] = []

    def make(x: np.ndarray, seed: int, workers: int | None = None) -> np.ndarray:
        assert workers == 1  # timed in this process, not in a pool
        seen.append(len(x))
        time.sleep(0.01 * len(x))
        return x

    monkeypatch.setattr(copies.os, "cpu_count", lambda: 2)
    seconds = copies.estimate_seconds(np.zeros((1000, 28, 28), np.uint8), 0, make, sample=8)
    assert seen == [1, 8]  # one digit to warm up, then the timed sample
    assert 0.01 * 1000 / 2 <= seconds < 0.02 * 1000 / 2


def test_preparation_says_how_long_then_that_it_reads_the_cache(
    cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.families.keras import announce_preparation, with_photos

    x = _digits(4)
    announce_preparation(x, True, 0.5, 11)
    first = capsys.readouterr().out
    assert "preparing 4 training digits" in first
    assert "on this machine (timed on a few digits)" in first and str(cache) in first
    copies.cached("pens", x, 11, strokes.__file__, strokes.repen)
    with_photos(x, np.zeros((4, 28, 28, 1), np.float32), 0.5, 11)
    announce_preparation(x, True, 0.5, 11)
    assert f"from the cache ({cache})" in capsys.readouterr().out
