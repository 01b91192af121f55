"""POST /read in-process with the tiny model: the answer's shape, its logging and feedback on
the whole number; /recognize's 422 multiple_digits; every bad request a JSON 4xx."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from serving.image_log import image_log
from tests.support import PROJECT_ROOT
from training import numbers
from training.export_feedback import export


def _number(mnist, indices: list[int], spacing: str = "wide") -> bytes:
    strip = numbers.compose([mnist.x_test[i] for i in indices], spacing, np.random.default_rng(0))
    return numbers.plain(strip)


@pytest.fixture
def three(mnist) -> bytes:
    return _number(mnist, [0, 1, 2])


def test_a_number_is_read_left_to_right_with_boxes(client, three: bytes):
    response = client.post("/read", data=three, content_type="image/png")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert len(body["number"]) == 3 and body["number"].isdigit()
    assert [d["digit"] for d in body["digits"]] == [int(c) for c in body["number"]]
    xs = [d["box"][0] for d in body["digits"]]
    assert xs == sorted(xs) and len(set(xs)) == 3
    width, height = Image.open(io.BytesIO(three)).size
    for d in body["digits"]:
        x, y, w, h = d["box"]
        assert 0 <= x < x + w <= width and 0 <= y < y + h <= height
        assert 0 <= d["confidence"] <= 1
    assert body["model"] == {"name": "digits", "version": "1"} or body["model"]["name"]
    assert body["record_id"].endswith("-n3") and body["feedback_token"]
    assert body["request_id"] == response.headers["X-Request-ID"]


def test_every_input_encoding_reads_the_same(client, three: bytes):
    raw = client.post("/read", data=three, content_type="image/png").get_json()
    form = client.post(
        "/read", data={"image": (io.BytesIO(three), "n.png")}, content_type="multipart/form-data"
    ).get_json()
    as_json = client.post("/read", json={"image": base64.b64encode(three).decode()}).get_json()
    assert raw["number"] == form["number"] == as_json["number"]


def test_recognize_refuses_several_digits_with_their_count_and_boxes(client, three: bytes):
    response = client.post("/recognize", data=three, content_type="image/png")
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "multiple_digits" and "/read" in error["message"]
    assert error["count"] == 3 and len(error["boxes"]) == 3
    read = client.post("/read", data=three, content_type="image/png").get_json()
    assert error["boxes"] == [d["box"] for d in read["digits"]]


def test_recognize_still_answers_one_digit(client, seed_png: bytes):
    assert client.post("/recognize", data=seed_png, content_type="image/png").status_code == 200


def test_more_digits_than_the_cap_are_refused(client, mnist):
    image = _number(mnist, list(range(13)))
    response = client.post("/read", data=image, content_type="image/png")
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "too_many_digits" and "13" in error["message"]


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"data": b"", "content_type": "image/png"}, 400, "empty_image"),
        ({"data": b"\x89PNG\r\n\x1a\nbroken", "content_type": "image/png"}, 400, "invalid_image"),
        ({"data": b"not an image", "content_type": "image/png"}, 415, "unsupported_format"),
        ({"data": b"x", "content_type": "text/plain"}, 415, "unsupported_media_type"),
        ({"json": {"picture": "x"}}, 400, "missing_image"),
        ({"json": {"image": "%%%"}}, 400, "invalid_base64"),
    ],
)
def test_bad_requests_are_json_4xx(client, kwargs, status, code):
    response = client.post("/read", **kwargs)
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code


def test_a_blank_image_has_no_digit(client):
    buf = io.BytesIO()
    Image.new("L", (200, 80), 255).save(buf, "PNG")
    response = client.post("/read", data=buf.getvalue(), content_type="image/png")
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "no_digit"


def _feedback(client, answer: dict, label):
    body = {
        "record_id": answer["record_id"],
        "feedback_token": answer["feedback_token"],
        "label": label,
    }
    return client.post("/feedback", json=body)


def test_each_digit_is_logged_as_its_crop_and_labelled_by_the_number(
    app, client, three: bytes, tmp_path
):
    answer = client.post("/read", data=three, content_type="image/png").get_json()
    base = answer["record_id"].removesuffix("-n3")
    with app.app_context():
        log = image_log()
        found = [log.get(f"{base}-{i}") for i in range(3)]
    records = [r for r in found if r is not None]
    assert len(records) == 3
    assert [r.digit for r in records] == [d["digit"] for d in answer["digits"]]
    assert all(r.input_format == "PNG" and r.image_stored for r in records)

    response = _feedback(client, answer, "721")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["label"] == "721"
    with app.app_context():
        log = image_log()
        labelled = [log.get(f"{base}-{i}") for i in range(3)]
        assert [r.label if r else None for r in labelled] == [7, 2, 1]
        exported = export(log, tmp_path / "feedback.npz")
    data = np.load(exported.path)
    rows = [i for i, rid in enumerate(data["request_ids"]) if rid.startswith(base)]
    assert sorted(data["y_train"][rows].tolist()) == [1, 2, 7]
    assert data["x_train"][rows].max() > 200  # the crops, normalised as any digit


def test_a_number_label_must_fit_the_answer(client, three: bytes, seed_png: bytes):
    answer = client.post("/read", data=three, content_type="image/png").get_json()
    short = _feedback(client, answer, "72")
    assert short.status_code == 400
    assert short.get_json()["error"]["code"] == "label_length_mismatch"
    as_int = _feedback(client, answer, 7)
    assert as_int.status_code == 400 and as_int.get_json()["error"]["code"] == "invalid_label"
    wrong = _feedback(client, {**answer, "feedback_token": "x" * 43}, "721")
    assert wrong.status_code == 403
    # A /recognize answer still takes a digit, not a string.
    single = client.post("/recognize", data=seed_png, content_type="image/png").get_json()
    as_text = _feedback(client, single, "9")
    assert as_text.status_code == 400
    assert as_text.get_json()["error"]["code"] == "invalid_label"


def test_read_is_in_the_openapi_document(client):
    document = client.get("/openapi.json").get_json()
    operation = document["paths"]["/read"]["post"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Reading"
    }
    assert "MultipleDigitsError" in document["components"]["schemas"]
    assert "multiple_digits" in str(document["paths"]["/recognize"]["post"]["responses"]["422"])


def test_the_readmes_example_number_is_four_digits(client):
    """examples/number-2026.png, as the README's curl sends it: four boxes from /read (the
    tiny model may misread them), 422 multiple_digits with count 4 from /recognize."""
    data = (PROJECT_ROOT / "examples" / "number-2026.png").read_bytes()
    body = client.post("/read", data=data, content_type="image/png").get_json()
    assert len(body["digits"]) == 4 and len(body["number"]) == 4
    refused = client.post("/recognize", data=data, content_type="image/png")
    assert refused.status_code == 422 and refused.get_json()["error"]["count"] == 4


def test_a_numbers_digits_are_counted_apart_from_recognize_answers(client, three: bytes):
    from prometheus_client.parser import text_string_to_metric_families

    def totals() -> dict[str, float]:
        text = client.get("/metrics").get_data(as_text=True)
        return {
            family.name: sum(s.value for s in family.samples if s.name.endswith("_total"))
            for family in text_string_to_metric_families(text)
        }

    before = totals()
    body = client.post("/read", data=three, content_type="image/png").get_json()
    after = totals()
    assert len(body["number"]) == 3
    assert after["digits_read_digits"] - before.get("digits_read_digits", 0) == 3
    assert after["digits_predictions"] == before["digits_predictions"]
