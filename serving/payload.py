"""Turning an HTTP request into the encoded image bytes the pyfunc decodes.

Three ways in, one result: JSON ``{"image": "<base64>"}``, multipart field ``image``,
or a raw ``image/*`` body. Base64 is decoded by the pyfunc's decoder and image decoding
itself is the pyfunc's job.
"""

from __future__ import annotations

from flask import Request

from pyfunc.encoding import b64decode
from pyfunc.errors import ImageError
from serving.bodies import json_body
from serving.config import Settings
from serving.errors import ApiError

FIELD = "image"


def image_bytes(request: Request, settings: Settings) -> bytes:
    mimetype = request.mimetype
    if mimetype == "application/json":
        return _from_json(request, settings)
    if mimetype == "multipart/form-data":
        return _from_multipart(request)
    if mimetype.startswith("image/"):
        return _non_empty(request.get_data(cache=False))
    raise ApiError(
        415,
        "unsupported_media_type",
        'send application/json {"image": "<base64>"}, multipart/form-data with a file '
        "field 'image', or a raw image/* body",
    )


def _from_json(request: Request, settings: Settings) -> bytes:
    body = json_body()
    if not isinstance(body, dict) or FIELD not in body:
        raise ApiError(400, "missing_image", "the JSON body needs a field 'image'")
    text = body[FIELD]
    if not isinstance(text, str):
        raise ApiError(400, "invalid_image_field", "'image' must be a base64 string")
    if len(text) > settings.max_base64_chars:
        raise ApiError(
            413,
            "base64_too_large",
            f"'image' is {len(text)} characters of base64, over the limit of "
            f"{settings.max_base64_chars} characters (MAX_BASE64_CHARS)",
        )
    try:
        # The pyfunc's own decoder, so that /recognize and `mlflow models serve` accept
        # the same strings (URL-safe, unpadded, data URLs).
        image = b64decode(text)
    except ImageError:
        raise ApiError(400, "invalid_base64", "'image' is not valid base64") from None
    if not image:
        raise ApiError(400, "empty_image", "'image' is empty")
    return image


def _from_multipart(request: Request) -> bytes:
    upload = request.files.get(FIELD)
    if upload is None:
        raise ApiError(400, "missing_image", "the multipart form needs a file field 'image'")
    return _non_empty(upload.read())


def _non_empty(data: bytes) -> bytes:
    if not data:
        raise ApiError(400, "empty_image", "the image is empty")
    return data
