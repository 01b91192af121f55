"""The one base64 decoder: the HTTP layer and the pyfunc accept the same strings.

Standard or URL-safe alphabet, padded or not, whitespace anywhere, an optional
``data:<type>;base64,`` prefix. Hand-written because the standard library's decoders
each accept only one alphabet and refuse missing padding.
"""

from __future__ import annotations

import base64
import binascii

from pyfunc.errors import ImageError


def b64decode(text: str) -> bytes:
    """The bytes a base64 string (or base64 data URL) encodes; :class:`ImageError` if none."""
    text = text.strip()
    if text[:5].lower() == "data:":
        header, comma, text = text.partition(",")
        if not comma:
            raise ImageError("malformed data URL: no ',' before the data")
        if ";base64" not in header.lower():
            raise ImageError("data URL must be base64-encoded (';base64,')")
    text = "".join(text.split())
    if "-" in text or "_" in text:  # URL-safe alphabet
        text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError("invalid base64: the string is not base64-encoded image data") from exc
