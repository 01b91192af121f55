"""``POST /feedback``: the true digit of an image the service answered for.

Body: JSON ``{"request_id": "<id from /recognize>", "label": 0-9}``. Labelling again
replaces the label; every change is kept with its time (see ``ImageLog.history``).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from imagelog.base import StorageError, utc_now
from serving import request_id as serving_request_id
from serving.errors import ApiError
from serving.image_log import image_log

bp = Blueprint("feedback", __name__)

MAX_REQUEST_ID = 128  # as serving.request_id accepts from clients


def parse(body: Any) -> tuple[str, int]:
    """The request id and label of a decoded JSON body, or an ApiError (400)."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", 'send a JSON object {"request_id": …, "label": 0-9}')
    if "request_id" not in body:
        raise ApiError(400, "missing_request_id", "the JSON body needs a field 'request_id'")
    request_id = body["request_id"]
    if not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_REQUEST_ID:
        raise ApiError(
            400,
            "invalid_request_id",
            f"'request_id' must be a non-empty string of at most {MAX_REQUEST_ID} characters",
        )
    if "label" not in body:
        raise ApiError(400, "missing_label", "the JSON body needs a field 'label'")
    label = body["label"]
    # bool is an int in Python; true is not a digit.
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label <= 9:
        raise ApiError(400, "invalid_label", "'label' must be an integer from 0 to 9")
    return request_id, label


@bp.post("/feedback")
def feedback():
    if request.mimetype != "application/json":
        raise ApiError(
            415, "unsupported_media_type", 'send application/json {"request_id": …, "label": 0-9}'
        )
    body = request.get_json(silent=True)
    if body is None:
        raise ApiError(400, "malformed_json", "the request body is not valid JSON")
    request_id, label = parse(body)
    labelled_at = utc_now()
    try:
        # An id the service would never assign was never logged: no need to ask the
        # database (PostgreSQL would even refuse some characters, e.g. NUL).
        found = serving_request_id.is_sane(request_id) and image_log().label(
            request_id, label, at=labelled_at
        )
    except StorageError as exc:
        raise ApiError(
            503, "storage_unavailable", "the label could not be stored; try again later"
        ) from exc
    if not found:
        raise ApiError(404, "unknown_request_id", f"no logged request has id {request_id!r}")
    return jsonify(
        request_id=request_id,
        label=label,
        labelled_at=labelled_at.isoformat(timespec="microseconds"),
    )
