"""The Flask app in-process (test client) against a real registry."""

from __future__ import annotations

import base64

import pytest

from tests import tiny_model
from tests.cases import BAD_REQUESTS, BadRequest


def test_seed_image_is_a_nine(client, seed_png: bytes):
    response = client.post("/recognize", json={"image": base64.b64encode(seed_png).decode()})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["digit"] == 9
    assert len(body["probabilities"]) == 10
    assert abs(sum(body["probabilities"]) - 1) < 1e-4
    assert body["confidence"] == max(body["probabilities"])
    assert body["model"] == {"name": "digits", "version": "1", "family": tiny_model.FAMILY}
    assert body["request_id"] == response.headers["X-Request-ID"]


def test_request_id_is_taken_from_the_client(client, seed_png: bytes):
    response = client.post(
        "/recognize", data=seed_png, content_type="image/png", headers={"X-Request-ID": "abc-123"}
    )
    assert response.get_json()["request_id"] == "abc-123"


def test_multipart_and_raw_answer_like_json(client, seed_png: bytes):
    import io

    as_json = client.post("/recognize", json={"image": base64.b64encode(seed_png).decode()})
    raw = client.post("/recognize", data=seed_png, content_type="image/png")
    multipart = client.post(
        "/recognize",
        data={"image": (io.BytesIO(seed_png), "nine.png")},
        content_type="multipart/form-data",
    )
    for response in (raw, multipart):
        assert response.status_code == 200
        assert response.get_json()["probabilities"] == as_json.get_json()["probabilities"]


def test_data_url_and_wrapped_base64_are_accepted(client, seed_png: bytes):
    b64 = base64.encodebytes(seed_png).decode()  # wrapped at 76 chars, like `base64` CLI
    for text in (b64, "data:image/png;base64," + b64):
        assert client.post("/recognize", json={"image": text}).get_json()["digit"] == 9


def test_url_safe_unpadded_base64_is_accepted_as_by_the_pyfunc(client, registry, seed_png: bytes):
    # One decoder (pyfunc.encoding) for the HTTP layer and the pyfunc, so a string that
    # `mlflow models serve` accepts is accepted by /recognize too, with the same answer.
    import mlflow
    import pandas as pd

    text = base64.urlsafe_b64encode(seed_png).decode()
    unpadded = text.rstrip("=")
    assert unpadded != text and ({"-", "_"} & set(unpadded)), "not a URL-safe, unpadded case"
    answer = client.post("/recognize", json={"image": unpadded})
    assert answer.status_code == 200, answer.get_json()

    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(registry.tracking_uri)
    mlflow.set_registry_uri(registry.tracking_uri)
    try:
        model = mlflow.pyfunc.load_model("models:/digits/1")
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])
    row = model.predict(pd.DataFrame({"image": [unpadded]})).iloc[0]
    assert answer.get_json()["digit"] == row["digit"] == 9
    assert answer.get_json()["probabilities"] == pytest.approx(list(row["probabilities"]))


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=lambda c: c.id)
def test_bad_requests_get_json_errors(client, case: BadRequest):
    response = client.open(
        case.path,
        method=case.method,
        data=case.body,
        content_type=case.content_type,
        headers=case.headers,
    )
    assert response.status_code == case.status
    assert response.is_json
    assert response.get_json()["error"]["code"] == case.code
    assert response.get_json()["error"]["message"]


def test_health_and_ready(client):
    assert client.get("/health").get_json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.get_json()["model"] == {
        "name": "digits",
        "version": "1",
        "family": tiny_model.FAMILY,
    }


def test_no_production_model_means_503_but_alive(empty_registry):
    from serving import create_app

    client = create_app({"mlflow_tracking_uri": empty_registry.tracking_uri}).test_client()
    assert client.get("/health").status_code == 200
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert ready.get_json()["error"]["code"] == "model_unavailable"
    response = client.post("/recognize", json={"image": "aGVsbG8="})
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "model_unavailable"


def test_low_confidence_flag_follows_the_threshold(registry, mnist):
    from serving import create_app
    from training.variants import png_bytes

    def answer(threshold: float, image: bytes) -> dict:
        app = create_app(
            {"mlflow_tracking_uri": registry.tracking_uri, "low_confidence_threshold": threshold}
        )
        return app.test_client().post("/recognize", data=image, content_type="image/png").json

    image = png_bytes(mnist.x_test[0])
    confidence = answer(0.0, image)["confidence"]
    assert answer(0.0, image)["low_confidence"] is False
    assert answer(confidence, image)["low_confidence"] is False
    if confidence < 1.0:
        assert answer(1.0, image)["low_confidence"] is True


def test_a_generated_request_id_is_32_random_hex_digits(client):
    ids = {client.get("/health").headers["X-Request-ID"] for _ in range(20)}
    assert len(ids) == 20
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_a_request_id_ending_in_a_newline_is_replaced(app):
    from serving import request_id

    with app.test_request_context("/health", headers={"X-Request-ID": "abc"}):
        app.preprocess_request()
        assert request_id.current() == "abc"
    with app.test_request_context("/health", environ_base={"HTTP_X_REQUEST_ID": "abc\n"}):
        app.preprocess_request()
        assert request_id.current() != "abc\n" and len(request_id.current()) == 32


def test_each_hook_is_asked_once_whether_it_is_a_coroutine(client, monkeypatch):
    from flask import app as flask_app

    asked = []
    original = flask_app.iscoroutinefunction
    monkeypatch.setattr(flask_app, "iscoroutinefunction", lambda f: asked.append(f) or original(f))
    client.get("/health")
    first = len(asked)
    for _ in range(5):
        client.get("/health")
    assert first > 0 and len(asked) == first
