"""The production server (`python -m serving`, gunicorn) over real HTTP."""

from __future__ import annotations

import base64

import pytest
import requests

from tests.cases import BAD_REQUESTS, BadRequest
from tests.support import start_server


def test_seed_image_is_a_nine(live_server: str, seed_png: bytes):
    response = requests.post(
        f"{live_server}/recognize", json={"image": base64.b64encode(seed_png).decode()}, timeout=30
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["digit"] == 9
    assert body["model"] == {"name": "digits", "version": "1"}
    assert len(body["probabilities"]) == 10
    assert body["request_id"]


def test_url_safe_unpadded_base64_and_data_urls_are_accepted(live_server: str, seed_png: bytes):
    # As the pyfunc (and so `mlflow models serve`) accepts them: one decoder for both.
    urlsafe = base64.urlsafe_b64encode(seed_png).decode().rstrip("=")
    for text in (urlsafe, f"data:image/png;base64,{urlsafe}"):
        response = requests.post(f"{live_server}/recognize", json={"image": text}, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["digit"] == 9


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=lambda c: c.id)
def test_bad_requests_get_json_errors(live_server: str, case: BadRequest):
    headers = dict(case.headers)
    if case.content_type:
        headers["Content-Type"] = case.content_type
    response = requests.request(
        case.method, live_server + case.path, data=case.body, headers=headers, timeout=30
    )
    assert response.status_code == case.status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"]["code"] == case.code


def test_body_over_the_cap_is_413(live_server: str):
    # The live server is configured with MAX_BODY_BYTES = 4 MiB.
    response = requests.post(
        f"{live_server}/recognize",
        data=b"0" * (5 * 1024 * 1024),
        headers={"Content-Type": "image/png"},
        timeout=30,
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_entity_too_large"


def test_base64_over_the_cap_is_413(live_server: str):
    # MAX_BASE64_CHARS = 512 KiB, below the body cap, so the base64 check answers.
    response = requests.post(f"{live_server}/recognize", json={"image": "A" * 600_000}, timeout=30)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "base64_too_large"


def test_ready_names_the_model(live_server: str):
    response = requests.get(f"{live_server}/ready", timeout=10)
    assert response.status_code == 200
    assert response.json()["model"] == {"name": "digits", "version": "1"}


def test_server_without_production_model_starts_and_reports_503(empty_registry, tmp_path):
    with start_server(empty_registry.env, {}, log_dir=tmp_path, wait_ready=False) as url:
        assert requests.get(f"{url}/health", timeout=10).status_code == 200
        ready = requests.get(f"{url}/ready", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["error"]["code"] == "model_unavailable"
        response = requests.post(f"{url}/recognize", json={"image": "aGVsbG8="}, timeout=10)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "model_unavailable"
