"""The HTTP surface: /recognize, /health, /ready."""

from __future__ import annotations

import numpy as np
from flask import Blueprint, current_app, jsonify, request

from imagelog.base import StorageError
from pyfunc import segment
from pyfunc.errors import MultipleDigits
from pyfunc.preprocess import Limits
from serving import (
    feedback,
    image_log,
    logs,
    metrics,
    payload,
    recognize_options,
    request_id,
    server_timing,
)
from serving.errors import ApiError
from serving.model_store import model_store
from serving.schemas import ErrorDetail, Health, ModelVersion, NotReady, Ready, Recognition

bp = Blueprint("digits", __name__)


def _settings():
    return current_app.config["SETTINGS"]


@bp.post("/recognize")
def recognize():
    # Server-Timing stages (SERVER_TIMING=true): each mark ends the stage it names.
    server_timing.mark("route")
    settings = _settings()
    image = payload.image_bytes(request, settings)
    options = recognize_options.parse(request)
    server_timing.mark("body")
    loaded = model_store().require()
    limits = Limits(max_side=settings.max_image_side, max_pixels=settings.max_image_pixels)
    recorder = image_log.recorder()
    # A draft (a drawing in progress) is answered, never stored: see recognize_options.
    # Nor is anything with IMAGE_LOG=off.
    upload = recorder.stage(image) if recorder.enabled and not options.draft else None
    server_timing.mark("log_stage")
    try:
        # Decoded once, for the check and the model: the array carries the decoding, and the
        # check's ink map for the model's normalisation (pyfunc.preprocess.DecodedImage).
        decoded = recognize_options.decode(image, limits)
        server_timing.mark("decode")
        # The model takes the decoded pixels when its pre-processing decodes as pyfunc's
        # shared one does (the same array either way); a family of its own gets the bytes.
        model_input = decoded if recognize_options.shares_decoding(loaded.model) else image
        # Several digits side by side: 422 multiple_digits, not a guess at one of them.
        _require_single(loaded.model, image, decoded, model_input, limits)
        server_timing.mark("segment")
        prediction = loaded.model.classify([model_input], limits=limits)[0]
        server_timing.mark("model")
    except BaseException:
        if upload is not None:
            recorder.discard(upload)
        raise
    if options.draft:
        logged = False
        metrics.count_draft()
    else:
        # Stored durably before the answer leaves; 503 if it cannot be (LOG_FAILURE_POLICY).
        logged = upload is not None and recorder.record(
            upload, prediction, loaded.ref.name, loaded.ref.version
        )
        server_timing.mark("image_log")
        metrics.observe_prediction(prediction.digit, prediction.confidence)
        server_timing.mark("metrics")
    record_id = token = None
    if logged:
        record_id = request_id.record_id()
        try:
            token = feedback.token_for(record_id)
        except StorageError as exc:  # the shared secret could not be read: rare, retryable
            raise ApiError(
                503, "storage_unavailable", "the answer could not be given a feedback token"
            ) from exc
    server_timing.mark("feedback_token")
    answer = Recognition(
        digit=prediction.digit,
        confidence=prediction.confidence,
        probabilities=prediction.probabilities,
        low_confidence=prediction.confidence < settings.low_confidence_threshold,
        model=_version(loaded),
        request_id=request_id.current(),
        record_id=record_id,
        feedback_token=token,
        logged=logged,
        draft=options.draft,
        model_input=(
            recognize_options.model_input_png(loaded.model, model_input, limits)
            if options.return_input
            else None
        ),
    )
    # `logged` is in the answer only when false.
    body = answer.model_dump(exclude_defaults=True)
    response = logs.answered(jsonify(body), body)
    server_timing.mark("json")
    return response


def _require_single(
    model, image: bytes, decoded: np.ndarray, model_input: bytes | np.ndarray, limits: Limits
) -> None:
    """:class:`MultipleDigits` for several marks side by side, unless the model's own
    pre-processing finds no stroke in the picture at all (a texture, a pattern): then its
    :class:`NoDigit`, in its words.

    The check looks at the already decoded pixels. Its boxes are then in those pixels,
    which decoding reduces for a big image; the answer gives them in the pixels as sent, so
    a refused image is segmented once more from its bytes (refusals only)."""
    try:
        segment.require_single(decoded, limits)
    except MultipleDigits as refused:
        recognize_options.pre_process_of(model)([model_input], limits=limits)
        try:
            segment.require_single(image, limits)
        except MultipleDigits as as_sent:
            raise as_sent from None
        raise refused  # (the bytes gave the same ink map: not reached)


# The bench's ceiling (CEILING_ROUTE=true, bench/ceiling.py): the same stack answering a
# constant, so a benchmark shows what nginx + gunicorn + Flask and the hooks cost alone.
CEILING_ANSWER = {"digit": 0, "constant": True}


def ceiling():
    request.get_data()  # read the body as /recognize does
    return jsonify(CEILING_ANSWER)


@bp.get("/health")
def health():
    return jsonify(Health(status="ok").model_dump())


@bp.get("/ready")
def ready():
    store = model_store()
    status = store.status()
    recorder = image_log.recorder()
    problem = recorder.storage_problem()
    # Public: the problem's own text (SQL, paths) is for the log and /admin/status.
    public_problem = STORAGE_PROBLEM if problem else None
    status["storage"] = {"state": "unavailable" if problem else "ok", "error": public_problem}
    loaded = store.current
    if loaded is None:
        return _not_ready("model_unavailable", store.unavailable_reason(), status)
    if problem and recorder.refuses_unlogged:  # every answer would be a 503 now
        return _not_ready("storage_unavailable", public_problem, status)
    state = "degraded" if status["degraded"] else "ready"
    answer = Ready(status=state, model=_version(loaded), **status)
    return jsonify(answer.model_dump())


STORAGE_PROBLEM = "the image log cannot store requests now"


def _not_ready(code: str, message: str, status: dict):
    error = ErrorDetail(code=code, message=message)
    status = {k: v for k, v in status.items() if k != "degraded"}
    return jsonify(NotReady(status="unavailable", error=error, **status).model_dump()), 503


def _version(loaded) -> ModelVersion:
    return ModelVersion(name=loaded.ref.name, version=loaded.ref.version, family=loaded.family)
