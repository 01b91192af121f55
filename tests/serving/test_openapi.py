"""The OpenAPI document and /docs in-process; the live-server run of schemathesis and the
docs page in a browser are in tests/integration/test_openapi.py."""

from __future__ import annotations

import re

import jsonschema
import pydantic
import pytest
from flask import Flask
from openapi_spec_validator import validate

from serving import openapi, schemas

_RULE_ARG = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


@pytest.fixture
def bare_app(empty_registry) -> Flask:
    """The whole app with no model: the document and the pages need none."""
    from serving import create_app

    app = create_app({"mlflow_tracking_uri": empty_registry.tracking_uri, "workers": 1})
    app.config.update(TESTING=True)
    return app


def test_document_is_valid_openapi_3_1(bare_app: Flask):
    doc = bare_app.test_client().get("/openapi.json").get_json()
    validate(doc)
    assert doc["openapi"].startswith("3.1")


def test_documented_operations_are_the_routed_ones(bare_app: Flask):
    routed = {
        (_RULE_ARG.sub(r"{\1}", rule.rule), method.lower())
        for rule in bare_app.url_map.iter_rules()
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    documented = {(p, m) for p, ops in openapi.document()["paths"].items() for m in ops}
    assert routed - documented == set(), "add these to serving/openapi.py"
    assert documented - routed == set(), "documented in serving/openapi.py but not routed"


def test_every_model_is_a_component_schema():
    components = openapi.document()["components"]["schemas"]
    for model in schemas.DOCUMENTED:
        assert components[model.__name__]["title"] == model.__name__


@pytest.mark.parametrize(
    "body",
    [
        {"request_id": "abc", "label": 3},
        {"request_id": "abc", "label": 3, "extra": "ignored"},
        {"request_id": "x" * 128, "label": 0},
        {"request_id": "x" * 129, "label": 0},
        {"request_id": "", "label": 3},
        {"request_id": "abc", "label": 10},
        {"request_id": "abc", "label": "3"},
        {"request_id": "abc", "label": 3.5},
        {"request_id": "abc", "label": True},
        {"request_id": "abc", "label": None},
        {"request_id": 12, "label": 3},
        {"label": 3},
        ["abc", 3],
    ],
)
def test_the_documented_feedback_schema_accepts_what_the_service_does(body):
    schema = {
        "$ref": "#/components/schemas/Feedback",
        "components": openapi.document()["components"],
    }
    documented = jsonschema.Draft202012Validator(schema).is_valid(body)
    try:
        schemas.Feedback.model_validate(body)
        accepted = True
    except pydantic.ValidationError:
        accepted = False
    assert documented == accepted


def test_every_reference_resolves():
    doc = openapi.document()

    def refs(node):
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    for ref in set(refs(doc)):
        target = doc
        for part in ref.removeprefix("#/").split("/"):
            assert part in target, ref
            target = target[part]


def test_examples_match_their_models():
    # The operations' examples are the models' own, so they validate.
    for model in schemas.DOCUMENTED:
        for example in (model.model_config.get("json_schema_extra") or {}).get("examples", []):
            model.model_validate(example)


def test_every_json_error_response_uses_the_error_schema():
    doc = openapi.document()
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            for status, response in op["responses"].items():
                if status.startswith(("4", "5")) and "$ref" not in response:
                    content = response["content"]["application/json"]
                    # /ready's 503 is a status report that embeds the error detail.
                    allowed = {"#/components/schemas/Error", "#/components/schemas/NotReady"}
                    assert content["schema"]["$ref"] in allowed, (method, path, status)
    for response in doc["components"]["responses"].values():
        schemas.Error.model_validate(response["content"]["application/json"]["example"])


def test_docs_page_is_swagger_ui_served_from_here(bare_app: Flask):
    client = bare_app.test_client()
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert 'data-openapi-url="/openapi.json"' in html
    assert "<script>" not in html  # no inline script: a strict CSP can forbid them
    assets = re.findall(r'(?:src|href)="(/[^"]+)"', html)
    assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"} <= set(assets)
    assert "/static/docs.js" in assets
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert response.content_length or response.get_data(), asset
    # Nothing is fetched from anywhere but this service.
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?:https?:)?//""", html)


def test_docs_assets_are_only_what_the_page_loads(bare_app: Flask):
    client = bare_app.test_client()
    for name in ("LICENSE", "index.css", "oauth2-redirect.html", "..%2Fapp.js", "nope.js"):
        response = client.get(f"/docs/assets/{name}")
        assert response.status_code == 404, name
        assert response.get_json()["error"]["code"] == "not_found"


def test_operations_show_curl_examples():
    doc = openapi.document()
    for path in ("/recognize", "/feedback", "/health", "/ready", "/admin/reload"):
        (op,) = doc["paths"][path].values()
        assert re.search(r"```sh\n[^`]*^curl -s ", op["description"], re.M), path


def test_method_not_allowed_says_what_is(bare_app: Flask):
    response = bare_app.test_client().delete("/recognize")
    assert response.status_code == 405
    assert response.get_json()["error"]["code"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]
