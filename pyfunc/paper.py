"""Finding the writing, not the paper: the sheet in a desk photo, printed rulings, shadows,
and the paper a tight crop cut away.

Helpers of :mod:`pyfunc.preprocess` (the one pre-processing path), kept apart because they
are about the paper a digit is written on rather than the digit. All work on 2-D float32
arrays at the pre-processing work size; images smaller than :data:`MIN_SIDE` (MNIST, small
thumbnails) are left as they are: at that size there is no sheet edge or ruling to find.
Only :func:`pad_cut_ink` looks at smaller ones (a tight crop of a 1 is narrow).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from pyfunc.errors import ImageError, NoDigit

MIN_SIDE = 64


# --- sheet on a desk
_SHEET_SIDE = 128  # the sheet is looked for on a copy at most this big
_SHEET_CONTRAST = 0.15  # sheet brighter than its surround by at least this (0-1 grey)
_SHEET_AREA = (0.05, 0.97)  # share of the frame the sheet covers
_SHEET_SOLIDITY = 0.9  # area / convex hull area: a sheet is convex
# Bright before holes are filled, on this share of the sheet at least: paper with writing
# on it, not a ring (a white 0 on a dark ground; 0.83 and above on 991 validation desk
# photos, below 0.8 for 184 of 210 MNIST zeros drawn white on black).
_SHEET_PAPER = 0.8
_SHEET_WIDE = 0.12  # inscribed radius / longest extent: a sheet, not a stroke
_SIDE_TURN = math.radians(12)  # hull edges within this of a side's direction continue it
_SAME_SIDE = math.radians(30)  # sides this close in direction are one edge, bent (no corner)
_SIDE_LENGTH = 0.2  # a side is at least this share of the sheet's longer extent
# Share of the sheet's outline (off the frame) on straight sides: blur and the keystone round
# a sheet's corners off (74 % on a desk photo at 0.75 left whole, its desk then taken for shade).
_STRAIGHT_SHARE = 0.7
_STEP_SHARE = 0.5  # the edge is a step: across 2 px the grey changes this share of the gap
_DARK_DESK = 0.4  # one side in view: a surround this dark (next to the sheet) is no shade
_TEXTURE = 2.0  # ... nor is one with this many times the sheet's fine detail
_EDGE_MARGIN = 0.015  # of the work image's shorter side: cut off the sheet's own edge
# A sheet wholly in view (clear of the frame) shows its four corners, and paper is at most
# ~1.7 times as long as wide (A4 1.41, letter 1.29, index card 1.67): a bold square-pen 1's
# bar (2-4 sides, 2.3-4.1 times as long as wide) or a bold 0 with its hole filled in (5-8
# sides) is not a sheet. Wholly in view, the sheets of 1,000 validation desk photos (189) and
# the blank sheets of the non-digit "fit" photos (12) all have 4 sides, at most 1.69 times
# as long as wide.
_SHEET_LONG = 2.5

# --- a picture cropped to the digit
# A photo cropped tight around the writing cuts its strokes at the frame. Every step after
# this one reads the frame as paper (the polarity, the noise floor, the sheet's surround),
# and a digit that fills the picture leaves them little paper: of 1,000 validation digits
# cropped at the ink's half-strength edge (``tight_crop`` in training/variants.py) 8.9 %
# were refused as blank and 15.4 % more came out visibly changed; with a margin of their
# own paper back, 0.6 % and 1.9 % (docs/photos.md).
_CUT_BAND = 0.03  # of the reduced copy's longer side: ink this near the frame is cut by it
_CUT_SIDES = 2  # ... on at least this many sides
_CUT_INK_SHARE = 0.04  # ink covers this share of the picture at least (a digit filling it)
_CUT_PAPER = 0.15  # the frame's median deviation from its median, a share of the contrast
_CUT_ONE_SIDED = 0.3  # the picture's other extreme lies within this share of it of the paper
_CUT_PAD = 0.08  # the margin added, a share of the longer side
_CUT_MIN_SIDE = 16  # a tight crop of a 1 is narrow: many are under MIN_SIDE wide
# The margin's grain, as pyfunc.preprocess's noise floor reads it: within this many noise
# deviations (a median absolute deviation times this factor) of the paper.
_GRAIN_SIGMAS = 3.0
_MAD_TO_SIGMA = 1.4826
# A digit is one piece of ink, or a few, whose strokes cross the frame; a desk or a shadow
# runs along it and is broad, or breaks up into grain at half the contrast. On 1,000
# validation digits each, of the pictures the tests above pass: strokes run along a side
# for at most 0.40 of the longer side in tight crops (286), shade for 0.50 and more (5
# shadows; a margin made them worse, 0.05 from their clean 28x28 -> 0.18 on average).
_CUT_FRAME = 0.35  # ink on at most this share of the frame
_CUT_RUN = 0.45  # ... and along a side for at most this share of the longer side,
_CUT_PEN = 0.07  # unless it is a pen's line (a 7's bar along the top of the web page's pad)
_CUT_PIECES = 3  # ink (8-connected) in at most this many pieces
_CUT_STROKE = 0.14  # the ink's widest inscribed radius, a share of the longer side


def _reduce(arr: np.ndarray, factor: int) -> np.ndarray:
    img = Image.fromarray(np.ascontiguousarray(arr, dtype=np.float32))
    return np.asarray(img.reduce(factor), dtype=np.float32)


def _otsu(values: np.ndarray, bins: int = 64) -> float:
    # np.histogram(values, bins, range=(0, 1)) as one bincount, at about half its cost: the
    # edges k/bins and the products v·bins (bins a power of two) are exact in float32, so
    # every value lands in the same bin (1.0 in the last, values outside [0, 1] in none).
    v = values.ravel()
    v = v[(v >= 0) & (v <= 1)]
    hist = np.bincount(np.minimum((v * np.float32(bins)).astype(np.intp), bins - 1), minlength=bins)
    p = hist.astype(np.float64) / max(1, hist.sum())
    centres = (np.arange(bins, dtype=np.float64) + 0.5) / bins
    w0 = np.cumsum(p)
    mu = np.cumsum(p * centres)
    total = mu[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total * w0 - mu) ** 2 / (w0 * (1 - w0))
    between[~np.isfinite(between)] = -1
    return (int(np.argmax(between)) + 1) / bins


def _hull(region: np.ndarray) -> ConvexHull | None:
    """The convex hull of ``region`` (x, y), from its outline pixels: the same hull as of all
    its pixels, from a fraction of the points."""
    edge = region & ~ndimage.binary_erosion(region)
    pts = np.argwhere(edge).astype(np.float64)[:, ::-1]  # x, y
    if len(pts) < 4:
        return None
    try:
        return ConvexHull(pts)
    except QhullError:
        return None


def _sides(region: np.ndarray, hull: ConvexHull) -> tuple[int, float]:
    """Straight sides of ``region``'s outline (``hull`` its convex hull) that are not the
    frame: how many, and which share of the off-frame outline they make up (1.0 for a
    polygon, ~0 for a curve)."""
    h, w = region.shape
    v = hull.points[hull.vertices]  # counter-clockwise
    seg = np.roll(v, -1, axis=0) - v
    length = np.hypot(seg[:, 0], seg[:, 1])
    angle = np.arctan2(seg[:, 1], seg[:, 0])
    mid = v + seg / 2
    on_frame = (np.abs(seg[:, 0]) < 1.5) & ((mid[:, 0] < 1.5) | (mid[:, 0] > w - 2.5)) | (
        np.abs(seg[:, 1]) < 1.5
    ) & ((mid[:, 1] < 1.5) | (mid[:, 1] > h - 2.5))
    # Group consecutive edges into runs of one direction, starting after a frame edge or a
    # turn so no run is split at the array's wrap-around.
    n = len(v)
    turns = [
        i
        for i in range(n)
        if on_frame[i] or on_frame[i - 1] or abs(_wrap(angle[i] - angle[i - 1])) > _SIDE_TURN
    ]
    start = turns[0] if turns else 0
    runs: list[tuple[float, float]] = []  # (length, direction of its first edge)
    run_len, run_dir = 0.0, 0.0
    for k in range(n):
        i = (start + k) % n
        if on_frame[i]:
            if run_len:
                runs.append((run_len, run_dir))
            run_len = 0.0
            continue
        if not run_len or abs(_wrap(angle[i] - run_dir)) > _SIDE_TURN:
            if run_len:
                runs.append((run_len, run_dir))
            run_len, run_dir = 0.0, float(angle[i])
        run_len += float(length[i])
    if run_len:
        runs.append((run_len, run_dir))
    outline = float(length[~on_frame].sum())
    if outline <= 0:
        return 0, 0.0
    extent = float(max(np.ptp(v[:, 0]), np.ptp(v[:, 1])))
    sides = [(r, d) for r, d in runs if r >= _SIDE_LENGTH * extent]
    # A shadow's edge bent by the digit on it, or by light falling off, turns by a little
    # more than a side's allowance and came out as two sides, i.e. a sheet's corner: a
    # corner (or a strip's other edge) turns by far more. Sides in one direction count once.
    directions: list[float] = []
    for _, d in sorted(sides, reverse=True):
        if all(abs(_wrap(d - k)) > _SAME_SIDE for k in directions):
            directions.append(d)
    return len(directions), sum(r for r, _ in sides) / outline


def _elongation(hull: ConvexHull) -> float:
    """Length over width of the smallest-area rectangle around ``hull`` (one of its sides
    lies along a hull edge), in pixels counted inclusively."""
    v = hull.points[hull.vertices]
    seg = np.roll(v, -1, axis=0) - v
    norm = np.hypot(seg[:, 0], seg[:, 1])
    keep = norm > 0
    along = seg[keep] / norm[keep, None]  # unit directions of the hull's edges
    across = np.stack([-along[:, 1], along[:, 0]], axis=1)
    a, b = along @ v.T, across @ v.T  # (edges, vertices): every vertex on each edge's axes
    length = np.ptp(a, axis=1) + 1
    width = np.ptp(b, axis=1) + 1
    i = int(np.argmin(length * width))
    return float(max(length[i], width[i]) / min(length[i], width[i]))


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


def find_page(grey: np.ndarray) -> np.ndarray:
    """``grey`` (paper bright) with a sheet lying on a darker surface made the whole picture.

    The sheet is the largest bright region (Otsu on a small copy, holes filled) when it is
    big, convex, wide, bounded by straight sides with a sharp step to a darker surround,
    with a corner in view (or one side next to a clearly
    darker or textured surface); wholly in view, it must be a quadrangle no more than
    :data:`_SHEET_LONG` times as long as wide (not a bold stroke's bar). The picture
    is then cropped to the sheet, a rim taken off its edge, and what is outside it (desk in
    the corners of the crop) filled with the nearest paper. Anything else is returned as is.
    """
    h, w = grey.shape
    if min(h, w) < MIN_SIDE:
        return grey
    f = max(1, math.ceil(max(h, w) / _SHEET_SIDE))
    raw = _reduce(grey, f) if f > 1 else grey
    # Blur away texture (wood grain, paper fibre) and thin ink: regions are what counts.
    small = ndimage.uniform_filter(raw, 3, mode="nearest")
    threshold = _otsu(small)
    bright = small > threshold
    # Paper filling the frame (the common photo) leaves no darker surround at the border.
    if not bright.any() or _frame_values(bright).all():
        return grey
    inside, outside = float(np.median(small[bright])), float(np.median(small[~bright]))
    if inside - outside < _SHEET_CONTRAST:
        return grey
    filled = ndimage.binary_fill_holes(bright)
    labels, count = ndimage.label(filled)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    region = labels == int(np.argmax(sizes)) + 1
    if float(bright[region].mean()) < _SHEET_PAPER:
        return grey
    area = float(region.mean())
    if not _SHEET_AREA[0] <= area <= _SHEET_AREA[1]:
        return grey
    # The frame border must show the surround somewhere: else the paper fills the picture.
    if region[[0, -1], :].all() and region[:, [0, -1]].all():
        return grey
    radius = float(ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1].max())
    ys, xs = np.nonzero(region)
    extent = max(np.ptp(ys), np.ptp(xs)) + 1
    if radius < _SHEET_WIDE * extent:
        return grey
    # A sheet's edge is a step; a gradient of light crosses the threshold smoothly.
    ring = region & ~ndimage.binary_erosion(region, iterations=2)
    ring &= ~_frame(region.shape, 3)
    out_ring = ndimage.binary_dilation(region, iterations=3) & ~region & ~_frame(region.shape, 3)
    if not ring.any() or not out_ring.any():
        return grey
    step = float(np.median(small[ring])) - float(np.median(small[out_ring]))
    if step < _STEP_SHARE * (inside - outside):
        return grey
    # Outline tests last: the hull and its sides cost more than all of the above.
    hull = _hull(region)
    if hull is None or region.sum() < _SHEET_SOLIDITY * hull.volume:
        return grey
    count_sides, straight = _sides(region, hull)
    if count_sides == 0 or straight < _STRAIGHT_SHARE:
        return grey
    # Clear of the frame, a sheet is a quadrangle of paper's proportions. A cut by the frame
    # hides corners and makes any part of a sheet look long: no test then. Clear means
    # beyond the 2 px band where _sides takes an edge for the frame's (a sticky note's side
    # 1 px inside the frame counted as frame, leaving it 3 sides).
    if not (region & _frame(region.shape, 2)).any() and (
        count_sides != 4 or _elongation(hull) > _SHEET_LONG
    ):
        return grey
    # Two sides at least (a corner, or both edges of a strip) make a sheet. One straight
    # edge alone is as likely a shadow's edge across the paper, unless what lies beyond it
    # is far darker than shade or textured (wood grain, a mat) where shaded paper is smooth.
    if count_sides == 1 and outside > _DARK_DESK * inside:
        core_in = ndimage.binary_erosion(region, iterations=3)
        core_out = ndimage.binary_erosion(~region, iterations=3)
        if not core_in.any() or not core_out.any():
            return grey
        detail = np.abs(raw - small)
        if np.median(detail[core_out]) < _TEXTURE * np.median(detail[core_in]) + 0.004:
            return grey
    return _crop_to(grey, raw, region, f)


def pad_cut_ink(grey: np.ndarray) -> np.ndarray:
    """``grey`` with a margin of its paper around it when it is a digit cropped to itself.

    That is a picture whose frame is otherwise even paper, whose ink (half the contrast from
    the paper and more) covers a good share of it and comes within :data:`_CUT_BAND` of the
    frame on :data:`_CUT_SIDES` sides or more, where it covers little of the frame, is in a
    few pieces and stroke-thin. A sheet on a desk, a shadow or a gradient of light makes the
    frame uneven or lies along it broadly; rulings cover too little of the picture. The
    margin is the picture mirrored at its edges and held within three deviations of the
    paper's grain: paper of the same noise, no mirrored ink. Anything else is returned as is.
    """
    h, w = grey.shape
    if min(h, w) < _CUT_MIN_SIDE:
        return grey
    frame = _frame_values(grey)
    paper = float(np.median(frame))
    f = max(1, math.ceil(max(h, w) / _SHEET_SIDE))
    small = _reduce(grey, f) if f > 1 else grey
    lo, hi = float(small.min()), float(small.max())
    contrast = max(paper - lo, hi - paper)
    # The paper is the lightest thing in the picture, or the darkest (ink light on dark): a
    # frame of mid grey between the two is a desk or a shade, not paper.
    if contrast < _SHEET_CONTRAST or min(paper - lo, hi - paper) > _CUT_ONE_SIDED * contrast:
        return grey
    deviation = float(np.median(np.abs(frame - paper)))
    if deviation > _CUT_PAPER * contrast:
        return grey
    ink = np.abs(small - np.float32(paper)) > np.float32(0.5 * contrast)
    if float(ink.mean()) < _CUT_INK_SHARE:
        return grey
    band = max(1, round(_CUT_BAND * max(ink.shape)))
    sides = int(ink[:band].any()) + int(ink[-band:].any())
    sides += int(ink[:, :band].any()) + int(ink[:, -band:].any())
    if sides < _CUT_SIDES or float(_frame_values(ink).mean()) > _CUT_FRAME:
        return grey
    if ndimage.label(ink, structure=np.ones((3, 3), dtype=bool))[1] > _CUT_PIECES:
        return grey
    radius = float(ndimage.distance_transform_edt(np.pad(ink, 1)).max()) / max(ink.shape)
    if radius > _CUT_STROKE:
        return grey
    run = max(_longest_run(side) for side in (ink[0], ink[-1], ink[:, 0], ink[:, -1]))
    if run > _CUT_RUN * max(ink.shape) and radius > _CUT_PEN:
        return grey
    pad = max(2, round(_CUT_PAD * max(h, w)))
    out = np.pad(grey, pad, mode="reflect")
    margin = np.ones(out.shape, dtype=bool)
    margin[pad:-pad, pad:-pad] = False
    # The paper's grain from neighbours along the frame (a stroke's soft edge at the frame
    # would widen a spread taken from the median).
    grain = float(np.median(np.abs(np.diff(frame)))) / math.sqrt(2)
    spread = np.float32(_GRAIN_SIGMAS * _MAD_TO_SIGMA * grain)
    out[margin] = np.float32(paper) + np.clip(out[margin] - np.float32(paper), -spread, spread)
    return out


def _longest_run(flags: np.ndarray) -> int:
    """The length of the longest run of True in a 1-D boolean array."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], flags.view(np.int8), [0]))))
    return int((edges[1::2] - edges[::2]).max()) if edges.size else 0


def _frame_values(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])


def _frame(shape: tuple[int, int], width: int) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[:width], m[-width:], m[:, :width], m[:, -width:] = True, True, True, True
    return m


def _crop_to(grey: np.ndarray, raw: np.ndarray, region: np.ndarray, f: int) -> np.ndarray:
    """``grey`` cropped to the sheet ``region`` (found on ``raw``, ``grey`` reduced by ``f``)
    less a rim, what lies outside the sheet filled with the nearest paper."""
    h, w = grey.shape
    # The rim: the sheet's own edge and its blur, plus the block size of the small mask.
    rim = max(1, math.ceil(_EDGE_MARGIN * min(h, w) / f)) + 1
    page = ndimage.binary_erosion(region, iterations=rim, border_value=0)
    if not page.any():
        return grey
    # Outside the sheet: the nearest paper pixel's value, so no edge is left to mistake for
    # ink. Found on the small copy: paper varies slowly, and it is 10-50x cheaper there.
    _, (iy, ix) = ndimage.distance_transform_edt(~page, return_indices=True)
    fill = _blocks(raw[iy, ix], f, h, w)
    inside = _blocks(page, f, h, w)
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    keep = inside[y0:y1, x0:x1]
    return np.where(keep, grey[y0:y1, x0:x1], fill[y0:y1, x0:x1]).astype(np.float32)


def _blocks(a: np.ndarray, f: int, h: int, w: int) -> np.ndarray:
    """The small array ``a`` blown up by ``f`` to (h, w) (reduce() rounds its size up)."""
    big = np.repeat(np.repeat(a, f, axis=0), f, axis=1)[:h, :w]
    if big.shape != (h, w):
        big = np.pad(big, ((0, h - big.shape[0]), (0, w - big.shape[1])), mode="edge")
    return big


# --- what a picture without a stroke shows
_DETAIL = 0.0085  # median fine detail (0-1 grey, on a copy <= 128 px) of a texture or pattern


def texture(grey: np.ndarray) -> bool:
    """Whether ``grey``, a picture in which no stroke stands out, is a texture or pattern
    (wood, fabric, a checkerboard, noise) rather than blank: fine detail all over it.

    Blank paper, a flat colour, a gradient or a shadow across blank paper are smooth once
    reduced (sensor and JPEG noise average out); a texture keeps its detail. Only for
    choosing the message that the picture holds no digit.
    """
    h, w = grey.shape
    f = max(1, math.ceil(max(h, w) / _SHEET_SIDE))
    small = _reduce(grey, f) if f > 1 else np.asarray(grey, np.float32)
    if min(small.shape) < 3:
        return False
    detail = np.abs(small - ndimage.uniform_filter(small, 3, mode="nearest"))
    return float(np.median(detail)) >= _DETAIL


_BLANK = "no digit found: the image is blank or uniform"


def explain_blank(exc: ImageError, grey: np.ndarray) -> ImageError:
    """The error for a picture without a digit (``grey`` as decoded): the pre-processing's
    "blank or uniform" turned into a texture's when the picture shows one, so that wood,
    fabric or an empty page of squared paper are not called blank. Other errors as they are."""
    message = str(exc)
    if isinstance(exc, NoDigit) and message.startswith(_BLANK) and texture(grey):
        return NoDigit(
            "no digit found: the image shows a texture or pattern and no stroke stands out "
            "from it" + message[len(_BLANK) :]
        )
    return exc


# --- shadows
_SHADE_WINDOW = 0.16  # of the shorter side: wider than any stroke, narrower than a shadow
_SHADE_LEVEL = 0.05  # background this much darker than the smooth fit says ...
_SHADE_SHARE = 0.03  # ... over this share of the picture: a shadow edge the fit cannot follow
_SHADE_FRAME = 0.1  # ... and this share of its border
_SHADE_CAP = 0.05  # shade is no darker than this beyond the darkest shade at the frame
_FRAME_MARK = 0.3  # a mark at the frame smaller than this share of the largest is shadow
# A mark this long (its box's diagonal, of the shorter side) and on average at most this
# thin (area / that diagonal, of the shorter side) is a sheet's edge, not a stroke.
_EDGE_LINE_LONG = 0.9
_EDGE_LINE_THIN = 0.02
# Pre-checks on reduced copies use their bars times this: a reduced copy blurs what it
# measures, and a missed shadow or ruling costs accuracy where a false alarm costs only time.
_PRECHECK = 0.6


def shade(raw: np.ndarray, background: np.ndarray | float) -> np.ndarray | float:
    """The background of the ink map ``raw`` (ink bright), given the smooth fit
    ``background``: replaced by a grey opening when the fit misses a shadow's edge.

    A cast shadow darkens the paper up to a sharp or soft edge that no low-order surface
    follows. An opening with a window wider than any stroke keeps exactly such large
    regions and drops the strokes; it is used only when it finds shade the fit leaves out,
    so paper under even or smoothly varying light keeps the fit.
    """
    h, w = raw.shape
    if min(h, w) < MIN_SIDE:
        return background
    k = max(9, int(_SHADE_WINDOW * min(h, w)) | 1)
    if not _maybe_shade(raw, background, k):
        return background
    # Mirrored at the frame, a shadow's wedge running out of the picture stays wide enough
    # for the window to fit in it.
    opened = ndimage.grey_opening(raw, size=(k, k), mode="mirror")
    if not _shaded(opened, background):
        return background
    # A bold stroke's blob (the loop of a felt-tip 8) is wider than the window and kept as
    # if it were shade, hollowing the stroke. A shadow is cast from outside the picture, so
    # its darkest part reaches the frame, where the ink does not: cap the opening there.
    opened = np.minimum(opened, _frame_values(opened).max() + np.float32(_SHADE_CAP))
    # The opening is blocky on noisy paper: smooth it over a fraction of its window.
    return ndimage.uniform_filter(opened, max(3, k // 4), mode="mirror")


def drop_frame_marks(ink: np.ndarray, level: float) -> np.ndarray:
    """``ink`` without the small marks that touch the frame, for a picture with a shadow.

    Where a shadow's wedge runs narrow into the frame the opening cannot follow it, and its
    tip is left as a speck at the frame; in the crop it shrinks the digit to a corner. A
    mark at the frame smaller than :data:`_FRAME_MARK` of the largest (pixels at ``level``
    of the peak and above, as the crop counts them) is dropped with its soft rim. A mark
    as long as the picture and line-thin is a sheet's edge (:func:`_edge_lines`); with one
    found, every mark at the frame goes while a mark inside the picture is left.
    """
    core = ink >= np.float32(level * float(ink.max()))
    labels, count = ndimage.label(core, structure=np.ones((3, 3), dtype=bool))
    if count < 2:
        return ink
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    lines = _edge_lines(labels, sizes)
    # The digit is what is left once the lines are gone: never drop every mark.
    if lines.size and np.isin(np.flatnonzero(sizes), lines).all():
        lines = lines[:0]
    sizes[lines] = 0
    at_frame = np.unique(_frame_values(labels))
    at_frame = at_frame[(at_frame > 0) & (sizes[at_frame] > 0)]
    small = at_frame[sizes[at_frame] < _FRAME_MARK * sizes.max()]
    # With a sheet's edge in view the digit is on the sheet, inside the picture; marks at
    # the frame are the desk beyond the sheet's other sides (a corner of desk left by the
    # shade step), however large next to a small digit, when a mark inside remains.
    inside = np.setdiff1d(np.flatnonzero(sizes), at_frame)
    if lines.size and inside.size:
        small = at_frame
    small = np.concatenate([small, lines])
    if not small.size:
        return ink
    marks = ndimage.binary_dilation(np.isin(labels, small), iterations=2)
    return np.where(marks, np.float32(0), ink)


def _edge_lines(labels: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The labels of marks as long as the picture is wide and line-thin.

    A sheet lying on a smooth desk with one edge in view looks like paper with a shadow's
    edge across it (:func:`find_page` leaves it whole), so the desk is taken for shade and
    the sheet's edge, darkened by its contact shadow, is left as a thin line across the
    picture beside the digit. No stroke of a digit that size is that long and that thin.
    """
    short = min(labels.shape)
    found = []
    for i, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        rows, cols = box
        length = math.hypot(rows.stop - rows.start, cols.stop - cols.start)
        if length >= _EDGE_LINE_LONG * short and sizes[i] <= _EDGE_LINE_THIN * short * length:
            found.append(i)
    return np.asarray(found, dtype=np.intp)


def _shaded(opened: np.ndarray, background: np.ndarray | float, scale: float = 1.0) -> bool:
    """Whether the opening finds shade the fit leaves out, over enough of the picture and of
    its border (``scale`` < 1 loosens all three bars, for the pre-check)."""
    shaded = opened - background > scale * _SHADE_LEVEL
    # A shadow is cast from outside the picture: it reaches the frame. A blot of ink wider
    # than the window (a marker's dot) does not, and is no reason to leave the fit.
    return (
        float(shaded.mean()) >= scale * _SHADE_SHARE
        and float(_frame_values(shaded).mean()) >= scale * _SHADE_FRAME
    )


def _maybe_shade(raw: np.ndarray, background: np.ndarray | float, k: int) -> bool:
    """The opening's test on a copy reduced to about 64 px (at least halved), with looser
    bars: most pictures have no shadow, and there the full-size opening is skipped."""
    f = max(2, min(raw.shape) // 64)
    small = _reduce(raw, f)
    if not isinstance(background, float):
        background = _reduce(background, f)
    opened = ndimage.grey_opening(small, size=(max(3, k // f),) * 2, mode="mirror")
    return _shaded(opened, background, _PRECHECK)


# --- printed rulings
_RULE_RUN = 0.1  # a ruling is straight over runs of this share of the picture ...
_RULE_SPAN = 0.6  # ... and crosses this share of it
_RULE_EDGE_SPAN = 0.3  # ... or this share, running out of the frame
_RULE_TILT = 2  # px each side: lines off square by up to ~4° still make runs
_RULE_THICK = 4.0  # mean thickness (px) beyond the tilt band: anything thicker is a stroke
_RULE_FLOOR = 0.02  # ink level below which nothing is a ruling
_RULE_FIND = 0.012  # ... nor found as one (averaged along the line)
_RULE_EXPLAINS = 1.6  # a pixel up to this many times the line's level is the line's
_RULE_VARIES = 2.0  # a printed line's level varies along it by at most this factor
_EDGE_PIECE_LONG = 3  # a ruling's piece at the frame: at least this many times longer than thick
_RULE_LINE_SHARE = 0.6  # a band thin over this share of its columns is a ruling a stroke ran along
# A lone line's own direction is fitted on its thin columns when they are this share of the
# band at least: a bold digit written on a margin line covers up to half of its length.
_RULE_OWN_SHARE = 0.4
_RULE_SMOOTH = 5  # px: a line's level is averaged along it over this many (dashes join)


def remove_rulings(ink: np.ndarray) -> np.ndarray:
    """``ink`` (ink bright) without printed rulings: lines of ruled or squared paper and
    margin lines, which cross most of the picture straight and thin.

    A line is found as a long, thin band that survives an opening along it; its level is
    the band's typical strength, followed along the line within a factor. Its pixels are
    those no brighter than that (where two rulings cross, than both together), and they
    are refilled from the nearer pixels on either side across the line: a pen stroke
    crossing a ruling keeps its ink where the ruling ran, paper stays paper, and a stroke
    darker than the ruling is never touched.
    """
    h, w = ink.shape
    if min(h, w) < MIN_SIDE:
        return ink
    if not _maybe_rulings(ink):
        return ink
    across = _line_levels(ink)
    down = _line_levels(ink.T).T
    if not across.any() and not down.any():
        return ink
    limit = np.float32(_RULE_EXPLAINS)
    floor = np.float32(_RULE_FLOOR)
    out = ink
    if across.any():
        out = _refill(out, (across > 0) & (out <= limit * (across + down) + floor))
    if down.any():
        out = _refill(out.T, (down.T > 0) & (limit * down.T + floor >= out.T)).T
    # Where the page is turned, a ruling leaves the frame after a short stretch, too short
    # to be found as one; left there, it would widen the digit's crop to the frame.
    if across.any():
        out = _drop_edge_pieces(out)
    if down.any():
        out = _drop_edge_pieces(out.T).T
    return np.ascontiguousarray(out, dtype=np.float32)


def _drop_edge_pieces(x: np.ndarray) -> np.ndarray:
    """``x`` without marks that touch the frame and are ruling-thin and long along rows."""
    labels, count = ndimage.label(x > 2 * _RULE_FLOOR, structure=np.ones((3, 3), bool))
    if not count:
        return x
    h, w = x.shape
    widest = 2 * _RULE_TILT + 1 + _RULE_THICK
    drop = np.zeros(count + 1, dtype=bool)
    for i, box in enumerate(ndimage.find_objects(labels), start=1):
        rows, cols = box
        tall, wide = rows.stop - rows.start, cols.stop - cols.start
        touches = rows.start == 0 or cols.start == 0 or rows.stop == h or cols.stop == w
        drop[i] = touches and tall <= widest and wide >= _EDGE_PIECE_LONG * tall
    if not drop.any():
        return x
    return np.where(drop[labels], np.float32(0), x).astype(np.float32)


def _spanning(
    x: np.ndarray, run: int, tilt: int, widest: float, slack: int = 0, smooth: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bands of ``x`` straight along rows over ``run`` px (within ``tilt`` px up or down)
    that span the picture (``slack`` px more counted for each) and are at most ``widest``
    px thick on average: labels, which labels are kept, the banded level and the
    row-spread ``x``."""
    h, w = x.shape
    spread = ndimage.maximum_filter1d(x, 2 * tilt + 1, axis=0, mode="nearest")
    # A faint line photographed is dashed once the noise floor is taken off: averaged along
    # the line over a few pixels its gaps fill, or its run (so the line) would end at the
    # first one; a speck of noise averages away.
    along = spread
    if smooth > 1:
        along = ndimage.uniform_filter1d(spread, smooth, axis=1, mode="nearest")
    level = ndimage.minimum_filter1d(along, run, axis=1, mode="nearest")
    level = ndimage.maximum_filter1d(level, run, axis=1, mode="nearest")
    candidate = level > _RULE_FIND
    if not candidate.any():
        return np.zeros(x.shape, np.int32), np.zeros(1, bool), level, spread
    labels, count = ndimage.label(candidate)
    boxes = ndimage.find_objects(labels)
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    starts = np.array([[b[0].start, b[1].start] for b in boxes])
    stops = np.array([[b[0].stop, b[1].stop] for b in boxes])
    span = stops[:, 1] - starts[:, 1] + slack
    # A tilted ruling may leave through the top or bottom before it spans the picture.
    edge = (starts == 0).any(axis=1) | (stops[:, 0] == h) | (stops[:, 1] == w)
    spans = (span >= _RULE_SPAN * w) | (edge & (span >= _RULE_EDGE_SPAN * w))
    keep = np.zeros(count + 1, dtype=bool)
    thin = areas <= widest * span
    keep[1:] = spans & thin
    # A digit's strokes can join a ruling's band (the top of a 5 along a line) or two
    # rulings into one: too thick on average. Rulings are parallel, so such a band is cut
    # along the direction of the clean ones, and the rows of it that run the band's whole
    # length are rulings; the rest (the strokes) is taken out of it.
    # A lone line (a margin) has no clean neighbour to take the direction from: its own
    # thin stretches give it.
    merged = np.flatnonzero(spans & ~thin)
    common = _slope(labels, boxes, np.flatnonzero(keep[1:])) if keep.any() else None
    for i in merged.tolist():
        label = i + 1
        slope = common if common is not None else _own_slope(labels, boxes[i], label, widest)
        if slope is None:
            continue
        band = _trim_to_lines(labels, boxes[i], label, slope)
        keep[label] = band > 0 and band <= widest * span[i] * _lines_in(labels, boxes[i], label)
    return labels, keep, level, spread


def _own_slope(
    labels: np.ndarray, box: tuple[slice, slice], label: int, widest: float
) -> float | None:
    """The slope of band ``label`` fitted on its thin columns, if most of them are thin."""
    band = labels[box] == label
    thick = band.sum(axis=0)
    cols = np.flatnonzero(thick)
    line = cols[thick[cols] <= widest]
    if len(line) < max(2, _RULE_OWN_SHARE * len(cols)):
        return None
    rows = np.arange(band.shape[0], dtype=np.float64)[:, None]
    centre = (band[:, line] * rows).sum(axis=0) / thick[line]
    return float(np.polyfit(line.astype(np.float64), centre, 1)[0])


def _slope(labels: np.ndarray, boxes: list, kept: np.ndarray) -> float:
    """The rulings' common slope (rows per column): the median of the kept bands' slopes."""
    slopes = []
    for i in kept:
        band = labels[boxes[i]] == i + 1
        rows, cols = np.nonzero(band)
        slopes.append(float(np.polyfit(cols.astype(np.float64), rows.astype(np.float64), 1)[0]))
    return float(np.median(slopes))


def _trim_to_lines(labels: np.ndarray, box: tuple[slice, slice], label: int, slope: float) -> int:
    """Take out of band ``label`` (in ``box``, in place) what is not on a line of ``slope``
    running its whole length; its area left."""
    sub = labels[box]
    rows, cols = np.nonzero(sub == label)
    if not len(rows):
        return 0
    across = np.rint(rows - slope * cols).astype(np.intp)
    across -= across.min()
    counts = np.bincount(across)
    length = int(cols.max() - cols.min() + 1)
    on_line = counts[across] >= _RULE_LINE_SHARE * length
    sub[rows[~on_line], cols[~on_line]] = 0
    return int(on_line.sum())


def _lines_in(labels: np.ndarray, box: tuple[slice, slice], label: int) -> int:
    """How many separate lines band ``label`` holds once trimmed (at least 1)."""
    _, count = ndimage.label(labels[box] == label)
    return max(1, count)


def _maybe_rulings(ink: np.ndarray) -> bool:
    """Whether ``ink`` may hold a ruling: the same test on a copy max-pooled along the line's
    direction only, to about 64 px. Across the line nothing changes (the tilt band, the
    thickness and the gap to the next ruling are as at full size); along it a max keeps the
    line's level and shortens each run of ink by less than a block, so the bars are taken
    one block shorter. It costs a fraction of the full test."""
    widest = 2 * _RULE_TILT + 1 + _RULE_THICK
    for x in (ink, ink.T):
        w = x.shape[1]
        f = max(2, w // 64)
        pooled = _pool_max_rows(x, f)
        run = max(2, max(9, int(_RULE_RUN * w)) // f)
        # Pooled areas are at most a block longer at each end than the full size's / f.
        # The max-pooling bridges gaps shorter than a block: the smoothing is scaled down.
        smooth = max(1, round(_RULE_SMOOTH / f))
        _, keep, _, _ = _spanning(
            pooled, run, _RULE_TILT, widest * (1 + 2 / run) + 1, slack=1, smooth=smooth
        )
        if keep.any():
            return True
    return False


def _pool_max_rows(x: np.ndarray, f: int) -> np.ndarray:
    """Maximum over runs of ``f`` pixels along each row (a partial run at the end included).
    Strided slices combined in place: several times faster than a padded reshape's max."""
    w = x.shape[1]
    whole = w - w % f
    pooled = x[:, 0:whole:f].copy()
    for j in range(1, f):
        np.maximum(pooled, x[:, j:whole:f], out=pooled)
    if whole < w:
        pooled = np.concatenate([pooled, x[:, whole:].max(axis=1, keepdims=True)], axis=1)
    return pooled


def _line_levels(x: np.ndarray) -> np.ndarray:
    """Per pixel, the level of a horizontal ruling through it (0 off the rulings)."""
    w = x.shape[1]
    run = max(9, int(_RULE_RUN * w))
    labels, keep, _, spread = _spanning(
        x, run, _RULE_TILT, 2 * _RULE_TILT + 1 + _RULE_THICK, smooth=_RULE_SMOOTH
    )
    if not keep.any():
        return np.zeros_like(x)
    count = len(keep) - 1
    # The line's typical level: a bold stroke lying along a ruling for a while raises the
    # band's level there, not its median over the whole line (the mean it can raise enough
    # to let the stroke pass for the line). Taken where the line shows, not in the gaps of
    # a dashed one (where the run's average would halve it).
    kept = np.flatnonzero(keep)
    typical = np.zeros(count + 1, dtype=np.float32)
    typical[kept] = _medians(spread, np.where(spread > _RULE_FLOOR, labels, 0), kept)
    base = typical[labels]
    short = max(5, run // 4)
    local = ndimage.minimum_filter1d(spread, short, axis=1, mode="nearest")
    local = ndimage.maximum_filter1d(local, short, axis=1, mode="nearest")
    local = np.where(local <= _RULE_VARIES * base + _RULE_FLOOR, np.maximum(local, base), base)
    return _on_lines(x, keep[labels], typical[labels], local, run)


def _on_lines(
    x: np.ndarray, band: np.ndarray, typical: np.ndarray, local: np.ndarray, run: int
) -> np.ndarray:
    """Per pixel, the level of the printed line through it, for the pixels within the line's
    own thickness of its centre line (0 elsewhere); ``band`` the ruling bands of ``x``
    (rows), ``typical`` each band's typical level, ``local`` the level followed along it.

    A band is as wide as the tilt allowance, and a stroke beside the line can join it:
    taken whole, a small digit written on a margin line (or the part of a stroke running
    beside a ruling) lies inside it and would be refilled as the line. The line itself is a
    thin straight ridge: its centre per column is fitted with a robust straight line
    (columns where a stroke pulls the centroid away are dropped), and only pixels within
    its thickness (plus a pixel of blur) of it count as the line. A printed line crosses the
    page: where a faint one breaks into dashes its band ends early, so the fitted line is
    followed beyond the band, at the band's typical level, to the frame.
    """
    lines, count = ndimage.label(band)
    if not count:
        return np.zeros(x.shape, np.float32)
    h, w = x.shape
    rows, cols = np.nonzero(band)
    which = lines[rows, cols] - 1
    # Per line and column: the ink-weighted centre (the ink capped at the line's level, so
    # a dark stroke in the band weighs no more than the line) and the line's thickness.
    level = typical[rows, cols]
    weight = np.minimum(x[rows, cols], level).astype(np.float64)
    key = which * w + cols
    total = np.bincount(key, weight, minlength=count * w).reshape(count, w)
    moment = np.bincount(key, weight * rows, minlength=count * w).reshape(count, w)
    thick = np.bincount(key, x[rows, cols] > 0.5 * level, minlength=count * w).reshape(count, w)
    line_level = np.zeros(count, np.float32)
    line_level[which] = level  # one value per band, so per line
    out = np.zeros(x.shape, np.float32)
    all_cols = np.arange(w)
    for i in range(count):
        seen = np.flatnonzero(total[i] > 0)
        if len(seen) < 2:
            continue
        c = moment[i, seen] / total[i, seen]
        use = np.ones(len(seen), dtype=bool)
        slope, at = _straight(seen, c)
        for _ in range(3):
            off = np.abs(c - (at + slope * seen))
            new_use = off <= max(1.0, 3 * float(np.median(off[use])))
            if new_use.sum() < max(2, len(seen) // 3) or (new_use == use).all():
                break
            use = new_use
            slope, at = _straight(seen[use], c[use])
        reach = float(np.median(thick[i, seen[use]])) / 2 + 1.0
        centre = at + slope * all_cols
        lo = np.clip(np.ceil(centre - reach).astype(np.intp), 0, h)
        hi = np.clip(np.floor(centre + reach).astype(np.intp) + 1, 0, h)
        # The pixels within reach of the centre, column by column (a few per column).
        span = int(max(1, (hi - lo).max()))
        rr = lo[None, :] + np.arange(span)[:, None]
        cc = np.broadcast_to(all_cols, rr.shape)
        valid = rr < hi[None, :]
        inside = (cc >= seen[0]) & (cc <= seen[-1])
        # Followed beyond the band only when its fit is long enough to follow.
        if len(seen[use]) < run:
            valid &= inside
        rr, cc, inside = rr[valid], cc[valid], inside[valid]
        on = np.where(lines[rr, cc] == i + 1, local[rr, cc], 0)
        out[rr, cc] = np.maximum(out[rr, cc], np.where(inside, on, line_level[i]))
    return out


def _medians(values: np.ndarray, labels: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The (upper) median of ``values`` per label in ``index`` (0 for a label with none):
    ndimage.median's answer from one sort, several times faster on a page of rulings."""
    mask = labels > 0
    lab, val = labels[mask], values[mask]
    order = np.lexsort((val, lab))
    lab, val = lab[order], val[order]
    starts = np.searchsorted(lab, index, side="left")
    stops = np.searchsorted(lab, index, side="right")
    mid = np.where(stops > starts, (starts + stops) // 2, 0)
    out = np.where(stops > starts, val[np.minimum(mid, len(val) - 1)] if len(val) else 0, 0)
    return np.asarray(out, dtype=np.float32)


def _straight(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float]:
    """Least-squares line through (``xs``, ``ys``): slope and intercept (polyfit's answer at
    a fraction of its overhead, called per ruling)."""
    xs = xs.astype(np.float64)
    mx, my = float(xs.mean()), float(ys.mean())
    dx = xs - mx
    var = float(dx @ dx)
    slope = float(dx @ (ys - my)) / var if var > 0 else 0.0
    return slope, my - slope * mx


def _refill(x: np.ndarray, line: np.ndarray) -> np.ndarray:
    """``x`` with the ``line`` pixels replaced by the fainter of the nearest pixels off the
    line above and below (per column)."""
    h, w = x.shape
    rows = np.arange(h)[:, None]
    above = np.maximum.accumulate(np.where(line, -1, rows), axis=0)
    below = np.minimum.accumulate(np.where(line, h, rows)[::-1], axis=0)[::-1]
    cols = np.arange(w)[None, :]
    up = np.where(above >= 0, x[np.clip(above, 0, h - 1), cols], 0)
    down = np.where(below < h, x[np.clip(below, 0, h - 1), cols], 0)
    return np.where(line, np.minimum(up, down), x).astype(np.float32)
