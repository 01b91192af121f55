"""The OpenAPI 3 document (``/openapi.json``) and its human-readable rendering (``/docs``).

The document is written by hand as data, next to the code it describes, rather than
derived from the views: the views are plain Flask and the interesting parts (three ways
to send an image, which error codes each status carries) are prose and schemas anyway.
It is filtered against the app's URL map when served, so an operation another module
has not registered (yet) is never advertised; ``tests/serving/test_openapi.py`` checks
the other direction, that every routed endpoint is described here.
"""

from __future__ import annotations

import copy
import json
import re
from importlib import metadata
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, render_template
from markupsafe import Markup, escape

from serving.request_id import HEADER as REQUEST_ID_HEADER

bp = Blueprint("openapi", __name__)

JSON = "application/json"
HTML = "text/html"
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/bmp", "image/webp")
_RULE_ARG = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
_SKIPPED_METHODS = {"HEAD", "OPTIONS"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(
    description: str, codes: list[str], example_code: str, example_message: str
) -> dict[str, Any]:
    """A response carrying the Error object; ``codes`` lists the ``error.code`` values."""
    listed = ", ".join(f"`{c}`" for c in codes)
    return {
        "description": f"{description} (`error.code`: {listed})",
        "headers": {REQUEST_ID_HEADER: {"$ref": "#/components/headers/RequestId"}},
        "content": {
            JSON: {
                "schema": _ref("Error"),
                "example": {"error": {"code": example_code, "message": example_message}},
            }
        },
    }


def _ok(description: str, media_type: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    content: dict[str, Any] = {"schema": schema, **extra}
    return {
        "description": description,
        "headers": {REQUEST_ID_HEADER: {"$ref": "#/components/headers/RequestId"}},
        "content": {media_type: content},
    }


_NOT_FOUND = {"$ref": "#/components/responses/NotFound"}
_TOO_LARGE = {"$ref": "#/components/responses/PayloadTooLarge"}
_STORAGE_UNAVAILABLE = {"$ref": "#/components/responses/StorageUnavailable"}

_SEVEN_PNG_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAABwAAAAcCAAAAABXZoBIAAAAwUlEQVR42mNgGDaAEUKFpD77sfTFHeyS9xQYGB"
    "g+X4UKPuk6w8DAwMDAAuGm6l/TMnSweCzLwPDntSTDozPIOhkYGBgYBA3PmDIw/Lh1XShnGi5nBP+9KIRLTuzl"
    "/2AokwlDMlv0/U1cGq1//rPD6fHWf7tZcclxnv1hhVNj3b9tOOW8f3+wxCUnfPffMlxyzKf/3VbGJan2758vLj"
    "n5B/+KGXF78Z8JLjnbT+iSSGFrw8Nw9wuKJAsy56LzO+ITGABpETyQcCy90wAAAABJRU5ErkJggg=="
)

_RECOGNITION_EXAMPLE = {
    "digit": 9,
    "confidence": 0.9931,
    "probabilities": [0.0, 0.0001, 0.0, 0.0012, 0.0009, 0.0004, 0.0, 0.0031, 0.0012, 0.9931],
    "low_confidence": False,
    "model": {"name": "digits", "version": "3"},
    "request_id": "5b0e6c8f2a9d4a53b1a2f3c4d5e6f708",
}

_STORE_STATUS: dict[str, Any] = {
    "storage": {
        "type": "object",
        "description": "Whether the image log can store a request now; with "
        "`LOG_FAILURE_POLICY=refuse` (the default) the service is not ready without it.",
        "properties": {
            "state": {"type": "string", "enum": ["ok", "unavailable"]},
            "error": {"type": "string", "nullable": True},
        },
    },
    "model_uri": {"type": "string", "example": "models:/digits/Production"},
    "registry": {
        "type": "object",
        "description": "The last check of the registry for `MODEL_URI`.",
        "properties": {
            "state": {"type": "string"},
            "checked_at": {"type": "string", "nullable": True},
            "error": {"type": "string", "nullable": True},
            "poll_interval_seconds": {"type": "number"},
        },
    },
    "last_load_failure": {
        "type": "object",
        "nullable": True,
        "description": "The last version that could not be loaded, and why.",
    },
}

_SCHEMAS: dict[str, Any] = {
    "Recognition": {
        "type": "object",
        "description": "What the model sees in the image.",
        "required": [
            "digit",
            "confidence",
            "probabilities",
            "low_confidence",
            "model",
            "request_id",
        ],
        "properties": {
            "digit": {"type": "integer", "minimum": 0, "maximum": 9},
            "confidence": {
                "type": "number",
                "minimum": 0,
                "maximum": 1,
                "description": "The probability of `digit`, i.e. the largest of `probabilities`.",
            },
            "probabilities": {
                "type": "array",
                "minItems": 10,
                "maxItems": 10,
                "items": {"type": "number", "minimum": 0, "maximum": 1},
                "description": "Softmax output for the digits 0–9, in that order; sums to 1.",
            },
            "low_confidence": {
                "type": "boolean",
                "description": "`confidence` is below the service's `LOW_CONFIDENCE_THRESHOLD`.",
            },
            "model": _ref("ModelVersion"),
            "request_id": {
                "type": "string",
                "description": "Also in the `X-Request-ID` header; quote it in `POST /feedback`.",
            },
            "logged": {
                "type": "boolean",
                "description": "Present, and false, only when the image log could not store "
                "this request and the service is configured to answer anyway.",
            },
        },
        "example": _RECOGNITION_EXAMPLE,
    },
    "ModelVersion": {
        "type": "object",
        "description": "The registered MLflow model version that answered.",
        "required": ["name", "version"],
        "properties": {
            "name": {"type": "string", "example": "digits"},
            "version": {"type": "string", "example": "3"},
        },
    },
    "Error": {
        "type": "object",
        "description": "Every error the service answers, whatever the status.",
        "required": ["error"],
        "properties": {"error": _ref("ErrorDetail")},
    },
    "ErrorDetail": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {
                "type": "string",
                "description": "Stable, machine-readable; each response lists its values.",
            },
            "message": {"type": "string", "description": "For people; wording may change."},
        },
    },
    "Base64Image": {
        "type": "object",
        "required": ["image"],
        "properties": {
            "image": {
                "type": "string",
                "description": "The encoded image file as base64; whitespace and a "
                "`data:image/…;base64,` prefix are allowed (so a canvas `toDataURL()` works).",
            }
        },
        # MNIST test image #0, a 7, as a 28×28 PNG: a real example, so that trying it
        # (the docs, schemathesis' examples phase) reaches the model.
        "example": {"image": _SEVEN_PNG_BASE64},
    },
    "ImageUpload": {
        "type": "object",
        "required": ["image"],
        "properties": {
            "image": {
                "type": "string",
                "format": "binary",
                "description": "The image file (PNG, JPEG, GIF, BMP or WebP).",
            }
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["ok"]}},
    },
    "Ready": {
        "type": "object",
        "required": ["status", "model"],
        "properties": {
            "status": {"type": "string", "enum": ["ready"]},
            "model": _ref("ModelVersion"),
            **_STORE_STATUS,
        },
    },
    "NotReady": {
        "type": "object",
        "required": ["status", "error"],
        "properties": {
            "status": {"type": "string", "enum": ["unavailable"]},
            "error": _ref("ErrorDetail"),
            **_STORE_STATUS,
        },
    },
    "Feedback": {
        "type": "object",
        "required": ["request_id", "label"],
        "properties": {
            "request_id": {
                "type": "string",
                "minLength": 1,
                "maxLength": 128,
                "description": "The `request_id` of an earlier `POST /recognize` answer.",
            },
            "label": {
                "type": "integer",
                "minimum": 0,
                "maximum": 9,
                "description": "The digit the image really shows.",
            },
        },
        "example": {"request_id": "5b0e6c8f2a9d4a53b1a2f3c4d5e6f708", "label": 7},
    },
    "ReloadResult": {
        "type": "object",
        "required": ["changed", "model"],
        "properties": {
            "changed": {"type": "boolean"},
            "model": {"allOf": [_ref("ModelVersion")], "nullable": True},
            "error": {"type": "string", "nullable": True},
        },
    },
    "FeedbackReceipt": {
        "type": "object",
        "description": "The label was stored with that request; labelling again replaces it.",
        "required": ["request_id", "label", "labelled_at"],
        "properties": {
            "request_id": {"type": "string"},
            "label": {"type": "integer", "minimum": 0, "maximum": 9},
            "labelled_at": {"type": "string", "format": "date-time"},
        },
    },
}

_IMAGE_BODY_DESCRIPTION = (
    "One image holding one digit, in any of three encodings. Dark-on-light and "
    "light-on-dark, transparency (canvas exports), photos and any size up to the limits "
    "(`MAX_BODY_BYTES`, `MAX_BASE64_CHARS`, `MAX_IMAGE_SIDE`, `MAX_IMAGE_PIXELS`) are fine."
)

_PATHS: dict[str, dict[str, Any]] = {
    "/recognize": {
        "post": {
            "operationId": "recognize",
            "tags": ["recognition"],
            "summary": "Recognise the digit in an image",
            "description": _IMAGE_BODY_DESCRIPTION,
            "parameters": [{"$ref": "#/components/parameters/RequestId"}],
            "requestBody": {
                "required": True,
                "content": {
                    JSON: {"schema": _ref("Base64Image")},
                    "multipart/form-data": {
                        "schema": _ref("ImageUpload"),
                        "encoding": {"image": {"contentType": ", ".join(IMAGE_TYPES)}},
                    },
                    **{t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES},
                },
            },
            "responses": {
                "200": {
                    **_ok(
                        "The digit, its confidence and all ten probabilities",
                        JSON,
                        _ref("Recognition"),
                    ),
                    "links": {
                        "LabelIt": {
                            "operationId": "feedback",
                            "description": "Send the true digit of this image",
                            "requestBody": {"request_id": "$response.body#/request_id"},
                        }
                    },
                },
                "400": _error(
                    "The request or the image cannot be read",
                    [
                        "malformed_json",
                        "missing_image",
                        "empty_image",
                        "invalid_image_field",
                        "invalid_base64",
                        "invalid_image",
                    ],
                    "invalid_base64",
                    "'image' is not valid base64",
                ),
                "409": _error(
                    "The `X-Request-ID` sent already names a logged request with another image",
                    ["duplicate_request_id"],
                    "duplicate_request_id",
                    "X-Request-ID abc already names a request with another image; send a new "
                    "id (or none)",
                ),
                "413": _TOO_LARGE,
                "415": _error(
                    "Neither JSON, multipart nor an image body; or an image format that is "
                    "not accepted (SVG, PDF, TIFF, …)",
                    ["unsupported_media_type", "unsupported_format"],
                    "unsupported_format",
                    "TIFF is not a supported format; send a PNG, JPEG, GIF, BMP or WebP image",
                ),
                "422": _error(
                    "A readable image without a digit: blank or uniform",
                    ["no_digit"],
                    "no_digit",
                    "the image has no digit in it",
                ),
                "503": _error(
                    "No model is loaded yet (see `GET /ready`), or the image log cannot "
                    "store the request",
                    ["model_unavailable", "storage_unavailable"],
                    "model_unavailable",
                    "no model loaded yet for models:/digits/Production",
                ),
            },
        }
    },
    "/feedback": {
        "post": {
            "operationId": "feedback",
            "tags": ["recognition"],
            "summary": "Tell the service which digit an earlier image really was",
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref("Feedback")}}},
            "responses": {
                "200": _ok("Recorded", JSON, _ref("FeedbackReceipt")),
                "400": _error(
                    "Not JSON, or `request_id` / `label` missing or invalid",
                    [
                        "malformed_json",
                        "invalid_body",
                        "missing_request_id",
                        "invalid_request_id",
                        "missing_label",
                        "invalid_label",
                    ],
                    "invalid_label",
                    "'label' must be an integer from 0 to 9",
                ),
                "404": _error(
                    "No logged request has that `request_id`",
                    ["unknown_request_id"],
                    "unknown_request_id",
                    "no logged request has id 'abc'",
                ),
                "413": _TOO_LARGE,
                "415": _error(
                    "The body is not JSON",
                    ["unsupported_media_type"],
                    "unsupported_media_type",
                    "send application/json",
                ),
                "503": _STORAGE_UNAVAILABLE,
            },
        }
    },
    "/health": {
        "get": {
            "operationId": "health",
            "tags": ["operations"],
            "summary": "Liveness: 200 while the process runs",
            "responses": {"200": _ok("Alive", JSON, _ref("Health"))},
        }
    },
    "/ready": {
        "get": {
            "operationId": "ready",
            "tags": ["operations"],
            "summary": "Readiness: 200 once a model is loaded, with its name and version",
            "responses": {
                "200": _ok("A model is loaded and answering", JSON, _ref("Ready")),
                "503": _ok(
                    "No model loaded yet (the registry has no Production version, or it "
                    "cannot be reached), or the image log cannot store requests "
                    "(`storage_unavailable`); the service retries in the background",
                    JSON,
                    _ref("NotReady"),
                ),
            },
        }
    },
    "/admin/reload": {
        "post": {
            "operationId": "admin_reload",
            "tags": ["operations"],
            "summary": "Check the registry now and load what MODEL_URI points at",
            "description": "In every worker. Needs `ADMIN_TOKEN` to be set on the service "
            "and sent as `Authorization: Bearer …` (or `X-Admin-Token`).",
            "security": [{"AdminBearer": []}, {"AdminToken": []}],
            "responses": {
                "200": _ok(
                    "Checked; `changed` says whether a new version is served",
                    JSON,
                    _ref("ReloadResult"),
                ),
                "401": _error(
                    "No token sent",
                    ["unauthorized"],
                    "unauthorized",
                    "send the admin token as 'Authorization: Bearer …'",
                ),
                "403": _error(
                    "Wrong token, or no `ADMIN_TOKEN` configured",
                    ["forbidden", "admin_disabled"],
                    "forbidden",
                    "wrong admin token",
                ),
            },
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "tags": ["operations"],
            "summary": "Prometheus metrics in the text exposition format",
            "responses": {
                "200": _ok("The current metrics", "text/plain", {"type": "string"}),
            },
        }
    },
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "tags": ["documentation"],
            "summary": "This document",
            "responses": {"200": _ok("The OpenAPI 3 document", JSON, {"type": "object"})},
        }
    },
    "/docs": {
        "get": {
            "operationId": "docs",
            "tags": ["documentation"],
            "summary": "This document as a web page",
            "responses": {"200": _ok("HTML", HTML, {"type": "string"})},
        }
    },
    "/": {
        "get": {
            "operationId": "web_page",
            "tags": ["web page"],
            "summary": "The web page: draw a digit or upload a photo and see the prediction",
            "responses": {"200": _ok("HTML", HTML, {"type": "string"})},
        }
    },
    "/static/{filename}": {
        "get": {
            "operationId": "static_file",
            "tags": ["web page"],
            "summary": "The web page's script, style sheet and icons",
            "parameters": [
                {
                    "name": "filename",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                    "example": "app.js",
                }
            ],
            "responses": {
                "200": {
                    "description": "The file",
                    "headers": {REQUEST_ID_HEADER: {"$ref": "#/components/headers/RequestId"}},
                    "content": {
                        t: {"schema": {"type": "string"}}
                        for t in ("text/javascript", "text/css", "image/svg+xml", "image/png")
                    },
                },
                "404": _NOT_FOUND,
            },
        }
    },
}

_COMPONENTS: dict[str, Any] = {
    "schemas": _SCHEMAS,
    "securitySchemes": {
        "AdminBearer": {"type": "http", "scheme": "bearer"},
        "AdminToken": {"type": "apiKey", "in": "header", "name": "X-Admin-Token"},
    },
    "headers": {
        "RequestId": {
            "description": "The request's id: the client's `X-Request-ID` when it is sane, "
            "else a new one. Logged with the request.",
            "schema": {"type": "string"},
        }
    },
    "parameters": {
        "RequestId": {
            "name": REQUEST_ID_HEADER,
            "in": "header",
            "required": False,
            "description": "Your id for this request (1–128 of `A–Z a–z 0–9 . _ : -`); "
            "anything else is replaced by a fresh id. On `/recognize` it may not name a "
            "logged request with a different image (409).",
            "schema": {"type": "string"},
        }
    },
    "responses": {
        "NotFound": _error("No such resource", ["not_found"], "not_found", "Not Found"),
        "PayloadTooLarge": _error(
            "The body, the base64 text or the decoded image is over a configured limit",
            ["request_entity_too_large", "base64_too_large", "image_too_large"],
            "image_too_large",
            "the image is 12000 px wide; the limit is 10000",
        ),
        "StorageUnavailable": _error(
            "The image log cannot store the request right now",
            ["storage_unavailable"],
            "storage_unavailable",
            "the label could not be stored; try again later",
        ),
    },
}


def _version() -> str:
    try:
        return metadata.version("digit-recognition-service")
    except metadata.PackageNotFoundError:  # running from a checkout that was not installed
        return "0.0.0"


def openapi_path(rule: str) -> str:
    """A Flask rule (``/static/<path:filename>``) as an OpenAPI path (``/static/{filename}``)."""
    return _RULE_ARG.sub(r"{\1}", rule)


def routed_operations(app: Flask) -> set[tuple[str, str]]:
    """``(openapi path, lower-case method)`` for every route the app answers."""
    return {
        (openapi_path(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        for method in (rule.methods or set()) - _SKIPPED_METHODS
    }


def document(app: Flask) -> dict[str, Any]:
    """The OpenAPI document, limited to the operations ``app`` actually routes."""
    routed = routed_operations(app)
    paths: dict[str, Any] = {}
    for path, operations in _PATHS.items():
        kept = {m: op for m, op in operations.items() if (path, m) in routed}
        if kept:
            paths[path] = kept
    # A deep copy: callers (the docs page, tests) may change theirs, never the module's.
    return copy.deepcopy(
        {
            "openapi": "3.0.3",
            "info": {
                "title": "Digit recognition service",
                "version": _version(),
                "description": (
                    "Send an image holding one handwritten digit, get back which digit it is, "
                    "with the probabilities of all ten and the registered model version that "
                    'answered. Errors are always JSON: `{"error": {"code", "message"}}`.'
                ),
            },
            "tags": [
                {"name": "recognition", "description": "The model"},
                {"name": "operations", "description": "Health, readiness and metrics"},
                {"name": "documentation", "description": "This API's description"},
                {"name": "web page", "description": "The page people use in a browser"},
            ],
            "paths": paths,
            "components": _COMPONENTS,
        }
    )


def documented_operations() -> set[tuple[str, str]]:
    """Every ``(path, method)`` this module knows how to describe."""
    return {(path, method) for path, ops in _PATHS.items() for method in ops}


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(document(current_app))


@bp.get("/docs")
def docs():
    doc = document(current_app)
    return render_template(
        "docs.html",
        doc=doc,
        operations=_operations(doc),
        md=_inline_markdown,
        schema_label=_schema_label,
        as_json=lambda value: json.dumps(value, indent=2, ensure_ascii=False),
    )


def _resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if not ref:
        return node
    target: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return target


def _operations(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The operations in document order, with their ``$ref`` parameters and responses
    resolved, which is all the docs template needs."""
    found = []
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            found.append(
                {
                    "id": op.get("operationId") or f"{method}-{path}",
                    "method": method.upper(),
                    "path": path,
                    "op": op,
                    "parameters": [_resolve(doc, p) for p in op.get("parameters", [])],
                    "responses": {
                        status: _resolve(doc, r) for status, r in op["responses"].items()
                    },
                }
            )
    return found


_CODE_SPAN = re.compile(r"`([^`]+)`")


def _inline_markdown(text: str) -> Markup:
    """Escape, then turn the spec's `code spans` into <code>: all the markup it uses."""
    return Markup(_CODE_SPAN.sub(r"<code>\1</code>", str(escape(text))))


def _schema_label(schema: dict[str, Any]) -> Markup:
    """A short readable type: a link for a named schema, ``array of …``, ``string (binary)``."""
    if schema.get("nullable"):
        plain = {k: v for k, v in schema.items() if k != "nullable"}
        return Markup("{} or null").format(_schema_label(plain))
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return Markup('<a href="#schema-{0}">{0}</a>').format(name)
    if len(schema.get("allOf", ())) == 1:  # OpenAPI 3.0's way to make a $ref nullable
        return _schema_label(schema["allOf"][0])
    kind = schema.get("type", "any")
    detail = []
    if kind == "array":
        if "minItems" in schema and schema.get("minItems") == schema.get("maxItems"):
            detail.append(f"exactly {schema['minItems']}")
        items = _schema_label(schema.get("items", {}))
        return Markup("array of {}{}").format(items, f" ({', '.join(detail)})" if detail else "")
    if "format" in schema:
        detail.append(schema["format"])
    if "enum" in schema:
        detail.append(" | ".join(json.dumps(v) for v in schema["enum"]))
    if "minimum" in schema or "maximum" in schema:
        detail.append(f"{schema.get('minimum', '…')}–{schema.get('maximum', '…')}")
    return Markup("{}{}").format(kind, f" ({', '.join(detail)})" if detail else "")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
