"""Security headers on every response: the page, /docs, the JSON API and its errors.

The page and the API docs load only this service's own files (no CDN, no inline script or
style: ``static/app.js`` and ``static/docs.js`` are files), so the policy can allow
``'self'`` and nothing else. ``data:`` and ``blob:`` images are the page's own previews
(a canvas as a data URL, an uploaded photo as an object URL) and Swagger UI's icons.
"""

from __future__ import annotations

from flask import Flask, Response

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
_BY_LOWER_NAME = [(name.lower(), name, value) for name, value in HEADERS.items()]


def init_app(app: Flask) -> None:
    @app.after_request
    def _secure(response: Response) -> Response:
        # What setdefault does for each, with one scan of the response's headers instead of
        # one per header (7 µs instead of 33 in process).
        present = {name.lower() for name in response.headers.keys()}  # noqa: SIM118
        for lower, name, value in _BY_LOWER_NAME:
            if lower not in present:
                response.headers.add(name, value)
        return response
