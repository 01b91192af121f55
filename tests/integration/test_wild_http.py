"""Real-world images over real HTTP: every variant answers, unusable images get clean errors."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import requests

from tests.cases import BAD_IMAGES, BadRequest
from training.variants import VARIANTS, big_photo_jpeg, paper_jpeg

DIGITS_PER_VARIANT = 30
# The CI model is small (a few thousand images, few epochs): the bar is what such a model
# clears through this pipeline, and a naive resize does not (see `make eval-wild`). Measured
# on these 30 digits, 2026-11-30 (`python -m training.photos_report accuracy --split test
# --limit 30` on a model trained as the fixture trains it): 29-30/30 on every variant but
# ruled and squared paper, 25/30 on those; with the pre-processing before pyfunc.paper, 13/30
# on ruled paper, 2/30 on a desk, 15/30 with a shadow. Squared paper (23/30 before) is too
# close to call at this model size: its bar guards against a collapse; the ruling removal
# itself is measured by `make eval-wild`.
BAR = {"ruled_paper": 0.7, "squared_paper": 0.7}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_is_recognised(live_server: str, mnist, variant: str):
    build = VARIANTS[variant]
    hits = 0
    for i in range(DIGITS_PER_VARIANT):
        response = requests.post(
            f"{live_server}/recognize",
            data=build(mnist.x_test[i], i),
            headers={"Content-Type": "image/png"},
            timeout=30,
        )
        # A refusal (422: the rejector's no_digit, or a digit taken for several, measured
        # by `python -m training.numbers --false-multiple`) is a miss, counted against the
        # bar like a wrong digit; any other answer is a failure.
        refusals = ("no_digit", "multiple_digits")
        if response.status_code == 422 and response.json()["error"]["code"] in refusals:
            continue
        assert response.status_code == 200, response.text
        hits += response.json()["digit"] == mnist.y_test[i]
    assert hits >= BAR.get(variant, 0.8) * DIGITS_PER_VARIANT, f"{variant}: {hits}/30"


def test_big_phone_photo_is_reduced_not_refused(live_server: str, mnist):
    index = int(np.flatnonzero(mnist.y_test == 3)[0])
    photo = big_photo_jpeg(mnist.x_test[index])
    response = requests.post(
        f"{live_server}/recognize", files={"image": ("p.jpg", photo)}, timeout=60
    )
    assert response.status_code == 200, response.text
    assert response.json()["digit"] == 3


def test_content_type_is_not_trusted_over_the_signature(live_server: str, mnist):
    jpeg = paper_jpeg(mnist.x_test[0])  # a 7, sent as "image/png"
    response = requests.post(
        f"{live_server}/recognize", data=jpeg, headers={"Content-Type": "image/png"}, timeout=30
    )
    assert response.status_code == 200
    assert response.json()["digit"] == 7


def test_all_three_ways_in_give_the_same_answer(live_server: str, mnist):
    jpeg = paper_jpeg(mnist.x_test[1])
    answers = [
        requests.post(
            f"{live_server}/recognize", json={"image": base64.b64encode(jpeg).decode()}, timeout=30
        ),
        requests.post(f"{live_server}/recognize", files={"image": ("d.jpg", jpeg)}, timeout=30),
        requests.post(
            f"{live_server}/recognize",
            data=jpeg,
            headers={"Content-Type": "image/jpeg"},
            timeout=30,
        ),
    ]
    bodies = [a.json() for a in answers]
    assert all(a.status_code == 200 for a in answers)
    assert len({(b["digit"], tuple(b["probabilities"])) for b in bodies}) == 1


@pytest.mark.parametrize("case", BAD_IMAGES, ids=lambda c: c.id)
def test_unusable_images_get_clean_errors(live_server: str, case: BadRequest):
    response = requests.post(
        f"{live_server}/recognize",
        data=case.body,
        headers={"Content-Type": case.content_type or ""},
        timeout=30,
    )
    assert response.status_code == case.status, response.text
    assert response.json()["error"]["code"] == case.code
    # The server keeps serving after each of them.
    assert requests.get(f"{live_server}/ready", timeout=10).status_code == 200


@pytest.mark.parametrize(
    "case", [c for c in BAD_IMAGES if c.content_type != "application/json"], ids=lambda c: c.id
)
def test_unusable_images_as_base64_json(live_server: str, case: BadRequest):
    response = requests.post(
        f"{live_server}/recognize", json={"image": base64.b64encode(case.body).decode()}, timeout=30
    )
    assert response.status_code == case.status, response.text
    assert response.json()["error"]["code"] == case.code


PHOTOS = ("desk_photo", "ruled_paper", "squared_paper", "shadow")


@pytest.mark.parametrize("variant", PHOTOS)
def test_phone_photos_answer_the_same_through_every_encoding(live_server: str, mnist, variant: str):
    """A photo of a sheet on a desk, of ruled or squared paper, or with a shadow across the
    digit: JSON base64, multipart and a raw body get one answer, and it is the digit."""
    hits = 0
    for i in range(3):
        photo = VARIANTS[variant](mnist.x_test[i], i)
        answers = [
            requests.post(
                f"{live_server}/recognize",
                json={"image": base64.b64encode(photo).decode()},
                timeout=30,
            ),
            requests.post(
                f"{live_server}/recognize", files={"image": ("p.jpg", photo)}, timeout=30
            ),
            requests.post(
                f"{live_server}/recognize",
                data=photo,
                headers={"Content-Type": "image/jpeg"},
                timeout=30,
            ),
        ]
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        bodies = [a.json() for a in answers]
        assert len({(b["digit"], tuple(b["probabilities"])) for b in bodies}) == 1
        hits += bodies[0]["digit"] == mnist.y_test[i]
    assert hits >= 2, f"{variant}: {hits}/3"
