"""Every error leaves as JSON ``{"error": {"code", "message"}}``; never a stack trace."""

from __future__ import annotations

import re

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from pyfunc.errors import ImageError
from serving import logs
from serving.schemas import Error, ErrorDetail


class ApiError(Exception):
    """An error the service answers deliberately."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str):
    body = Error(error=ErrorDetail(code=code, message=message)).model_dump()
    response = jsonify(body)
    response.status_code = status
    # The access log takes the code from here rather than parsing the JSON back.
    return logs.answered(response, body)


def _http_code(exc: HTTPException) -> str:
    return re.sub(r"[^a-z0-9]+", "_", (exc.name or "error").lower()).strip("_")


_UNITS = ((1024**3, "GiB"), (1024**2, "MiB"), (1024, "KiB"))


def size_text(size: int) -> str:
    """A byte count as people read it and as it is configured: ``8 MiB = 8388608 bytes``;
    ``1000 bytes`` when under a KiB. The exact count stays in, since settings take bytes."""
    for unit, name in _UNITS:
        if size >= unit:
            amount = f"{size / unit:.1f}".removesuffix(".0")
            return f"{amount} {name} = {size} bytes"
    return f"{size} bytes"


def body_limit_message(limit: int | None, setting: str = "MAX_BODY_BYTES") -> str:
    if limit is None:
        return "the request body is larger than the service accepts"
    return f"the request body is larger than the limit of {size_text(limit)} ({setting})"


def _message(exc: HTTPException) -> str:
    if (
        isinstance(exc, RequestEntityTooLarge)
        and exc.description == RequestEntityTooLarge.description
    ):
        # Werkzeug's own 413 names no limit; say which one was passed, with its unit.
        limit = request.max_content_length
        declared = request.content_length
        if declared is not None and limit is not None and declared > limit:
            return body_limit_message(limit)
        memory, parts = request.max_form_memory_size, request.max_form_parts
        return (
            "the request is over a limit: a body larger than "
            f"{size_text(limit) if limit is not None else 'the service accepts'} "
            f"(MAX_BODY_BYTES), a form field other than a file larger than "
            f"{size_text(memory) if memory is not None else 'the service accepts'}, "
            f"or a form of more than {parts} parts"
        )
    return exc.description or exc.name


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message)

    @app.errorhandler(ImageError)
    def image_error(exc: ImageError):
        return error_response(exc.status, exc.code, str(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        response = error_response(exc.code or 500, _http_code(exc), _message(exc))
        # Keep the exception's own headers (405's Allow, required by RFC 9110; 503's
        # Retry-After …), only not its HTML Content-Type.
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        app.logger.exception("unhandled error")
        return error_response(500, "internal_error", "internal server error")
