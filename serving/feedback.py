"""``POST /feedback``: the true digit of an image the service answered for.

Body: JSON ``{"request_id": "<id from /recognize>", "label": 0-9}``, validated by
``serving.schemas.Feedback``. Labelling again replaces the label; every change is kept
with its time (see ``ImageLog.history``).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request
from pydantic import ValidationError

from imagelog.base import StorageError, utc_now
from serving import request_id as serving_request_id
from serving.bodies import json_body
from serving.errors import ApiError
from serving.image_log import image_log
from serving.schemas import MAX_REQUEST_ID, Feedback, FeedbackReceipt

bp = Blueprint("feedback", __name__)

_MESSAGES = {
    "invalid_body": 'send a JSON object {"request_id": …, "label": 0-9}',
    "missing_request_id": "the JSON body needs a field 'request_id'",
    "invalid_request_id": "'request_id' must be a non-empty string of at most "
    f"{MAX_REQUEST_ID} characters",
    "missing_label": "the JSON body needs a field 'label'",
    "invalid_label": "'label' must be an integer from 0 to 9",
}


def parse(body: Any) -> Feedback:
    """A decoded JSON body as :class:`Feedback`, or an ApiError (400) naming the first
    field that is wrong: ``missing_<field>``, ``invalid_<field>`` or ``invalid_body``."""
    try:
        return Feedback.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        if not first["loc"]:  # not an object at all
            code = "invalid_body"
        else:
            kind = "missing" if first["type"] == "missing" else "invalid"
            code = f"{kind}_{first['loc'][0]}"
        raise ApiError(400, code, _MESSAGES[code]) from None


@bp.post("/feedback")
def feedback():
    if request.mimetype != "application/json":
        raise ApiError(
            415, "unsupported_media_type", 'send application/json {"request_id": …, "label": 0-9}'
        )
    given = parse(json_body())
    request_id, label = given.request_id, given.label
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
    receipt = FeedbackReceipt(request_id=request_id, label=label, labelled_at=labelled_at)
    return jsonify(receipt.model_dump(mode="json"))
