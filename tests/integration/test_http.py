"""The production server (`python -m serving`, gunicorn) over real HTTP."""

from __future__ import annotations

import base64
import http.client
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
import requests

from tests.cases import BAD_REQUESTS, BadRequest
from tests.support import access_lines, run_server, start_server, wait_for_every_worker


def test_seed_image_is_a_nine(live_server: str, seed_png: bytes):
    response = requests.post(
        f"{live_server}/recognize", json={"image": base64.b64encode(seed_png).decode()}, timeout=30
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["digit"] == 9
    assert body["model"] == {"name": "digits", "version": "1", "family": "keras_example"}
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


def _post_chunked(url: str, path: str, data: bytes, content_type: str) -> tuple[int, dict]:
    """POST ``data`` with Transfer-Encoding: chunked (no Content-Length), 64 KiB a chunk."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        chunks = (data[i : i + 65536] for i in range(0, len(data), 65536))
        conn.request(
            "POST", path, body=chunks, headers={"Content-Type": content_type}, encode_chunked=True
        )
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def gunicorn_alone(registry, tmp_path_factory: pytest.TempPathFactory):
    """`python -m serving` without a front: gunicorn's chunked bodies reach the app."""
    with start_server(
        registry.env,
        {"FRONT": "none", "WORKERS": "1", "MAX_BODY_BYTES": str(4 * 1024 * 1024)},
        log_dir=tmp_path_factory.mktemp("gunicorn-alone-logs"),
    ) as url:
        yield url


@pytest.mark.parametrize("server", ["live_server", "gunicorn_alone"])
def test_chunked_body_over_the_cap_is_413_not_cut(request, server: str, seed_png: bytes):
    # MAX_BODY_BYTES = 4 MiB: cut there, this body would be a whole PNG and answered 200.
    url = request.getfixturevalue(server)
    cap = 4 * 1024 * 1024
    data = seed_png + b"\0" * (cap + 1024 - len(seed_png))
    status, body = _post_chunked(url, "/recognize", data, "image/png")
    assert status == 413, body
    assert body["error"]["code"] == "request_entity_too_large"
    if server == "gunicorn_alone":
        assert f"{cap} bytes (MAX_BODY_BYTES)" in body["error"]["message"]


@pytest.mark.parametrize("server", ["live_server", "gunicorn_alone"])
def test_chunked_body_within_the_cap_is_answered(request, server: str, seed_png: bytes):
    text = json.dumps({"image": base64.b64encode(seed_png).decode()})
    url = request.getfixturevalue(server)
    status, body = _post_chunked(url, "/recognize", text.encode(), "application/json")
    assert status == 200, body
    assert body["digit"] == 9


@pytest.mark.parametrize("path", ["/recognize", "/feedback"])
def test_deeply_nested_json_is_400(live_server: str, path: str):
    data = b"[" * 100_000 + b"]" * 100_000
    response = requests.post(
        live_server + path, data=data, headers={"Content-Type": "application/json"}, timeout=30
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "malformed_json"


def test_base64_over_the_cap_is_413(live_server: str):
    # MAX_BASE64_CHARS = 512 KiB, below the body cap, so the base64 check answers.
    response = requests.post(f"{live_server}/recognize", json={"image": "A" * 600_000}, timeout=30)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "base64_too_large"


def test_ready_names_the_model(live_server: str):
    response = requests.get(f"{live_server}/ready", timeout=10)
    assert response.status_code == 200
    assert response.json()["model"] == {"name": "digits", "version": "1", "family": "keras_example"}


def test_server_without_production_model_starts_and_reports_503(empty_registry, tmp_path):
    with start_server(empty_registry.env, {}, log_dir=tmp_path, wait_ready=False) as url:
        assert requests.get(f"{url}/health", timeout=10).status_code == 200
        ready = requests.get(f"{url}/ready", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["error"]["code"] == "model_unavailable"
        response = requests.post(f"{url}/recognize", json={"image": "aGVsbG8="}, timeout=10)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "model_unavailable"


def _recognize(url: str, png: bytes, **headers: str) -> requests.Response:
    headers = {"Content-Type": "image/png", **headers}
    return requests.post(f"{url}/recognize", data=png, headers=headers, timeout=30)


def _label(url: str, record_id: str, token: str, label: int) -> requests.Response:
    body = {"record_id": record_id, "feedback_token": token, "label": label}
    return requests.post(f"{url}/feedback", json=body, timeout=30)


def test_only_the_answers_token_labels_it_and_request_ids_name_nothing(
    live_server: str, seed_png: bytes
):
    # Two clients pick the same X-Request-ID: neither gets 409, neither can label the other's.
    first = _recognize(live_server, seed_png, **{"X-Request-ID": "order-1002"})
    second = _recognize(live_server, seed_png, **{"X-Request-ID": "order-1002"})
    assert first.status_code == second.status_code == 200, second.text
    a, b = first.json(), second.json()
    assert a["request_id"] == b["request_id"] == second.headers["X-Request-ID"] == "order-1002"
    assert a["record_id"] != b["record_id"]
    assert _label(live_server, b["record_id"], a["feedback_token"], 1).status_code == 403
    assert _label(live_server, "order-1002", a["feedback_token"], 1).status_code == 403
    mine = _label(live_server, b["record_id"], b["feedback_token"], 9)
    assert mine.status_code == 200, mine.text


def test_the_feedback_limit_is_one_count_across_workers_through_redis(
    registry, seed_png: bytes, tmp_path
):
    # 5 labels per window for a client, however many workers answer it: counted in Redis.
    # A window of its own length each run, so that earlier runs' counters are not this one's.
    window = 600 + uuid.uuid4().int % 3000
    env = {
        "WORKERS": "2",
        "FRONT": "none",  # both workers must be reachable (tests.support.wait_for_every_worker)
        "RATE_LIMIT_STORAGE_URI": "redis://127.0.0.1:6379",
        "FEEDBACK_RATE_LIMIT": f"5 per {window} seconds",
        "FEEDBACK_MAX_LABELS": "50",
    }
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    with run_server(registry.env, env, log_dir) as server:
        wait_for_every_worker(server.url, server.log_path, workers=2)
        answer = _recognize(server.url, seed_png).json()
        # At once, each on its own connection, so that both workers take some.
        with ThreadPoolExecutor(8) as pool:
            responses = list(
                pool.map(
                    lambda _: _label(server.url, answer["record_id"], answer["feedback_token"], 9),
                    range(8),
                )
            )
        statuses = sorted(r.status_code for r in responses)
        lines = access_lines(server.log_path)
        pids = {line["pid"] for line in lines if line["path"] == "/feedback"}
    assert statuses == [200] * 5 + [429] * 3
    assert len(pids) == 2, "both workers answered /feedback"
