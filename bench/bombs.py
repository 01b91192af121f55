"""Decoder bombs: small files that cost a decoder far more than their size, and what each
costs the pre-processing, measured.

The generators build each bomb at run time (nothing hostile is stored); the hostile-client
harness sends them to a live server, the tests feed them to :mod:`pyfunc.preprocess`.
``python -m bench.bombs`` decodes each one in a fresh process and prints its CPU time and
peak memory, with the outcome (the answer's error code, or ``decoded``)::

    python -m bench.bombs            # every bomb, a table
    python -m bench.bombs --json     # the same as JSON lines
    python -m bench.bombs jpeg-scans-1000 webp-canvas
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CANVAS = (10_000, 4_000)  # 40 Mpx: the largest image the default pixel limit lets through


# --------------------------------------------------------------------------- JPEG


def jpeg_segments(jpeg: bytes) -> Iterator[tuple[int, bytes]]:
    """(marker, bytes) of a well-formed JPEG after SOI; a scan's bytes include its data."""
    pos = 2
    while pos < len(jpeg):
        if jpeg[pos] != 0xFF:
            raise ValueError(f"no JPEG marker at byte {pos}")
        marker = jpeg[pos + 1]
        if marker == 0xD9:  # EOI
            yield marker, jpeg[pos : pos + 2]
            return
        length = struct.unpack(">H", jpeg[pos + 2 : pos + 4])[0]
        end = pos + 2 + length
        if marker == 0xDA:  # SOS: the entropy-coded data runs to the next real marker
            while True:
                end = jpeg.index(b"\xff", end)
                if jpeg[end + 1] != 0 and not 0xD0 <= jpeg[end + 1] <= 0xD7:
                    break
                end += 2
        yield marker, jpeg[pos:end]
        pos = end


@functools.cache
def jpeg_scan_bomb(scans: int = 1000, size: tuple[int, int] = CANVAS, mode: str = "L") -> bytes:
    """A progressive JPEG whose first AC scan is repeated until it has ``scans`` scans in
    all: a few hundred kB that make a decoder walk every block of the image once per scan
    (libjpeg only warns about the repeated scans). Colour is saved at 4:4:4, the most
    coefficients a colour JPEG can have."""
    buffer = io.BytesIO()
    blank = Image.new(mode, size, "white")
    blank.save(buffer, "JPEG", progressive=True, quality=90, subsampling=0)
    parts = list(jpeg_segments(buffer.getvalue()))
    total = sum(marker == 0xDA for marker, _ in parts)
    out = [b"\xff\xd8"]
    repeated = False
    for marker, data in parts:
        out.append(data)
        spectral_start = data[4 + 2 * data[4] + 1] if marker == 0xDA else 0
        if marker == 0xDA and spectral_start > 0 and not repeated:
            out.extend([data] * max(0, scans - total))
            repeated = True
    return b"".join(out)


@functools.cache
def progressive_photo(size: tuple[int, int] = (4_000, 3_000)) -> bytes:
    """What a browser or an editor saves: an ordinary progressive colour JPEG (10 scans)."""
    import numpy as np

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (size[1] // 64, size[0] // 64, 3), dtype=np.uint8)
    picture = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", progressive=True, quality=85)
    return buffer.getvalue()


@functools.cache
def baseline_photo(size: tuple[int, int] = (8_000, 5_000)) -> bytes:
    """A phone-sized baseline colour JPEG (one scan): drafted to 1/8 while decoded."""
    import numpy as np

    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (size[1] // 64, size[0] // 64, 3), dtype=np.uint8)
    picture = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


# --------------------------------------------------------------------------- WebP


def riff_chunk(tag: bytes, payload: bytes) -> bytes:
    return tag + struct.pack("<I", len(payload)) + payload + (b"\0" if len(payload) % 2 else b"")


def _u24(value: int) -> bytes:
    return struct.pack("<I", value)[:3]


def _webp_chunks(riff: bytes) -> Iterator[tuple[bytes, bytes]]:
    pos = 12
    while pos + 8 <= len(riff):
        tag, size = riff[pos : pos + 4], struct.unpack("<I", riff[pos + 4 : pos + 8])[0]
        yield tag, riff[pos + 8 : pos + 8 + size]
        pos += 8 + size + (size % 2)


def webp_file(chunks: list[bytes]) -> bytes:
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


@functools.cache
def webp_canvas_bomb(frames: int = 4, canvas: tuple[int, int] = CANVAS) -> bytes:
    """An animated WebP of a few hundred bytes: 1×1 frames on a 10000×4000 canvas, which an
    animation decoder allocates at full size (4 bytes a pixel, more than once)."""
    buffer = io.BytesIO()
    Image.new("RGBA", (1, 1), (0, 0, 0, 255)).save(buffer, "WEBP", lossless=True)
    frame = riff_chunk(b"VP8L", dict(_webp_chunks(buffer.getvalue()))[b"VP8L"])
    width, height = canvas
    chunks = [
        riff_chunk(b"VP8X", bytes([0x12, 0, 0, 0]) + _u24(width - 1) + _u24(height - 1)),
        riff_chunk(b"ANIM", struct.pack("<IH", 0xFFFFFFFF, 0)),
    ]
    for i in range(frames):
        x, y = (i * 2000) % width, (i * 1000) % height
        header = _u24(x // 2) + _u24(y // 2) + _u24(0) + _u24(0) + _u24(100) + bytes([0])
        chunks.append(riff_chunk(b"ANMF", header + frame))
    return webp_file(chunks)


@functools.cache
def webp_lossless_canvas(size: tuple[int, int] = CANVAS) -> bytes:
    """A still lossless WebP of one colour: a few hundred bytes, decoded at 4 bytes a pixel."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (255, 255, 255)).save(buffer, "WEBP", lossless=True)
    return buffer.getvalue()


# --------------------------------------------------------------------------- PNG, GIF, BMP


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _png(width: int, height: int, colour: int, rows: bytes, extra: Sequence[bytes] = ()) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            png_chunk(b"IHDR", ihdr),
            *extra,
            png_chunk(b"IDAT", rows),
            png_chunk(b"IEND", b""),
        ]
    )


def _zeros_deflated(count: int, step: int = 1 << 24) -> bytes:
    packer = zlib.compressobj(9)
    block = bytes(min(step, count))
    out = []
    for start in range(0, count, step):
        out.append(packer.compress(block[: min(step, count - start)]))
    out.append(packer.flush())
    return b"".join(out)


@functools.cache
def png_canvas(size: tuple[int, int] = CANVAS, colour: int = 6) -> bytes:
    """A blank PNG (RGBA by default): 40 Mpx in ~150 kB of deflate, and lossless formats
    have no cheap reduced decode."""
    width, height = size
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    return _png(width, height, colour, _zeros_deflated((width * channels + 1) * height))


@functools.cache
def png_idat_bomb(declared: tuple[int, int] = (1_000, 1_000), inflated: int = 1 << 30) -> bytes:
    """A small declared PNG whose IDAT stream inflates to ``inflated`` bytes (1 GiB in ~1 MB):
    the pixels the header declares bound what is decoded, not the stream."""
    width, height = declared
    return _png(width, height, 0, _zeros_deflated(inflated))


@functools.cache
def png_text_bomb(chunks: int = 100, each: int = 1 << 20) -> bytes:
    """A tiny PNG carrying ``chunks`` zTXt chunks of ``each`` bytes once inflated (1 kB each
    deflated): Pillow inflates text chunks while it reads the header."""
    text = zlib.compress(bytes(each), 9)
    extra = [png_chunk(b"zTXt", b"k%d\0\0" % i + text) for i in range(chunks)]
    return _png(28, 28, 0, zlib.compress(bytes(29 * 28)), extra)


@functools.cache
def png_chunk_bomb(chunks: int = 700_000) -> bytes:
    """A 28×28 PNG after ``chunks`` empty private chunks (8 MiB): Pillow reads each in a
    Python loop turn."""
    empty = png_chunk(b"prVt", b"")
    return _png(28, 28, 0, zlib.compress(bytes(29 * 28)), [empty * chunks])


@functools.cache
def gif_comment_bomb(sub_blocks: int = 4 << 20) -> bytes:
    """A 28×28 GIF after a comment of ``sub_blocks`` one-byte sub-blocks (8 MiB): Pillow
    reads each in a Python loop turn."""
    buffer = io.BytesIO()
    Image.new("L", (28, 28), 0).save(buffer, "GIF")
    gif = buffer.getvalue()
    first = gif.index(b"\x2c", 13)  # the image descriptor (this file has no extension)
    return gif[:first] + b"\x21\xfe" + b"\x01x" * sub_blocks + b"\x00" + gif[first:]


@functools.cache
def gif_canvas(size: tuple[int, int] = CANVAS) -> bytes:
    """A 1×1 GIF frame on a 10000×4000 logical screen: Pillow decodes the first frame onto
    a canvas of the screen's size."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1), 0).save(buffer, "GIF")
    data = bytearray(buffer.getvalue())
    data[6:10] = struct.pack("<HH", *size)
    return bytes(data)


def _bmp_rle(width: int, height: int, pixels: bytes, rle4: bool = False) -> bytes:
    colours = 16 if rle4 else 256
    palette = b"".join(bytes([i, i, i, 0]) for i in range(0, 256, 256 // colours))
    offset = 14 + 40 + len(palette)
    info = struct.pack(
        "<IiiHHIIiiII",
        40,
        width,
        height,
        1,
        4 if rle4 else 8,
        2 if rle4 else 1,
        len(pixels),
        2835,
        2835,
        colours,
        0,
    )
    head = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    return head + info + palette + pixels


@functools.cache
def bmp_rle_rows(size: tuple[int, int] = CANVAS) -> bytes:
    """An 8-bit RLE BMP whose every row is one pixel and an end-of-line: 16 kB that Pillow's
    RLE decoder (Python) pads byte by byte, one loop turn per pixel."""
    width, height = size
    return _bmp_rle(width, height, b"\x01\x00\x00\x00" * height + b"\x00\x01")


@functools.cache
def bmp_rle4_runs(size: tuple[int, int] = CANVAS) -> bytes:
    """A 4-bit RLE BMP of 255-pixel runs: Pillow's RLE4 decoder spends a Python loop turn
    on each pixel."""
    width, height = size
    runs = (b"\xff\x12" * (width // 255) + bytes([width % 255, 0x12]) + b"\x00\x00") * height
    return _bmp_rle(width, height, runs + b"\x00\x01", rle4=True)


@functools.cache
def jpeg_fill_bomb(fill: int = 8 << 20) -> bytes:
    """A 28×28 JPEG with ``fill`` 0xFF fill bytes before its first marker (8 MiB): Pillow's
    header parser skips them one Python loop turn each."""
    buffer = io.BytesIO()
    Image.new("L", (28, 28), 0).save(buffer, "JPEG")
    jpeg = buffer.getvalue()
    return jpeg[:2] + b"\xff" * fill + jpeg[2:]


@functools.cache
def jpeg_segment_bomb(segments: int = 2 << 20) -> bytes:
    """A 28×28 JPEG after two million empty comment segments (8 MiB): one Python loop turn
    each in Pillow's header parser."""
    buffer = io.BytesIO()
    Image.new("L", (28, 28), 0).save(buffer, "JPEG")
    jpeg = buffer.getvalue()
    return jpeg[:2] + b"\xff\xfe\x00\x02" * segments + jpeg[2:]


@functools.cache
def apng_canvas(size: tuple[int, int] = CANVAS, frames: int = 3) -> bytes:
    """An animated PNG of blank frames on a 10000×4000 canvas."""
    first = Image.new("L", size, 255)
    rest = [Image.new("L", size, v) for v in range(frames - 1)]
    buffer = io.BytesIO()
    first.save(buffer, "PNG", save_all=True, append_images=rest, compress_level=9)
    return buffer.getvalue()


# --------------------------------------------------------------------------- catalogue


@dataclass(frozen=True)
class Bomb:
    name: str
    description: str
    make: Callable[[], bytes]


BOMBS: tuple[Bomb, ...] = (
    Bomb("jpeg-scans-1000", "progressive JPEG 10000×4000, one AC scan ×1000", jpeg_scan_bomb),
    Bomb(
        "jpeg-scans-2000",
        "progressive JPEG 10000×4000, one AC scan ×2000",
        lambda: jpeg_scan_bomb(2000),
    ),
    Bomb("webp-canvas", "animated WebP, four 1×1 frames on a 10000×4000 canvas", webp_canvas_bomb),
    Bomb("webp-lossless-40mpx", "still lossless WebP 10000×4000, one colour", webp_lossless_canvas),
    Bomb("png-40mpx", "blank RGBA PNG 10000×4000", png_canvas),
    Bomb("apng-40mpx", "animated PNG, 3 blank frames 10000×4000", apng_canvas),
    Bomb("gif-canvas", "GIF: a 1×1 frame on a 10000×4000 screen", gif_canvas),
    Bomb("bmp-rle8-rows", "RLE8 BMP 10000×4000, one pixel and end-of-line a row", bmp_rle_rows),
    Bomb("bmp-rle4-runs", "RLE4 BMP 10000×4000 of 255-pixel runs", bmp_rle4_runs),
    Bomb("jpeg-fill", "JPEG 28×28 after 8 MiB of 0xFF fill bytes", jpeg_fill_bomb),
    Bomb("jpeg-segments", "JPEG 28×28 after 2 M empty comment segments", jpeg_segment_bomb),
    Bomb("png-chunks", "PNG 28×28 after 700,000 empty chunks", png_chunk_bomb),
    Bomb("gif-comment", "GIF 28×28 after a comment of 4 M one-byte sub-blocks", gif_comment_bomb),
    Bomb("png-idat-1gib", "PNG 1000×1000 whose IDAT inflates to 1 GiB", png_idat_bomb),
    Bomb("png-ztxt-100mib", "PNG 28×28 with 100 zTXt chunks of 1 MiB", png_text_bomb),
)
# Ordinary large images at and under the limits: what an allowed image may cost.
REFERENCES: tuple[Bomb, ...] = (
    Bomb("photo-40mpx", "baseline colour JPEG 8000×5000 (a phone photo)", baseline_photo),
    Bomb("progressive-12mpx", "progressive colour JPEG 4000×3000, 10 scans", progressive_photo),
    Bomb("png-16mpx", "blank RGBA PNG 4000×4000", lambda: png_canvas((4_000, 4_000))),
    Bomb(
        "webp-lossless-12mpx",
        "still lossless WebP 4000×3000",
        lambda: webp_lossless_canvas((4_000, 3_000)),
    ),
    Bomb(
        "webp-canvas-12mpx",
        "animated WebP, 1×1 frames on a 4000×3000 canvas",
        lambda: webp_canvas_bomb(4, (4_000, 3_000)),
    ),
    Bomb(
        "progressive-cmyk-32mpx",
        "progressive CMYK JPEG 8000×4000, 32 scans (244 MiB of coefficients)",
        lambda: jpeg_scan_bomb(32, (8_000, 4_000), mode="CMYK"),
    ),
    Bomb(
        "bmp-rle8-rows-4mpx",
        "RLE8 BMP 2000×2000, one pixel and end-of-line a row",
        lambda: bmp_rle_rows((2_000, 2_000)),
    ),
    Bomb(
        "progressive-40mpx-444",
        "progressive colour JPEG 10000×4000 at 4:4:4, 32 scans",
        lambda: jpeg_scan_bomb(32, CANVAS, mode="RGB"),
    ),
)


# --------------------------------------------------------------------------- measuring

# Runs in a fresh interpreter: the cost of decode_image alone, after the imports.
_CHILD = """
import json, resource, sys, time
import pyfunc.budget
from pyfunc.preprocess import decode_image
if sys.argv[2] == "off":  # the decoder as it was before the budget checks
    pyfunc.budget.check_encoded = pyfunc.budget.check_opened = lambda *args: None
from pyfunc.errors import ImageError
data = open(sys.argv[1], "rb").read()
def status_mb(key):  # VmHWM is this process's own peak; ru_maxrss counts the parent's at fork
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
before = resource.getrusage(resource.RUSAGE_SELF)
rss = status_mb("VmRSS:")
wall = time.perf_counter()
try:
    decode_image(data)
    outcome = "decoded"
except ImageError as exc:
    outcome = f"{exc.status} {exc.code}: {exc}"
wall = time.perf_counter() - wall
after = resource.getrusage(resource.RUSAGE_SELF)
cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
print(json.dumps({"cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
                  "peak_mb": round(status_mb("VmHWM:") - rss, 1), "outcome": outcome}))
"""


def measure(data: bytes, budget: bool = True) -> dict:
    """Decode ``data`` with :func:`pyfunc.preprocess.decode_image` in a fresh process: CPU
    seconds, wall seconds, the peak resident memory over the process's size before the
    decode (MB), and the outcome. ``budget=False`` turns the checks of :mod:`pyfunc.budget`
    off, to see what the bytes cost without them."""
    with tempfile.NamedTemporaryFile(suffix=".img") as file:
        file.write(data)
        file.flush()
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, file.name, "on" if budget else "off"],
            capture_output=True,
            text=True,
            cwd=PROJECT_ROOT,
            timeout=600,
            check=False,
        )
    if done.returncode != 0:
        return {"cpu_s": None, "wall_s": None, "peak_mb": None, "outcome": done.stderr[-300:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="bombs to measure (default: all)")
    parser.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    parser.add_argument(
        "--without-budget", action="store_true", help="turn the pyfunc.budget checks off"
    )
    args = parser.parse_args(argv)
    catalogue = {bomb.name: bomb for bomb in BOMBS + REFERENCES}
    unknown = [name for name in args.names if name not in catalogue]
    if unknown:
        parser.error(f"unknown bomb(s) {unknown}; known: {sorted(catalogue)}")
    chosen = [catalogue[name] for name in args.names] or list(catalogue.values())
    if not args.json:
        print("| input | bytes | CPU s | peak MB | outcome |")
        print("|---|---:|---:|---:|---|")
    for bomb in chosen:
        data = bomb.make()
        row: dict[str, Any] = {
            "name": bomb.name,
            "description": bomb.description,
            "bytes": len(data),
        }
        row |= measure(data, budget=not args.without_budget)
        del data  # a forked child counts the parent's memory in some figures: keep it small
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            outcome = row["outcome"] if len(row["outcome"]) < 90 else row["outcome"][:87] + "…"
            print(
                f"| {bomb.description} | {row['bytes']:,} | {row['cpu_s']} | {row['peak_mb']} "
                f"| {outcome} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
