"""The HTTP surface: /recognize, /health, /ready."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from pyfunc.preprocess import Limits
from serving import payload, request_id
from serving.model_store import model_store

bp = Blueprint("digits", __name__)


def _settings():
    return current_app.config["SETTINGS"]


@bp.post("/recognize")
def recognize():
    settings = _settings()
    image = payload.image_bytes(request, settings)
    loaded = model_store().require()
    limits = Limits(max_side=settings.max_image_side, max_pixels=settings.max_image_pixels)
    prediction = loaded.model.classify([image], limits=limits)[0]
    return jsonify(
        digit=prediction.digit,
        confidence=prediction.confidence,
        probabilities=prediction.probabilities,
        low_confidence=prediction.confidence < settings.low_confidence_threshold,
        model={"name": loaded.ref.name, "version": loaded.ref.version},
        request_id=request_id.current(),
    )


@bp.get("/health")
def health():
    return jsonify(status="ok")


@bp.get("/ready")
def ready():
    store = model_store()
    if store.current is None:
        body = {
            "status": "unavailable",
            "model_uri": store.settings.model_uri,
            "error": {"code": "model_unavailable", "message": store.last_error or "loading"},
        }
        return jsonify(body), 503
    ref = store.current.ref
    return jsonify(status="ready", model={"name": ref.name, "version": ref.version})
