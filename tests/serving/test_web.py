"""The web page's HTML and assets in-process; the page in a real browser is in
tests/integration/test_web_page.py."""

from __future__ import annotations

import base64
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


def test_a_security_header_the_view_set_is_kept_not_doubled():
    from flask import Response

    from serving import headers

    app = Flask(__name__)
    headers.init_app(app)

    @app.get("/own")
    def own():
        return Response("x", headers={"x-frame-options": "SAMEORIGIN"})

    response = app.test_client().get("/own")
    assert response.headers.getlist("X-Frame-Options") == ["SAMEORIGIN"]
    for name, value in headers.HEADERS.items():
        if name != "X-Frame-Options":
            assert response.headers.getlist(name) == [value]


@pytest.mark.parametrize("path", ["/", "/docs"])
def test_pages_hold_no_inline_script_style_or_handler(bare_app: Flask, path: str):
    html = bare_app.test_client().get(path).get_data(as_text=True)
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "an inline <script>"
    assert "<style" not in html and " style=" not in html
    assert not re.search(r"\son[a-z]+\s*=", html), "an inline event handler"


# ---------------------------------------------------------------- the page's /recognize options


def _records(app: Flask) -> int:
    from serving.image_log import recorder

    with app.app_context():
        return sum(1 for _ in recorder().image_log.records())


def _metric(client, name: str) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_a_draft_is_answered_but_not_stored_and_counted_apart(app: Flask, seed_png: bytes):
    client = app.test_client()
    before = _records(app)
    drafts, answers = (
        _metric(client, "digits_draft_predictions_total"),
        _metric(client, "digits_predictions_total"),
    )
    as_query = client.post("/recognize?draft=true", data=seed_png, content_type="image/png")
    as_field = client.post(
        "/recognize", json={"image": base64.b64encode(seed_png).decode(), "draft": True}
    )
    for response in (as_query, as_field):
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert body["digit"] == 9 and body["draft"] is True and body["logged"] is False
        assert "record_id" not in body and "feedback_token" not in body
    assert _records(app) == before
    assert _metric(client, "digits_draft_predictions_total") == drafts + 2
    assert _metric(client, "digits_predictions_total") == answers

    final = client.post("/recognize?draft=false", data=seed_png, content_type="image/png")
    body = final.get_json()
    assert body["record_id"] and body["feedback_token"] and "draft" not in body
    assert _records(app) == before + 1


def test_return_input_is_the_models_own_28x28(app: Flask, seed_png: bytes):
    import io

    import numpy as np
    from PIL import Image

    from pyfunc.preprocess import pre_process

    client = app.test_client()
    plain = client.post("/recognize?draft=1", data=seed_png, content_type="image/png")
    assert "model_input" not in plain.get_json()  # opt-in: it costs a pre-processing pass
    shown = client.post(
        "/recognize?draft=1&return_input=true", data=seed_png, content_type="image/png"
    ).get_json()
    assert shown["probabilities"] == plain.get_json()["probabilities"]
    png = Image.open(io.BytesIO(base64.b64decode(shown["model_input"])))
    assert (png.format, png.size, png.mode) == ("PNG", (28, 28), "L")
    expected = np.rint(pre_process([seed_png])[0, :, :, 0] * 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(png), expected)


@pytest.mark.parametrize(
    ("query", "body"),
    [("?draft=maybe", None), ("?return_input=2", None), ("", {"draft": "yes"})],
)
def test_an_option_that_is_not_a_boolean_is_a_400(app: Flask, seed_png: bytes, query, body):
    client = app.test_client()
    image = base64.b64encode(seed_png).decode()
    response = client.post(f"/recognize{query}", json={"image": image, **(body or {})})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_option"
