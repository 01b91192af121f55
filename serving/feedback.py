"""``POST /feedback``: the true digit of an image the service answered for.

Body: JSON ``{"record_id": …, "feedback_token": …, "label": 0-9}``, validated by
``serving.schemas.Feedback``. Only the party that got the answer may label it: the token is
HMAC-SHA256 of the record id under a server secret, handed out once in the /recognize
answer and checked in constant time, so it can be neither guessed nor derived from
anything a client chooses (the client's ``X-Request-ID`` names no record).

Labelling again replaces the label; every change is kept with its time (see
``ImageLog.history``), up to ``FEEDBACK_MAX_LABELS`` per record. A label that contradicts a
prediction of confidence >= ``REVIEW_CONFIDENCE`` is stored but held for review: it is not
exported for training until a reviewer accepts it (``python -m training.review``,
``/admin/reviews``).

A service running without its image log (``IMAGE_LOG=off``) hands out no record to label:
this answers 409 ``image_log_off``.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from pydantic import ValidationError

from imagelog.base import StorageError, TooManyLabels, utc_now
from serving import read
from serving.bodies import json_body
from serving.errors import ApiError
from serving.image_log import image_log, image_log_off, recorder
from serving.schemas import MAX_FEEDBACK_TOKEN, MAX_RECORD_ID, Feedback, FeedbackReceipt

bp = Blueprint("feedback", __name__)

SECRET_NAME = "feedback-token"  # the image log's shared secret, when none is configured
_SECRET_EXTENSION = "digits_feedback_secret"
_TOKEN_CONTEXT = b"digits feedback token v1\0"

_MESSAGES = {
    "invalid_body": 'send a JSON object {"record_id": …, "feedback_token": …, "label": 0-9}',
    "missing_record_id": "the JSON body needs a field 'record_id' (from the /recognize answer)",
    "invalid_record_id": "'record_id' must be a non-empty string of at most "
    f"{MAX_RECORD_ID} characters",
    "missing_feedback_token": "the JSON body needs a field 'feedback_token' (from the "
    "/recognize answer)",
    "invalid_feedback_token": "'feedback_token' must be a non-empty string of at most "
    f"{MAX_FEEDBACK_TOKEN} characters",
    "missing_label": "the JSON body needs a field 'label'",
    "invalid_label": "'label' must be an integer from 0 to 9 (for a /read answer: the "
    "number as a string of digits)",
}


def _secret() -> bytes:
    cached = current_app.extensions.get(_SECRET_EXTENSION)
    if cached is None:
        configured = current_app.config["SETTINGS"].feedback_secret
        if configured:
            cached = configured.encode()
        else:  # the first process to ask stores one; every other reads that one
            cached = image_log().shared_secret(SECRET_NAME, secrets.token_bytes(32))
        current_app.extensions[_SECRET_EXTENSION] = cached
    return cached


def token_for(record_id: str) -> str:
    """The feedback token of a record: only the server, holding the secret, can make it.

    ``StorageError`` if the shared secret cannot be read from the image log yet."""
    mac = hmac.digest(_secret(), _TOKEN_CONTEXT + record_id.encode(), "sha256")
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def _token_matches(record_id: str, token: str) -> bool:
    expected = token_for(record_id).encode()
    return hmac.compare_digest(expected, token.encode("utf-8", "surrogatepass"))


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
    if not recorder().enabled:  # IMAGE_LOG=off: no answer has a record to label
        raise image_log_off()
    if request.mimetype != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            'send application/json {"record_id": …, "feedback_token": …, "label": 0-9}',
        )
    given = parse(json_body())
    record_id, label = given.record_id, given.label
    settings = current_app.config["SETTINGS"]
    # A /read answer is labelled with its number (a string), any other with a digit.
    number = read.parse_number_record(record_id)
    if (number is None) != isinstance(label, int):
        raise ApiError(400, "invalid_label", _MESSAGES["invalid_label"])
    try:
        if not _token_matches(record_id, given.feedback_token):
            raise ApiError(
                403,
                "wrong_feedback_token",
                "this feedback_token is not the one the /recognize answer for that record_id "
                "carried",
            )
        log = image_log()
        labelled_at = utc_now()
        if number is not None:
            held = read.label_number(
                log,
                number,
                str(label),
                at=labelled_at,
                max_labels=settings.feedback_max_labels,
                review_confidence=settings.review_confidence,
            )
            if held is None:
                raise ApiError(404, "unknown_record_id", "no logged record has this record_id")
            receipt = FeedbackReceipt(
                record_id=record_id, label=label, labelled_at=labelled_at, held_for_review=held
            )
            return jsonify(receipt.model_dump(mode="json"))
        record = log.get(record_id)
        if record is None:  # not logged, or deleted by retention since
            raise ApiError(404, "unknown_record_id", "no logged record has this record_id")
        hold = label != record.digit and record.confidence >= settings.review_confidence
        found = log.label(
            record_id, label, at=labelled_at, max_labels=settings.feedback_max_labels, hold=hold
        )
    except TooManyLabels:
        raise ApiError(
            409,
            "label_limit_reached",
            f"this record has {settings.feedback_max_labels} labels already, the most one "
            "record may have (FEEDBACK_MAX_LABELS)",
        ) from None
    except StorageError as exc:
        raise ApiError(
            503, "storage_unavailable", "the label could not be stored; try again later"
        ) from exc
    if not found:
        raise ApiError(404, "unknown_record_id", "no logged record has this record_id")
    receipt = FeedbackReceipt(
        record_id=record_id, label=label, labelled_at=labelled_at, held_for_review=hold
    )
    return jsonify(receipt.model_dump(mode="json"))
