"""pyfunc.container: where an image ends, for every accepted format as Pillow writes it, with
and without data appended, and for bodies cut short or not images at all."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pyfunc.container import image_end, trailing_bytes

TRAILER = b"\xff\xd9 IEND ;\x00\x00" + bytes(range(256)) * 40  # markers of every format


def _picture(rng: np.random.Generator, size: tuple[int, int] = (48, 64)) -> Image.Image:
    return Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8))


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


CASES = {
    "png": ("PNG", {}),
    "jpeg": ("JPEG", {"quality": 90}),
    "jpeg-progressive": ("JPEG", {"progressive": True}),
    "jpeg-exif": ("JPEG", {"exif": Image.Exif()}),
    "gif": ("GIF", {}),
    "webp-lossy": ("WEBP", {}),
    "webp-lossless": ("WEBP", {"lossless": True}),
    "bmp": ("BMP", {}),
}


@pytest.mark.parametrize("case", CASES)
def test_the_end_is_found_with_or_without_a_trailer(case: str, rng):
    fmt, options = CASES[case]
    data = _encode(_picture(rng), fmt, **options)
    assert image_end(data) == len(data)
    assert image_end(data + TRAILER) == len(data)
    assert trailing_bytes(data + TRAILER) == len(TRAILER)
    assert image_end(data[:-3]) is None  # cut short: the end cannot be told


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animations_end_after_their_last_frame(fmt: str, rng):
    frames = [_picture(rng, (32, 32)) for _ in range(3)]
    data = _encode(frames[0], fmt, save_all=True, append_images=frames[1:])
    assert image_end(data + TRAILER) == len(data)


def test_a_jpeg_with_restart_markers_and_a_second_picture_keeps_the_first(rng):
    first = _encode(_picture(rng, (64, 64)), "JPEG", restart_marker_blocks=1)
    assert b"\xff\xd0" in first  # restart markers inside the scan do not end it
    second = _encode(_picture(rng), "JPEG")
    assert image_end(first + second) == len(first)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not an image at all",
        b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 100,  # a signature and junk
        b"\xff\xd8" + b"\x00" * 100,
        b"GIF89a\x01\x00",
        b"RIFF\xff\xff\xff\xffWEBPVP8 ",
        b"BM\x00\x00",
    ],
)
def test_bodies_that_are_no_whole_container_have_no_end(body: bytes):
    assert image_end(body) is None
    assert trailing_bytes(body) == 0


MIB = 1024 * 1024
HOSTILE = {
    "jpeg-fill-run": b"\xff\xd8\xff\xda\x00\x02" + b"\xff" * (8 * MIB),
    "jpeg-tiny-segments": b"\xff\xd8" + b"\xff\xe0\x00\x02" * (2 * MIB),
    "jpeg-stuffed-scan": b"\xff\xd8\xff\xda\x00\x02" + b"\xff\x00" * (4 * MIB),
    "png-tiny-chunks": b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x00tEXt\x00\x00\x00\x00" * 700_000,
    "gif-one-byte-blocks": b"GIF89a\x01\x00\x01\x00\x00\x00\x00\x2c"
    + bytes(10)
    + b"\x01\x00" * (4 * MIB),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_bodies_cost_little_cpu(case: str):
    import time

    started = time.process_time()
    end = image_end(HOSTILE[case])
    spent = time.process_time() - started
    assert end is None
    # Generous against a loaded machine; a walk of every byte in Python takes seconds.
    assert spent < 0.5, f"{case}: {spent:.2f} s of CPU"
