"""One JSON line per request on stdout: who asked what, how it ended, how long it took.

Fields: ts, level, msg, request_id, method, route, path, status, latency_ms, pid,
remote_addr, and when the response carries them digit, confidence, model_version, error,
logged (false when the image log could not keep an answered image).
Only metadata: never a request body, so never an image or its base64.
It replaces gunicorn's plain-text access log (switched off in serving/server.py).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, g, request

from serving.metrics import route_label

ACCESS_LOGGER = "serving.access"
# Larger JSON bodies are not parsed for digit/model/error: /recognize answers are ~300 bytes.
_MAX_INSPECTED_BODY = 16 * 1024
_MAX_PATH = 256
_NO_FILE = "(unknown file)"  # what logging records when it does not look for the caller


class JsonFormatter(logging.Formatter):
    """A record → one JSON object; structured fields come in ``extra={"fields": {...}}``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "msg": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        # default=str: a stray non-JSON value must not cost the whole line.
        return json.dumps(line, ensure_ascii=False, default=str)


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at the time (as pytest's capsys swaps it)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _value) -> None:
        pass


def access_logger() -> logging.Logger:
    """The ``serving.access`` logger, given its JSON stdout handler once per process."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(h, _StdoutHandler) for h in logger.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    # Not also through the root logger's plain-text handler.
    logger.propagate = False
    return logger


def answered(response: Response, body: dict[str, Any]) -> Response:
    """Tell the access log that ``response`` is ``body`` serialised (a view's own answer),
    so that its line takes the fields from ``body`` instead of parsing the JSON again."""
    g.log_answer = (response, body)
    return response


def _from_body(response: Response) -> dict[str, Any]:
    """digit, confidence, model_version and error code, when the JSON answer has them."""
    if (
        not response.is_json
        or response.is_streamed
        or (response.content_length or 0) > _MAX_INSPECTED_BODY
    ):
        return {}
    return _fields(response.get_json(silent=True))


def _fields(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        return {}
    fields: dict[str, Any] = {}
    if isinstance(body.get("digit"), int):
        fields["digit"] = body["digit"]
    if isinstance(body.get("confidence"), float):
        fields["confidence"] = round(body["confidence"], 4)
    model = body.get("model")
    if isinstance(model, dict) and model.get("version") is not None:
        fields["model_version"] = str(model["version"])
    if isinstance(body.get("record_id"), str):  # links the client's request id to it
        fields["record_id"] = body["record_id"]
    if body.get("logged") is False:  # answered, but the image log could not keep it
        fields["logged"] = False
    error = body.get("error")
    if isinstance(error, dict) and error.get("code"):
        fields["error"] = str(error["code"])
    return fields


def request_fields(response: Response) -> dict[str, Any]:
    """The structured fields of the current request's line."""
    started = g.get("log_started")
    fields: dict[str, Any] = {
        "request_id": g.get("request_id"),
        "method": request.method,
        "route": route_label(),
        "path": request.path[:_MAX_PATH],
        "status": response.status_code,
        "latency_ms": round((time.perf_counter() - started) * 1000, 2) if started else None,
    }
    given = g.get("log_answer")
    fields.update(
        _fields(given[1]) if given is not None and given[0] is response else _from_body(response)
    )
    fields["pid"] = os.getpid()  # which gunicorn worker answered
    fields["remote_addr"] = request.remote_addr
    return fields


def init_app(app: Flask) -> None:
    logger = access_logger()

    @app.before_request
    def _start_clock() -> None:
        g.log_started = time.perf_counter()

    @app.after_request
    def _log_request(response: Response) -> Response:
        level = logging.ERROR if response.status_code >= 500 else logging.INFO
        if logger.isEnabledFor(level):
            # Handed over as logger.log would, without its search of the stack for the
            # caller's file and line, which the JSON line does not show (3 of its 19 µs).
            extra = {"fields": request_fields(response)}
            logger.handle(logger.makeRecord(logger.name, level, _NO_FILE, 0, "request", (),
                                            None, extra=extra))  # fmt: skip
        return response
