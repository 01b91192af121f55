"""Operator endpoints, behind ``ADMIN_TOKEN``."""

from __future__ import annotations

import hmac
import os

from flask import Blueprint, current_app, jsonify, request

from serving import image_log
from serving.errors import ApiError
from serving.model_store import model_store
from serving.schemas import AdminStatus, ModelVersion, ReloadResult

bp = Blueprint("admin", __name__, url_prefix="/admin")


def require_admin_token() -> None:
    """Raises the JSON 401/403 unless the request carries ``ADMIN_TOKEN`` (compared in constant
    time); every admin view (here and serving/review.py) calls it first."""
    expected = current_app.config["SETTINGS"].admin_token
    if not expected:
        raise ApiError(403, "admin_disabled", "set ADMIN_TOKEN to enable admin endpoints")
    auth = request.headers.get("Authorization", "")
    given = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
    given = given or request.headers.get("X-Admin-Token", "")
    if not given:
        raise ApiError(401, "unauthorized", "send the admin token as 'Authorization: Bearer …'")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(403, "forbidden", "wrong admin token")


@bp.post("/reload")
def reload():
    """Check the registry now, in this worker and (via the master's reload file) in its
    siblings; a version that failed before is tried again."""
    require_admin_token()
    store = model_store()
    result = store.check(force=True)
    store.request_reload_everywhere()
    loaded = store.current
    model = (
        ModelVersion(name=loaded.ref.name, version=loaded.ref.version, family=loaded.family)
        if loaded
        else None
    )
    # ``error`` is a code; the details are in GET /admin/status and the log.
    answer = ReloadResult(changed=result.changed, model=model, error=result.error, **store.status())
    return jsonify(answer.model_dump())


@bp.get("/status")
def status():
    """This worker's state with the details public answers leave out: the errors' own
    text (registry, model load, storage) and where the served model came from."""
    require_admin_token()
    recorder = image_log.recorder()
    answer = AdminStatus(
        pid=os.getpid(),
        **model_store().admin_status(),
        storage_error_detail=recorder.storage_problem(),
    )
    return jsonify(answer.model_dump())
