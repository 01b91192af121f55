"""POST /read over real HTTP (gunicorn, the session's trained CNN): every input encoding,
/recognize's 422 multiple_digits, and feedback on the whole number."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import requests

from training import numbers


@pytest.fixture(scope="module")
def seven_two_one(mnist) -> bytes:
    # MNIST test images #0-2: a 7, a 2 and a 1, written apart on plain paper.
    strip = numbers.compose(list(mnist.x_test[:3]), "normal", np.random.default_rng(0))
    return numbers.plain(strip)


def test_every_encoding_reads_the_number(live_server: str, seven_two_one: bytes):
    answers = [
        requests.post(
            f"{live_server}/read",
            data=seven_two_one,
            headers={"Content-Type": "image/png"},
            timeout=30,
        ),
        requests.post(f"{live_server}/read", files={"image": ("n.png", seven_two_one)}, timeout=30),
        requests.post(
            f"{live_server}/read",
            json={"image": base64.b64encode(seven_two_one).decode()},
            timeout=30,
        ),
    ]
    for response in answers:
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["number"] == "721"
        assert [d["digit"] for d in body["digits"]] == [7, 2, 1]
        assert body["record_id"].endswith("-n3") and body["feedback_token"]
    label = {
        "record_id": answers[0].json()["record_id"],
        "feedback_token": answers[0].json()["feedback_token"],
        "label": "721",
    }
    labelled = requests.post(f"{live_server}/feedback", json=label, timeout=30)
    assert labelled.status_code == 200, labelled.text
    assert labelled.json()["label"] == "721"


def test_recognize_refuses_a_number(live_server: str, seven_two_one: bytes):
    response = requests.post(
        f"{live_server}/recognize",
        data=seven_two_one,
        headers={"Content-Type": "image/png"},
        timeout=30,
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "multiple_digits" and error["count"] == 3
    assert [b[0] for b in error["boxes"]] == sorted(b[0] for b in error["boxes"])


def test_a_bad_read_is_a_json_4xx(live_server: str):
    response = requests.post(
        f"{live_server}/read",
        data=b"GIF89a broken",
        headers={"Content-Type": "image/gif"},
        timeout=30,
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_image"
