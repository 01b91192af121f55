"""One JSON line per request on stdout: who asked what, how it ended, how long it took.

Fields: ts, level, msg, request_id, method, route, path, status, latency_ms, pid,
remote_addr, and when the response carries them digit, confidence, model_version, error,
logged (false when the image log could not keep an answered image).
Only metadata: never a request body, so never an image or its base64.
It replaces gunicorn's plain-text access log (switched off in serving/server.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any

from flask import Flask, Response, g, request

from serving.metrics import UNMATCHED_ROUTE

ACCESS_LOGGER = "serving.access"
# Larger JSON bodies are not parsed for digit/model/error: /recognize answers are ~300 bytes.
_MAX_INSPECTED_BODY = 16 * 1024
_MAX_PATH = 256
_NO_FILE = "(unknown file)"  # what logging records when it does not look for the caller
# What json.dumps(..., ensure_ascii=False, default=str) makes of the line, made once.
_ENCODE = json.JSONEncoder(ensure_ascii=False, default=str).encode
_SCALARS = {str, int, float, bool, type(None)}
_NO_LOCK = contextlib.nullcontext()


def _scalar(value: Any) -> str:
    """One value as json.dumps writes it (the caller passes only the types of _SCALARS)."""
    kind = type(value)
    if kind is str:
        return encode_basestring(value)
    if kind is bool:
        return "true" if value else "false"
    if value is None:
        return "null"
    if kind is float and not math.isfinite(value):
        return _ENCODE(value)
    return repr(value)


class _Clock:
    """``datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")``, with the
    date and time up to the second made once per second instead of on every line (a
    tenth of the line's cost)."""

    def __init__(self) -> None:
        self._second: tuple[int, str] = (-1, "")

    def iso(self, created: float) -> str:
        # As datetime rounds a timestamp: the microseconds half to even, then truncated.
        fraction, whole = math.modf(created)
        micros = round(fraction * 1e6)
        second = int(whole)
        if micros >= 1_000_000:
            second, micros = second + 1, micros - 1_000_000
        if micros < 0:  # before 1970: never on a live server, but exact all the same
            return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
        cached = self._second  # one read: another thread may replace it meanwhile
        if cached[0] != second:
            text = datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds")
            cached = (second, text.removesuffix("+00:00"))
            self._second = cached
        return f"{cached[1]}.{micros // 1000:03d}+00:00"


_clock = _Clock()


def json_line(created: float, level: str, msg: str, fields: dict[str, Any]) -> str:
    """The line :class:`JsonFormatter` writes for such a record, without a LogRecord:
    the same text, byte for byte, as ``json.dumps`` of the same dictionary."""
    line = {"ts": _clock.iso(created), "level": level, "msg": msg, **fields}
    for key, value in line.items():
        if type(key) is not str or type(value) not in _SCALARS:
            return _ENCODE(line)
    return "{" + ", ".join(f"{encode_basestring(k)}: {_scalar(v)}" for k, v in line.items()) + "}"


class JsonFormatter(logging.Formatter):
    """A record → one JSON object; structured fields come in ``extra={"fields": {...}}``."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        if not record.exc_info:
            return json_line(record.created, record.levelname, record.getMessage(), fields)
        line: dict[str, Any] = {
            "ts": _clock.iso(record.created),
            "level": record.levelname,
            "msg": record.getMessage(),
        }
        line.update(fields)
        line["exc"] = self.formatException(record.exc_info)
        # default=str: a stray non-JSON value must not cost the whole line.
        return _ENCODE(line)


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
    # The objects behind the proxies, once: each access through a proxy looks them up.
    req = request._get_current_object()  # type: ignore[attr-defined]
    state = g._get_current_object()
    started = state.get("log_started")
    rule = req.url_rule
    fields: dict[str, Any] = {
        "request_id": state.get("request_id"),
        "method": req.method,
        "route": rule.rule if rule is not None else UNMATCHED_ROUTE,
        "path": req.path[:_MAX_PATH],
        "status": response.status_code,
        "latency_ms": round((time.perf_counter() - started) * 1000, 2) if started else None,
    }
    given = state.get("log_answer")
    fields.update(
        _fields(given[1]) if given is not None and given[0] is response else _from_body(response)
    )
    fields["pid"] = os.getpid()  # which gunicorn worker answered
    fields["remote_addr"] = req.remote_addr
    return fields


def _writes_alone(logger: logging.Logger, level: int) -> _StdoutHandler | None:
    """The logger's own stdout handler, when the line would go to it and nowhere else,
    unfiltered (as :func:`access_logger` sets it up): then the line can be written without
    a LogRecord. None when something was added or changed, for logging to do it all."""
    handlers = logger.handlers
    if len(handlers) != 1 or logger.filters or logger.propagate:
        return None
    handler = handlers[0]
    if (
        type(handler) is not _StdoutHandler
        or handler.filters
        or level < handler.level
        or type(handler.formatter) is not JsonFormatter
    ):
        return None
    return handler


def _write(handler: _StdoutHandler, text: str) -> None:
    """What the handler's emit does with a formatted line."""
    with handler.lock or _NO_LOCK:
        stream = sys.stdout
        stream.write(text + handler.terminator)
        stream.flush()


def _record(logger: logging.Logger, level: int, fields: dict[str, Any]) -> logging.LogRecord:
    # As logger.log would make it, without its search of the stack for the caller's file
    # and line, which the JSON line does not show.
    return logger.makeRecord(logger.name, level, _NO_FILE, 0, "request", (), None,
                             extra={"fields": fields})  # fmt: skip


def init_app(app: Flask) -> None:
    logger = access_logger()

    @app.before_request
    def _start_clock() -> None:
        g.log_started = time.perf_counter()

    @app.after_request
    def _log_request(response: Response) -> Response:
        level = logging.ERROR if response.status_code >= 500 else logging.INFO
        if not logger.isEnabledFor(level):
            return response
        fields = request_fields(response)
        handler = _writes_alone(logger, level)
        if handler is None:
            logger.handle(_record(logger, level, fields))
            return response
        text = json_line(time.time(), logging.getLevelName(level), "request", fields)
        try:
            _write(handler, text)
        except Exception:  # as logging does: a failed write costs the line, not the answer
            handler.handleError(_record(logger, level, fields))
        return response
