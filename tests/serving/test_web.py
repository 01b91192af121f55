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
