"""Records and image bytes for the image log tests."""

from __future__ import annotations

from datetime import timedelta

from imagelog import Record
from imagelog.base import sha256_hex, utc_now


def make_record(request_id: str, image: bytes, *, age_days: float = 0, digit: int = 3) -> Record:
    return Record(
        request_id=request_id,
        created_at=utc_now() - timedelta(days=age_days),
        sha256=sha256_hex(image),
        byte_size=len(image),
        input_format="PNG",
        width=28,
        height=28,
        digit=digit,
        confidence=0.875,
        probabilities=[0.0125] * 9 + [0.875],
        model_name="digits",
        model_version="7",
        image=image,
    )


def image(n: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + n.to_bytes(4, "big") * 8


def large_image(n: int) -> bytes:
    """Bytes over the SQLite log's default inline bound (a phone photo's size class): kept
    as a file there, in the row in PostgreSQL."""
    from imagelog.base import INLINE_MAX_BYTES

    return b"\xff\xd8\xff\xe0" + n.to_bytes(4, "big") * (INLINE_MAX_BYTES // 4 + 64)
