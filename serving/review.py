"""``/admin/reviews``: labels held for review (they contradict a confident prediction), and
the reviewer's verdict. Behind the admin token, like the other admin views; the same work
from a shell is ``python -m training.review``."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from imagelog.base import REVIEW_STATES, StorageError
from serving.admin import require_admin_token
from serving.bodies import json_body
from serving.errors import ApiError
from serving.image_log import image_log
from serving.schemas import HeldLabel, HeldLabels, ReviewDecision

bp = Blueprint("review", __name__)
MAX_LISTED = 500


def _storage_error(exc: StorageError) -> ApiError:
    return ApiError(503, "storage_unavailable", "the image log cannot be read now; try again")


@bp.get("/admin/reviews")
def held_labels():
    require_admin_token()
    state = request.args.get("state", "pending")
    if state not in REVIEW_STATES:
        raise ApiError(400, "invalid_state", f"'state' is one of {', '.join(REVIEW_STATES)}")
    try:
        limit = min(int(request.args.get("limit", 100)), MAX_LISTED)
    except ValueError:
        raise ApiError(400, "invalid_limit", "'limit' must be an integer") from None
    try:
        held = image_log().held(state, limit=max(limit, 1))
    except StorageError as exc:
        raise _storage_error(exc) from exc
    labels = [
        HeldLabel(
            id=h.id,
            record_id=h.request_id,
            label=h.label,
            labelled_at=h.labelled_at,
            digit=h.digit,
            confidence=h.confidence,
            review=h.review,
        )
        for h in held
    ]
    return jsonify(HeldLabels(labels=labels).model_dump(mode="json"))


@bp.post("/admin/reviews/<int:label_id>")
def decide(label_id: int):
    require_admin_token()
    try:
        decision = ReviewDecision.model_validate(json_body())
    except ValueError:  # pydantic's ValidationError
        raise ApiError(400, "invalid_body", 'send {"accept": true} or {"accept": false}') from None
    try:
        found = image_log().review(label_id, accept=decision.accept)
    except StorageError as exc:
        raise _storage_error(exc) from exc
    if not found:
        raise ApiError(404, "unknown_label", f"no label held for review has id {label_id}")
    return jsonify({"id": label_id, "review": "accepted" if decision.accept else "rejected"})
