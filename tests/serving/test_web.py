"""The web page's HTML and assets in-process; the page in a real browser is in
tests/integration/test_web_page.py."""

from __future__ import annotations

import re

import pytest
from flask import Flask


@pytest.fixture
def bare_app(empty_registry) -> Flask:
    from serving import create_app

    app = create_app({"mlflow_tracking_uri": empty_registry.tracking_uri, "workers": 1})
    app.config.update(TESTING=True)
    return app


def test_index_links_only_its_own_assets(bare_app: Flask):
    client = bare_app.test_client()
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert {"/static/app.js", "/static/app.css"} <= set(assets)
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    # No CDN: nothing is fetched from anywhere but this service.
    for text in [html] + [client.get(a).get_data(as_text=True) for a in assets]:
        assert not re.search(r"""(?:src|href|url\()\s*=?\s*["']?(?:https?:)?//""", text)


def test_every_control_has_a_label(bare_app: Flask):
    html = bare_app.test_client().get("/").get_data(as_text=True)
    assert re.search(r'<canvas id="pad"[^>]*aria-label="[^"]+"', html)
    assert '<label for="upload"' in html
    for button in re.findall(r"<button[^>]*>(.*?)</button>", html, re.S):
        assert re.sub(r"<[^>]+>", "", button).strip(), "a button without text"


SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/", 200),
        ("GET", "/static/app.js", 200),
        ("GET", "/docs", 200),
        ("GET", "/openapi.json", 200),
        ("GET", "/health", 200),
        ("GET", "/ready", 503),  # an empty registry: not ready
        ("GET", "/no-such-page", 404),
        ("DELETE", "/recognize", 405),
        ("POST", "/recognize", 415),  # no image
        ("GET", "/admin/status", 403),
    ],
)
def test_every_response_sends_the_security_headers(bare_app: Flask, method, path, status):
    response = bare_app.test_client().open(path, method=method)
    assert response.status_code == status
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name
    policy = dict(
        [*part.strip().split(" ", 1), ""][:2]
        for part in response.headers["Content-Security-Policy"].split(";")
    )
    assert policy["frame-ancestors"] == "'none'"
    assert policy["default-src"] == "'none'"
    # No inline script or style may run: the page and /docs are files only.
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"


@pytest.mark.parametrize("path", ["/", "/docs"])
def test_pages_hold_no_inline_script_style_or_handler(bare_app: Flask, path: str):
    html = bare_app.test_client().get(path).get_data(as_text=True)
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "an inline <script>"
    assert "<style" not in html and " style=" not in html
    assert not re.search(r"\son[a-z]+\s*=", html), "an inline event handler"
