"""``POST /read``: every digit of an image, left to right, as a number.

The same three encodings and limits as ``/recognize`` (serving/payload.py). Finding the
digits and cutting their crops is the pyfunc's (:mod:`pyfunc.segment`); each crop, a
28×28 digit framed as MNIST frames one, is classified by the served model like any image;
touching digits are cut again where the model reads the parts best.

Logging: the answer's ``record_id`` is ``<id>-n<count>``; each digit is stored as its own
record ``<id>-<i>`` (i = 0 … count - 1, from the left) whose image is the digit's crop as a
PNG (28×28, white ink on black: what the model classified). So a label on the number
labels each digit, and ``training.export_feedback`` exports each labelled digit like any
other labelled image, without knowing about numbers. The whole image is not kept.
"""

from __future__ import annotations

import io
import re
from datetime import datetime

import numpy as np
from flask import Blueprint, current_app, jsonify, request
from PIL import Image

from imagelog.base import ImageLog, StorageError
from pyfunc.errors import MultipleDigits
from pyfunc.preprocess import Limits
from pyfunc.segment import read_number
from serving import feedback, image_log, metrics, payload, request_id
from serving.errors import ApiError
from serving.model_store import model_store
from serving.schemas import (
    ModelVersion,
    MultipleDigitsDetail,
    MultipleDigitsError,
    ReadDigit,
    Reading,
)

bp = Blueprint("read", __name__)

# At most this many digits are read from one image (a longer reading is a 422).
MAX_DIGITS = 12
_NUMBER_RECORD = re.compile(r"^(?P<id>[0-9a-f]{32})-n(?P<count>[0-9]{1,2})$")


def number_record_id(record_id: str, count: int) -> str:
    """The id a /read answer of ``count`` digits is labelled by."""
    return f"{record_id}-n{count}"


def digit_record_id(record_id: str, index: int) -> str:
    """The id the ``index``-th digit (from the left) of a /read answer is logged under."""
    return f"{record_id}-{index}"


def parse_number_record(record_id: str) -> tuple[str, int] | None:
    """(id, count) of a /read answer's ``record_id``, or None for any other record id."""
    match = _NUMBER_RECORD.fullmatch(record_id)
    return (match["id"], int(match["count"])) if match else None


@bp.post("/read")
def read():
    settings = current_app.config["SETTINGS"]
    image = payload.image_bytes(request, settings)
    loaded = model_store().require()
    limits = Limits(max_side=settings.max_image_side, max_pixels=settings.max_image_pixels)
    found = read_number(loaded.model, image, limits, max_digits=MAX_DIGITS)
    recorder = image_log.recorder()
    base = request_id.record_id()
    logged = True
    for i, (digit, prediction) in enumerate(found):
        # Each digit's crop is the record's image: what the model classified.
        upload = recorder.stage(_png(digit.crop))
        stored = recorder.record(
            upload,
            prediction,
            loaded.ref.name,
            loaded.ref.version,
            record_id=digit_record_id(base, i),
        )
        logged = logged and stored
        metrics.observe_read_digit(prediction.digit)
    record_id = token = None
    if logged:
        record_id = number_record_id(base, len(found))
        try:
            token = feedback.token_for(record_id)
        except StorageError as exc:
            raise ApiError(
                503, "storage_unavailable", "the answer could not be given a feedback token"
            ) from exc
    threshold = settings.low_confidence_threshold
    answer = Reading(
        number="".join(str(p.digit) for _, p in found),
        digits=[
            ReadDigit(digit=p.digit, confidence=p.confidence, box=list(d.box), touching=d.touching)
            for d, p in found
        ],
        low_confidence=any(p.confidence < threshold or d.refused for d, p in found),
        model=ModelVersion(name=loaded.ref.name, version=loaded.ref.version, family=loaded.family),
        request_id=request_id.current(),
        record_id=record_id,
        feedback_token=token,
        logged=logged,
    )
    return jsonify(answer.model_dump(exclude_defaults=True))


def _png(crop: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.round(np.clip(crop, 0, 1) * 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def label_number(
    log: ImageLog,
    number: tuple[str, int],
    label: str,
    *,
    at: datetime,
    max_labels: int,
    review_confidence: float,
) -> bool | None:
    """Label each digit record of a /read answer with its digit of ``label``.

    Returns whether any label is held for review, or None if a digit's record is gone."""
    base, count = number
    if len(label) != count:
        raise ApiError(
            400,
            "label_length_mismatch",
            f"this answer read {count} digits; 'label' must be a string of {count} digits",
        )
    records = [log.get(digit_record_id(base, i)) for i in range(count)]
    if any(r is None for r in records):
        return None
    held = False
    for i, (record, char) in enumerate(zip(records, label, strict=True)):
        assert record is not None  # checked above
        digit = int(char)
        hold = digit != record.digit and record.confidence >= review_confidence
        if not log.label(digit_record_id(base, i), digit, at=at, max_labels=max_labels, hold=hold):
            return None
        held = held or hold
    return held


def init_app(app) -> None:
    app.register_blueprint(bp)

    @app.errorhandler(MultipleDigits)
    def multiple_digits(exc: MultipleDigits):
        # /recognize's answer to a number: where the digits are, and where to send it.
        detail = MultipleDigitsDetail(
            code=exc.code,
            message=f"{exc}; send it to POST /read to read them all",
            count=len(exc.boxes),
            boxes=[list(b) for b in exc.boxes],
        )
        response = jsonify(MultipleDigitsError(error=detail).model_dump())
        response.status_code = exc.status
        return response
