"""Security headers on every response: the page, /docs, the JSON API and its errors.

The page and the API docs load only this service's own files (no CDN, no inline script or
style: ``static/app.js`` and ``static/docs.js`` are files), so the policy can allow
``'self'`` and nothing else. ``data:`` and ``blob:`` images are the page's own previews
(a canvas as a data URL, an uploaded photo as an object URL) and Swagger UI's icons.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "font-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    # frame-ancestors for browsers that know CSP, this for those that do not.
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Request ids in URLs of this service are nobody else's business.
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # The page draws and uploads; it needs no sensor, camera or location.
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


# Lower-cased once: header names compare without case.
_BY_LOWER_NAME = [(name.lower(), (name, value)) for name, value in HEADERS.items()]
_ALL_LOWER = {lower for lower, _ in _BY_LOWER_NAME}
_ALL = [pair for _, pair in _BY_LOWER_NAME]


def _missing(present: set[str]) -> list[tuple[str, str]]:
    if present.isdisjoint(_ALL_LOWER):  # the usual case: a view sets none of them
        return _ALL
    return [pair for lower, pair in _BY_LOWER_NAME if lower not in present]


class SecureHeaders:
    """WSGI wrapper: adds the headers a response does not set itself as it starts.

    Added after Flask and werkzeug have made the response's header list, rather than by an
    after_request hook: werkzeug copies a response's headers (checking each value again)
    on the way out, and 7 of a JSON answer's 13 headers were these constants."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]):
        def secured(status: str, headers: list[tuple[str, str]], exc_info: Any = None):
            # What setdefault does for each, with one scan of the headers.
            headers.extend(_missing({name.lower() for name, _ in headers}))
            return start_response(status, headers, exc_info)

        return self.app(environ, secured)


def init_app(app: Flask) -> None:
    app.wsgi_app = SecureHeaders(app.wsgi_app)  # type: ignore[method-assign]
