"""Image decoding and MNIST-style normalisation: the one copy used by training, model and service.

Client bytes go through :func:`decode_image` (signature check, size limits, cheap reduction,
EXIF orientation, alpha, polarity, background and noise removal) to an *ink map*: a 2-D float32
array in [0, 1] with ink = 1. :func:`normalise` then does what made MNIST: crop to the ink, fit
into a 20×20 box, put the centre of mass at the centre of 28×28. Bad input only ever raises
:class:`~pyfunc.errors.ImageError` or one of its subclasses.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps
from scipy import ndimage

from pyfunc import budget
from pyfunc.encoding import b64decode
from pyfunc.errors import ImageError, ImageTooLarge, NoDigit, UnsupportedFormat
from pyfunc.marks import drop_marks
from pyfunc.paper import (
    drop_frame_marks,
    explain_blank,
    find_page,
    pad_cut_ink,
    remove_rulings,
    shade,
)
from pyfunc.pooling import pool_any

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_LIMITS",
    "Decoded",
    "DecodedImage",
    "Limits",
    "decode_image",
    "decode_images",
    "decoded_image",
    "ink_map",
    "normalise",
    "normalise_decoded",
    "pre_process",
    "sniff_format",
    "stack",
    "to_ink",
]


@dataclass(frozen=True)
class Limits:
    """Size limits checked from the image header, before any pixel is decoded."""

    max_side: int = 10_000
    max_pixels: int = 40_000_000
    # Formats without a reduced decode, which cost up to ~12 (PNG, GIF, BMP) and ~20 (WebP)
    # bytes a pixel at peak: see pyfunc.budget.
    max_lossless_pixels: int = 16_000_000
    max_webp_pixels: int = 12_000_000
    # A JPEG decoder walks the whole image once per scan; encoders write about 10.
    max_jpeg_scans: int = 32


DEFAULT_LIMITS = Limits()

ALLOWED_FORMATS: frozenset[str] = frozenset({"PNG", "JPEG", "GIF", "BMP", "WEBP"})

# One item of a batch: encoded bytes, base64 text (or data: URL), or a decoded array.
ImageInput = bytes | bytearray | memoryview | str | np.ndarray

SIZE = 28  # model input side
BOX = 20  # MNIST fits each digit into a 20×20 box ...
CENTRE = 14.0  # ... and puts its centre of mass here (measured on MNIST: 13.5–14.5, mean 14.0)

# Big images are reduced to about this long side before any numpy work: a digit needs ~20 px.
_WORK_SIDE = 512
# Below this peak contrast (0–1 units) over the background an image is blank/uniform/noise.
_MIN_CONTRAST = 0.15
# Stroke "core": pixels at this fraction of the peak; components are found on it.
_CORE_FRACTION = 0.2
# Components smaller than this fraction of the largest are specks (dust, noise), not strokes.
_SPECK_FRACTION = 0.1
# Digit extent (for the 20-px box) is measured on pixels above this fraction of the peak.
# MNIST boxed the *binary* digit, so a mid level is faithful (MNIST measures 20 here for
# 99.8 %), and faint blur or JPEG ringing around the strokes does not shrink the digit.
_EXTENT_FRACTION = 0.3
# Digits already this size are not resampled (resampling by a few per cent only blurs).
_NATIVE_MIN = 17
# Noise floor: this many robust standard deviations of the background residual.
_NOISE_SIGMAS = 3.0
_MAD_TO_SIGMA = 1.4826
# Tile rank used for the background surface: ink must cover 80 % of a tile to bias it.
_BACKGROUND_RANK = 0.2
# Faint strokes are lifted until this share of the ink is at this level (see _full_strength).
_SATURATED_SHARE = 0.1
_SATURATED_LEVEL = 0.9
_INK_LEVEL = 0.1  # fraction of the peak above which a pixel counts as ink for that share
# Border quartiles further apart than this share of the contrast: the border is split
# between lit and shaded paper and its median cannot tell paper from ink.
_SPLIT_BORDER = 0.25
_TRANSPARENT = 0.02  # alpha below this everywhere: nothing visible
_ALPHA_VARIES = 0.05  # alpha range below this: constant alpha, the colour carries the picture
_UNIFORM_COLOUR = 0.1  # alpha-weighted colour spread below this: the ink is in the alpha
_CHUNK = 4096  # images per vectorised step in the MNIST batch path
_LABEL_SIDE = 128  # connected components are found on a mask at most this big


# --------------------------------------------------------------------------- format sniffing

_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "PNG"),
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"II+\x00", "TIFF"),
    (0, b"MM\x00+", "TIFF"),
    (0, b"%!PS", "EPS"),
    (0, b"\xc5\xd0\xd3\xc6", "EPS"),
    (0, b"8BPS", "PSD"),
    (0, b"\x00\x00\x01\x00", "ICO"),
    (0, b"\x00\x00\x02\x00", "CUR"),
    (0, b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG2000"),
    (0, b"\xff\x4f\xff\x51", "JPEG2000"),
    (0, b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEGXL"),
    (0, b"\xff\x0a", "JPEGXL"),
    (0, b"qoif", "QOI"),
    (0, b"icns", "ICNS"),
    (0, b"DDS ", "DDS"),
    (0, b"/* XPM */", "XPM"),
    (0, b"#define", "XBM"),
    (0, b"SIMPLE  =", "FITS"),
    (0, b"\x01\xda", "SGI"),
    (0, b"\x59\xa6\x6a\x95", "SUN"),
    (0, b"BLP1", "BLP"),
    (0, b"BLP2", "BLP"),
    (0, b"\x89HDF\r\n\x1a\n", "HDF5"),
    (0, b"\xd7\xcd\xc6\x9a", "WMF"),
    (0, b"\xb1\x68\xde\x3a", "DCX"),
    (0, b"PK\x03\x04", "ZIP"),
    (0, b"\x1f\x8b", "GZIP"),
)
# BITMAPINFOHEADER sizes Pillow understands: "BM" alone is too weak a signature (text starts so).
_BMP_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})
_ISOBMFF_BRANDS = {b"avif": "AVIF", b"avis": "AVIF", b"heic": "HEIC", b"heix": "HEIC"}
_TEXT_PROBE = 1024


def sniff_format(data: bytes) -> str | None:
    """Format name from the magic bytes (signature), or None.

    Names the allowed formats (see :data:`ALLOWED_FORMATS`) and, so they can be refused as
    unsupported, common others: TIFF, PDF, SVG, HTML, XML, TEXT, ICO, PSD, AVIF …
    """
    head = bytes(data[:_TEXT_PROBE])
    for offset, magic, name in _SIGNATURES:
        if head.startswith(magic, offset):
            return name
    if head.startswith(b"BM") and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
        return "BMP"
    if head.startswith(b"RIFF") and len(head) >= 12:
        return "WEBP" if head[8:12] == b"WEBP" else "RIFF"
    if head[4:8] == b"ftyp":
        return _ISOBMFF_BRANDS.get(head[8:12], "ISOBMFF")
    if b"%PDF-" in head:  # readers accept junk before the header, so must we
        return "PDF"
    return _sniff_text(head)


def _sniff_text(head: bytes) -> str | None:
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    try:
        # A multi-byte character cut by the probe is still text.
        text = head.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:
            return None
        text = head[: exc.start].decode("utf-8")
    if not text or any(not (ch.isprintable() or ch in "\t\n\r\f\v") for ch in text):
        return None
    lowered = text.lstrip().lower()
    if lowered.startswith("<"):
        if "<svg" in lowered:
            return "SVG"
        if lowered.startswith(("<!doctype html", "<html", "<head", "<body")):
            return "HTML"
        if lowered.startswith("<?xml"):
            return "XML"
        return "HTML" if "<html" in lowered else "XML"
    if len(text) >= 3 and text[0] == "P" and text[1] in "1234567" and text[2].isspace():
        return "PPM"
    return "TEXT"


def _pillow_format(data: bytes) -> str | None:
    """The format some Pillow plugin recognises the data as (header only), or None."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.format or "UNKNOWN"
    except Exception:  # any failure means "not an image Pillow knows"
        return None


# --------------------------------------------------------------------------- decoding


def decode_image(data: bytes, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """Encoded bytes -> 2-D float32 array in [0, 1] where 1 = ink (white on black, like MNIST).

    Raises :class:`ImageError` (400), :class:`UnsupportedFormat` (415) or
    :class:`ImageTooLarge` (413) for anything that is not an acceptable image.
    """
    grey, alpha = _decode(data, limits)
    return _ink_from(grey, alpha)


def _decode(data: bytes, limits: Limits) -> tuple[np.ndarray, np.ndarray | None]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ImageError(f"expected image bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ImageError("empty input: no image bytes were sent")
    fmt = sniff_format(data)
    if fmt is None:
        fmt = _pillow_format(data)
        if fmt is None:
            raise ImageError(
                "not an image: the data does not start with a known image signature "
                "(PNG, JPEG, GIF, BMP or WebP expected)"
            )
    if fmt not in ALLOWED_FORMATS:
        raise UnsupportedFormat(
            f"{fmt} is not a supported format; send a PNG, JPEG, GIF, BMP or WebP image"
        )
    return _read(data, fmt, limits)


def _check_size(width: int, height: int, limits: Limits) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(f"image has no pixels ({width}×{height})")
    if max(width, height) > limits.max_side:
        raise ImageTooLarge(
            f"image is {width}×{height} pixels; each side may be at most {limits.max_side} pixels"
        )
    if width * height > limits.max_pixels:
        raise ImageTooLarge(
            f"image is {width}×{height} = {width * height:,} pixels; "
            f"at most {limits.max_pixels:,} pixels are accepted"
        )


def _read(data: bytes, fmt: str, limits: Limits) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode with Pillow restricted to ``fmt`` into a small grey image and optional alpha."""
    budget.check_encoded(data, fmt, limits)
    try:
        # Pillow's own bomb check warns before it errors; both mean "too large" here.
        # Limits.max_pixels is normally the stricter check, made right after. (The filter is
        # process-wide while open() runs; should threads race on it, only this filter leaks.)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=[fmt])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"{fmt} image is too large to decode safely") from exc
    except Exception as exc:  # Pillow reports broken headers with many exception types
        raise ImageError(f"could not read the {fmt} image: the file is corrupt") from exc
    with img:
        _check_size(img.width, img.height, limits)
        budget.check_opened(img, fmt, limits)
        try:
            if fmt == "JPEG":
                # The JPEG decoder scales by 1/2, 1/4 or 1/8 and converts to grey for free:
                # a 4000×3000 photo is decoded as 500×375 grey instead of 12 M RGB pixels.
                # It takes the part of the work-size reduction it can do exactly, so the
                # result has the size _grey_alpha would give (a 640×480 photo: 320×240,
                # decoded at half scale rather than decoded whole and then halved).
                part = _draft_factor(math.ceil(max(img.size) / _WORK_SIDE))
                target = (max(1, img.width // part), max(1, img.height // part))
                img.draft("L" if img.mode in ("RGB", "L") else img.mode, target)
            img.load()
            _apply_orientation(img)
            return _grey_alpha(img)
        except ImageError:
            raise
        except Exception as exc:  # truncated data, bad chunks, decoder errors
            raise ImageError(
                f"could not decode the {fmt} image: the file is truncated or corrupt"
            ) from exc


def _draft_factor(factor: int) -> int:
    """The largest JPEG decoder scale (1, 2, 4 or 8) that divides the reduction ``factor``:
    what is left of it is then a whole number, done by :func:`_grey_alpha`."""
    return next(part for part in (8, 4, 2, 1) if factor % part == 0)


def _apply_orientation(img: Image.Image) -> None:
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except Exception:  # a broken EXIF block must not sink an otherwise good image
        return


def _grey_alpha(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Any Pillow mode -> grey and alpha (or None) as float32 in [0, 1], reduced to work size."""
    factor = math.ceil(max(img.size) / _WORK_SIDE)
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        # 16/32-bit data: reduce in float so no precision is lost before scaling to [0, 1].
        f = img if mode == "F" else img.convert("F")
        if factor > 1:
            f = f.reduce(factor)
        arr = np.asarray(f, dtype=np.float32)
        if mode == "F":
            return _unit(arr), None
        top = float(arr.max())
        # I;16 is 16-bit by definition; 32-bit I is read as 8-bit or 16-bit by its range.
        scale = 65535.0 if mode.startswith("I;16") or top > 255 else 255.0
        scale = max(scale, top)
        return np.clip(arr / np.float32(scale), 0.0, 1.0).astype(np.float32), None

    has_alpha = mode in ("LA", "La", "RGBA", "RGBa", "PA") or "transparency" in img.info
    if mode in ("La", "RGBa"):  # premultiplied: Pillow converts these only to their plain twin
        img = img.convert(mode[:-1] + "A")
    target = "LA" if has_alpha else "L"
    try:
        conv = img if img.mode == target else img.convert(target)
    except ValueError:  # exotic modes: go through RGBA, which every mode converts to
        conv = img.convert("RGBA").convert(target)
    if factor > 1:
        # Premultiply so transparent pixels' (meaningless) colour does not bleed into edges.
        conv = conv.convert("La").reduce(factor) if has_alpha else conv.reduce(factor)
    arr = np.asarray(conv)
    if not has_alpha:
        return _u8(arr), None
    grey, alpha = _u8(arr[..., 0]), _u8(arr[..., 1])
    if factor > 1:
        grey = np.divide(grey, alpha, out=np.zeros_like(grey), where=alpha > 0)
        grey = np.clip(grey, 0.0, 1.0)
    return grey, alpha


def _u8(arr: np.ndarray) -> np.ndarray:
    # One definition for bytes and arrays so both paths give bit-identical floats.
    return arr.astype(np.float32) / np.float32(255)


# --------------------------------------------------------------------------- arrays -> ink


def _unit_batch(x: np.ndarray) -> np.ndarray:
    """Numeric batch (N, ...) -> float32 in [0, 1], each item scaled by its dtype / range."""
    if x.dtype == np.uint8:
        return _u8(x)
    if x.dtype == np.bool_:
        return x.astype(np.float32)
    if np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating):
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            raise ImageError("image array contains NaN or infinite values")
        axes = tuple(range(1, x.ndim))
        top = x.max(axis=axes, keepdims=True).astype(np.float64) if x.size else np.zeros(1)
        # Floats up to 1 are already [0, 1]; anything else is read as 8-bit, 16-bit or
        # (past that) relative to its own maximum.
        if np.issubdtype(x.dtype, np.floating):
            scale = np.where(top <= 1.0 + 1e-6, 1.0, np.where(top <= 255.0, 255.0, top))
        else:
            scale = np.where(top <= 255, 255.0, np.where(top <= 65535, 65535.0, top))
        out = x.astype(np.float32) / scale.astype(np.float32)
        return np.clip(out, 0.0, 1.0)
    raise ImageError(f"image array has unsupported dtype {x.dtype}")


def _unit(x: np.ndarray) -> np.ndarray:
    return _unit_batch(x[np.newaxis])[0]


def _array_grey_alpha(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        grey, alpha = _unit(image), None
    elif image.ndim == 3 and image.shape[2] in (2, 3, 4):
        chans = _unit(image)
        alpha = chans[..., -1] if image.shape[2] in (2, 4) else None
        if image.shape[2] >= 3:
            r, g, b = chans[..., 0], chans[..., 1], chans[..., 2]
            grey = (np.float32(0.299) * r + np.float32(0.587) * g + np.float32(0.114) * b).astype(
                np.float32
            )
        else:
            grey = chans[..., 0]
    else:
        raise ImageError(
            f"image array must be (H, W) or (H, W, 1|2|3|4), got shape {tuple(image.shape)}"
        )
    if 0 in grey.shape:
        raise ImageError(f"image array is empty: shape {tuple(image.shape)}")
    factor = math.ceil(max(grey.shape) / _WORK_SIDE)
    if factor > 1:
        if alpha is None:
            grey = _reduce(grey, factor)
        else:
            alpha_r = _reduce(alpha, factor)
            premult = _reduce(grey * alpha, factor)
            grey = np.divide(premult, alpha_r, out=np.zeros_like(premult), where=alpha_r > 0)
            grey, alpha = np.clip(grey, 0.0, 1.0), alpha_r
    return grey, alpha


def _reduce(arr: np.ndarray, factor: int) -> np.ndarray:
    """Area-average by an integer factor (Pillow's C code, far cheaper than numpy)."""
    img = Image.fromarray(np.ascontiguousarray(arr, dtype=np.float32))
    return np.asarray(img.reduce(factor), dtype=np.float32)


def to_ink(image: np.ndarray) -> np.ndarray:
    """Decoded array -> 2-D float32 ink map in [0, 1] (ink = 1), as :func:`decode_image` would.

    Accepts (H, W) or (H, W, 1|2|3|4); uint8 is 0–255, floats [0, 1], other integers 8/16-bit.
    RGB(A) is made grey, alpha composited, polarity detected; big arrays are area-reduced.
    """
    image = np.asarray(image)
    grey, alpha = _array_grey_alpha(image)
    return _ink_from(grey, alpha)


def _ink_from(grey: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    if alpha is None and _mnist_ground(grey):
        # Every step below leaves such a picture as it is (a copy: readers get their own).
        # The sheet and ruling steps and the shade opening skip pictures under 64 px; the
        # border (the ring) is all 0, so _polarise keeps the polarity (its median and
        # quartiles are 0, its 2x2 extremes >= 0) and _flatten's noise floor is 0; every
        # tile's rank-16 level is 0, so _background is the scalar 0.0 and _flatten only
        # clips grey, which decoding already put in [0, 1]. A 28x28 digit's single-digit
        # check then costs no ink steps (0.36 M instructions of ~4.8 M per request).
        return grey.copy()
    if alpha is not None:
        lo, hi = float(alpha.min()), float(alpha.max())
        if hi < _TRANSPARENT:
            return np.zeros_like(grey)
        if hi - lo >= _ALPHA_VARIES:
            weight = float(alpha.sum())
            colour = float((grey * alpha).sum()) / weight
            spread = math.sqrt(float((np.square(grey - colour) * alpha).sum()) / weight)
            if spread < _UNIFORM_COLOUR:
                # One colour under varying alpha (an HTML canvas export is black on black):
                # the shape is in the alpha alone. Which side is ink is decided as for grey:
                # a digit cut out of an opaque sheet is the transparent part.
                return _flatten(_polarise(alpha.astype(np.float32)))
            # Composite over the opposite of the ink colour so strokes stay visible.
            backdrop = np.float32(1.0 if colour < 0.5 else 0.0)
            grey = (alpha * grey + (np.float32(1) - alpha) * backdrop).astype(np.float32)
    framed = pad_cut_ink(grey)
    ink = remove_rulings(drop_marks(_flatten(_polarise(find_page(framed)))))
    if framed is grey or ink.shape != framed.shape:
        return ink
    # The margin only gave the steps above paper to read; the ink map keeps the picture's
    # own coordinates (segmentation reports boxes in them).
    pad = (framed.shape[0] - grey.shape[0]) // 2
    return ink[pad:-pad, pad:-pad]


def _mnist_ground(grey: np.ndarray) -> bool:
    """Whether ``grey`` is a 28x28 picture on a black ground: its border all 0 and, in each
    of the 3x3 tiles of 9x9 pixels _background ranks, more than its rank's share of 0s (the
    same test as :func:`_fast_mnist`'s first two)."""
    if grey.shape != (SIZE, SIZE) or _ring(grey).any():
        return False
    zeros = (grey[:27, :27] == 0).reshape(3, 9, 3, 9).sum(axis=(1, 3))
    return bool((zeros > int(_BACKGROUND_RANK * 81)).all())


def _ring(a: np.ndarray, width: int = 1) -> np.ndarray:
    """The pixels within ``width`` of the border."""
    h, w = a.shape
    width = max(1, min(width, h // 2 or 1, w // 2 or 1))
    if h <= 2 * width or w <= 2 * width:
        return a.ravel()
    return np.concatenate(
        [
            a[:width].ravel(),
            a[-width:].ravel(),
            a[width:-width, :width].ravel(),
            a[width:-width, -width:].ravel(),
        ]
    )


def _median(values: np.ndarray) -> float:
    # np.median's overhead dominates on the small arrays used here; the upper median will do.
    flat = np.ravel(values)
    k = flat.size // 2
    return float(np.partition(flat, k)[k])


def _box2(a: np.ndarray) -> np.ndarray:
    """Means of every 2×2 block (the array itself when it is one pixel thin)."""
    if a.shape[0] < 2 or a.shape[1] < 2:
        return a
    return (a[:-1, :-1] + a[1:, :-1] + a[:-1, 1:] + a[1:, 1:]) * np.float32(0.25)


def _polarise(grey: np.ndarray) -> np.ndarray:
    """Make ink bright: invert when the background (border median) is the lighter side."""
    ring = _ring(grey)
    background = _median(ring)
    # Extremes of 2×2 means, so single-pixel noise does not decide the polarity.
    smooth = _box2(grey)
    lo, hi = float(smooth.min()), float(smooth.max())
    invert = background - lo > hi - background
    ranked = np.partition(ring, (ring.size // 4, 3 * ring.size // 4))
    low, high = float(ranked[ring.size // 4]), float(ranked[3 * ring.size // 4])
    if high - low > _SPLIT_BORDER * (hi - lo):
        # Part of the border lit, part in shade: the median may be the shade, as far from the
        # lit paper as from the ink. The paper is the quartile nearer its extreme: lit paper
        # is near the brightest value, a black ground near the darkest.
        invert = hi - high < low - lo
    if invert:
        return (np.float32(1) - grey).astype(np.float32, copy=False)
    return grey


def _background(raw: np.ndarray) -> np.ndarray | float:
    """Smooth background level of a bright-ink map: a scalar, or a low-order surface."""
    h, w = raw.shape
    if min(h, w) < 16:
        return _median(_ring(raw))
    n = min(8, min(h, w) // 8)
    th, tw = h // n, w // n
    tiles = raw[: n * th, : n * tw].reshape(n, th, n, tw).transpose(0, 2, 1, 3).reshape(n * n, -1)
    k = int(_BACKGROUND_RANK * tiles.shape[1])
    levels = np.partition(tiles, k, axis=1)[:, k].astype(np.float64)
    if levels.max() - levels.min() < 1e-6:
        return float(levels[0])
    # Tile centres in the same [-1, 1] pixel coordinates the surface is evaluated in.
    cy = (np.arange(n) + 0.5) * th / h * 2 - 1
    cx = (np.arange(n) + 0.5) * tw / w * 2 - 1
    ty, tx = np.meshgrid(cy, cx, indexing="ij")
    design = _surface_terms(ty.ravel(), tx.ravel(), quadratic=n >= 4)
    # Only tiles *above* the model are rejected: ink raises a tile, it never lowers it.
    # Seed from the border tiles: a bold digit can cover most of the middle, so the median
    # of all tiles may be ink, but people leave paper around what they write.
    rim = np.zeros((n, n), dtype=bool)
    rim[[0, -1], :] = rim[:, [0, -1]] = True
    rim = rim.ravel()
    seed = levels[rim] - _median(levels[rim])
    keep = rim.copy()
    keep[rim] = seed <= _upper_fence(seed)
    if keep.sum() >= design.shape[1] + 2:
        coef = np.linalg.lstsq(design[keep], levels[keep], rcond=None)[0]
        above = levels - design @ coef
        keep = above <= _upper_fence(above[keep])
    else:
        above = levels - _median(levels)
        keep = above <= _upper_fence(above)
    kept = levels[keep]
    if kept.max() - kept.min() < 0.01:  # flat (within 2–3 grey levels) plus a few inky tiles
        return _median(kept)
    coef = np.zeros(design.shape[1])
    for _ in range(4):
        if keep.sum() < design.shape[1] + 2:
            return _median(levels)
        coef = np.linalg.lstsq(design[keep], levels[keep], rcond=None)[0]
        resid = levels - design @ coef
        new_keep = resid <= _upper_fence(resid[keep])
        if (new_keep == keep).all():
            break
        keep = new_keep
    y = (np.arange(h) + 0.5) / h * 2 - 1
    x = (np.arange(w) + 0.5) / w * 2 - 1
    # The same polynomial as _surface_terms, summed as a column (terms in y), a row (terms
    # in x) and, for the quadratic, the x·y product: two full-size float32 operations, not
    # eleven (the terms themselves are one row or column, in float64).
    if design.shape[1] == 6:
        c0, c1, c2, c3, c4, c5 = coef
        column, row = c0 + c2 * y + c5 * y * y, c1 * x + c3 * x * x
        surface = np.add.outer(column.astype(np.float32), row.astype(np.float32))
        surface += np.multiply.outer((c4 * y).astype(np.float32), x.astype(np.float32))
        return surface
    c0, c1, c2 = coef
    return np.add.outer((c0 + c2 * y).astype(np.float32), (c1 * x).astype(np.float32))


def _upper_fence(resid: np.ndarray) -> float:
    return max(0.02, 3 * _MAD_TO_SIGMA * _median(np.abs(resid)))


def _surface_terms(y: np.ndarray, x: np.ndarray, *, quadratic: bool) -> np.ndarray:
    cols = [np.ones_like(x), x, y]
    if quadratic:
        cols += [x * x, x * y, y * y]
    return np.stack(cols, axis=1)


def _flatten(raw: np.ndarray) -> np.ndarray:
    """Remove uneven background, then the noise floor, keeping soft stroke edges."""
    fit = _background(raw)
    background = shade(raw, fit)
    flat = isinstance(background, float) and background == 0
    resid = raw if flat else (raw - background).astype(np.float32)
    # The noise floor is taken where noise is even: before the headroom division below.
    h, w = resid.shape
    ring = _ring(resid, max(1, min(h, w) // 32)).astype(np.float64)
    centre = _median(ring)
    sigma = _MAD_TO_SIGMA * _median(np.abs(ring - centre))
    floor = centre + _NOISE_SIGMAS * sigma
    if floor != 0:
        resid = resid - np.float32(floor)
    resid = np.clip(resid, 0.0, 1.0)
    if not flat:
        # Light multiplies: ink under dim light is fainter by the same factor as the paper is
        # darker. Dividing by the headroom above the background evens that out.
        headroom = np.maximum(np.float32(1) - background, np.float32(0.25))
        resid = np.clip(resid / headroom, 0.0, 1.0)
    if background is not fit:
        resid = drop_frame_marks(resid, _CORE_FRACTION)
    return resid.astype(np.float32)


# --------------------------------------------------------------------------- normalisation


_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _label(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8-connected components of ``mask``: (flat indices of set pixels, label of each, sizes)."""
    labelled, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    flat = labelled.ravel()
    idx = np.flatnonzero(flat)
    labels = flat[idx] - 1
    return idx, labels, np.bincount(labels, minlength=count)


def _as_ink_map(ink: np.ndarray) -> np.ndarray:
    a = np.asarray(ink)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim != 2 or 0 in a.shape:
        raise ImageError(f"ink map must be a non-empty 2-D array, got shape {tuple(a.shape)}")
    return _unit(a)


def normalise(ink: np.ndarray) -> np.ndarray:
    """2-D ink map -> (28, 28) float32 in [0, 1], MNIST-style (stroke maximum 1.0).

    Raises :class:`NoDigit` when there is no ink: blank, uniform or only faint noise.
    """
    return _normalise(_as_ink_map(ink))


def _normalise(a: np.ndarray) -> np.ndarray:
    # ``a``: a 2-D float32 ink map in [0, 1], as _ink_from makes (no re-check of the range).
    h, w = a.shape
    background = _median(_ring(a))
    if background > 0:
        a = np.clip(a - np.float32(background), 0.0, 1.0)
    peak = float(a.max())
    # Contrast is judged on 2×2 means: a stroke keeps at least half its level, a lone noisy
    # pixel does not.
    contrast = float(_box2(a).max())
    if contrast < _MIN_CONTRAST:
        raise NoDigit(
            "no digit found: the image is blank or uniform "
            f"(ink contrast {contrast:.2f}, at least {_MIN_CONTRAST} needed)"
        )

    core = a >= _level(_CORE_FRACTION, peak)
    # Components only decide what to keep: on big images label a max-pooled mask (far
    # cheaper), then take the exact box from the full-resolution core inside the kept blocks.
    f = math.ceil(max(h, w) / _LABEL_SIDE)
    pooled = pool_any(core, f)
    idx, labels, sizes = _label(pooled)
    largest = int(sizes.max())
    if largest < max(4, pooled.size // 4000):
        raise NoDigit("no digit found: only isolated specks, no stroke")
    keep = np.zeros(pooled.size, dtype=bool)
    keep[idx[(sizes >= _SPECK_FRACTION * largest)[labels]]] = True
    if f > 1:
        keep = np.repeat(np.repeat(keep.reshape(pooled.shape), f, axis=0), f, axis=1)
        keep = keep[:h, :w] & core
    rows = np.flatnonzero(keep.reshape(h, w).any(axis=1))
    cols = np.flatnonzero(keep.reshape(h, w).any(axis=0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    # The core misses the anti-aliased rim of the strokes: take a margin around it.
    margin = max(3, round(0.1 * max(y1 - y0, x1 - x0)))
    y0, x0 = max(0, y0 - margin), max(0, x0 - margin)
    y1, x1 = min(h, y1 + margin), min(w, x1 + margin)
    patch = a[y0:y1, x0:x1]

    extent = _ink_extent(patch)
    if not _NATIVE_MIN <= extent <= BOX:
        scale = BOX / extent
        size = (max(1, round(patch.shape[1] * scale)), max(1, round(patch.shape[0] * scale)))
        # BOX (area) when shrinking, like MNIST's anti-aliasing; Lanczos when enlarging.
        method = Image.Resampling.BOX if scale < 1 else Image.Resampling.LANCZOS
        resized = Image.fromarray(np.ascontiguousarray(patch, dtype=np.float32)).resize(
            size, method
        )
        patch = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
    out = _place(patch)
    if float(out.max()) <= 0:
        raise NoDigit("no digit found: the ink fell outside the 28×28 frame")
    return _full_strength(out[np.newaxis])[0]


def _ink_extent(patch: np.ndarray) -> int:
    # The patch's own peak: the global one may have been a dropped speck.
    inked = patch > _level(_EXTENT_FRACTION, float(patch.max()))
    rows = np.flatnonzero(inked.any(axis=1))
    cols = np.flatnonzero(inked.any(axis=0))
    return int(max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1))


def _full_strength(batch: np.ndarray) -> np.ndarray:
    """Max-scale each (28, 28) image, then lift its strokes if they are faint throughout.

    MNIST's strokes are saturated along their middle: in 99.97 % of its training digits the
    brightest tenth of the ink is above 0.9 of the peak. Thin pen lines, pencil and
    photographed ink often reach the peak only at a crossing; those are scaled so that
    their brightest tenth reaches 0.9 too. MNIST-like images are left as they are.
    """
    n = batch.shape[0]
    if n == 0:
        return batch.astype(np.float32)
    flat = batch.reshape(n, -1)
    flat = flat / flat.max(axis=1, keepdims=True)
    ink = flat > np.float32(_INK_LEVEL)
    k = np.maximum(1, np.floor(_SATURATED_SHARE * ink.sum(axis=1)).astype(np.intp))
    # The k-th brightest ink value: sort descending, pixels that are not ink sort last.
    ranked = -np.sort(-np.where(ink, flat, np.float32(-1)), axis=1)
    kth = ranked[np.arange(n), k - 1][:, None]
    gain = np.where(kth < _SATURATED_LEVEL, _SATURATED_LEVEL / kth, 1.0).astype(np.float32)
    return np.clip(flat * gain, 0.0, 1.0).reshape(batch.shape).astype(np.float32)


def _round(value: float) -> int:
    # Half-up, not half-even: the shift must not depend on where the patch was cut out.
    return math.floor(value + 0.5)


def _level(fraction: float, peak: float | np.ndarray) -> np.ndarray:
    # One definition of "fraction of the peak" for the per-item and the batch path.
    return (np.float64(fraction) * np.asarray(peak, dtype=np.float64)).astype(np.float32)


def _place(patch: np.ndarray) -> np.ndarray:
    """Paste ``patch`` into 28×28 with its centre of mass on (14, 14), as MNIST did."""
    ph, pw = patch.shape
    mass = float(patch.sum())
    if mass <= 0:
        raise NoDigit("no digit found: the ink vanished when scaled to 28×28")
    com_y = float(patch.sum(axis=1) @ np.arange(ph)) / mass
    com_x = float(patch.sum(axis=0) @ np.arange(pw)) / mass
    oy, ox = _round(CENTRE - com_y), _round(CENTRE - com_x)
    out = np.zeros((SIZE, SIZE), dtype=np.float32)
    sy0, sx0 = max(0, -oy), max(0, -ox)
    sy1, sx1 = min(ph, SIZE - oy), min(pw, SIZE - ox)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 + oy : sy1 + oy, sx0 + ox : sx1 + ox] = patch[sy0:sy1, sx0:sx1]
    return out


# --------------------------------------------------------------------------- batches


def _check_array_size(shape: tuple[int, ...], limits: Limits) -> None:
    if len(shape) >= 2:
        _check_size(int(shape[1]), int(shape[0]), limits)


@dataclass(frozen=True)
class Decoded:
    """One image decoded to grey (and alpha, if it has one) in [0, 1], not yet normalised;
    ``ink``: its ink map, when a :class:`DecodedImage` brought one along."""

    grey: np.ndarray
    alpha: np.ndarray | None
    ink: np.ndarray | None = None


class DecodedImage(np.ndarray):
    """A decoded image handed from one reader to the next within a request (the single-
    digit check, then the model): the array pyfunc's array path reads back unchanged (grey,
    or grey and alpha as two channels, in [0, 1], at most working size), carrying the
    :class:`Decoded` it came from and, once :func:`ink_map` has made it, its ink map.

    Anything that takes an array takes it, whichever copy of pyfunc reads it. This module
    skips the work already done: :func:`decode_images` hands the carried :class:`Decoded`
    on instead of reading the array again (its range checks: about 0.14 M instructions on
    a 28×28 digit, paid by the check and by the model), and the normalisation takes the
    carried ink map instead of making it again (a photo's sheet, shadow and ruling steps).
    A slice, view or copy of it carries nothing (numpy does not copy the attributes), so it
    is read as any array. Make one with :func:`decoded_image`."""

    decoded: Decoded | None = None
    ink: np.ndarray | None = None


def decoded_image(decoded: Decoded) -> DecodedImage:
    """``decoded`` as the one array a request hands on (see :class:`DecodedImage`)."""
    pixels = decoded.grey if decoded.alpha is None else np.dstack((decoded.grey, decoded.alpha))
    image = pixels.view(DecodedImage)
    image.decoded = decoded
    return image


def ink_map(image: np.ndarray) -> np.ndarray:
    """:func:`to_ink` of ``image``; for a :class:`DecodedImage`, made from its decoded
    pixels once and kept on it for the model's normalisation (the same array bit for bit:
    the array path reads those pixels back unchanged). Readers must not change it."""
    if not isinstance(image, DecodedImage) or image.decoded is None:
        return to_ink(image)
    if image.ink is None:
        image.ink = _ink_from(image.decoded.grey, image.decoded.alpha)
    return image.ink


def _decode_one(item: Any, limits: Limits) -> Decoded:
    if isinstance(item, DecodedImage) and item.decoded is not None:
        # Decoded (and checked) already in this request: handed on, with its ink map if the
        # single-digit check made one.
        _check_array_size(item.shape, limits)
        if item.ink is None:
            return item.decoded
        return Decoded(item.decoded.grey, item.decoded.alpha, item.ink)
    if isinstance(item, bytes | bytearray | memoryview):
        return Decoded(*_decode(item, limits))
    if isinstance(item, str):
        return Decoded(*_decode(b64decode(item), limits))
    if isinstance(item, np.ndarray | list | tuple):
        arr = np.asarray(item) if not isinstance(item, np.ndarray) else item
        if arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
        ):
            raise ImageError(f"image array must be numeric, got dtype {arr.dtype}")
        _check_array_size(arr.shape, limits)
        return Decoded(*_array_grey_alpha(arr))
    raise ImageError(
        f"each image must be bytes, a base64 string or a numeric array, got {type(item).__name__}"
    )


def decode_images(images: Sequence[ImageInput], limits: Limits = DEFAULT_LIMITS) -> list[Decoded]:
    """The cheap, per-image first half of :func:`pre_process`: each item decoded (bytes,
    base64 or array) and checked against ``limits``. Raises :class:`ImageError` for the first
    bad item, naming its index when there are several."""
    return [_with_index(i, len(images), _decode_one, item, limits) for i, item in enumerate(images)]


def normalise_decoded(decoded: Sequence[Decoded]) -> list[np.ndarray | ImageError]:
    """The second half: each decoded image -> (28, 28) ink in MNIST form, or the
    :class:`ImageError` that image gets (no digit …), so one bad image spoils no other.

    Items already in MNIST form (28×28, no alpha) are recognised in one vectorised step for
    all of them: on a lone 28×28 PNG that check is most of the pre-processing cost.
    """
    results: list[np.ndarray | ImageError | None] = [None] * len(decoded)
    small = [i for i, d in enumerate(decoded) if d.alpha is None and d.grey.shape == (SIZE, SIZE)]
    if len(small) == 1:  # a lone request's image (c=1, or a pass of one)
        results[small[0]] = _fast_mnist_one(decoded[small[0]].grey)
    elif small:
        done, fast = _fast_mnist(np.stack([decoded[i].grey for i in small]))
        for k, image in zip(done, fast, strict=True):
            results[small[k]] = image
    for i, d in enumerate(decoded):
        if results[i] is None:
            try:
                ink = d.ink  # the single-digit check's, handed on (DecodedImage)
                if ink is None:
                    ink = _ink_from(d.grey, d.alpha)
                results[i] = _normalise(ink)
            except ImageError as exc:
                results[i] = explain_blank(exc, d.grey)
    return results  # type: ignore[return-value]  # every slot is filled above


def stack(results: Sequence[np.ndarray | ImageError]) -> np.ndarray:
    """Results of :func:`normalise_decoded` -> the CNN's (N, 28, 28, 1) batch; raises the
    first image's error (naming its index when there are several)."""
    out = np.zeros((len(results), SIZE, SIZE, 1), dtype=np.float32)
    for i, result in enumerate(results):
        if isinstance(result, ImageError):
            raise _indexed(i, len(results), result)
        out[i, :, :, 0] = result
    return out


def _fast_mnist(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised :func:`pre_process` for clean 28×28 ink maps already in MNIST form.

    Returns the indices of the items that qualified and their (n, 28, 28) results. An item
    qualifies when the per-item path provably gives the same: empty border, zero background
    in every tile, ink without gaps (so no speck to drop), native size, no centre-of-mass shift.
    """
    n = x.shape[0]
    edges = [x[:, 0, :], x[:, -1, :], x[:, 1:-1, 0], x[:, 1:-1, -1]]
    border = np.concatenate(edges, axis=1).max(axis=1)
    peak = x.max(axis=(1, 2))
    # _background's tile rank is 0 everywhere exactly when each 9×9 tile has > k zeros.
    zeros = (x[:, :27, :27] == 0).reshape(n, 3, 9, 3, 9).sum(axis=(2, 4))
    k = int(_BACKGROUND_RANK * 81)
    box2 = (x[:, :-1, :-1] + x[:, 1:, :-1] + x[:, :-1, 1:] + x[:, 1:, 1:]) * np.float32(0.25)
    contrast = box2.max(axis=(1, 2)).astype(np.float64)  # as normalise's NoDigit check
    ok = (border == 0) & (zeros > k).all(axis=(1, 2)) & (contrast >= _MIN_CONTRAST)
    idx = np.flatnonzero(ok)
    x, peak_c = x[idx], peak[idx, None, None]

    core = x >= _level(_CORE_FRACTION, peak_c)
    # (np.asarray: numpy's stubs type any() with an axis as a scalar or an array.)
    core_rows, core_cols = np.asarray(core.any(axis=2)), np.asarray(core.any(axis=1))
    (y0, x0), (y1, x1) = _extents(core_rows, core_cols)
    # A speck the per-item path would cut off sits beyond an empty row or column: leave
    # any image whose ink has such a gap to that path.
    ok = (core_rows.sum(axis=1) == y1 - y0) & (core_cols.sum(axis=1) == x1 - x0)
    margin = np.maximum(3, np.round(0.1 * np.maximum(y1 - y0, x1 - x0))).astype(int)
    y0, x0 = np.maximum(0, y0 - margin), np.maximum(0, x0 - margin)
    y1, x1 = np.minimum(SIZE, y1 + margin), np.minimum(SIZE, x1 + margin)
    r = np.arange(SIZE)
    in_rows = (r >= y0[:, None]) & (r < y1[:, None])
    in_cols = (r >= x0[:, None]) & (r < x1[:, None])
    patch = x * (in_rows[:, :, None] & in_cols[:, None, :])

    low = patch > _level(_EXTENT_FRACTION, peak_c)
    (ly0, lx0), (ly1, lx1) = _extents(low.any(axis=2), low.any(axis=1))
    extent = np.maximum(ly1 - ly0, lx1 - lx0)
    ok &= (extent >= _NATIVE_MIN) & (extent <= BOX)

    mass = np.maximum(patch.sum(axis=(1, 2), dtype=np.float64), 1e-12)
    com_y = (patch.sum(axis=2, dtype=np.float64) @ r) / mass
    com_x = (patch.sum(axis=1, dtype=np.float64) @ r) / mass
    ok &= (np.floor(CENTRE - com_y + 0.5) == 0) & (np.floor(CENTRE - com_x + 0.5) == 0)

    return idx[ok], _full_strength(patch[ok])


def _fast_mnist_one(x: np.ndarray) -> np.ndarray | None:
    """:func:`_fast_mnist` of one (28, 28) image: its result, or None when it does not
    qualify. The same tests on the same values, and every float operation on the same
    shapes (so the same bits); what differs is the bookkeeping (Python ints, not arrays of
    one) and an exit at the first failed test. On a lone image the per-call cost of numpy,
    not the arithmetic, is the whole cost: about 1.1 M instructions a call before."""
    if not _mnist_ground(x):
        return None
    box2 = (x[:-1, :-1] + x[1:, :-1] + x[:-1, 1:] + x[1:, 1:]) * np.float32(0.25)
    if not float(box2.max()) >= _MIN_CONTRAST:
        return None
    peak = x.max()
    core = x >= _level(_CORE_FRACTION, peak)
    rows, cols = np.flatnonzero(core.any(axis=1)), np.flatnonzero(core.any(axis=0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    if len(rows) != y1 - y0 or len(cols) != x1 - x0:  # a gap: a speck to drop, maybe
        return None
    # np.round and round() both round half to even.
    margin = max(3, round(0.1 * max(y1 - y0, x1 - x0)))
    inside = np.zeros((SIZE, SIZE), dtype=bool)
    inside[max(0, y0 - margin) : y1 + margin, max(0, x0 - margin) : x1 + margin] = True
    patch = x * inside
    low = patch > _level(_EXTENT_FRACTION, peak)
    rows, cols = np.flatnonzero(low.any(axis=1)), np.flatnonzero(low.any(axis=0))
    extent = max(int(rows[-1]) + 1 - int(rows[0]), int(cols[-1]) + 1 - int(cols[0]))
    if not _NATIVE_MIN <= extent <= BOX:
        return None
    batch = patch[np.newaxis]  # the float sums as _fast_mnist makes them, on (1, 28, 28)
    r = np.arange(SIZE)
    mass = np.maximum(batch.sum(axis=(1, 2), dtype=np.float64), 1e-12)
    com_y = (batch.sum(axis=2, dtype=np.float64) @ r) / mass
    com_x = (batch.sum(axis=1, dtype=np.float64) @ r) / mass
    if not (np.floor(CENTRE - com_y + 0.5) == 0 and np.floor(CENTRE - com_x + 0.5) == 0):
        return None
    return _full_strength(batch)[0]


def _extents(
    rows: np.ndarray, cols: np.ndarray
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """First index, and one past the last, of True in each row of ``rows`` and of ``cols``
    (both (n, 28); every row holds a True: each item has ink). Rows and columns go through
    one argmax pair: on a lone image the calls, not the arithmetic, are the cost."""
    both = np.concatenate((rows, cols))
    first = np.argmax(both, axis=1)
    last = both.shape[1] - np.argmax(both[:, ::-1], axis=1)
    n = rows.shape[0]
    return (first[:n], first[n:]), (last[:n], last[n:])


def pre_process(
    images: Iterable[ImageInput] | ImageInput, *, limits: Limits = DEFAULT_LIMITS
) -> np.ndarray:
    """A batch of images -> (N, 28, 28, 1) float32 in [0, 1], the CNN's input.

    ``images`` is a sequence (list, tuple, pandas Series, object array) of encoded bytes,
    base64 strings (data: URLs too) or decoded arrays; or a numeric array (N, H, W),
    (N, H, W, C) or a single (H, W). A lone bytes/str is one image. Any bad item raises
    :class:`ImageError` (or a subclass) naming its index.
    """
    if isinstance(images, bytes | bytearray | memoryview | str):
        images = [images]
    if isinstance(images, np.ndarray) and images.dtype != object:
        return _numeric_batch(images, limits)
    if hasattr(images, "columns"):
        raise ImageError("pass a sequence of images (one column), not a table")
    if not isinstance(images, Iterable) or isinstance(images, dict):
        raise ImageError(f"expected a sequence of images, got {type(images).__name__}")
    return stack(normalise_decoded(decode_images(list(images), limits)))


def _numeric_batch(arr: np.ndarray, limits: Limits) -> np.ndarray:
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ImageError(f"image array must be numeric, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[3] not in (1, 2, 3, 4)):
        raise ImageError(
            "image array must be (H, W), (N, H, W) or (N, H, W, 1|2|3|4), "
            f"got shape {tuple(arr.shape)}"
        )
    n = arr.shape[0]
    out = np.zeros((n, SIZE, SIZE, 1), dtype=np.float32)
    if n == 0:
        return out
    _check_array_size(arr.shape[1:3], limits)
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    done = np.zeros(n, dtype=bool)
    if arr.ndim == 3 and arr.shape[1:] == (SIZE, SIZE):
        # Training feeds all of MNIST through here: do the already-normal ones in one go.
        for start in range(0, n, _CHUNK):  # chunks that fit the CPU cache: ~3× faster
            fast_idx, fast = _fast_mnist(_unit_batch(arr[start : start + _CHUNK]))
            out[start + fast_idx, :, :, 0] = fast
            done[start + fast_idx] = True
    rest = np.flatnonzero(~done)
    if rest.size:
        decoded = [_with_index(int(i), n, _decode_one, arr[i], limits) for i in rest]
        for i, result in zip(rest, normalise_decoded(decoded), strict=True):
            if isinstance(result, ImageError):
                raise _indexed(int(i), n, result)
            out[i, :, :, 0] = result
    return out


def _with_index(i: int, n: int, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except ImageError as exc:
        if n == 1:
            raise
        raise _indexed(i, n, exc) from exc


def _indexed(i: int, n: int, exc: ImageError) -> ImageError:
    """``exc`` itself for a lone image, else the same kind of error naming image ``i``."""
    return exc if n == 1 else type(exc)(f"image {i}: {exc}")
