"""POST /feedback in-process: labels, their history, and every malformed request → JSON 4xx."""

from __future__ import annotations

import json

import pytest

from serving.image_log import recorder


@pytest.fixture
def request_id(client, seed_png: bytes) -> str:
    response = client.post("/recognize", data=seed_png, content_type="image/png")
    assert response.status_code == 200
    return response.get_json()["request_id"]


def test_a_label_is_stored_and_a_new_one_replaces_it(app, client, request_id: str):
    first = client.post("/feedback", json={"request_id": request_id, "label": 4})
    assert first.status_code == 200, first.get_json()
    assert first.get_json()["label"] == 4
    second = client.post("/feedback", json={"request_id": request_id, "label": 9})
    assert second.status_code == 200
    with app.app_context():
        log = recorder().image_log
        assert log.get(request_id).label == 9
        history = log.history(request_id)
    assert [f.label for f in history] == [4, 9]
    assert history[0].labelled_at < history[1].labelled_at
    assert second.get_json()["labelled_at"] == history[1].labelled_at.isoformat(
        timespec="microseconds"
    )


def test_unknown_fields_are_ignored(client, request_id: str):
    body = {"request_id": request_id, "label": 2, "comment": "a two, surely"}
    response = client.post("/feedback", json=body)
    assert response.status_code == 200, response.get_json()
    assert set(response.get_json()) == {"request_id", "label", "labelled_at"}


@pytest.mark.parametrize("unknown", ["never-seen", "has space", "nul\x00", "ünïcode", "a\n"])
def test_an_unknown_request_id_is_404(client, unknown: str):
    response = client.post("/feedback", json={"request_id": unknown, "label": 3})
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "unknown_request_id"


BAD_FEEDBACK = [
    ("missing-request-id", {"label": 3}, 400, "missing_request_id"),
    ("missing-label", {"request_id": "ID"}, 400, "missing_label"),
    ("label-10", {"request_id": "ID", "label": 10}, 400, "invalid_label"),
    ("label-minus-1", {"request_id": "ID", "label": -1}, 400, "invalid_label"),
    ("label-string", {"request_id": "ID", "label": "3"}, 400, "invalid_label"),
    ("label-float", {"request_id": "ID", "label": 3.5}, 400, "invalid_label"),
    ("label-integral-float", {"request_id": "ID", "label": 3.0}, 400, "invalid_label"),
    ("label-true", {"request_id": "ID", "label": True}, 400, "invalid_label"),
    ("label-null", {"request_id": "ID", "label": None}, 400, "invalid_label"),
    ("request-id-number", {"request_id": 12, "label": 3}, 400, "invalid_request_id"),
    ("request-id-empty", {"request_id": "", "label": 3}, 400, "invalid_request_id"),
    ("request-id-too-long", {"request_id": "x" * 129, "label": 3}, 400, "invalid_request_id"),
    # Checked in order, the first wrong field is named.
    ("both-wrong", {"request_id": 12, "label": 10}, 400, "invalid_request_id"),
    ("both-missing", {}, 400, "missing_request_id"),
    ("body-a-list", ["ID", 3], 400, "invalid_body"),
    ("body-a-number", 3, 400, "invalid_body"),
]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [case[1:] for case in BAD_FEEDBACK],
    ids=[c[0] for c in BAD_FEEDBACK],
)
def test_bad_feedback_is_a_json_error(client, request_id: str, body, status: int, code: str):
    if isinstance(body, dict) and body.get("request_id") == "ID":
        body = {**body, "request_id": request_id}  # a real id: only the other field is wrong
    response = client.post("/feedback", data=json.dumps(body), content_type="application/json")
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        (b'{"request_id": "x", "label": ', "application/json", 400, "malformed_json"),
        (b"", "application/json", 400, "malformed_json"),
        (
            b"request_id=x&label=3",
            "application/x-www-form-urlencoded",
            415,
            "unsupported_media_type",
        ),
        (b'{"request_id": "x", "label": 3}', "text/plain", 415, "unsupported_media_type"),
        (b'{"request_id": "x", "label": 3}', None, 415, "unsupported_media_type"),
    ],
    ids=["truncated-json", "empty-body", "form", "text-plain", "no-content-type"],
)
def test_unreadable_feedback_is_a_json_error(client, data, content_type, status, code):
    response = client.post("/feedback", data=data, content_type=content_type)
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code


def test_feedback_only_accepts_post(client):
    response = client.get("/feedback")
    assert response.status_code == 405
    assert response.get_json()["error"]["code"] == "method_not_allowed"
