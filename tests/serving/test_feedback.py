"""POST /feedback in-process: only the answer's holder may label it, labels and their
history, the cap, review holds, and every malformed request -> JSON 4xx."""

from __future__ import annotations

import json

import pytest

from serving import create_app
from serving.image_log import recorder


@pytest.fixture
def answer(client, seed_png: bytes) -> dict:
    response = client.post("/recognize", data=seed_png, content_type="image/png")
    assert response.status_code == 200
    return response.get_json()


def _label(client, answer: dict, label: int, **headers):
    body = {
        "record_id": answer["record_id"],
        "feedback_token": answer["feedback_token"],
        "label": label,
    }
    return client.post("/feedback", json=body, headers=headers)


def test_the_answer_carries_a_record_id_and_a_token(answer: dict):
    assert answer["record_id"] != answer["request_id"]
    assert len(answer["record_id"]) == 32
    assert len(answer["feedback_token"]) >= 43  # 256 bits


def test_a_label_is_stored_and_a_new_one_replaces_it(app, client, answer: dict):
    first = _label(client, answer, 9)
    assert first.status_code == 200, first.get_json()
    assert first.get_json()["label"] == 9
    assert first.get_json()["held_for_review"] is False
    second = _label(client, answer, 4)
    assert second.status_code == 200
    record_id = answer["record_id"]
    with app.app_context():
        log = recorder().image_log
        assert log.get(record_id).label == 4
        history = log.history(record_id)
    assert [f.label for f in history] == [9, 4]
    assert history[0].labelled_at < history[1].labelled_at
    assert second.get_json()["labelled_at"] == history[1].labelled_at.isoformat(
        timespec="microseconds"
    )


def test_without_the_token_nobody_labels(client, answer: dict):
    body = {"record_id": answer["record_id"], "label": 3}
    response = client.post("/feedback", json=body)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "missing_feedback_token"


@pytest.mark.parametrize(
    "token",
    ["x", "A" * 43, "forged", "{token}"[:-1]],
    ids=["short", "same-length", "word", "truncated"],
)
def test_a_wrong_token_is_403_and_stores_nothing(app, client, answer: dict, token: str):
    if token == "{token":
        token = answer["feedback_token"][:-1]
    body = {"record_id": answer["record_id"], "feedback_token": token, "label": 3}
    response = client.post("/feedback", json=body)
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "wrong_feedback_token"
    with app.app_context():
        assert recorder().image_log.history(answer["record_id"]) == []


def test_one_answers_token_does_not_label_another(client, seed_png: bytes, answer: dict):
    other = client.post("/recognize", data=seed_png, content_type="image/png").get_json()
    body = {
        "record_id": other["record_id"],
        "feedback_token": answer["feedback_token"],
        "label": 3,
    }
    assert client.post("/feedback", json=body).status_code == 403


def test_a_forged_request_id_names_no_record_and_unlocks_nothing(app, client, seed_png: bytes):
    # The attack: a client sends the id it expects another client to use, first.
    headers = {"X-Request-ID": "order-1002"}
    attacker = client.post("/recognize", data=seed_png, content_type="image/png", headers=headers)
    other_png = seed_png[:-12] + seed_png[-12:]  # the same image is fine too; use another:
    victim = client.post("/recognize", data=other_png, content_type="image/png", headers=headers)
    assert attacker.status_code == victim.status_code == 200
    a, v = attacker.get_json(), victim.get_json()
    assert a["request_id"] == v["request_id"] == "order-1002"  # echoed: a correlation id
    assert victim.headers["X-Request-ID"] == "order-1002"
    assert a["record_id"] != v["record_id"] and "order-1002" not in (a["record_id"], v["record_id"])
    with app.app_context():
        assert recorder().image_log.get("order-1002") is None
    # Neither the request id nor the attacker's token labels the victim's record.
    for record_id, token in (("order-1002", a["feedback_token"]), (v["record_id"], "order-1002")):
        body = {"record_id": record_id, "feedback_token": token, "label": 1}
        assert client.post("/feedback", json=body).status_code == 403


def test_a_record_takes_at_most_its_cap_of_labels(registry, seed_png: bytes):
    app = create_app(
        {"mlflow_tracking_uri": registry.tracking_uri, "workers": 1, "feedback_max_labels": 3}
    )
    client = app.test_client()
    answer = client.post("/recognize", data=seed_png, content_type="image/png").get_json()
    for label in (9, 8, 9):
        assert _label(client, answer, label).status_code == 200
    refused = _label(client, answer, 7)
    assert refused.status_code == 409
    error = refused.get_json()["error"]
    assert error["code"] == "label_limit_reached" and "3 labels" in error["message"]
    with app.app_context():
        assert [f.label for f in recorder().image_log.history(answer["record_id"])] == [9, 8, 9]


def test_a_label_against_a_confident_answer_is_held_and_not_exported(
    registry, seed_png: bytes, tmp_path
):
    from training.export_feedback import export

    # Threshold 0: every contradicting label counts as against a confident prediction.
    app = create_app(
        {
            "mlflow_tracking_uri": registry.tracking_uri,
            "workers": 1,
            "review_confidence": 0.0,
            "admin_token": "admin-secret-token",
            "data_dir": tmp_path / "data",  # an image log of its own: all of it is exported
        }
    )
    client = app.test_client()
    answer = client.post("/recognize", data=seed_png, content_type="image/png").get_json()
    assert answer["digit"] == 9
    agreeing = client.post("/recognize", data=seed_png, content_type="image/png").get_json()
    assert _label(client, agreeing, 9).get_json()["held_for_review"] is False
    held = _label(client, answer, 1)
    assert held.status_code == 200 and held.get_json()["held_for_review"] is True
    with app.app_context():
        log = recorder().image_log
        before = export(log, tmp_path / "before.npz")
    assert before.count == 1  # the agreeing label only

    auth = {"Authorization": "Bearer admin-secret-token"}
    assert client.get("/admin/reviews").status_code == 401
    listed = client.get("/admin/reviews", headers=auth).get_json()["labels"]
    assert [(h["record_id"], h["label"], h["digit"]) for h in listed] == [
        (answer["record_id"], 1, 9)
    ]
    decided = client.post(f"/admin/reviews/{listed[0]['id']}", json={"accept": True}, headers=auth)
    assert decided.status_code == 200, decided.get_json()
    assert client.get("/admin/reviews", headers=auth).get_json()["labels"] == []
    missing = client.post("/admin/reviews/999999", json={"accept": True}, headers=auth)
    assert missing.status_code == 404
    with app.app_context():
        after = export(recorder().image_log, tmp_path / "after.npz")
    assert after.count == 2


def test_unknown_fields_are_ignored(client, answer: dict):
    body = {
        "record_id": answer["record_id"],
        "feedback_token": answer["feedback_token"],
        "label": 2,
        "comment": "a two, surely",
    }
    response = client.post("/feedback", json=body)
    assert response.status_code == 200, response.get_json()
    assert set(response.get_json()) == {"record_id", "label", "labelled_at", "held_for_review"}


BAD_FEEDBACK = [
    ("missing-record-id", {"feedback_token": "T", "label": 3}, 400, "missing_record_id"),
    ("missing-token", {"record_id": "ID", "label": 3}, 400, "missing_feedback_token"),
    ("missing-label", {"record_id": "ID", "feedback_token": "T"}, 400, "missing_label"),
    ("label-10", {"record_id": "ID", "feedback_token": "T", "label": 10}, 400, "invalid_label"),
    (
        "label-minus-1",
        {"record_id": "ID", "feedback_token": "T", "label": -1},
        400,
        "invalid_label",
    ),
    (
        "label-string",
        {"record_id": "ID", "feedback_token": "T", "label": "3"},
        400,
        "invalid_label",
    ),
    ("label-float", {"record_id": "ID", "feedback_token": "T", "label": 3.5}, 400, "invalid_label"),
    ("label-3.0", {"record_id": "ID", "feedback_token": "T", "label": 3.0}, 400, "invalid_label"),
    ("label-true", {"record_id": "ID", "feedback_token": "T", "label": True}, 400, "invalid_label"),
    ("label-null", {"record_id": "ID", "feedback_token": "T", "label": None}, 400, "invalid_label"),
    (
        "record-id-number",
        {"record_id": 12, "feedback_token": "T", "label": 3},
        400,
        "invalid_record_id",
    ),
    (
        "record-id-empty",
        {"record_id": "", "feedback_token": "T", "label": 3},
        400,
        "invalid_record_id",
    ),
    (
        "record-id-long",
        {"record_id": "x" * 65, "feedback_token": "T", "label": 3},
        400,
        "invalid_record_id",
    ),
    (
        "token-number",
        {"record_id": "ID", "feedback_token": 5, "label": 3},
        400,
        "invalid_feedback_token",
    ),
    (
        "token-empty",
        {"record_id": "ID", "feedback_token": "", "label": 3},
        400,
        "invalid_feedback_token",
    ),
    # Checked in order, the first wrong field is named.
    ("both-wrong", {"record_id": 12, "feedback_token": "T", "label": 10}, 400, "invalid_record_id"),
    ("all-missing", {}, 400, "missing_record_id"),
    ("body-a-list", ["ID", 3], 400, "invalid_body"),
    ("body-a-number", 3, 400, "invalid_body"),
]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [case[1:] for case in BAD_FEEDBACK],
    ids=[c[0] for c in BAD_FEEDBACK],
)
def test_bad_feedback_is_a_json_error(client, answer: dict, body, status: int, code: str):
    if isinstance(body, dict):  # real values: only the field under test is wrong
        body = dict(body)
        if body.get("record_id") == "ID":
            body["record_id"] = answer["record_id"]
        if body.get("feedback_token") == "T":
            body["feedback_token"] = answer["feedback_token"]
    response = client.post("/feedback", data=json.dumps(body), content_type="application/json")
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        (b'{"record_id": "x", "label": ', "application/json", 400, "malformed_json"),
        (b"", "application/json", 400, "malformed_json"),
        (
            b"record_id=x&label=3",
            "application/x-www-form-urlencoded",
            415,
            "unsupported_media_type",
        ),
        (b'{"record_id": "x", "label": 3}', "text/plain", 415, "unsupported_media_type"),
        (b'{"record_id": "x", "label": 3}', None, 415, "unsupported_media_type"),
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


def test_the_log_links_the_request_id_to_the_record_never_the_token(client, seed_png, capsys):
    from tests.serving.test_logs import request_lines

    capsys.readouterr()
    headers = {"X-Request-ID": "corr-7"}
    answer = client.post("/recognize", data=seed_png, content_type="image/png", headers=headers)
    out = capsys.readouterr().out
    (line,) = request_lines(out)
    assert (line["request_id"], line["record_id"]) == ("corr-7", answer.get_json()["record_id"])
    assert answer.get_json()["feedback_token"] not in out
