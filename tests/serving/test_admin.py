"""Operator endpoints behind ADMIN_TOKEN: /admin/status carries the details that the public
answers (/ready, errors, /admin/reload's codes) leave out."""

from __future__ import annotations

import pytest

from serving import create_app
from tests import tiny_model

TOKEN = "s3cret-admin"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def admin_client(registry, tmp_path):
    app = create_app(
        {
            "mlflow_tracking_uri": registry.tracking_uri,
            "admin_token": TOKEN,
            "state_dir": tmp_path / "state",
            "model_poll_interval": 0,
        }
    )
    return app.test_client()


@pytest.fixture
def empty_client(empty_registry, tmp_path):
    app = create_app(
        {
            "mlflow_tracking_uri": empty_registry.tracking_uri,
            "admin_token": TOKEN,
            "state_dir": tmp_path / "state",
            "model_poll_interval": 0,
        }
    )
    return app.test_client()


def test_status_needs_the_token(admin_client, registry):
    assert admin_client.get("/admin/status").status_code == 401
    wrong = admin_client.get("/admin/status", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and wrong.get_json()["error"]["code"] == "forbidden"
    app = create_app({"mlflow_tracking_uri": registry.tracking_uri, "model_poll_interval": 0})
    disabled = app.test_client().get("/admin/status", headers=AUTH)
    assert disabled.status_code == 403
    assert disabled.get_json()["error"]["code"] == "admin_disabled"


def test_status_says_where_the_model_came_from_and_what_is_kept(admin_client):
    body = admin_client.get("/admin/status", headers=AUTH).get_json()
    assert body["model"] == {"name": "digits", "version": "1", "family": tiny_model.FAMILY}
    assert body["served_from"] == "registry" and body["wanted_version"] == "1"
    assert body["degraded"] is None and body["last_load_failure_detail"] is None
    assert body["last_good"]["version"] == "1"
    assert isinstance(body["pid"], int)


def test_nothing_behind_the_uri_details_only_for_the_operator(empty_client):
    ready = empty_client.get("/ready")
    assert ready.status_code == 503
    body = ready.get_json()
    assert body["error"]["code"] == "model_unavailable"
    assert body["registry"]["error"] == "no version is behind models:/digits/Production"
    reload = empty_client.post("/admin/reload", headers=AUTH)
    assert reload.status_code == 200
    assert reload.get_json()["error"] == "no_version"  # a code, not MLflow's text
    detail = empty_client.get("/admin/status", headers=AUTH).get_json()
    assert detail["registry_error_detail"]  # the registry's own words, for the operator
    assert detail["registry"]["error"] == body["registry"]["error"]


def test_reload_answers_codes_and_the_public_status(admin_client):
    reload = admin_client.post("/admin/reload", headers=AUTH)
    assert reload.status_code == 200
    body = reload.get_json()
    assert body["changed"] is False and body["error"] is None
    assert body["model"]["version"] == "1" and body["degraded"] is None


def test_every_admin_route_needs_the_token(admin_client):
    # Every view under /admin (reload, status, reviews, and any added later) starts with
    # serving.admin.require_admin_token: without the token nothing runs, with a wrong one 403.
    app = admin_client.application
    rules = [r for r in app.url_map.iter_rules() if r.rule.startswith("/admin")]
    assert {r.endpoint for r in rules} >= {"admin.reload", "admin.status", "review.held_labels",
                                           "review.decide"}  # fmt: skip
    for rule in rules:
        path = rule.rule.replace("<int:label_id>", "1")
        method = "POST" if "POST" in rule.methods else "GET"
        missing = admin_client.open(path, method=method, json={"accept": True})
        wrong = admin_client.open(path, method=method, json={"accept": True},
                                  headers={"Authorization": "Bearer nope"})  # fmt: skip
        assert (missing.status_code, wrong.status_code) == (401, 403), path
        assert wrong.get_json()["error"]["code"] == "forbidden"
