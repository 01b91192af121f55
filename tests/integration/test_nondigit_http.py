"""Images with no digit over real HTTP: refused (422 ``no_digit``) or flagged
(``low_confidence``) through every input encoding, while digits are still answered."""

from __future__ import annotations

import base64

import pytest
import requests

from pyfunc.errors import ImageError
from pyfunc.preprocess import decode_images, normalise_decoded
from tests.support import start_scorer
from training import nondigits
from training.variants import VARIANTS

ENCODINGS = ("json", "multipart", "raw")
# Of the non-digits the pre-processing lets through (letters, scribbles, some photos), the
# share the small CI model (8,000 digits, 3 epochs, its rejector fitted on one draw of the
# fitting set) must refuse or flag: it caught 21 of these 27 in one training, 22 or more in
# another. The full model's figures are in docs/rejection.md; `by_rejector` checks the
# rejector is live.
MIN_CAUGHT = 0.7


def _post(url: str, image: bytes, encoding: str) -> requests.Response:
    if encoding == "json":
        body = {"image": base64.b64encode(image).decode()}
        return requests.post(f"{url}/recognize", json=body, timeout=30)
    if encoding == "multipart":
        return requests.post(f"{url}/recognize", files={"image": ("i.png", image)}, timeout=30)
    kind = "image/png" if image.startswith(b"\x89PNG") else "image/jpeg"
    return requests.post(f"{url}/recognize", data=image, headers={"Content-Type": kind}, timeout=30)


def _verdict(response: requests.Response) -> tuple:
    body = response.json()
    if response.status_code == 200:
        return 200, body["digit"], body["low_confidence"]
    return response.status_code, body["error"]["code"], body["error"]["message"]


def _passes_pre_processing(image: bytes) -> bool:
    return not isinstance(normalise_decoded(decode_images([image]))[0], ImageError)


@pytest.fixture(scope="module")
def marks() -> list[nondigits.Sample]:
    """Non-digits with marks on them (measuring fonts), none of them a digit's twin: these
    reach the network, so only the rejector or the flag can keep them from an answer."""
    samples = [
        s
        for s in nondigits.build("measure", per_category=26)
        if not s.lookalike and _passes_pre_processing(s.data)
    ]
    assert len(samples) >= 40
    return samples[::3]


def test_non_digits_are_refused_or_flagged_the_same_through_every_encoding(live_server, marks):
    caught, by_rejector = 0, 0
    for sample in marks:
        verdicts = {_verdict(_post(live_server, sample.data, e)) for e in ENCODINGS}
        assert len(verdicts) == 1, f"{sample.category}:{sample.label} {verdicts}"
        status, what, detail = verdicts.pop()
        assert status in (200, 422), (sample.label, status, what)
        # Separate marks side by side (a scribble in pieces, two letters) are refused as
        # several (multiple_digits, pointing to /read); one mark only by the rejector.
        if status == 422 and what != "multiple_digits":
            assert what == "no_digit"
            # Marks were found: this is not the blank-image message.
            assert "blank" not in detail and "no handwritten digit recognised" in detail
            by_rejector += 1
        caught += status == 422 or detail is True
    assert by_rejector > 0
    assert caught >= MIN_CAUGHT * len(marks), f"{caught}/{len(marks)} refused or flagged"


def test_blank_paper_gets_the_blank_message(live_server):
    blank = next(
        s for s in nondigits.build_category("measure", "texture", 7) if s.label == "gradient"
    )
    for encoding in ENCODINGS:
        status, code, message = _verdict(_post(live_server, blank.data, encoding))
        assert (status, code) == (422, "no_digit")
        assert "blank or uniform" in message


def test_a_texture_is_not_called_blank(live_server):
    """A weave, a checkerboard or noise holds no stroke either, but it is not blank: the
    message says what the picture shows, through every encoding."""
    textures = [
        s
        for s in nondigits.build_category("measure", "texture", 14)
        if s.label in ("fabric", "checker", "noise") and not _passes_pre_processing(s.data)
    ]
    assert textures
    for sample in textures:
        for encoding in ENCODINGS:
            status, code, message = _verdict(_post(live_server, sample.data, encoding))
            assert (status, code) == (422, "no_digit"), (sample.label, encoding)
            assert "texture or pattern" in message and "blank" not in message, message


@pytest.mark.parametrize("variant", ["clean", "paper_jpeg", "alpha_canvas", "thick", "rotated"])
def test_digits_are_still_answered(live_server, mnist, variant):
    answered = 0
    for i in range(6):
        image = VARIANTS[variant](mnist.x_test[i], i)
        verdicts = {_verdict(_post(live_server, image, e)) for e in ENCODINGS}
        assert len(verdicts) == 1, verdicts
        status, digit, _ = verdicts.pop()
        answered += status == 200 and digit == mnist.y_test[i]
    assert answered >= 5, f"{variant}: {answered}/6 answered right"


def test_mlflow_models_serve_agrees_with_the_service(live_server, registry, marks, mnist, tmp_path):
    """The same registered model under `mlflow models serve`: every row carries the verdict
    (no_digit, not_digit_score) that the service turns into a 422, image by image."""
    images = [s.data for s in marks[:8]] + [VARIANTS["clean"](mnist.x_test[i], i) for i in range(4)]
    service = [_post(live_server, image, "json").status_code == 422 for image in images]
    with start_scorer(registry.env, tmp_path) as (url, _):
        payload = {
            "dataframe_split": {
                "columns": ["image"],
                "data": [[base64.b64encode(image).decode()] for image in images],
            }
        }
        response = requests.post(f"{url}/invocations", json=payload, timeout=120)
    assert response.status_code == 200, response.text
    rows = response.json()["predictions"]
    assert [bool(r["no_digit"]) for r in rows] == service
    assert any(service) and not any(service[-4:])
    assert all(0.0 <= r["not_digit_score"] <= 1.0 for r in rows)
