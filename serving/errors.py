"""Every error leaves as JSON ``{"error": {"code", "message"}}``; never a stack trace."""

from __future__ import annotations

import re

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from pyfunc.errors import ImageError
from serving.schemas import Error, ErrorDetail


class ApiError(Exception):
    """An error the service answers deliberately."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str):
    body = Error(error=ErrorDetail(code=code, message=message))
    response = jsonify(body.model_dump())
    response.status_code = status
    return response


def _http_code(exc: HTTPException) -> str:
    return re.sub(r"[^a-z0-9]+", "_", (exc.name or "error").lower()).strip("_")


def body_limit_message(limit: int | None) -> str:
    return f"the request body is over the limit of {limit} bytes (MAX_BODY_BYTES)"


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
        return (
            f"the request is over a limit: a body of {limit} bytes (MAX_BODY_BYTES), a form "
            f"field other than a file of {request.max_form_memory_size} bytes, or a form of "
            f"{request.max_form_parts} parts"
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
