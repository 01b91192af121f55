"""The fitting-only non-digits (nondigits.build_varied): more kinds of drawn letters and
scribbles, reproducible, sent as uploads, and kept out of the measured set."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from pyfunc.errors import ImageError
from pyfunc.preprocess import decode_images, normalise_decoded
from training import nondigits
from training.rejector import _render


@pytest.fixture(scope="module")
def varied() -> dict[str, list[nondigits.Sample]]:
    return {
        "drawn": nondigits.build_varied("drawn", 2 * len(nondigits.DRAWN_KINDS)),
        "scribble": nondigits.build_varied("scribble", 2 * len(nondigits.SCRIBBLE_KINDS)),
    }


def test_the_same_seed_gives_the_same_bytes_and_another_seed_others(varied):
    for category, samples in varied.items():
        again = nondigits.build_varied(category, len(samples))
        assert [s.data for s in again] == [s.data for s in samples]
        other = nondigits.build_varied(category, len(samples), seed=1)
        assert not {s.data for s in other} & {s.data for s in samples}


def test_every_kind_comes_in_turn(varied):
    kinds = {"drawn": nondigits.DRAWN_KINDS, "scribble": nondigits.SCRIBBLE_KINDS}
    for category, samples in varied.items():
        assert {s.category for s in samples} == {category}
        assert Counter(s.label for s in samples) == dict.fromkeys(kinds[category], 2)
        # Kinds, not letters: none is reported as a digit's twin.
        assert not any(s.lookalike for s in samples)


def test_they_are_uploads_the_pipeline_finds_marks_in(varied):
    formats = set()
    found = 0
    for sample in varied["drawn"] + varied["scribble"]:
        with Image.open(io.BytesIO(sample.data)) as img:
            formats.add(img.format)
        result = normalise_decoded(decode_images([sample.data]))[0]
        found += not isinstance(result, ImageError)
    assert formats == {"PNG", "JPEG"}
    # Marks, not blanks: at most a stray one lost to a skipping pen.
    assert found >= len(varied["drawn"]) + len(varied["scribble"]) - 2


def test_the_measured_set_has_none_of_them(varied):
    measured = nondigits.build("fit", per_category=len(nondigits.LETTERS))
    kinds = set(nondigits.DRAWN_KINDS) | set(nondigits.SCRIBBLE_KINDS)
    assert not {s.label for s in measured} & kinds
    all_varied = {s.data for samples in varied.values() for s in samples}
    assert not all_varied & {s.data for s in measured}


def test_the_letters_taught_as_no_digit_are_no_digits_twins():
    assert not set(nondigits.PLAIN_LETTERS) & set(nondigits.LOOKALIKES)
    assert not set(nondigits.SYMBOLS) & set("/|\\()[]!1lI")
    # The other alphabets are drawn from the fitting fonts that have them, and some do.
    fonts = [
        f
        for f in nondigits.font_paths("fit")
        if set(nondigits.OTHER_LETTERS) <= nondigits._charset(f)
    ]
    assert len(fonts) >= 4


def test_the_rejector_renders_them_as_a_fitting_chunk():
    batch, refused = _render(("varied", "scribble", 3, 0))
    assert batch.shape == (3, 28, 28, 1) and refused.shape == (3,)
    assert np.isfinite(batch).all() and batch[~refused].max() > 0.5
