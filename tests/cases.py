"""Bad requests to /recognize and what each must answer; shared by the in-process
and the over-HTTP tests so both check one table."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BadRequest:
    id: str
    status: int
    code: str | None
    body: bytes = b""
    content_type: str | None = "application/json"
    method: str = "POST"
    path: str = "/recognize"
    headers: dict[str, str] = field(default_factory=dict)


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


BAD_REQUESTS = [
    BadRequest("malformed-json", 400, "malformed_json", b'{"image": '),
    BadRequest("json-not-object", 400, "missing_image", _json(["a", "b"])),
    BadRequest("image-missing", 400, "missing_image", _json({"picture": "x"})),
    BadRequest("image-empty", 400, "empty_image", _json({"image": ""})),
    BadRequest("image-not-string", 400, "invalid_image_field", _json({"image": 123})),
    BadRequest("image-null", 400, "invalid_image_field", _json({"image": None})),
    BadRequest("invalid-base64", 400, "invalid_base64", _json({"image": "$$not*base64$$"})),
    BadRequest("base64-junk-tail", 400, "invalid_base64", _json({"image": "iVBORw0KGgo=%%%"})),
    BadRequest("not-an-image", 400, "invalid_image", _json({"image": _b64(bytes(range(256)) * 4)})),
    BadRequest(
        "truncated-png",
        400,
        "invalid_image",
        _json({"image": _b64(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00")}),
    ),
    BadRequest("wrong-content-type", 415, "unsupported_media_type", b"image=abc", "text/plain"),
    BadRequest("no-content-type", 415, "unsupported_media_type", b"abc", None),
    BadRequest(
        "multipart-without-field",
        400,
        "missing_image",
        b'--xx\r\nContent-Disposition: form-data; name="other"\r\n\r\nv\r\n--xx--\r\n',
        "multipart/form-data; boundary=xx",
    ),
    BadRequest("raw-empty", 400, "empty_image", b"", "image/png"),
    BadRequest("unknown-route", 404, "not_found", method="GET", path="/nope", content_type=None),
    BadRequest("wrong-method", 405, "method_not_allowed", method="GET", content_type=None),
]
