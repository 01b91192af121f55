"""The cost budget of one image: what decoding it may cost, checked before a decoder runs.

An image's declared size bounds only part of what decoding it costs. A progressive JPEG
walks its whole coefficient buffer once per scan, and nothing bounds its number of scans
(a few hundred kB can hold thousands); Pillow parses a JPEG's header and an RLE bitmap in
Python, one loop turn per fill byte, segment or run; lossless formats (and WebP, which
Pillow decodes through libwebp's animation decoder) cannot be decoded at a reduced size the
way a JPEG can, so each of their pixels costs several bytes at full size; an animated WebP's
canvas is allocated at full size whatever its frames are (a 228-byte file of 1×1 frames
on a 10000×4000 canvas cost 767 MB). The checks here read only the
container structure (markers, chunk headers), never a pixel, and refuse with
:class:`~pyfunc.errors.ImageTooLarge` anything whose decode would go over the budget: about
1 s of CPU and 300 MB of memory (figures in ``docs/security.md``, from
``python -m bench.bombs``).
"""

from __future__ import annotations

import re
import struct
from typing import Protocol

from PIL import Image

from pyfunc.errors import ImageTooLarge

__all__ = ["LOSSLESS_FORMATS", "BudgetLimits", "check_encoded", "check_opened"]

# Decoded whole at full size, up to ~12 bytes a pixel at peak (RGBA): no reduced decode.
# (WebP, also decoded whole, has its own limit: see _check_webp.)
LOSSLESS_FORMATS = frozenset({"PNG", "GIF", "BMP"})

# Pillow's JPEG header parser spends a Python loop turn on each fill byte and segment before
# the first scan (~0.4 µs each: 8 MiB of fill bytes cost 3 s). Real files have a few dozen
# segments and no fill run to speak of.
_MAX_JPEG_SEGMENTS = 4096
_MAX_JPEG_FILL = 65_536
# A multi-scan (progressive) JPEG keeps every DCT coefficient (2 bytes) in memory while it
# is decoded, however small the drafted output: a 40 Mpx 4:4:4 colour JPEG needs 240 MB.
_MAX_JPEG_COEFFICIENT_BYTES = 256 * 1024 * 1024
# Pillow reads PNG chunks and GIF extension sub-blocks one Python loop turn each (~2.5 µs a
# chunk: 8 MiB of empty chunks cost 1.8 s). A PNG has a handful of chunks plus its IDATs
# (8–64 kB each); a GIF a few extensions before its first frame, whose data is read in C.
_MAX_PNG_CHUNKS = 10_000
_MAX_GIF_SUB_BLOCKS = 65_536
# Pillow's RLE bitmap decoder is Python: a loop turn per run (two bytes) and, padding a row
# or unpacking 4-bit runs, per pixel. ~0.1 µs a pixel, ~0.5 µs a run.
_MAX_RLE_PIXELS = 4_000_000
_MAX_RLE_BYTES = 1024 * 1024

_SOF = frozenset({*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0)})
# Progressive frames buffer all coefficients from the first scan on (libjpeg), others
# from their second scan.
_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
# The end of a scan's entropy-coded data: 0xFF then a byte that is not stuffing (0x00), a
# restart marker or another fill byte. One byte of look-ahead keeps the search linear.
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_FILL = re.compile(rb"\xff+")


class BudgetLimits(Protocol):
    """The limits the budget reads (:class:`pyfunc.preprocess.Limits` has them; read-only,
    so a frozen dataclass fits)."""

    @property
    def max_side(self) -> int: ...
    @property
    def max_pixels(self) -> int: ...
    @property
    def max_lossless_pixels(self) -> int: ...
    @property
    def max_webp_pixels(self) -> int: ...
    @property
    def max_jpeg_scans(self) -> int: ...


def check_encoded(data: bytes, fmt: str, limits: BudgetLimits) -> None:
    """Refuse, from the bytes alone, an image whose decode would be over budget.

    Runs before Pillow opens the image: its WebP plugin allocates the canvas while it opens
    the file, and its JPEG, PNG and GIF plugins parse the structure in Python.
    """
    if fmt == "JPEG":
        _check_jpeg(data, limits)
    elif fmt == "PNG":
        _check_png(data)
    elif fmt == "GIF":
        _check_gif(data)
    elif fmt == "BMP":
        _check_bmp(data)
    elif fmt == "WEBP":
        _check_webp(data, limits)


def check_opened(img: Image.Image, fmt: str, limits: BudgetLimits) -> None:
    """Refuse an opened (not yet loaded) PNG, GIF or BMP with too many pixels: these are
    decoded at full size (the size as Pillow reads it: a GIF frame may widen its screen)."""
    width, height = img.size
    pixels = width * height
    most = min(limits.max_pixels, limits.max_lossless_pixels)
    if fmt in LOSSLESS_FORMATS and pixels > most:
        raise ImageTooLarge(
            f"{fmt} image is {width}×{height} = {pixels:,} pixels; PNG, GIF and BMP are "
            f"decoded at full size, so at most {most:,} pixels are accepted for them"
        )


# --------------------------------------------------------------------------- JPEG


def _check_jpeg(data: bytes, limits: BudgetLimits) -> None:
    """Walk the marker segments: count scans, segments and fill bytes, and size the
    coefficient buffer of a multi-scan JPEG. A structure this walk cannot follow is left to
    the decoder, which refuses it as corrupt."""
    pos, segments, fill, scans = 2, 0, 0, 0
    frame: tuple[int, int, int, list[tuple[int, int]]] | None = None
    end = len(data)
    while pos + 1 < end:
        run = _FILL.match(data, pos)
        if run is None:
            return  # not at a marker: corrupt, the decoder says so
        fill += run.end() - pos - 1
        if fill > _MAX_JPEG_FILL:
            raise ImageTooLarge(
                f"JPEG has over {_MAX_JPEG_FILL:,} fill bytes (0xFF padding before markers); "
                f"at most {_MAX_JPEG_FILL:,} bytes of it are accepted"
            )
        pos = run.end()
        if pos >= end:
            return
        marker = data[pos]
        pos += 1
        segments += 1
        if segments > _MAX_JPEG_SEGMENTS:
            raise ImageTooLarge(
                f"JPEG has over {_MAX_JPEG_SEGMENTS:,} marker segments; "
                f"at most {_MAX_JPEG_SEGMENTS:,} are accepted"
            )
        if marker == 0xD9 or marker == 0x00 or marker == 0xD8:  # EOI, or not a marker
            return
        if marker in _STANDALONE:
            continue
        if pos + 2 > end:
            return
        (length,) = struct.unpack_from(">H", data, pos)
        body = data[pos + 2 : pos + length]
        pos += length
        if marker in _SOF and len(body) >= 6:
            frame = (marker, *_frame(body))
        elif marker == 0xDA:
            scans += 1
            if scans > limits.max_jpeg_scans:
                raise ImageTooLarge(
                    f"JPEG has more than {limits.max_jpeg_scans} scans; a decoder walks the "
                    f"whole image once per scan, so at most {limits.max_jpeg_scans} are accepted"
                )
            if frame is not None and (scans == 2 or frame[0] in _PROGRESSIVE):
                _check_coefficients(*frame[1:])
            found = _SCAN_END.search(data, pos)
            if found is None:
                return
            pos = found.start()


def _frame(body: bytes) -> tuple[int, int, list[tuple[int, int]]]:
    """(width, height, [(h, v) sampling factors of each component]) of a SOF segment."""
    height, width, count = struct.unpack_from(">HHB", body, 1)
    factors = []
    for i in range(min(count, (len(body) - 6) // 3)):
        sampling = body[6 + 3 * i + 1]
        factors.append((max(1, sampling >> 4), max(1, sampling & 0x0F)))
    return width, height, factors


def _check_coefficients(width: int, height: int, factors: list[tuple[int, int]]) -> None:
    if not factors:
        return
    h_max = max(h for h, _ in factors)
    v_max = max(v for _, v in factors)
    blocks = sum(-(-width * h // (8 * h_max)) * -(-height * v // (8 * v_max)) for h, v in factors)
    need = blocks * 64 * 2
    if need > _MAX_JPEG_COEFFICIENT_BYTES:
        mb = 1024 * 1024
        raise ImageTooLarge(
            f"JPEG is {width}×{height} with {len(factors)} components in several scans: "
            f"decoding it holds {need // mb:,} MiB of coefficients; at most "
            f"{_MAX_JPEG_COEFFICIENT_BYTES // mb} MiB are accepted"
        )


# --------------------------------------------------------------------------- PNG, GIF


def _check_png(data: bytes) -> None:
    """Count the chunks (length, type, data, CRC each) up to IEND."""
    pos, chunks = 8, 0
    while pos + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        chunks += 1
        if chunks > _MAX_PNG_CHUNKS:
            raise ImageTooLarge(
                f"PNG has over {_MAX_PNG_CHUNKS:,} chunks; at most {_MAX_PNG_CHUNKS:,} are accepted"
            )
        if data[pos + 4 : pos + 8] == b"IEND":
            return
        pos += 12 + length


def _check_gif(data: bytes) -> None:
    """Count the extension sub-blocks before the first frame."""
    if len(data) < 13:
        return
    palette = 3 << ((data[10] & 0x07) + 1) if data[10] & 0x80 else 0  # global colour table
    pos = 13 + palette
    blocks = 0
    while pos + 1 < len(data) and data[pos] == 0x21:  # an extension: label, then sub-blocks
        pos += 2
        while pos < len(data) and data[pos]:
            blocks += 1
            if blocks > _MAX_GIF_SUB_BLOCKS:
                raise ImageTooLarge(
                    f"GIF has over {_MAX_GIF_SUB_BLOCKS:,} extension blocks before its first "
                    f"frame; at most {_MAX_GIF_SUB_BLOCKS:,} are accepted"
                )
            pos += data[pos] + 1
        pos += 1


# --------------------------------------------------------------------------- BMP


def _check_bmp(data: bytes) -> None:
    """An RLE bitmap's pixels and bytes, from its BITMAPINFOHEADER (older headers have no
    compression field)."""
    if len(data) < 34 or int.from_bytes(data[14:18], "little") < 40:
        return
    width, height, _, _, compression = struct.unpack_from("<iiHHI", data, 18)
    if compression not in (1, 2):  # BI_RLE8, BI_RLE4
        return
    pixels = abs(width) * abs(height)
    if pixels > _MAX_RLE_PIXELS or len(data) > _MAX_RLE_BYTES:
        raise ImageTooLarge(
            f"RLE-compressed BMP is {abs(width)}×{abs(height)} = {pixels:,} pixels in "
            f"{len(data):,} bytes; at most {_MAX_RLE_PIXELS:,} pixels and "
            f"{_MAX_RLE_BYTES:,} bytes are accepted for a compressed BMP"
        )


# --------------------------------------------------------------------------- WebP


def _u24(data: bytes, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 3], "little")


def _webp_canvas(data: bytes) -> tuple[int, int, bool] | None:
    """(width, height, animated) from the first chunk's header, as libwebp reads them (the
    chunk need not be whole: libwebp sizes its buffers from the header alone)."""
    tag, head = data[12:16], data[20:30]
    if tag == b"VP8X" and len(head) == 10:
        return _u24(head, 4) + 1, _u24(head, 7) + 1, bool(head[0] & 0x02)
    if tag == b"VP8L" and len(head) >= 5 and head[0] == 0x2F:
        bits = int.from_bytes(head[1:5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, False
    if tag == b"VP8 " and len(head) == 10 and head[3:6] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", head, 6)
        return width & 0x3FFF, height & 0x3FFF, False
    return None


def _check_webp(data: bytes, limits: BudgetLimits) -> None:
    """The canvas, still or animated: Pillow decodes WebP through libwebp's animation
    decoder, which allocates the whole canvas twice before any frame (~20 bytes a pixel with
    Pillow's copies). Pillow then decodes the first frame alone (the only one asked for), so
    an animation costs what a still image of its canvas does."""
    canvas = _webp_canvas(data)
    if canvas is None:
        return  # not a WebP libwebp can size: it refuses it as corrupt
    width, height, animated = canvas
    pixels = width * height
    most = min(limits.max_pixels, limits.max_webp_pixels)
    if max(width, height) > limits.max_side or pixels > most:
        kind = "animated WebP canvas" if animated else "WebP image"
        raise ImageTooLarge(
            f"{kind} is {width}×{height} = {pixels:,} pixels; a WebP is decoded at full "
            f"size, so at most {most:,} pixels and {limits.max_side:,} on a side are accepted"
        )
