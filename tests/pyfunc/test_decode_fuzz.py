"""Fuzzing the decoder: any bytes give a valid model input or an ImageError, nothing else."""

from __future__ import annotations

import io
import warnings
from functools import cache

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pyfunc.errors import ImageError
from pyfunc.preprocess import Limits, decode_image, pre_process

# Small limits keep mutated headers that claim huge sizes cheap to refuse.
LIMITS = Limits(max_side=2_000, max_pixels=1_000_000)
FUZZ = settings(
    deadline=None,
    database=None,  # no .hypothesis/ directory in the work tree
    derandomize=True,  # the same examples on every run and in CI
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@cache
def seeds() -> dict[str, bytes]:
    """One small digit-like image per allowed format, plus an animated GIF and an RGBA PNG."""
    yy, xx = np.mgrid[0:32, 0:32]
    ring = np.abs(np.hypot(yy - 16, xx - 16) - 9) < 2.5  # a zero
    grey = Image.fromarray((ring * 255).astype(np.uint8))
    rgba = Image.merge("RGBA", [grey, grey, grey, grey])

    def enc(img: Image.Image, fmt: str, **params: object) -> bytes:
        buf = io.BytesIO()
        img.save(buf, format=fmt, **params)
        return buf.getvalue()

    return {
        "png": enc(grey, "PNG"),
        "png-rgba": enc(rgba, "PNG"),
        "jpeg": enc(grey.convert("RGB"), "JPEG", quality=80),
        "jpeg-progressive": enc(grey, "JPEG", progressive=True),
        "gif": enc(grey, "GIF", save_all=True, append_images=[grey.rotate(90)]),
        "bmp": enc(grey, "BMP"),
        "webp": enc(rgba, "WEBP", quality=80),
        "webp-lossless": enc(grey, "WEBP", lossless=True),
    }


def check(data: bytes) -> None:
    """The contract: a valid (1, 28, 28, 1) float32 in [0, 1], or an ImageError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow may warn about odd files; only errors count
        try:
            out = pre_process([data], limits=LIMITS)
        except ImageError as exc:
            assert str(exc)
        else:
            assert out.shape == (1, 28, 28, 1)
            assert out.dtype == np.float32
            assert np.isfinite(out).all()
            assert out.min() >= 0.0 and out.max() <= 1.0
        try:
            ink = decode_image(data, LIMITS)
        except ImageError:
            pass
        else:
            assert ink.ndim == 2 and ink.dtype == np.float32
            assert np.isfinite(ink).all() and ink.min() >= 0.0 and ink.max() <= 1.0


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A seed image with a few random byte flips, insertions, deletions or a truncation."""
    data = bytearray(seeds()[draw(st.sampled_from(sorted(seeds())))])
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        # Headers decide most code paths: bias positions towards the start.
        limit = len(data) - 1 if draw(st.booleans()) else min(len(data) - 1, 64)
        pos = draw(st.integers(0, limit))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[pos] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, draw(st.integers(0, 255))]))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        else:
            del data[pos:]
    return bytes(data)


def test_seeds_are_valid_images() -> None:
    for name, data in seeds().items():
        out = pre_process([data], limits=LIMITS)
        assert out.shape == (1, 28, 28, 1), name


@settings(FUZZ, max_examples=60)
@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    check(data)


@settings(FUZZ, max_examples=60)
@given(st.sampled_from(sorted(seeds())), st.binary(max_size=256))
def test_valid_header_then_garbage(name: str, tail: bytes) -> None:
    data = seeds()[name]
    check(data[: min(len(data), 8 + len(tail) % 64)] + tail)


@settings(FUZZ, max_examples=160)
@given(mutated())
def test_mutated_images(data: bytes) -> None:
    check(data)
