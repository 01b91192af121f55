"""Bad requests to /recognize and what each must answer; shared by the in-process
and the over-HTTP tests so both check one table."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field

from PIL import Image


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


def _image(mode: str, size: tuple[int, int], colour: int | tuple, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format=fmt)
    return buf.getvalue()


_SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="28" height="28"><text>7</text></svg>'
_PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


# Image-level problems: the request is well-formed, the picture is not usable.
BAD_IMAGES = [
    BadRequest("blank-white", 422, "no_digit", _image("L", (64, 64), 255, "PNG"), "image/png"),
    BadRequest("blank-black", 422, "no_digit", _image("L", (28, 28), 0, "PNG"), "image/png"),
    BadRequest(
        "uniform-grey-jpeg",
        422,
        "no_digit",
        _image("RGB", (90, 60), (128,) * 3, "JPEG"),
        "image/jpeg",
    ),
    BadRequest(
        "transparent-canvas",
        422,
        "no_digit",
        _image("RGBA", (280, 280), (0,) * 4, "PNG"),
        "image/png",
    ),
    BadRequest(
        "side-too-long", 413, "image_too_large", _image("L", (12_000, 1), 0, "PNG"), "image/png"
    ),
    BadRequest(
        "too-many-pixels",
        413,
        "image_too_large",
        _image("1", (9_000, 9_000), 0, "PNG"),
        "image/png",
    ),
    BadRequest("tiff", 415, "unsupported_format", _image("L", (28, 28), 0, "TIFF"), "image/tiff"),
    BadRequest("svg", 415, "unsupported_format", _SVG, "image/svg+xml"),
    BadRequest("pdf-as-png", 415, "unsupported_format", _PDF, "image/png"),
    BadRequest(
        "html",
        415,
        "unsupported_format",
        b"<!doctype html><html><body>7</body></html>",
        "image/png",
    ),
    BadRequest("text", 415, "unsupported_format", b"seven\n", "image/png"),
    BadRequest(
        "png-header-on-garbage",
        400,
        "invalid_image",
        b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8,
        "image/png",
    ),
]

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
