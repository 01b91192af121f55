"""The OpenAPI document and /docs in-process; the live-server run of schemathesis is in
tests/integration/test_openapi.py."""

from __future__ import annotations

import pytest
from flask import Flask
from openapi_spec_validator import validate

from serving import openapi


@pytest.fixture
def bare_app(empty_registry) -> Flask:
    """The whole app with no model: the document and the pages need none."""
    from serving import create_app

    app = create_app({"mlflow_tracking_uri": empty_registry.tracking_uri, "workers": 1})
    app.config.update(TESTING=True)
    return app


def test_document_is_valid_openapi_3(bare_app: Flask):
    doc = bare_app.test_client().get("/openapi.json").get_json()
    validate(doc)
    assert doc["openapi"].startswith("3.0")


def test_every_routed_endpoint_is_documented(bare_app: Flask):
    # The other direction (nothing documented that is not routed) holds by construction.
    undocumented = openapi.routed_operations(bare_app) - openapi.documented_operations()
    assert not undocumented, f"add these to serving/openapi.py: {sorted(undocumented)}"
    doc = openapi.document(bare_app)
    served = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    assert served == openapi.routed_operations(bare_app)


def test_unrouted_operations_are_left_out():
    app = Flask(__name__, static_folder=None)
    app.add_url_rule("/health", "health", lambda: "ok")
    assert list(openapi.document(app)["paths"]) == ["/health"]


def test_every_json_error_response_uses_the_error_schema(bare_app: Flask):
    doc = openapi.document(bare_app)
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            for status, response in op["responses"].items():
                if status.startswith(("4", "5")) and "$ref" not in response:
                    content = response["content"]["application/json"]
                    # /ready's 503 is a status report that embeds the error detail.
                    allowed = {"#/components/schemas/Error", "#/components/schemas/NotReady"}
                    assert content["schema"]["$ref"] in allowed, (method, path, status)


def test_openapi_json_and_docs_are_served(bare_app: Flask):
    client = bare_app.test_client()
    doc = client.get("/openapi.json")
    assert doc.status_code == 200 and doc.mimetype == "application/json"
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    for path, operations in doc.get_json()["paths"].items():
        for op in operations.values():
            assert f'id="op-{op["operationId"]}"' in html, path
    assert 'id="schema-Recognition"' in html and 'id="schema-Error"' in html
    assert "<code>no_digit</code>" in html  # the spec's `code spans`, rendered


def test_flask_rules_become_openapi_paths():
    assert openapi.openapi_path("/static/<path:filename>") == "/static/{filename}"
    assert openapi.openapi_path("/a/<id>/b") == "/a/{id}/b"


def test_method_not_allowed_says_what_is(bare_app: Flask):
    response = bare_app.test_client().delete("/recognize")
    assert response.status_code == 405
    assert response.get_json()["error"]["code"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]
