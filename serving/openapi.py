"""The OpenAPI 3.1 document (``/openapi.json``) and the page that shows it (``/docs``).

The component schemas are generated from the pydantic models in ``serving/schemas.py``,
the one source of the bodies' shapes. Written here by hand is what the models cannot
say: the table of operations, which error codes each status carries, and curl examples.
``tests/serving/test_openapi.py`` checks that the table and the app's routes agree.

``/docs`` is Swagger UI; its assets come from the ``flask-swagger-ui`` package and are
served by this service (no CDN), started by ``static/docs.js`` (no inline script).
"""

from __future__ import annotations

import copy
import functools
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, abort, jsonify, render_template, send_from_directory
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, models_json_schema

from serving import schemas
from serving.request_id import HEADER as REQUEST_ID_HEADER

bp = Blueprint("openapi", __name__)

JSON = "application/json"
HTML = "text/html"
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/bmp", "image/webp")
# What the docs page loads from the Swagger UI distribution; nothing else is served.
SWAGGER_UI_ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js")
_SCHEMA_REF = "#/components/schemas/{model}"


class _WithoutFieldTitles(GenerateJsonSchema):
    """pydantic titles every field after its name ("Request Id"); the name says it."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def component_schemas() -> dict[str, Any]:
    """The JSON Schemas of ``schemas.DOCUMENTED`` and of every model they use."""
    _, top = models_json_schema(
        [(model, "validation") for model in schemas.DOCUMENTED],
        ref_template=_SCHEMA_REF,
        schema_generator=_WithoutFieldTitles,
    )
    return top["$defs"]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _SCHEMA_REF.format(model=model.__name__)}


def _json(model: type[BaseModel]) -> dict[str, Any]:
    """A JSON media type object; the model's first example is the operation's, so that
    "try it out" and schemathesis' examples phase start from a body that works."""
    media: dict[str, Any] = {"schema": _ref(model)}
    extra = model.model_config.get("json_schema_extra")
    examples = extra.get("examples") if isinstance(extra, dict) else None
    if isinstance(examples, list) and examples:
        media["example"] = examples[0]
    return {JSON: media}


_REQUEST_ID = {REQUEST_ID_HEADER: {"$ref": "#/components/headers/RequestId"}}


# What /recognize and /read answer 400 for, before the image is looked at.
BODY_ERRORS = [
    "malformed_json",
    "missing_image",
    "empty_image",
    "invalid_image_field",
    "invalid_base64",
    "invalid_image",
]


def _answer(description: str, content: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "headers": _REQUEST_ID, "content": content}


def _text(*media_types: str) -> dict[str, Any]:
    return {t: {"schema": _ref(schemas.Text)} for t in media_types}


def _image_body(json_model: type[BaseModel]) -> dict[str, Any]:
    """An image in any of the three encodings: JSON (``json_model``), a form, raw bytes."""
    return {
        "required": True,
        "content": {
            **_json(json_model),
            "multipart/form-data": {
                "schema": _ref(schemas.ImageUpload),
                "encoding": {"image": {"contentType": ", ".join(IMAGE_TYPES)}},
            },
            **{t: {"schema": _ref(schemas.ImageFile)} for t in IMAGE_TYPES},
        },
    }


def _label_link(description: str) -> dict[str, Any]:
    """The OpenAPI link from an answer to the /feedback that labels it."""
    return {
        "LabelIt": {
            "operationId": "feedback",
            "description": description,
            "requestBody": {
                "record_id": "$response.body#/record_id",
                "feedback_token": "$response.body#/feedback_token",
            },
        }
    }


def _error(description: str, codes: list[str], example: str, message: str) -> dict[str, Any]:
    """A response carrying the Error object; ``codes`` lists its ``error.code`` values."""
    listed = ", ".join(f"`{c}`" for c in codes)
    content = {JSON: {"schema": _ref(schemas.Error), "example": error_body(example, message)}}
    return _answer(f"{description} (`error.code`: {listed})", content)


def error_body(code: str, message: str) -> dict[str, Any]:
    detail = schemas.ErrorDetail(code=code, message=message)
    return schemas.Error(error=detail).model_dump()


def _curl(*lines: str) -> str:
    return "```sh\n" + "\n".join(lines) + "\n```"


_NOT_FOUND = {"$ref": "#/components/responses/NotFound"}
_TOO_LARGE = {"$ref": "#/components/responses/PayloadTooLarge"}
_STORAGE_UNAVAILABLE = {"$ref": "#/components/responses/StorageUnavailable"}
_URL = "http://localhost:8000"
_LOG_OFF = _error(
    "The service runs with `IMAGE_LOG=off`: it keeps no record to label or review",
    ["image_log_off"],
    "image_log_off",
    "this service runs without its image log (IMAGE_LOG=off): its answers have no "
    "record to label or review",
)
_RATE_LIMITED = _error(
    "Over a rate limit: `FEEDBACK_RATE_LIMIT` per client on `/feedback` (30/minute by "
    "default), `RECOGNIZE_RATE_LIMIT` per client on `/recognize` (none by default), or the "
    "API key's own; `Retry-After` says when to retry",
    ["too_many_requests"],
    "too_many_requests",
    "too many requests from this client to /feedback; retry after the Retry-After seconds",
)
# With API_KEYS set (off by default), /recognize and /feedback need X-API-Key.
_KEYED = {
    "401": _error(
        "`API_KEYS` is set and no `X-API-Key` was sent",
        ["api_key_required"],
        "api_key_required",
        "send your API key as X-API-Key",
    ),
    "403": _error(
        "The `X-API-Key` sent is not one of `API_KEYS`",
        ["invalid_api_key"],
        "invalid_api_key",
        "unknown API key",
    ),
}
_ADMIN_ERRORS = {
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
}

# POST /recognize's opt-in options as query parameters (any body encoding); a JSON body
# may carry them as fields too (schemas.RecognizeJson).
_RECOGNIZE_OPTIONS = [
    {
        "name": name,
        "in": "query",
        "required": False,
        "schema": {"type": "boolean", "default": False},
        "description": description,
    }
    for name, description in (
        (
            "draft",
            "A drawing still in progress (live prediction): answered but not stored in the "
            "image log, so without `record_id` and `feedback_token`.",
        ),
        (
            "return_input",
            "Also answer `model_input`: the 28×28 image the network received, as a base64 "
            "PNG. Costs one more pre-processing pass.",
        ),
    )
]

_PATHS: dict[str, dict[str, Any]] = {
    "/recognize": {
        "post": {
            "operationId": "recognize",
            "tags": ["recognition"],
            "summary": "Recognise the digit in an image",
            "description": "One image holding one digit, in any of three encodings. "
            "Dark-on-light and light-on-dark, transparency (canvas exports), photos and any "
            "size up to the limits (`MAX_BODY_BYTES`, `MAX_BASE64_CHARS`, `MAX_IMAGE_SIDE`, "
            "`MAX_IMAGE_PIXELS`) are fine.\n\n"
            + _curl(
                "# the file as the body",
                f"curl -s {_URL}/recognize -H 'Content-Type: image/png' "
                "--data-binary @examples/seven.png",
                "# a form upload",
                f"curl -s {_URL}/recognize -F image=@examples/photo-two.jpg",
                "# JSON with base64",
                f"curl -s {_URL}/recognize -H 'Content-Type: application/json' "
                '-d "{\\"image\\": \\"$(base64 -w0 examples/seven.png)\\"}"',
            ),
            "parameters": [
                {"$ref": "#/components/parameters/RequestId"},
                *_RECOGNIZE_OPTIONS,
            ],
            "requestBody": _image_body(schemas.RecognizeJson),
            "responses": {
                "200": {
                    **_answer(
                        "The digit, its confidence and all ten probabilities",
                        _json(schemas.Recognition),
                    ),
                    "links": _label_link("Send the true digit of this image"),
                },
                "400": _error(
                    "The request or the image cannot be read",
                    [*BODY_ERRORS, "invalid_option"],
                    "invalid_base64",
                    "'image' is not valid base64",
                ),
                **_KEYED,
                "413": _TOO_LARGE,
                "415": _error(
                    "Neither JSON, multipart nor an image body; or an image format that is "
                    "not accepted (SVG, PDF, TIFF, …)",
                    ["unsupported_media_type", "unsupported_format"],
                    "unsupported_format",
                    "TIFF is not a supported format; send a PNG, JPEG, GIF, BMP or WebP image",
                ),
                "422": _error(
                    "A readable image without a digit: blank or uniform; or several digits "
                    "side by side (`multiple_digits`: the error also has `count` and `boxes`, "
                    "see `MultipleDigitsError`; send such images to `POST /read`)",
                    ["no_digit", "multiple_digits"],
                    "no_digit",
                    "the image has no digit in it",
                ),
                "429": _RATE_LIMITED,
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
    "/read": {
        "post": {
            "operationId": "read",
            "tags": ["recognition"],
            "summary": "Read a number: every digit in an image, left to right",
            "description": "The same three encodings and limits as `POST /recognize`. At most "
            "12 digits; touching digits are cut apart where their ink is thinnest (see "
            "docs/numbers.md). Label the answer with `POST /feedback`, `label` the whole "
            'number as a string ("2026").\n\n'
            + _curl(
                f"curl -s {_URL}/read -H 'Content-Type: image/png' "
                "--data-binary @examples/number-2026.png",
                f"curl -s {_URL}/read -F image=@examples/number-2026.png",
            ),
            "parameters": [{"$ref": "#/components/parameters/RequestId"}],
            "requestBody": _image_body(schemas.Base64Image),
            "responses": {
                "200": {
                    **_answer("The number, and each digit with its box", _json(schemas.Reading)),
                    "links": _label_link("Send the true number of this image"),
                },
                "400": _error(
                    "The request or the image cannot be read",
                    BODY_ERRORS,
                    "invalid_base64",
                    "'image' is not valid base64",
                ),
                **_KEYED,
                "413": _TOO_LARGE,
                "415": _error(
                    "Neither JSON, multipart nor an image body; or an image format that is "
                    "not accepted (SVG, PDF, TIFF, …)",
                    ["unsupported_media_type", "unsupported_format"],
                    "unsupported_format",
                    "TIFF is not a supported format; send a PNG, JPEG, GIF, BMP or WebP image",
                ),
                "422": _error(
                    "No digit in the image (or a mark that is not one); or more than 12 digits",
                    ["no_digit", "too_many_digits"],
                    "too_many_digits",
                    "the image holds 14 digits; at most 12 are read at once",
                ),
                "429": _RATE_LIMITED,
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
            "description": "Only the client that got the answer can label it: send the "
            "`record_id` and `feedback_token` of the `POST /recognize` answer. Labelling again "
            "replaces the label; every change is kept, up to `FEEDBACK_MAX_LABELS` (5) labels "
            "per record. A label that contradicts a prediction of confidence at least "
            "`REVIEW_CONFIDENCE` (0.9) is kept but held for review (`held_for_review`): it is "
            "used for training only once a reviewer accepts it. Limited per client "
            "(`FEEDBACK_RATE_LIMIT`, 30/minute).\n\n"
            + _curl(
                f"curl -s {_URL}/feedback -H 'Content-Type: application/json' "
                f"""-d '{{"record_id": "{schemas.EXAMPLE_RECORD_ID}", """
                f""""feedback_token": "{schemas.EXAMPLE_FEEDBACK_TOKEN}", "label": 7}}'"""
            ),
            "requestBody": {"required": True, "content": _json(schemas.Feedback)},
            "responses": {
                "200": _answer("Recorded", _json(schemas.FeedbackReceipt)),
                "400": _error(
                    "Not JSON, or `record_id` / `feedback_token` / `label` missing or invalid",
                    [
                        "malformed_json",
                        "invalid_body",
                        "missing_record_id",
                        "invalid_record_id",
                        "missing_feedback_token",
                        "invalid_feedback_token",
                        "missing_label",
                        "invalid_label",
                        "label_length_mismatch",
                    ],
                    "invalid_label",
                    "'label' must be an integer from 0 to 9",
                ),
                "401": _KEYED["401"],
                "403": _error(
                    "The `feedback_token` is not the one the answer for that `record_id` "
                    "carried; or a wrong API key",
                    ["wrong_feedback_token", "invalid_api_key"],
                    "wrong_feedback_token",
                    "this feedback_token is not the one the /recognize answer for that "
                    "record_id carried",
                ),
                "404": _error(
                    "No logged record has that `record_id` (not logged, or deleted by retention)",
                    ["unknown_record_id"],
                    "unknown_record_id",
                    "no logged record has this record_id",
                ),
                "409": _error(
                    "The record has `FEEDBACK_MAX_LABELS` labels already; or the service "
                    "runs with `IMAGE_LOG=off` and keeps nothing to label",
                    ["label_limit_reached", "image_log_off"],
                    "label_limit_reached",
                    "this record has 5 labels already, the most one record may have "
                    "(FEEDBACK_MAX_LABELS)",
                ),
                "413": _TOO_LARGE,
                "415": _error(
                    "The body is not JSON",
                    ["unsupported_media_type"],
                    "unsupported_media_type",
                    "send application/json",
                ),
                "429": _RATE_LIMITED,
                "503": _STORAGE_UNAVAILABLE,
            },
        }
    },
    "/admin/reviews": {
        "get": {
            "operationId": "admin_reviews",
            "tags": ["operations"],
            "summary": "Labels held for review (they contradict a confident prediction)",
            "description": "Needs the admin token. `state`: `pending` (default), `accepted` or "
            "`rejected`; `limit`: at most this many, oldest first (100, at most 500).\n\n"
            + _curl(f'curl -s {_URL}/admin/reviews -H "Authorization: Bearer $ADMIN_TOKEN"'),
            "security": [{"AdminBearer": []}, {"AdminToken": []}],
            "parameters": [
                {
                    "name": "state",
                    "in": "query",
                    "required": False,
                    "schema": {"enum": ["pending", "accepted", "rejected"]},
                },
                {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer"}},
            ],
            "responses": {
                "200": _answer("The held labels", _json(schemas.HeldLabels)),
                "400": _error(
                    "Unknown state or a limit that is not an integer",
                    ["invalid_state", "invalid_limit"],
                    "invalid_state",
                    "'state' is one of pending, accepted, rejected",
                ),
                **_ADMIN_ERRORS,
                "409": _LOG_OFF,
                "503": _STORAGE_UNAVAILABLE,
            },
        }
    },
    "/admin/reviews/{label_id}": {
        "post": {
            "operationId": "admin_review",
            "tags": ["operations"],
            "summary": "Accept (used for training) or reject (never) a held label",
            "description": _curl(
                f'curl -s -X POST {_URL}/admin/reviews/12 -H "Authorization: Bearer '
                "$ADMIN_TOKEN\" -H 'Content-Type: application/json' -d '{\"accept\": true}'"
            ),
            "security": [{"AdminBearer": []}, {"AdminToken": []}],
            "parameters": [
                {
                    "name": "label_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer"},
                    "example": 1,
                }
            ],
            "requestBody": {"required": True, "content": _json(schemas.ReviewDecision)},
            "responses": {
                "200": _answer(
                    "Decided",
                    {
                        JSON: {
                            "schema": {"type": "object"},
                            "example": {"id": 12, "review": "accepted"},
                        }
                    },
                ),
                "400": _error(
                    'Not JSON, or not {"accept": true|false}',
                    ["malformed_json", "invalid_body"],
                    "invalid_body",
                    'send {"accept": true} or {"accept": false}',
                ),
                **_ADMIN_ERRORS,
                "404": _error(
                    "No label held for review has that id",
                    ["unknown_label"],
                    "unknown_label",
                    "no label held for review has id 12",
                ),
                "409": _LOG_OFF,
                "503": _STORAGE_UNAVAILABLE,
            },
        }
    },
    "/health": {
        "get": {
            "operationId": "health",
            "tags": ["operations"],
            "summary": "Liveness: 200 while the process runs",
            "description": _curl(f"curl -s {_URL}/health"),
            "responses": {"200": _answer("Alive", _json(schemas.Health))},
        }
    },
    "/ready": {
        "get": {
            "operationId": "ready",
            "tags": ["operations"],
            "summary": "Readiness: 200 once a model is loaded, with its name and version",
            "description": _curl(f"curl -s {_URL}/ready"),
            "responses": {
                "200": _answer(
                    "A model is loaded and answering; `status` is `degraded` when it is not "
                    "the one `MODEL_URI` names (that one failed to load: an earlier version, "
                    "possibly the last good one kept on the machine, answers) or the registry "
                    "cannot be reached, and `degraded` says why",
                    _json(schemas.Ready),
                ),
                "503": _answer(
                    "No model loaded yet (the registry has no Production version, or it "
                    "cannot be reached), or the image log cannot store requests "
                    "(`storage_unavailable`); the service retries in the background",
                    _json(schemas.NotReady),
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
            "and sent as `Authorization: Bearer …` (or `X-Admin-Token`).\n\n"
            + _curl(f'curl -s -X POST {_URL}/admin/reload -H "Authorization: Bearer $ADMIN_TOKEN"'),
            "security": [{"AdminBearer": []}, {"AdminToken": []}],
            "responses": {
                "200": _answer(
                    "Checked; `changed` says whether a new version is served",
                    _json(schemas.ReloadResult),
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
    "/admin/status": {
        "get": {
            "operationId": "admin_status",
            "tags": ["operations"],
            "summary": "This worker's state with the details public answers leave out",
            "description": "The errors' own text (registry, model load, storage) and where "
            "the served model came from. Needs the admin token, as `/admin/reload`.\n\n"
            + _curl(f'curl -s {_URL}/admin/status -H "Authorization: Bearer $ADMIN_TOKEN"'),
            "security": [{"AdminBearer": []}, {"AdminToken": []}],
            "responses": {
                "200": _answer("The worker's state", _json(schemas.AdminStatus)),
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
            "description": _curl(f"curl -s {_URL}/metrics"),
            "responses": {"200": _answer("The current metrics", _text("text/plain"))},
        }
    },
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "tags": ["documentation"],
            "summary": "This document",
            "description": _curl(f"curl -s {_URL}/openapi.json"),
            "responses": {
                "200": _answer(
                    "The OpenAPI 3.1 document", {JSON: {"schema": _ref(schemas.OpenApiDocument)}}
                )
            },
        }
    },
    "/docs": {
        "get": {
            "operationId": "docs",
            "tags": ["documentation"],
            "summary": "This document as a web page (Swagger UI)",
            "responses": {"200": _answer("HTML", _text(HTML))},
        }
    },
    "/docs/assets/{name}": {
        "get": {
            "operationId": "docs_asset",
            "tags": ["documentation"],
            "summary": "The docs page's Swagger UI script and style sheet",
            "parameters": [
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                    "example": SWAGGER_UI_ASSETS[0],
                }
            ],
            "responses": {
                "200": _answer("The file", _text("text/css", "text/javascript")),
                "404": _NOT_FOUND,
            },
        }
    },
    "/": {
        "get": {
            "operationId": "web_page",
            "tags": ["web page"],
            "summary": "The web page: draw a digit or upload a photo and see the prediction",
            "responses": {"200": _answer("HTML", _text(HTML))},
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
                "200": _answer(
                    "The file", _text("text/javascript", "text/css", "image/svg+xml", "image/png")
                ),
                "404": _NOT_FOUND,
            },
        }
    },
}

_DESCRIPTION = (
    "Send an image holding one handwritten digit, get back which digit it is, with the "
    "probabilities of all ten and the registered model version that answered. Errors are "
    'always JSON: `{"error": {"code", "message"}}`.\n\n'
    + _curl(
        f"curl -s {_URL}/recognize -H 'Content-Type: image/png' --data-binary @examples/seven.png"
    )
)


def _version() -> str:
    try:
        return metadata.version("digit-recognition-service")
    except metadata.PackageNotFoundError:  # running from a checkout that was not installed
        return "0.0.0"


@functools.cache
def _document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Digit recognition service",
            "version": _version(),
            "description": _DESCRIPTION,
        },
        "tags": [
            {"name": "recognition", "description": "The model"},
            {"name": "operations", "description": "Health, readiness and metrics"},
            {"name": "documentation", "description": "This API's description"},
            {"name": "web page", "description": "The page people use in a browser"},
        ],
        "paths": _PATHS,
        "components": {
            "schemas": component_schemas(),
            "securitySchemes": {
                "AdminBearer": {"type": "http", "scheme": "bearer"},
                "AdminToken": {"type": "apiKey", "in": "header", "name": "X-Admin-Token"},
            },
            "headers": {
                "RequestId": {
                    "description": "The request's id: the client's `X-Request-ID` when it is "
                    "sane, else a new one. Logged with the request.",
                    "schema": {"type": "string"},
                }
            },
            "parameters": {
                "RequestId": {
                    "name": REQUEST_ID_HEADER,
                    "in": "header",
                    "required": False,
                    "description": "Your id for this request (1–128 of `A–Z a–z 0–9 . _ : -`); "
                    "anything else is replaced by a fresh id. A correlation id: echoed and "
                    "logged, it names no record and unlocks nothing (see `record_id` and "
                    "`feedback_token`).",
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
        },
    }


def document() -> dict[str, Any]:
    """The OpenAPI document; a copy, so a caller may change it."""
    return copy.deepcopy(_document())


@functools.cache
def _swagger_ui_dir() -> Path:
    # The distribution's own files, not the package's blueprint: that one starts Swagger
    # UI with an inline script, which a strict Content-Security-Policy forbids.
    return Path(str(resources.files("flask_swagger_ui") / "dist"))


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(_document())


@bp.get("/docs")
def docs():
    return render_template("docs.html", title=_document()["info"]["title"])


@bp.get("/docs/assets/<name>")
def docs_asset(name: str):
    if name not in SWAGGER_UI_ASSETS:
        abort(404)
    return send_from_directory(_swagger_ui_dir(), name)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
