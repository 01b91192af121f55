"""Realistic client-image variants of MNIST digits, for tests and robustness evaluation.

Every builder takes one (28, 28) uint8 MNIST digit (white on black) and returns encoded
image bytes as a client might send them. Pillow and numpy only: no TensorFlow here.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from training import marked, photos

__all__ = [
    "VARIANTS",
    "alpha_canvas_png",
    "big_photo_jpeg",
    "encode",
    "off_centre",
    "paper_jpeg",
    "png_bytes",
    "rotated",
    "thick",
    "thin",
    "thumbnail16",
    "tight_crop",
    "uneven_paper_jpeg",
]


def _digit(arr: np.ndarray) -> Image.Image:
    arr = np.asarray(arr)
    if arr.shape != (28, 28) or arr.dtype != np.uint8:
        raise ValueError(f"expected a (28, 28) uint8 MNIST digit, got {arr.shape} {arr.dtype}")
    return Image.fromarray(arr)


def encode(img: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    """Encode a Pillow image to bytes in ``fmt``."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def _paper(img: Image.Image, rng: np.random.Generator, ink_level: int = 40) -> Image.Image:
    """White-on-black grey digit -> dark ink on off-white paper (L mode)."""
    paper = int(rng.integers(215, 245))
    return ImageOps.colorize(img, black=(paper,) * 3, white=(ink_level,) * 3).convert("L")


def png_bytes(arr: np.ndarray) -> bytes:
    """The digit as it is: a 28×28 greyscale PNG."""
    return encode(_digit(arr), "PNG")


def paper_jpeg(arr: np.ndarray, seed: int = 0) -> bytes:
    """Dark ink on light, slightly tinted paper, 112×112 RGB, gaussian noise, JPEG quality 50."""
    rng = np.random.default_rng(seed)
    img = _paper(_digit(arr).resize((112, 112), Image.Resampling.BICUBIC), rng)
    noisy = np.asarray(img, dtype=np.float32) + rng.normal(0, 8, (112, 112)).astype(np.float32)
    grey = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    tint = (int(rng.integers(225, 256)), int(rng.integers(225, 256)), int(rng.integers(210, 246)))
    rgb = ImageOps.colorize(grey, black=(20, 20, 40), white=tint)
    return encode(rgb, "JPEG", quality=50)


def uneven_paper_jpeg(arr: np.ndarray, seed: int = 0) -> bytes:
    """Paper style under uneven light: a strong diagonal shading (250 -> 110), noise, JPEG 70."""
    rng = np.random.default_rng(seed)
    ink = np.asarray(_digit(arr).resize((140, 140), Image.Resampling.BICUBIC), np.float32)
    yy, xx = np.mgrid[0:140, 0:140].astype(np.float32)
    light = 250 - 140 * (0.6 * xx + 0.4 * yy) / 139  # darker towards the bottom right
    grey = light * (1 - 0.75 * ink / 255) + rng.normal(0, 6, light.shape).astype(np.float32)
    return encode(Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8)), "JPEG", quality=70)


def alpha_canvas_png(arr: np.ndarray) -> bytes:
    """An HTML-canvas export: 280×280 RGBA, RGB all black, the digit only in the alpha."""
    alpha = _digit(arr).resize((280, 280), Image.Resampling.BICUBIC)
    rgba = Image.new("RGBA", alpha.size, (0, 0, 0, 0))
    rgba.putalpha(alpha)
    return encode(rgba, "PNG")


def thick(arr: np.ndarray) -> bytes:
    """Bold strokes: 112×112 PNG, strokes dilated by about 3 px at that scale."""
    big = _digit(arr).resize((112, 112), Image.Resampling.BICUBIC)
    return encode(big.filter(ImageFilter.MaxFilter(7)), "PNG")


def thin(arr: np.ndarray) -> bytes:
    """Thin strokes: 112×112 PNG, strokes eroded by about 2 px at that scale."""
    big = _digit(arr).resize((112, 112), Image.Resampling.BICUBIC)
    return encode(big.filter(ImageFilter.MinFilter(5)), "PNG")


def rotated(arr: np.ndarray, deg: float = 15.0) -> bytes:
    """The digit rotated by ``deg`` degrees (counter-clockwise) about its centre, 28×28 PNG."""
    img = _digit(arr).rotate(deg, resample=Image.Resampling.BICUBIC, fillcolor=0)
    return encode(img, "PNG")


def off_centre(arr: np.ndarray, canvas: tuple[int, int] = (400, 300), seed: int = 0) -> bytes:
    """A small (56 px) dark digit at a random spot near an edge of a white canvas, PNG."""
    rng = np.random.default_rng(seed)
    digit = _paper(_digit(arr).resize((56, 56), Image.Resampling.BICUBIC), rng, ink_level=20)
    width, height = canvas
    page = Image.new("L", canvas, int(np.asarray(digit)[0, 0]))
    # Keep away from the centre: one of the four quadrants' outer halves.
    x = int(rng.integers(0, max(1, width // 4 - 28)))
    y = int(rng.integers(0, max(1, height // 4 - 28)))
    if rng.random() < 0.5:
        x = width - 56 - x
    if rng.random() < 0.5:
        y = height - 56 - y
    page.paste(digit, (x, y))
    return encode(page, "PNG")


def thumbnail16(arr: np.ndarray) -> bytes:
    """The digit shrunk to a 16×16 PNG thumbnail."""
    return encode(_digit(arr).resize((16, 16), Image.Resampling.LANCZOS), "PNG")


def tight_crop(arr: np.ndarray, seed: int = 0) -> bytes:
    """Dark ink on paper, 6-10 times MNIST's scale, cropped as a phone's crop tool hugs the
    writing: each edge at the strokes' half-strength edge or up to a quarter of an MNIST
    pixel beyond it, so strokes run into the frame. Noise, JPEG quality 85."""
    rng = np.random.default_rng(seed)
    scale = int(rng.integers(6, 11))
    big = _digit(arr).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)
    ys, xs = np.nonzero(np.asarray(big) >= 128)
    left, top, right, bottom = (int(m) for m in rng.integers(0, scale // 4 + 1, 4))
    box = (xs.min() - left, ys.min() - top, xs.max() + 1 + right, ys.max() + 1 + bottom)
    page = np.asarray(_paper(big.crop(box), rng, ink_level=35), dtype=np.float32)
    noisy = page + rng.normal(0, 5, page.shape).astype(np.float32)
    return encode(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)), "JPEG", quality=85)


def big_photo_jpeg(arr: np.ndarray, size: tuple[int, int] = (4000, 3000), seed: int = 0) -> bytes:
    """A phone-photo-like JPEG: dark digit on paper filling ~60 % of the height, uneven light."""
    rng = np.random.default_rng(seed)
    width, height = size
    side = int(0.6 * height)
    digit = _digit(arr).resize((side, side), Image.Resampling.BICUBIC)
    ink = Image.new("L", size, 0)
    ink.paste(digit, ((width - side) // 2 + int(rng.integers(-50, 51)), (height - side) // 2))
    # Light falls off from left to right (235 -> 185) and the ink is a dark grey, not black.
    light = np.linspace(235, 185, width, dtype=np.float32)[None, :]
    grey = light - np.asarray(ink, dtype=np.float32) * np.float32(0.6)
    # Sensor noise at half resolution, enlarged: cheap, and real noise is not per-pixel either.
    half = (max(1, width // 2), max(1, height // 2))
    noise = rng.normal(0, 6, (half[1], half[0])).astype(np.float32)
    grey += np.asarray(Image.fromarray(noise).resize(size, Image.Resampling.BILINEAR))
    photo = Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8)).convert("RGB")
    return encode(photo, "JPEG", quality=85)


# name -> builder(digit, seed): the set the evaluation entry point reports accuracy on.
# big_photo_jpeg is left out: at ~0.5 s per image to build it suits spot checks, not sweeps.
VARIANTS: dict[str, Callable[[np.ndarray, int], bytes]] = {
    "clean": lambda a, seed: png_bytes(a),
    "paper_jpeg": paper_jpeg,
    "uneven_paper_jpeg": uneven_paper_jpeg,
    "alpha_canvas": lambda a, seed: alpha_canvas_png(a),
    "thick": lambda a, seed: thick(a),
    "thin": lambda a, seed: thin(a),
    # The yardstick: ±15°, the sign alternating from one digit to the next.
    "rotated": lambda a, seed: rotated(a, 15.0 if seed % 2 else -15.0),
    "off_centre": lambda a, seed: off_centre(a, seed=seed),
    "thumbnail16": lambda a, seed: thumbnail16(a),
    "tight_crop": tight_crop,
    # Phone photos of a digit written on paper (training.photos).
    "desk_photo": photos.desk_photo,
    "ruled_paper": photos.ruled_paper,
    "squared_paper": photos.squared_paper,
    "shadow": photos.shadow,
    # A mark around the digit (training.marked).
    "form_box": marked.form_box,
    "underlined": marked.underlined,
    "circled": marked.circled,
}
