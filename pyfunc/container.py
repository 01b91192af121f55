"""Where an image file ends: the container's own structure, nothing decoded.

Phones append data after a JPEG's end (maker trailers, depth maps, a second picture), and
anything may follow a PNG's ``IEND``: decoders ignore it, so an upload can carry megabytes
the picture does not need. :func:`image_end` walks the container (PNG chunks, JPEG
segments and scans, GIF blocks, the RIFF size of WebP, the BMP header's file size) to the
offset where the picture ends. Written by hand because Pillow does not report where it
stopped reading, and each walk is a few lines of the format's specification.
"""

from __future__ import annotations

import re
import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Walks stop (end unknown) after this many chunks, segments or blocks: real files have a
# few hundred at most, and a body of tiny ones must not cost seconds of CPU.
MAX_STEPS = 20_000
# In a JPEG scan, a marker is 0xFF followed by anything but 0x00 (a stuffed 0xFF), RSTn
# (part of the scan) or 0xFF (fill).
_SCAN_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_FILL = re.compile(rb"\xff+")


class _TooLong(Exception):
    pass


class _Budget:
    """Steps left for one walk, shared by its nested loops."""

    def __init__(self) -> None:
        self.left = MAX_STEPS

    def spend(self) -> None:
        """One step more, or _TooLong when none is left (loops are ``while True``, so
        that a walk ends by returning or by this, never by running out of loop)."""
        if self.left <= 0:
            raise _TooLong
        self.left -= 1


def image_end(data: bytes) -> int | None:
    """Offset just past the image in ``data``; None when the container is not one of PNG,
    JPEG, GIF, WebP or BMP, or is cut short before its end."""
    try:
        if data.startswith(PNG_SIGNATURE):
            return _png_end(data, _Budget())
        if data.startswith(b"\xff\xd8"):
            return _jpeg_end(data, _Budget())
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return _gif_end(data, _Budget())
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _riff_end(data)
        if data[:2] == b"BM":
            return _bmp_end(data)
    except (IndexError, struct.error, _TooLong):
        return None
    return None


def trailing_bytes(data: bytes) -> int:
    """How many bytes follow the image's end (0 when it cannot be told)."""
    end = image_end(data)
    return 0 if end is None else len(data) - end


def _png_end(data: bytes, budget: _Budget) -> int | None:
    pos = len(PNG_SIGNATURE)
    while True:
        budget.spend()
        if pos + 12 > len(data):
            return None
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        pos += 12 + length  # length, type, data, CRC
        if kind == b"IEND":
            return pos if pos <= len(data) else None


# Markers without a length field: TEM, RSTn (standalone), SOI.
_STANDALONE = {0x01, 0xD8} | set(range(0xD0, 0xD8))


def _jpeg_end(data: bytes, budget: _Budget) -> int | None:
    pos, size = 2, len(data)
    while True:
        budget.spend()
        if pos >= size:
            return None
        if data[pos] != 0xFF:
            return None  # not a marker where one must be
        fill = _FILL.match(data, pos)  # 0xFF fill bytes, any number (one at least, as checked)
        if fill is None:
            return None
        pos = fill.end()
        if pos >= size:
            return None
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            return pos
        if marker in _STANDALONE:
            continue
        (length,) = struct.unpack_from(">H", data, pos)
        if length < 2:
            return None
        pos += length
        if marker == 0xDA:  # SOS: entropy-coded data runs to the next real marker
            found = _SCAN_MARKER.search(data, pos)
            if found is None:
                return None
            pos = found.start()


def _sub_blocks_end(data: bytes, pos: int, budget: _Budget) -> int:
    while True:
        budget.spend()
        length = data[pos]
        pos += 1 + length
        if length == 0:
            return pos


def _gif_end(data: bytes, budget: _Budget) -> int | None:
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while True:
        budget.spend()
        block = data[pos]
        if block == 0x3B:  # trailer
            return pos + 1
        if block == 0x21:  # extension: label, then sub-blocks
            pos = _sub_blocks_end(data, pos + 2, budget)
        elif block == 0x2C:  # image descriptor, local colour table, LZW code size, data
            local = data[pos + 9]
            pos += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0)
            pos = _sub_blocks_end(data, pos + 1, budget)
        else:
            return None


def _riff_end(data: bytes) -> int | None:
    (size,) = struct.unpack_from("<I", data, 4)
    end = 8 + size
    if end > len(data):
        return None
    return min(end + (size & 1), len(data))  # chunks are padded to even sizes


def _bmp_end(data: bytes) -> int | None:
    (size,) = struct.unpack_from("<I", data, 2)
    (offset,) = struct.unpack_from("<I", data, 10)
    # Some writers leave the size 0 or wrong: trust it only when it is plausible.
    return size if offset < size <= len(data) else None
