"""pyfunc.preprocess: decoding client bytes and MNIST-style normalisation.

Every test image is built here (or in training.variants) from real MNIST test digits.
"""

from __future__ import annotations

import base64
import io
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageFilter, ImageOps, JpegImagePlugin

from pyfunc import preprocess
from pyfunc.errors import ImageError, ImageTooLarge, NoDigit, UnsupportedFormat
from pyfunc.preprocess import (
    ALLOWED_FORMATS,
    DEFAULT_LIMITS,
    Limits,
    decode_image,
    decode_images,
    normalise,
    pre_process,
    sniff_format,
    to_ink,
)
from training import variants

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MNIST_PATH = Path(os.environ.get("MNIST_PATH") or PROJECT_ROOT.parent / "shared/data/mnist.npz")

# A fixed, varied handful of test digits (all ten classes appear in the first 20).
SAMPLE = range(20)


@pytest.fixture(scope="module")
def x_test() -> np.ndarray:
    if not MNIST_PATH.is_file():
        pytest.skip(f"MNIST not found at {MNIST_PATH} (set MNIST_PATH)")
    with np.load(MNIST_PATH) as data:
        return data["x_test"]


@pytest.fixture(scope="module")
def digit(x_test: np.ndarray) -> np.ndarray:
    """MNIST test #0, a 7."""
    return x_test[0]


# --------------------------------------------------------------------------- helpers


def run(data: object) -> np.ndarray:
    """One image through pre_process -> (28, 28)."""
    out = pre_process([data])
    assert out.shape == (1, 28, 28, 1)
    assert out.dtype == np.float32
    return out[0, :, :, 0]


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def aligned_corr(out: np.ndarray, ref: np.ndarray) -> float:
    """Best correlation over ±1 px shifts.

    Centring by the centre of mass places a digit to the nearest pixel, exactly like MNIST;
    a digit that went through resampling may legitimately land one pixel from the source.
    """
    padded = np.pad(out, 1)
    return max(corr(padded[dy : dy + 28, dx : dx + 28], ref) for dy in range(3) for dx in range(3))


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_header_only(width: int, height: int) -> bytes:
    """A syntactically valid PNG claiming ``width``×``height`` with (almost) no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def paper(arr: np.ndarray, scale: int = 4) -> Image.Image:
    """Dark ink on light paper (L), ``scale`` times the MNIST size."""
    big = Image.fromarray(arr).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)
    return ImageOps.invert(big)


# --------------------------------------------------------------------------- MNIST passthrough


def test_mnist_png_passes_through_essentially_unchanged(x_test: np.ndarray) -> None:
    digits = x_test[:500]
    out = pre_process([variants.png_bytes(d) for d in digits])[..., 0]
    ref = digits.astype(np.float32) / 255
    diff = np.abs(out - ref)
    assert diff.mean() < 0.01
    exact = (diff.max(axis=(1, 2)) <= 1 / 255 + 1e-6).mean()
    assert exact >= 0.97, f"only {exact:.1%} of digits unchanged within 1/255"


def test_numeric_batch_path_equals_bytes_path(x_test: np.ndarray) -> None:
    digits = x_test[:300]
    from_arrays = pre_process(digits)
    from_png = pre_process([variants.png_bytes(d) for d in digits])
    from_list = pre_process(list(digits))
    np.testing.assert_array_equal(from_arrays, from_png)
    np.testing.assert_array_equal(from_list, from_png)


def test_mnist_shortcut_equals_the_full_path(x_test: np.ndarray) -> None:
    # MNIST-like arrays and 28×28 PNGs skip to a vectorised path; it must change nothing.
    pngs = [variants.png_bytes(d) for d in x_test[:300]]
    full = np.stack([normalise(decode_image(p)) for p in pngs])
    np.testing.assert_array_equal(pre_process(pngs)[..., 0], full)


def test_normalise_keeps_mnist_digit(digit: np.ndarray) -> None:
    out = normalise(digit.astype(np.float32) / 255)
    np.testing.assert_allclose(out, digit / 255, atol=1 / 255 + 1e-6)


# --------------------------------------------------------------------------- sniffing


@pytest.mark.parametrize(
    ("fmt", "params"),
    [("PNG", {}), ("JPEG", {"quality": 90}), ("GIF", {}), ("BMP", {}), ("WEBP", {})],
)
def test_sniff_allowed_formats(digit: np.ndarray, fmt: str, params: dict) -> None:
    data = encode(Image.fromarray(digit), fmt, **params)
    assert sniff_format(data) == fmt
    assert fmt in ALLOWED_FORMATS


def test_sniff_other_formats(digit: np.ndarray) -> None:
    img = Image.fromarray(digit)
    assert sniff_format(encode(img, "TIFF")) == "TIFF"
    assert sniff_format(encode(img.convert("RGB"), "PDF")) == "PDF"
    assert sniff_format(encode(img, "ICO")) == "ICO"
    assert sniff_format(b'<svg xmlns="http://www.w3.org/2000/svg"></svg>') == "SVG"
    assert sniff_format(b'<?xml version="1.0"?>\n<svg width="28"></svg>') == "SVG"
    assert sniff_format(b"<!DOCTYPE html><html><body>7</body></html>") == "HTML"
    assert sniff_format(b"\xef\xbb\xbf  <html lang='en'></html>") == "HTML"
    assert sniff_format(b"this is a seven, honestly\n") == "TEXT"
    assert sniff_format("ünïcödé text".encode()) == "TEXT"


@pytest.mark.parametrize(
    "data",
    [
        np.random.default_rng(1).bytes(256),
        bytes(range(256)),
        b"",
        b"BM\x00\x00",  # "BM" alone is not a bitmap header
        b"\x89PNX",
    ],
)
def test_sniff_garbage_is_none(data: bytes) -> None:
    assert sniff_format(data) is None


# --------------------------------------------------------------------------- allowed formats


@pytest.mark.parametrize(
    ("fmt", "params"),
    [("PNG", {}), ("GIF", {}), ("BMP", {}), ("WEBP", {"lossless": True})],
)
def test_lossless_formats_decode_exactly(
    x_test: np.ndarray, fmt: str, params: dict[str, object]
) -> None:
    digits = x_test[list(SAMPLE)]
    out = pre_process([encode(Image.fromarray(d), fmt, **params) for d in digits])
    np.testing.assert_allclose(out[..., 0], digits / 255, atol=1 / 255 + 1e-6)


@pytest.mark.parametrize(
    ("fmt", "params"),
    [("JPEG", {"quality": 75}), ("JPEG", {"quality": 30}), ("WEBP", {"quality": 80})],
)
def test_lossy_formats_decode_to_the_digit(
    x_test: np.ndarray, fmt: str, params: dict[str, object]
) -> None:
    for i in SAMPLE:
        out = run(encode(Image.fromarray(x_test[i]), fmt, **params))
        # Compression noise can move the centre of mass over a rounding boundary.
        assert aligned_corr(out, x_test[i]) > 0.9, f"digit {i} as {fmt}"


def test_gif_uses_first_frame(x_test: np.ndarray) -> None:
    first, second = Image.fromarray(x_test[0]), Image.fromarray(x_test[1])
    data = encode(first, "GIF", save_all=True, append_images=[second], duration=100)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    out = run(data)
    assert corr(out, x_test[0]) > 0.95
    assert corr(out, x_test[1]) < 0.5


# --------------------------------------------------------------------------- modes


def _palette(arr: np.ndarray) -> bytes:
    return encode(Image.fromarray(arr).convert("RGB").convert("P", palette=Image.ADAPTIVE), "PNG")


def _palette_transparent(arr: np.ndarray) -> bytes:
    # White-on-transparent GIF: palette index 0 is black and fully transparent.
    img = Image.fromarray((arr // 32).astype(np.uint8), "P")
    img.putpalette([min(255, 36 * i) for i in range(8) for _ in range(3)])
    return encode(img, "GIF", transparency=0)


def _sixteen_bit(arr: np.ndarray) -> bytes:
    img = Image.fromarray(arr.astype(np.uint16) * 257)
    assert img.mode.startswith("I;16")
    return encode(img, "PNG")


def _cmyk(arr: np.ndarray) -> bytes:
    return encode(paper(arr, 2).convert("CMYK"), "JPEG", quality=90)


def _la(arr: np.ndarray) -> bytes:
    # Grey ink with alpha: opaque strokes, transparent elsewhere.
    return encode(Image.merge("LA", [Image.new("L", (28, 28), 255), Image.fromarray(arr)]), "PNG")


def _bilevel(arr: np.ndarray) -> bytes:
    return encode(Image.fromarray(arr).point(lambda v: 255 if v > 100 else 0).convert("1"), "BMP")


def _blue_on_yellow(arr: np.ndarray) -> bytes:
    return encode(ImageOps.colorize(Image.fromarray(arr), (250, 230, 120), (20, 40, 160)), "PNG")


def _rgba_opaque(arr: np.ndarray) -> bytes:
    return encode(paper(arr, 1).convert("RGBA"), "PNG")


@pytest.mark.parametrize(
    ("build", "mode"),
    [
        (_palette, "P"),
        (_palette_transparent, "P"),
        (_sixteen_bit, "I;16"),
        (_cmyk, "CMYK"),
        (_la, "LA"),
        (_bilevel, "1"),
        (_blue_on_yellow, "RGB"),
        (_rgba_opaque, "RGBA"),
    ],
)
def test_image_modes(x_test: np.ndarray, build, mode: str) -> None:
    data = build(x_test[0])
    assert Image.open(io.BytesIO(data)).mode == mode
    for i in SAMPLE:
        out = run(build(x_test[i]))
        assert aligned_corr(out, x_test[i]) > 0.85, f"digit {i} in mode {mode}"


def test_sixteen_bit_uses_the_full_range(digit: np.ndarray) -> None:
    # 16-bit data must be scaled, not clipped at 255 (which would make every stroke pixel 1).
    ink = decode_image(_sixteen_bit(digit))
    np.testing.assert_allclose(ink, digit / 255, atol=1 / 255)


# --------------------------------------------------------------------------- alpha


def test_canvas_export_with_ink_only_in_alpha(x_test: np.ndarray) -> None:
    data = variants.alpha_canvas_png(x_test[0])
    rgba = np.asarray(Image.open(io.BytesIO(data)))
    assert rgba.shape[2] == 4 and not rgba[..., :3].any()
    scores = [aligned_corr(run(variants.alpha_canvas_png(x_test[i])), x_test[i]) for i in SAMPLE]
    assert min(scores) > 0.8 and np.mean(scores) > 0.9


@pytest.mark.parametrize("rgb", [(255, 255, 255), (0, 0, 0), (30, 60, 200)])
def test_uniform_colour_under_alpha_uses_alpha(digit: np.ndarray, rgb: tuple) -> None:
    img = Image.new("RGBA", (28, 28), (*rgb, 0))
    img.putalpha(Image.fromarray(digit))
    assert corr(run(encode(img, "PNG")), digit) > 0.99


def test_dark_ink_on_transparent_over_white_rgb(digit: np.ndarray) -> None:
    # Black strokes drawn on a transparent layer whose hidden colour is white.
    rgb = np.where(digit > 0, 0, 255)
    img = Image.fromarray(np.dstack([rgb, rgb, rgb, digit]).astype(np.uint8), "RGBA")
    assert corr(run(encode(img, "PNG")), digit) > 0.95


def test_digit_cut_out_of_an_opaque_sheet(digit: np.ndarray) -> None:
    # A stencil: opaque black everywhere except the transparent digit.
    img = Image.new("RGBA", (28, 28), (0, 0, 0, 0))
    img.putalpha(Image.fromarray(255 - digit))
    assert corr(run(encode(img, "PNG")), digit) > 0.99


def test_fully_transparent_image_has_no_digit() -> None:
    with pytest.raises(NoDigit):
        run(encode(Image.new("RGBA", (50, 50), (0, 0, 0, 0)), "PNG"))


# --------------------------------------------------------------------------- real-world styles


def test_paper_style_noisy_jpeg(x_test: np.ndarray) -> None:
    data = variants.paper_jpeg(x_test[0], seed=0)
    img = Image.open(io.BytesIO(data))
    assert (img.format, img.mode) == ("JPEG", "RGB")
    assert np.asarray(img.convert("L"))[0].mean() > 180  # light paper
    scores = [aligned_corr(run(variants.paper_jpeg(x_test[i], seed=i)), x_test[i]) for i in SAMPLE]
    assert min(scores) > 0.75 and np.mean(scores) > 0.9


def test_uneven_background_gradient_and_noise(x_test: np.ndarray) -> None:
    scores = [
        aligned_corr(run(variants.uneven_paper_jpeg(x_test[i], seed=i)), x_test[i]) for i in SAMPLE
    ]
    assert min(scores) > 0.75 and np.mean(scores) > 0.88


def test_uneven_background_does_not_leave_a_shadow(digit: np.ndarray) -> None:
    ink = decode_image(variants.uneven_paper_jpeg(digit, seed=3))
    # The darkest paper corner (bottom right) holds no stroke: it must come out empty.
    assert ink[-25:, -25:].max() < 0.1


def test_bold_digit_covering_most_of_uneven_paper(x_test: np.ndarray) -> None:
    # Ink over most tiles must not be taken for the background (it once was: a blank result).
    bold = [np.asarray(Image.fromarray(x_test[i]).filter(ImageFilter.MaxFilter(3))) for i in SAMPLE]
    scores = [
        aligned_corr(run(variants.uneven_paper_jpeg(b, seed=i)), b) for i, b in enumerate(bold)
    ]
    assert min(scores) > 0.8, scores


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied(x_test: np.ndarray, orientation: int) -> None:
    # Stored pixels are turned so that a viewer honouring the tag shows the upright digit.
    undo = {
        3: Image.Transpose.ROTATE_180,
        6: Image.Transpose.ROTATE_90,
        8: Image.Transpose.ROTATE_270,
    }
    for i in (0, 1, 4):  # a 7, a 2 and a 4: none looks the same turned
        upright = paper(x_test[i], 2)
        stored = upright.transpose(undo[orientation])
        exif = Image.Exif()
        exif[0x0112] = orientation
        data = encode(stored.convert("RGB"), "JPEG", quality=95, exif=exif.tobytes())
        out = run(data)
        as_stored = run(encode(stored, "PNG"))
        assert aligned_corr(out, x_test[i]) > 0.9
        assert aligned_corr(as_stored, x_test[i]) < 0.6


def test_small_digit_off_centre_on_big_canvas(x_test: np.ndarray) -> None:
    data = variants.off_centre(x_test[0], canvas=(400, 300), seed=0)
    assert Image.open(io.BytesIO(data)).size == (400, 300)
    scores = [aligned_corr(run(variants.off_centre(x_test[i], seed=i)), x_test[i]) for i in SAMPLE]
    assert min(scores) > 0.8 and np.mean(scores) > 0.9


def test_thumbnail_16px(x_test: np.ndarray) -> None:
    assert Image.open(io.BytesIO(variants.thumbnail16(x_test[0]))).size == (16, 16)
    scores = [aligned_corr(run(variants.thumbnail16(x_test[i])), x_test[i]) for i in SAMPLE]
    assert np.mean(scores) > 0.8 and min(scores) > 0.7


@pytest.mark.parametrize("name", sorted(variants.VARIANTS))
def test_every_variant_decodes_to_a_similar_digit(x_test: np.ndarray, name: str) -> None:
    build = variants.VARIANTS[name]
    scores = []
    for i in SAMPLE:
        data = build(x_test[i], i)
        # Rotation changes the digit on purpose: compare with what was sent, not the source.
        reference = np.asarray(Image.open(io.BytesIO(data))) if name == "rotated" else x_test[i]
        scores.append(aligned_corr(run(data), reference))
    assert np.mean(scores) > 0.75, f"{name}: mean correlation {np.mean(scores):.2f}"


def test_big_photo_is_reduced_not_refused(x_test: np.ndarray) -> None:
    data = variants.big_photo_jpeg(x_test[0], size=(4000, 3000), seed=0)
    assert Image.open(io.BytesIO(data)).size == (4000, 3000)
    out = run(data)
    assert aligned_corr(out, x_test[0]) > 0.85


@pytest.mark.parametrize(
    ("size", "drafted", "work"),
    [
        ((4000, 3000), (500, 375), (375, 500)),  # reduced 8×, all of it by the decoder
        ((640, 480), (320, 240), (240, 320)),  # 2×, by the decoder: never decoded whole
        ((3000, 2000), (1500, 1000), (334, 500)),  # 6×: 2× by the decoder, then 3×
        ((500, 400), (500, 400), (400, 500)),  # already work size: decoded as it is
    ],
)
def test_big_photo_work_image_is_small(digit: np.ndarray, monkeypatch, size, drafted, work) -> None:
    drafts = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = original(self, mode, size)
        drafts.append((mode, self.size))
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    ink = decode_image(variants.big_photo_jpeg(digit, size=size, seed=1))
    assert ink.shape == work
    # The JPEG decoder itself scaled down and skipped colour: pixels never existed at
    # full size.
    assert drafts == [("L", drafted)]


def test_faint_pencil_is_stretched_to_full_ink(digit: np.ndarray) -> None:
    faint = (255 - (digit.astype(np.float32) * 0.3)).astype(np.uint8)  # light grey on white
    out = run(encode(Image.fromarray(faint), "PNG"))
    assert out.max() == pytest.approx(1.0)
    assert corr(out, digit) > 0.95


def test_thin_faint_strokes_are_lifted_like_mnist(x_test: np.ndarray) -> None:
    for i in SAMPLE:
        out = run(variants.thin(x_test[i]))
        # The brightest tenth of the ink near full strength (before lifting: 0.66 at worst).
        assert np.quantile(out[out > 0.1], 0.9) >= 0.78
        assert aligned_corr(out, x_test[i]) > 0.8


def test_mnist_levels_are_not_lifted(x_test: np.ndarray) -> None:
    faint = (x_test[:200].astype(np.float32) * 0.5).astype(np.uint8)  # same shape, half ink
    np.testing.assert_allclose(pre_process(faint), pre_process(x_test[:200]), atol=2 / 255)


def test_dust_speck_far_from_digit_is_ignored(digit: np.ndarray) -> None:
    page = np.zeros((120, 120), np.uint8)
    page[40:68, 40:68] = digit
    clean = run(page)
    page[5:8, 110:113] = 255  # a 3×3 speck in the corner
    assert np.abs(run(page) - clean).max() < 1e-6


def test_speck_brighter_than_a_faint_digit(digit: np.ndarray) -> None:
    page = np.zeros((100, 100), np.float32)
    page[30:58, 30:58] = digit / 255 * 0.25
    page[2, 95] = 1.0  # the brightest pixel is a lone speck
    out = normalise(page)
    assert corr(out, digit) > 0.99 and out.max() == pytest.approx(1.0)


def test_normalise_fits_big_digit_into_20px_box_at_centre_of_mass(digit: np.ndarray) -> None:
    big = np.asarray(Image.fromarray(digit).resize((280, 280), Image.Resampling.BICUBIC))
    out = normalise(np.pad(big, ((10, 90), (150, 20))) / 255.0)
    rows = np.flatnonzero(out.max(axis=1) > 0.3)
    cols = np.flatnonzero(out.max(axis=0) > 0.3)
    assert 17 <= max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 <= 21
    yy, xx = np.mgrid[0:28, 0:28]
    assert abs((out * yy).sum() / out.sum() - 14) <= 0.5
    assert abs((out * xx).sum() / out.sum() - 14) <= 0.5
    assert out.max() == pytest.approx(1.0)


# --------------------------------------------------------------------------- no digit


@pytest.mark.parametrize(
    "pixels",
    [
        np.full((64, 64), 255, np.uint8),
        np.zeros((64, 64), np.uint8),
        np.full((64, 64), 128, np.uint8),
        np.clip(np.random.default_rng(0).normal(128, 3, (64, 64)), 0, 255).astype(np.uint8),
        np.clip(np.random.default_rng(1).normal(230, 4, (300, 400)), 0, 255).astype(np.uint8),
    ],
    ids=["white", "black", "grey", "faint-noise", "noisy-paper"],
)
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_blank_images_have_no_digit(pixels: np.ndarray, fmt: str) -> None:
    data = encode(Image.fromarray(pixels).convert("RGB"), fmt)
    with pytest.raises(NoDigit) as info:
        run(data)
    assert info.value.code == "no_digit" and info.value.status == 422


@pytest.mark.parametrize("sigma", [3, 10])
def test_photo_of_blank_paper_under_uneven_light_has_no_digit(sigma: int) -> None:
    yy, xx = np.mgrid[0:300, 0:400].astype(np.float32)
    light = 250 - 140 * (0.6 * xx / 399 + 0.4 * yy / 299)
    noise = np.random.default_rng(sigma).normal(0, sigma, light.shape)
    page = np.clip(light + noise, 0, 255).astype(np.uint8)
    with pytest.raises(NoDigit):
        run(encode(Image.fromarray(page), "JPEG", quality=70))


@pytest.mark.parametrize(
    "array",
    [np.zeros((28, 28)), np.full((28, 28), 0.5, np.float32), np.ones((28, 28), np.uint8) * 255],
)
def test_blank_arrays_have_no_digit(array: np.ndarray) -> None:
    with pytest.raises(NoDigit):
        pre_process(array[np.newaxis])
    with pytest.raises(NoDigit):
        normalise(array)


def test_normalise_raises_no_digit_for_faint_noise() -> None:
    noise = np.random.default_rng(0).uniform(0, 0.05, (28, 28)).astype(np.float32)
    with pytest.raises(NoDigit):
        normalise(noise)


# --------------------------------------------------------------------------- too large


def _assert_quick_too_large(data: bytes, limits: Limits = DEFAULT_LIMITS) -> None:
    loads = []
    original = ImageFile.ImageFile.load

    def spy(self):
        loads.append(self.size)
        return original(self)

    with (
        mock.patch.object(ImageFile.ImageFile, "load", spy),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        with pytest.raises(ImageTooLarge) as info:
            decode_image(data, limits)
    # Pillow's DecompressionBombWarning is turned into the error, not leaked.
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert loads == []  # refused from the header: no pixel was decoded
    assert info.value.code == "image_too_large" and info.value.status == 413


@pytest.mark.parametrize(
    "size",
    [(12_000, 12_000), (14_000, 14_000), (9_000, 9_000), (10_001, 10)],
    ids=["pillow-bomb-warning", "pillow-bomb-error", "over-max-pixels", "over-max-side"],
)
def test_huge_png_header_is_refused(size: tuple[int, int]) -> None:
    _assert_quick_too_large(png_header_only(*size))


@pytest.mark.parametrize("size", [(12_000, 12_000), (14_000, 14_000)])
def test_pillow_bomb_check_is_too_large_even_under_generous_limits(size: tuple[int, int]) -> None:
    generous = Limits(max_side=1_000_000, max_pixels=10**12)
    _assert_quick_too_large(png_header_only(*size), generous)


def test_long_thin_bmp_is_refused() -> None:
    _assert_quick_too_large(encode(Image.new("L", (20_000, 1), 255), "BMP"))


def test_limits_are_configurable(digit: np.ndarray) -> None:
    data = encode(Image.fromarray(digit).resize((200, 50)), "PNG")
    _assert_quick_too_large(data, Limits(max_side=100))
    _assert_quick_too_large(data, Limits(max_pixels=5_000))
    with pytest.raises(ImageTooLarge):
        pre_process([np.zeros((200, 50), np.uint8)], limits=Limits(max_side=100))
    assert decode_image(data, Limits(max_side=200, max_pixels=10_000)).ndim == 2


# --------------------------------------------------------------------------- refused formats


def _tga(arr: np.ndarray) -> bytes:
    return encode(Image.fromarray(arr), "TGA")  # no signature: found by Pillow itself


@pytest.mark.parametrize(
    "make",
    [
        lambda a: encode(Image.fromarray(a), "TIFF"),
        lambda a: encode(Image.fromarray(a).convert("RGB"), "PDF"),
        lambda a: encode(Image.fromarray(a), "ICO"),
        lambda a: encode(Image.fromarray(a), "PPM"),
        _tga,
        lambda a: b"8BPS\x00\x01" + bytes(40),
        lambda a: b'<svg xmlns="http://www.w3.org/2000/svg"><text>7</text></svg>',
        lambda a: b'<?xml version="1.0" encoding="UTF-8"?><svg></svg>',
        lambda a: b"<!doctype html><html><img src='seven.png'></html>",
        lambda a: b"7",
        lambda a: b"a plain text file\nwith two lines\n",
    ],
    ids=["tiff", "pdf", "ico", "ppm", "tga", "psd", "svg", "svg-xml", "html", "digit-char", "text"],
)
def test_unsupported_formats(digit: np.ndarray, make) -> None:
    with pytest.raises(UnsupportedFormat) as info:
        decode_image(make(digit))
    assert info.value.code == "unsupported_format" and info.value.status == 415
    assert "PNG" in str(info.value)  # says what would be accepted


# --------------------------------------------------------------------------- invalid


def _truncated_png(arr: np.ndarray) -> bytes:
    data = encode(Image.fromarray(arr).resize((100, 100)), "PNG")
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "make",
    [
        lambda a: b"",
        _truncated_png,
        lambda a: b"\x89PNG\r\n\x1a\n" + np.random.default_rng(0).bytes(300),
        lambda a: np.random.default_rng(1).bytes(1000),
        lambda a: b"\xff\xd8\xff\xe0" + bytes(20),
        lambda a: encode(Image.fromarray(a), "GIF")[:30],
        lambda a: encode(Image.fromarray(a), "JPEG")[:100],
        lambda a: encode(Image.fromarray(a), "BMP")[:60],
        lambda a: encode(Image.fromarray(a), "WEBP")[:40],
    ],
    ids=[
        "empty",
        "truncated-png",
        "png-signature-garbage",
        "garbage",
        "jpeg-header-only",
        "truncated-gif",
        "truncated-jpeg",
        "truncated-bmp",
        "truncated-webp",
    ],
)
def test_invalid_images(digit: np.ndarray, make) -> None:
    with pytest.raises(ImageError) as info:
        decode_image(make(digit))
    assert type(info.value) is ImageError
    assert info.value.code == "invalid_image" and info.value.status == 400
    assert str(info.value)


def test_non_bytes_to_decode_image() -> None:
    with pytest.raises(ImageError):
        decode_image("not bytes")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- pre_process inputs


def test_base64_and_data_urls(digit: np.ndarray) -> None:
    data = variants.png_bytes(digit)
    b64 = base64.b64encode(data).decode()
    urlsafe = base64.urlsafe_b64encode(data).decode().rstrip("=")
    wrapped = "\n".join(b64[i : i + 76] for i in range(0, len(b64), 76))
    inputs = [b64, f"data:image/png;base64,{b64}", urlsafe, wrapped, f"data:;base64,{b64}"]
    out = pre_process(inputs)
    assert out.shape == (5, 28, 28, 1)
    for item in out:
        np.testing.assert_array_equal(item, out[0])
    assert corr(out[0, ..., 0], digit) > 0.99


def test_data_url_media_type_is_not_trusted(digit: np.ndarray) -> None:
    tiff = base64.b64encode(encode(Image.fromarray(digit), "TIFF")).decode()
    with pytest.raises(UnsupportedFormat):
        pre_process([f"data:image/png;base64,{tiff}"])


@pytest.mark.parametrize(
    "text",
    ["not base64 at all!", "iVBORw0KGgo*", "data:image/png,rawdata", "data:image/png;base64", "é"],
)
def test_invalid_base64(text: str) -> None:
    with pytest.raises(ImageError) as info:
        pre_process([text])
    assert info.value.code == "invalid_image"


@pytest.mark.parametrize(
    "convert",
    [
        lambda x: x,
        lambda x: x.astype(np.float32) / 255,
        lambda x: x.astype(np.float64) / 255,
        lambda x: x[..., np.newaxis],
        lambda x: x.astype(np.int64),
        lambda x: list(x),
        lambda x: tuple(x.astype(np.float32) / 255),
    ],
    ids=["uint8", "float32", "float64", "nhwc", "int64", "list", "tuple-of-float"],
)
def test_numeric_inputs(x_test: np.ndarray, convert) -> None:
    digits = x_test[:8]
    out = pre_process(convert(digits))
    assert out.shape == (8, 28, 28, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 0], digits / 255, atol=2 / 255)


def test_single_2d_array_is_a_batch_of_one(digit: np.ndarray) -> None:
    out = pre_process(digit)
    assert out.shape == (1, 28, 28, 1)


def test_mixed_sequence_and_object_array(digit: np.ndarray) -> None:
    png = variants.png_bytes(digit)
    items = [png, base64.b64encode(png).decode(), digit, np.dstack([255 - digit] * 3)]
    out = pre_process(items)
    assert out.shape == (4, 28, 28, 1) and out.dtype == np.float32
    assert all(corr(o, digit) > 0.99 for o in out[..., 0])
    obj = np.empty(2, dtype=object)
    obj[:] = [png, png]
    assert pre_process(obj).shape == (2, 28, 28, 1)
    assert pre_process([]).shape == (0, 28, 28, 1)


def test_output_range(x_test: np.ndarray) -> None:
    out = pre_process([variants.paper_jpeg(x_test[i], seed=i) for i in range(10)])
    assert out.dtype == np.float32 and out.shape == (10, 28, 28, 1)
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(out.max(axis=(1, 2, 3)), 1.0)


def test_bad_item_is_named_by_index(digit: np.ndarray) -> None:
    with pytest.raises(UnsupportedFormat, match="image 1"):
        pre_process([variants.png_bytes(digit), b"plain text"])


@pytest.mark.parametrize(
    "bad",
    [
        [{"image": "x"}],
        [None],
        [np.array(["a", "b"])],
        np.zeros((2, 3, 28, 28)),
        np.zeros((2, 28, 28, 5)),
        [np.zeros((28, 28, 7))],
        [np.zeros((0, 28))],
        [np.full((28, 28), np.nan)],
        42,
    ],
    ids=["dict", "none", "strings", "5d", "5-channels", "7-channels", "empty", "nan", "int"],
)
def test_bad_inputs_raise_image_error(bad: object) -> None:
    with pytest.raises(ImageError):
        pre_process(bad)


# --------------------------------------------------------------------------- to_ink


def test_to_ink_detects_polarity_and_alpha(digit: np.ndarray) -> None:
    ink = to_ink(digit)
    np.testing.assert_array_equal(ink, digit / np.float32(255))
    dark_on_light = np.dstack([255 - digit] * 3)
    assert corr(to_ink(dark_on_light), digit) > 0.99
    alpha_only = np.dstack([np.zeros_like(digit)] * 3 + [digit])
    assert corr(to_ink(alpha_only), digit) > 0.99
    assert to_ink(digit > 128).dtype == np.float32


def test_to_ink_reduces_big_arrays(digit: np.ndarray) -> None:
    big = np.asarray(Image.fromarray(digit).resize((2000, 2000)))
    ink = to_ink(big)
    assert max(ink.shape) <= 512
    assert corr(normalise(ink), digit) > 0.9


# --------------------------------------------------------------------------- hygiene


def test_import_pulls_in_no_heavy_frameworks() -> None:
    code = (
        "import sys, pyfunc.preprocess; "
        "print(sorted(m for m in ('tensorflow', 'mlflow', 'flask', 'keras') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_a_lone_mnist_style_png_takes_the_vectorised_shortcut(
    digit: np.ndarray, monkeypatch
) -> None:
    """The seed's request (one 28×28 PNG) skips the per-image path; its speed is measured
    by make bench, not here."""
    data = variants.png_bytes(digit)
    expected = pre_process([data])

    def per_image_path(_ink: np.ndarray) -> np.ndarray:
        raise AssertionError("the per-image normalisation ran")

    monkeypatch.setattr(preprocess, "_normalise", per_image_path)
    np.testing.assert_array_equal(pre_process([data]), expected)


@pytest.mark.parametrize("shape", [(240, 320), (97, 61)])
def test_background_surface_follows_a_quadratic_light_field(shape: tuple[int, int]) -> None:
    # Paper lit unevenly (a tilted plane plus a curved term) with a bright block of ink: the
    # fitted surface must follow the light at every pixel, ink or not (to within the tiles'
    # 20th-percentile level, which sits below a tile's mean where the light slopes).
    h, w = shape
    y = ((np.arange(h) + 0.5) / h * 2 - 1)[:, None]
    x = ((np.arange(w) + 0.5) / w * 2 - 1)[None, :]
    light = (0.30 + 0.08 * x - 0.05 * y + 0.04 * x * x - 0.06 * x * y + 0.03 * y * y).astype(
        np.float32
    )
    raw = light.copy()
    raw[h // 3 : h // 2, w // 3 : w // 2] += np.float32(0.5)  # a stroke-bright block
    surface = preprocess._background(raw)
    assert np.shape(surface) == (h, w)
    assert np.abs(np.asarray(surface) - light).max() < 0.03


def test_a_mixed_list_is_normalised_item_by_item(x_test: np.ndarray) -> None:
    # The already-MNIST check runs once for all 28×28 items of a list: each result must be
    # what that image gets alone, and an image without a digit spoils no other.
    blank = encode(Image.new("L", (28, 28), 0), "PNG")
    items = [
        variants.png_bytes(x_test[0]),
        variants.paper_jpeg(x_test[1]),
        blank,
        variants.png_bytes(x_test[2]),
        x_test[3],
        variants.alpha_canvas_png(x_test[4]),
    ]
    results = preprocess.normalise_decoded(preprocess.decode_images(items))
    assert isinstance(results[2], NoDigit)
    for i, item in enumerate(items):
        if i != 2:
            np.testing.assert_array_equal(results[i], pre_process([item])[0, :, :, 0])
    with pytest.raises(NoDigit, match="image 2"):
        preprocess.stack(results)
    assert preprocess.stack(results[:2]).shape == (2, 28, 28, 1)


def _greys_near_mnist(x_test: np.ndarray) -> list[np.ndarray]:
    """Decoded 28×28 greys that take the MNIST shortcuts and that miss them: clean digits,
    thick, thin and turned ones, digits moved off centre or onto the border, a faint one."""
    digits = list(x_test[:150])
    digits += [np.roll(d, (3, -4), axis=(0, 1)) for d in x_test[150:180]]
    digits += [np.roll(d, 9, axis=1) for d in x_test[180:200]]
    digits += [(d // 6).astype(np.uint8) for d in x_test[200:220]]
    greys = [preprocess._u8(d) for d in digits]
    for build in (variants.thick, variants.thin, lambda d: variants.rotated(d, 15.0)):
        greys += [decode_images([build(d)])[0].grey for d in x_test[220:260]]
    return [g for g in greys if g.shape == (28, 28)]


def test_a_lone_image_takes_the_mnist_shortcut_as_a_batch_does(x_test: np.ndarray) -> None:
    # normalise_decoded's path for one 28×28 image (a request alone in its pass) must give
    # the batch path's answer bit for bit, and refuse the images the batch path refuses.
    greys = _greys_near_mnist(x_test)
    done, fast = preprocess._fast_mnist(np.stack(greys))
    by_index = dict(zip(done.tolist(), fast, strict=True))
    for i, grey in enumerate(greys):
        one = preprocess._fast_mnist_one(grey)
        if i in by_index:
            assert one is not None, i
            np.testing.assert_array_equal(one, by_index[i])
        else:
            assert one is None, i
    assert 0 < len(by_index) < len(greys)  # both outcomes were tried


def test_a_digit_on_black_is_its_own_ink_map(x_test: np.ndarray) -> None:
    # The ink map of a 28×28 grey on a black ground skips the paper steps: what they give,
    # bit for bit, and a copy (a reader of the map cannot change the decoded pixels).
    greys = _greys_near_mnist(x_test)
    shortcut = 0
    for grey in greys:
        full = preprocess.remove_rulings(
            preprocess._flatten(preprocess._polarise(preprocess.find_page(grey)))
        )
        ink = preprocess._ink_from(grey, None)
        np.testing.assert_array_equal(ink, full)
        assert ink.dtype == full.dtype and not np.shares_memory(ink, grey)
        shortcut += preprocess._mnist_ground(grey)
    assert 0 < shortcut < len(greys)
