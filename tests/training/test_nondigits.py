"""The non-digit set: deterministic, encoded like uploads, fonts split, lookalikes marked."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from pyfunc.errors import ImageError
from pyfunc.preprocess import decode_images, normalise_decoded
from training import nondigits

PER_CATEGORY = 12


@pytest.fixture(scope="module")
def fit_set() -> list[nondigits.Sample]:
    return nondigits.build("fit", per_category=PER_CATEGORY)


def test_the_same_split_and_seed_give_the_same_bytes(fit_set):
    again = nondigits.build("fit", per_category=PER_CATEGORY)
    assert [s.data for s in again] == [s.data for s in fit_set]
    other_seed = nondigits.build("fit", per_category=PER_CATEGORY, seed=1)
    assert [s.data for s in other_seed] != [s.data for s in fit_set]


def test_every_category_is_there_in_the_asked_number(fit_set):
    assert Counter(s.category for s in fit_set) == dict.fromkeys(nondigits.CATEGORIES, PER_CATEGORY)
    letters = [s.label for s in fit_set if s.category == "printed"]
    assert letters == list(nondigits.LETTERS[:PER_CATEGORY])


def test_images_are_encoded_as_clients_send_them(fit_set):
    formats = set()
    for sample in fit_set:
        with Image.open(io.BytesIO(sample.data)) as img:
            formats.add(img.format)
        # The product's decoder takes every one of them (no-digit verdicts come later).
        try:
            decode_images([sample.data])
        except ImageError as exc:  # pragma: no cover - the failure message is the point
            pytest.fail(f"{sample.category}:{sample.label} is not a valid upload: {exc}")
    assert formats == {"PNG", "JPEG"}


def test_fitting_and_measuring_fonts_are_disjoint_and_have_letters():
    fit, measure = nondigits.font_paths("fit"), nondigits.font_paths("measure")
    assert not {p.name for p in fit} & {p.name for p in measure}
    for path in fit + measure:
        assert path.is_file(), path
    with pytest.raises(ValueError):
        nondigits.font_paths("test")


def test_the_splits_differ_in_their_letters():
    fit = nondigits.build("fit", per_category=3)
    measure = nondigits.build("measure", per_category=3)
    printed = [s.data for s in fit if s.category == "printed"]
    assert printed != [s.data for s in measure if s.category == "printed"]


def test_lookalikes_are_marked_not_dropped():
    samples = nondigits.build("fit", per_category=len(nondigits.LETTERS))
    printed = [s for s in samples if s.category == "printed"]
    assert {s.label for s in printed} == set(nondigits.LETTERS)
    assert {s.label for s in printed if s.lookalike} == set(nondigits.LOOKALIKES)
    assert all(0 <= d <= 9 for d in nondigits.LOOKALIKES.values())


def test_skeleton_thins_a_bar_to_a_line_inside_it():
    bar = np.zeros((20, 40), dtype=bool)
    bar[6:14, 4:36] = True
    line = nondigits.skeleton(bar)
    assert line.any()
    assert not (line & ~bar).any()
    assert line.sum(axis=0).max() == 1  # one pixel thick across the bar
    assert line.sum() >= 20  # and about as long as it


def test_digit_glyphs_cycle_through_the_digits():
    images, labels = nondigits.digit_glyphs("fit", 20)
    assert len(images) == 20 and labels.tolist() == list(range(10)) * 2
    # They are ink, not blanks: the pipeline finds something in each.
    results = normalise_decoded(decode_images(images))
    assert not [r for r in results if isinstance(r, ImageError)]
