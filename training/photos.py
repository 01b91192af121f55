"""Phone photos of a digit written on paper: a sheet on a desk, ruled and squared paper, a
shadow across the digit.

Each builder takes one (28, 28) uint8 MNIST digit (white on black) and a seed, and returns
the JPEG bytes a phone would send; the same seed gives the same bytes. The scene is drawn in
RGB floats (0-255): paper, printed rulings and desk in their colours, the digit as pen ink
over them, then what a camera adds (tilt, uneven light, blur, sensor noise, JPEG). Parameter
ranges follow what photos of handwriting look like: rulings lighter than pen ink, a sheet
brighter than the desk it lies on, light falling off by up to a third across the frame.
Pillow, numpy and scipy only: no TensorFlow here.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

__all__ = ["desk_photo", "preprocessed", "ruled_paper", "shadow", "squared_paper"]

Colour = tuple[float, float, float]

# Pens: dark-blue ballpoint, black felt tip, graphite pencil (greys are pencil's only colour).
_PENS: tuple[tuple[Colour, Colour], ...] = (
    ((25, 35, 110), (60, 70, 160)),
    ((15, 15, 20), (60, 60, 70)),
    ((70, 70, 75), (105, 105, 110)),
)
# Desks: (dark, light) colour ranges; the sheet is always the brighter thing in the frame.
_DESKS: tuple[tuple[Colour, Colour], ...] = (
    ((70, 40, 20), (130, 85, 50)),  # dark wood
    ((140, 100, 60), (185, 145, 100)),  # light wood
    ((25, 25, 28), (70, 70, 75)),  # black / dark grey laminate
    ((40, 75, 55), (70, 110, 85)),  # green cutting mat
    ((95, 95, 100), (150, 150, 155)),  # grey office desk
)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _colour(rng: np.random.Generator, span: tuple[Colour, Colour]) -> np.ndarray:
    t = rng.random()  # one mix for all three channels, so a range is a line of colours
    lo, hi = np.asarray(span[0], np.float32), np.asarray(span[1], np.float32)
    return lo + np.float32(t) * (hi - lo)


def _paper_colour(rng: np.random.Generator) -> np.ndarray:
    base = _u(rng, 222, 248)
    return np.array(
        [base, base - _u(rng, 0, 6), base - _u(rng, 0, 18)], np.float32
    )  # white to slightly yellow


def _ink_coverage(digit: np.ndarray, box: float, angle: float = 0.0) -> np.ndarray:
    """The digit's ink coverage in [0, 1] with its 20 px MNIST box drawn ``box`` px tall."""
    arr = np.asarray(digit)
    if arr.shape != (28, 28) or arr.dtype != np.uint8:
        raise ValueError(f"expected a (28, 28) uint8 MNIST digit, got {arr.shape} {arr.dtype}")
    side = max(8, round(box * 28 / 20))
    img = Image.fromarray(arr).resize((side, side), Image.Resampling.BICUBIC)
    if angle:
        img = img.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    return np.asarray(img, np.float32) / 255


def _draw_ink(
    canvas: np.ndarray, coverage: np.ndarray, centre: tuple[float, float], pen: np.ndarray
) -> None:
    """Lay pen ink over ``canvas`` (H, W, 3) in place, ``coverage`` centred at (x, y)."""
    h, w = coverage.shape
    x0, y0 = round(centre[0] - w / 2), round(centre[1] - h / 2)
    ys, xs = (
        slice(max(0, y0), min(canvas.shape[0], y0 + h)),
        slice(max(0, x0), min(canvas.shape[1], x0 + w)),
    )
    cov = coverage[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0, None]
    # Ink is a filter over the paper and whatever is printed on it: it darkens, never lightens.
    region = canvas[ys, xs]
    canvas[ys, xs] = np.minimum(region, region * (1 - cov) + pen * cov)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Zero-mean, unit-std noise varying over about ``cell`` pixels."""
    small = rng.normal(0, 1, (max(2, math.ceil(h / cell)) + 1, max(2, math.ceil(w / cell)) + 1))
    big = np.asarray(
        Image.fromarray(small.astype(np.float32)).resize((w, h), Image.Resampling.BICUBIC)
    )
    return (big - big.mean()) / (big.std() + 1e-6)


def _light(rng: np.random.Generator, h: int, w: int, strength: float) -> np.ndarray:
    """A light field in (1 - strength, 1]: falling off along a random direction."""
    phi = _u(rng, 0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (xx / w - 0.5) * math.cos(phi) + (yy / h - 0.5) * math.sin(phi)
    ramp = (ramp - ramp.min()) / max(1e-6, float(ramp.max() - ramp.min()))
    return 1 - np.float32(strength) * ramp


def _camera(
    rng: np.random.Generator,
    scene: np.ndarray,
    light: float,
    noise: float = 3.0,
    quality: tuple[int, int] = (70, 92),
) -> bytes:
    """Uneven light, a little lens blur, sensor noise and JPEG compression."""
    h, w = scene.shape[:2]
    scene = scene * _light(rng, h, w, _u(rng, 0, light))[..., None]
    img = Image.fromarray(np.clip(scene, 0, 255).astype(np.uint8))
    img = img.filter(ImageFilter.GaussianBlur(_u(rng, 0.3, 0.9)))
    arr = np.asarray(img, np.float32) + rng.normal(0, noise, (h, w, 1)).astype(np.float32)
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=int(rng.integers(quality[0], quality[1] + 1)))
    return buf.getvalue()


def _tilted(rng: np.random.Generator, scene: np.ndarray, size: tuple[int, int], deg: float):
    """Crop ``size`` (w, h) from the middle of ``scene`` turned by up to ±``deg`` degrees: a
    photo never holds the paper exactly square."""
    img = Image.fromarray(np.clip(scene, 0, 255).astype(np.uint8))
    img = img.rotate(_u(rng, -deg, deg), resample=Image.Resampling.BICUBIC)
    w, h = size
    left, top = (img.width - w) // 2, (img.height - h) // 2
    return np.asarray(img.crop((left, top, left + w, top + h)), np.float32)


# --------------------------------------------------------------------------- ruled paper


def _ruled_sheet(
    rng: np.random.Generator, h: int, w: int, spacing: float, grid: bool
) -> np.ndarray:
    paper = _paper_colour(rng)
    sheet: np.ndarray = np.broadcast_to(paper, (h, w, 3)).astype(np.float32)
    sheet = sheet + _smooth_noise(rng, h, w, 30)[..., None] * np.float32(1.5)
    if grid and rng.random() < 0.5:
        line = np.array([_u(rng, 150, 195)] * 3, np.float32)  # grey squares
    else:
        line = np.array([_u(rng, 110, 165), _u(rng, 160, 200), _u(rng, 215, 245)], np.float32)
    width = _u(rng, 0.8, 1.8)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    def lines(pos: np.ndarray, offset: float) -> np.ndarray:
        # Anti-aliased lines: coverage falls off linearly from the line's centre.
        d = np.abs((pos - offset + spacing / 2) % spacing - spacing / 2)
        return np.clip(width / 2 + 0.5 - d, 0, 1)

    cover = lines(yy, _u(rng, 0, spacing))
    if grid:
        cover = np.maximum(cover, lines(xx, _u(rng, 0, spacing)))
    sheet = sheet * (1 - cover[..., None]) + line * cover[..., None]
    return sheet


def _margin(rng: np.random.Generator, sheet: np.ndarray, x: float) -> None:
    """A red margin line at column ``x``, in place."""
    colour = np.array([_u(rng, 215, 240), _u(rng, 80, 130), _u(rng, 100, 140)], np.float32)
    width = _u(rng, 1.0, 2.2)
    xx = np.arange(sheet.shape[1], dtype=np.float32)
    cover = np.clip(width / 2 + 0.5 - np.abs(xx - x), 0, 1)[None, :, None]
    sheet[:] = sheet * (1 - cover) + colour * cover


def _lined_photo(digit: np.ndarray, seed: int, grid: bool) -> bytes:
    rng = np.random.default_rng(seed)
    w, h = int(rng.integers(200, 321)), int(rng.integers(160, 241))
    spacing = _u(rng, 10, 18) if grid else _u(rng, 14, 24)
    # The digit spans one to three rulings' worth of height: written over the lines.
    box = spacing * (_u(rng, 2.0, 4.5) if grid else _u(rng, 1.2, 2.8))
    pad = 24  # drawn larger and cropped after the tilt, so no corner is empty
    sheet = _ruled_sheet(rng, h + 2 * pad, w + 2 * pad, spacing, grid)
    centre = (pad + w / 2 + _u(rng, -0.25, 0.25) * w, pad + h / 2 + _u(rng, -0.2, 0.2) * h)
    coverage = _ink_coverage(digit, box)
    if not grid and rng.random() < 0.4:
        # A margin line: beside the digit, or through it (written over the margin).
        half = coverage.shape[1] / 2
        through = rng.random() < 0.5
        offset = _u(rng, -0.5, 0.5) * half if through else -(half + _u(rng, 4, 30))
        _margin(rng, sheet, centre[0] + offset)
    _draw_ink(sheet, coverage * np.float32(_u(rng, 0.85, 1.0)), centre, _colour(rng, _pick(rng)))
    return _camera(rng, _tilted(rng, sheet, (w, h), 3.0), light=0.25)


def _pick(rng: np.random.Generator) -> tuple[Colour, Colour]:
    return _PENS[int(rng.integers(len(_PENS)))]


def ruled_paper(digit: np.ndarray, seed: int = 0) -> bytes:
    """The digit written across blue rulings (sometimes a red margin line), photographed."""
    return _lined_photo(digit, seed, grid=False)


def squared_paper(digit: np.ndarray, seed: int = 0) -> bytes:
    """The digit written over a grey or blue squared grid, photographed."""
    return _lined_photo(digit, seed, grid=True)


# --------------------------------------------------------------------------- shadow


def shadow(digit: np.ndarray, seed: int = 0) -> bytes:
    """The digit on plain paper with a soft shadow edge (a hand, a phone) across it."""
    rng = np.random.default_rng(seed)
    w, h = int(rng.integers(180, 281)), int(rng.integers(160, 241))
    box = _u(rng, 0.35, 0.6) * min(w, h)
    page: np.ndarray = np.broadcast_to(_paper_colour(rng), (h, w, 3)).astype(np.float32)
    page = page + _smooth_noise(rng, h, w, 30)[..., None] * np.float32(1.5)
    centre = (w / 2 + _u(rng, -0.15, 0.15) * w, h / 2 + _u(rng, -0.15, 0.15) * h)
    _draw_ink(page, _ink_coverage(digit, box), centre, _colour(rng, _pick(rng)))
    # The edge passes within a third of the digit's size from its centre, at any angle; the
    # far side is in shade, light falling to 45-75 %, the edge soft over 1-12 px.
    phi = _u(rng, 0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = (
        (xx - centre[0]) * math.cos(phi)
        + (yy - centre[1]) * math.sin(phi)
        - _u(rng, -0.3, 0.3) * box
    )
    soft = _u(rng, 1, 12)
    shade = 0.5 * (1 + _erf(d / soft))
    light = 1 - np.float32(_u(rng, 0.25, 0.55)) * shade
    # Shade is bluish (lit by the sky, not the lamp): the blue channel loses a little less.
    scene = page * light[..., None] * np.array([1.0, 1.0, 1.03], np.float32)
    return _camera(rng, scene, light=0.15)


def _erf(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return erf(x).astype(np.float32)


# --------------------------------------------------------------------------- desk photo


def _desk(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    kind = int(rng.integers(len(_DESKS)))
    base = _colour(rng, _DESKS[kind])
    if kind <= 1:
        # Wood: grain running along a random direction, bent by slow noise.
        phi = _u(rng, 0, math.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        along = -xx * math.sin(phi) + yy * math.cos(phi)
        warp = _smooth_noise(rng, h, w, 80) * np.float32(_u(rng, 4, 12))
        grain = np.sin((along + warp) * np.float32(2 * math.pi / _u(rng, 6, 18)))
        texture = grain * np.float32(_u(rng, 0.06, 0.14)) + _smooth_noise(rng, h, w, 40) * 0.05
    else:
        # Laminate, mat or painted desk: blotches and a fine speckle.
        texture = _smooth_noise(rng, h, w, 25) * np.float32(_u(rng, 0.02, 0.06))
        texture = texture + rng.normal(0, _u(rng, 0.01, 0.04), (h, w)).astype(np.float32)
    return base * (1 + texture[..., None])


def _perspective(rng: np.random.Generator, img: Image.Image, amount: float) -> Image.Image:
    """A mild keystone: the output corners read from points up to ``amount`` of the side
    inside the frame, so nothing outside the scene is ever shown."""
    w, h = img.size
    corners = [(0, 0), (w, 0), (w, h), (0, h)]
    inward = [(1, 1), (-1, 1), (-1, -1), (1, -1)]
    src = [
        (x + sx * _u(rng, 0, amount) * w, y + sy * _u(rng, 0, amount) * h)
        for (x, y), (sx, sy) in zip(corners, inward, strict=True)
    ]
    rows, rhs = [], []
    for (x, y), (u, v) in zip(corners, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    coeffs = np.linalg.solve(np.asarray(rows, float), np.asarray(rhs, float))
    return img.transform(
        (w, h), Image.Transform.PERSPECTIVE, tuple(coeffs), Image.Resampling.BICUBIC
    )


def desk_photo(digit: np.ndarray, seed: int = 0) -> bytes:
    """A sheet (letter paper, a notebook page or a sticky note) on a darker or textured desk,
    the sheet turned and often partly out of frame, its edges in view; the digit small or
    large on it; a slight keystone, uneven light, JPEG."""
    rng = np.random.default_rng(seed)
    w, h = (640, 480) if rng.random() < 0.7 else (480, 640)
    short = min(w, h)
    note = rng.random() < 0.25  # a square sticky note, else a sheet of paper (√2 : 1)
    sheet_w = _u(rng, 0.35, 0.7) * short if note else _u(rng, 0.5, 1.0) * short
    sheet_h = sheet_w if note else sheet_w * math.sqrt(2)
    if rng.random() < 0.5:
        sheet_w, sheet_h = sheet_h, sheet_w
    angle = _u(rng, -30, 30)
    box = _u(rng, 0.07, 0.3) * short  # the digit's 20 px box: small or large in the frame
    box = min(box, 0.6 * min(sheet_w, sheet_h))

    scene = _desk(rng, h, w)
    paper = (
        np.array([_u(rng, 235, 252), _u(rng, 215, 240), _u(rng, 90, 150)], np.float32)
        if note and rng.random() < 0.6
        else _paper_colour(rng)
    )
    sw, sh = round(sheet_w), round(sheet_h)
    sheet: np.ndarray = np.broadcast_to(paper, (sh, sw, 3)).astype(np.float32)
    sheet = sheet + _smooth_noise(rng, sh, sw, 40)[..., None] * np.float32(2.0)
    # The digit somewhere on the sheet, at least a few px from its edges.
    # People turn the phone to the writing, not to the sheet: the digit ends up within
    # ±10° of upright in the photo however the sheet lies.
    coverage = _ink_coverage(digit, box, angle=_u(rng, -10, 10) - angle)
    # People leave a margin: at least 6 % of the sheet's shorter side to its edge.
    margin = max(12.0, 0.06 * min(sw, sh))
    free_x = max(0.0, (sw - coverage.shape[1]) / 2 - margin)
    free_y = max(0.0, (sh - coverage.shape[0]) / 2 - margin)
    at = (sw / 2 + _u(rng, -0.7, 0.7) * free_x, sh / 2 + _u(rng, -0.7, 0.7) * free_y)
    _draw_ink(sheet, coverage * np.float32(_u(rng, 0.85, 1.0)), at, _colour(rng, _pick(rng)))

    # Turn the sheet and put the digit within the middle of the frame; the sheet goes where
    # that puts it, often partly out of the frame.
    img = Image.fromarray(np.clip(sheet, 0, 255).astype(np.uint8))
    mask = Image.new("L", img.size, 255)
    img = img.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    mask = mask.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    rad = math.radians(angle)
    dx, dy = at[0] - sw / 2, at[1] - sh / 2
    # PIL turns counter-clockwise on screen (y down): the offset turns with it.
    rx, ry = dx * math.cos(rad) + dy * math.sin(rad), -dx * math.sin(rad) + dy * math.cos(rad)
    target = (w / 2 + _u(rng, -0.25, 0.25) * w, h / 2 + _u(rng, -0.2, 0.2) * h)
    left = round(target[0] - rx - img.width / 2)
    top = round(target[1] - ry - img.height / 2)

    # A soft contact shadow on the desk, offset towards the light's far side.
    full_mask = Image.new("L", (w, h), 0)
    full_mask.paste(mask, (left, top))
    m = np.asarray(full_mask, np.float32) / 255
    shade = ndimage.shift(m, (_u(rng, 1, 5), _u(rng, -4, 4)), order=1)
    shade = ndimage.gaussian_filter(shade, _u(rng, 2, 5))
    scene = scene * (1 - 0.35 * shade[..., None])
    layer = Image.new("RGB", (w, h))
    layer.paste(img, (left, top))
    scene = scene * (1 - m[..., None]) + np.asarray(layer, np.float32) * m[..., None]

    photo = _perspective(rng, Image.fromarray(np.clip(scene, 0, 255).astype(np.uint8)), 0.06)
    return _camera(rng, np.asarray(photo, np.float32), light=0.3, noise=3.5, quality=(60, 90))


# --------------------------------------------------------------------------- for training

# Which rendering a training digit gets: ruled and squared paper most, since what pre-processing
# leaves of a ruling (a fragment beside the digit, a gap where a stroke ran along a line) is
# what the network has to learn to ignore; a sheet on a desk and a shadow come out nearly clean.
_TRAINING_MIX = (
    ("ruled_paper", 0.35),
    ("squared_paper", 0.35),
    ("desk_photo", 0.15),
    ("shadow", 0.15),
)
# Seeds for training renderings start here, far from the 0..N-1 the measured sets use.
_TRAINING_SEED = 1_000_003


def _render_chunk(args: tuple[np.ndarray, int]) -> np.ndarray:
    from pyfunc.errors import ImageError
    from pyfunc.preprocess import pre_process

    digits, seed = args
    rng = np.random.default_rng(seed)
    names = [n for n, _ in _TRAINING_MIX]
    weights = np.array([w for _, w in _TRAINING_MIX])
    builders = {"ruled_paper": ruled_paper, "squared_paper": squared_paper}
    builders |= {"desk_photo": desk_photo, "shadow": shadow}
    out = np.empty((len(digits), 28, 28, 1), dtype=np.float32)
    for i, digit in enumerate(digits):
        name = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        photo = builders[name](digit, int(rng.integers(_TRAINING_SEED, 2**31)))
        try:
            out[i] = pre_process([photo])[0]
        except ImageError:  # refused (no digit found): the digit keeps its clean form
            out[i] = pre_process(digit)[0]
    return out


def preprocessed(
    x: np.ndarray, seed: int, workers: int | None = None, chunk: int = 500
) -> np.ndarray:
    """(N, 28, 28) uint8 training digits -> (N, 28, 28, 1) float32: each digit photographed on
    ruled or squared paper, on a desk or under a shadow (drawn from ``seed``), then sent through
    the product's :func:`pyfunc.preprocess.pre_process`, so the network sees what the service
    makes of such photos. ~20 ms of CPU per digit; worker processes as ``training.strokes``."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    if len(x) == 0:
        return np.zeros((0, 28, 28, 1), dtype=np.float32)
    jobs = [(x[i : i + chunk], seed + i) for i in range(0, len(x), chunk)]
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(jobs) == 1:
        return np.concatenate([_render_chunk(job) for job in jobs])
    # spawn, not fork: the training process has TensorFlow loaded, which is not fork-safe.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return np.concatenate(list(pool.map(_render_chunk, jobs)))
