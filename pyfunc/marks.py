"""Marks around the writing that are not part of it: a circle drawn round the digit, a line
drawn under it, a form's printed box (one per digit on a form).

A helper of :mod:`pyfunc.preprocess` (the one pre-processing path). It works on the ink map
(ink bright, 2-D float32 at the work size) before printed rulings are removed: that step
takes the long, nearly straight stretches of a tall ring for margin lines and breaks it.
A ring or a box apart from the writing goes whole. One the writing touches goes as its
outline: a box's four straight sides, taken off the way a ruling is (a stroke crossing a
side keeps its ink there), or a ring's band along a fitted ellipse; a stroke that touches
either loses about the mark's width. A line under
the writing goes only when apart from it (touching, it could be a 2's base). Anything that
touches the frame is left to the paper's own steps (a ruling, a sheet's edge, a shadow
run off the picture; :mod:`pyfunc.paper`). docs/photos.md has the measurements.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from pyfunc.pooling import pool_any, pool_max

MIN_SIDE = 40  # smaller pictures (MNIST, thumbnails) hold no such marks worth finding
_SIDE = 128  # pieces are found on a copy at most this big (max-pooled)
_LEVEL = 0.15  # of the peak: what counts as ink for the pieces (a faint printed box too)
_PIECE = 0.05  # of the largest piece: smaller ones are specks, neither mark nor writing
# A ring or box: its own ink is at most this share of the area it closes in (a circle round
# a digit 0.05-0.2; a bold 0 with a speck in its hole is ruled out by the next two) ...
_RING_INK = 0.5
_RING_INWARD = 0.03  # ... with at most this share of it further in than its stroke is wide ...
_ENCLOSED = 0.95  # ... writing reaching into its hole lies in it, this share at least ...
_ENCLOSED_TALL = 0.3  # ... and is at least this share of its height (not a speck in a 0)
_WRITING_LEVEL = 0.6  # ... and at least this share of the mark's level (median ink)
# A line under the writing: long, thin and straight, as wide as most of the writing, and
# below it (its top at most this share of the writing's height above the writing's bottom).
_LINE_LONG = 4.0  # width over its thickness (mean ink per column) at least
_LINE_WIDE = 0.6  # of the rest of the writing's width at least
_LINE_BELOW = 0.1
_LINE_STRAIGHT = 0.06  # of its width: the most its column centres stray from a straight line
# A box or a ring the writing touches is one piece with it: a piece that closes in at
# least _HOLLOW times its own ink (holes filled), _BOX_MIN px or more each way.
_HOLLOW = 1.5
_BOX_MIN = 24
# A printed box (a form's cell): four sides, each straight (its outline within _BOX_OFF px
# of a line) along _BOX_STRAIGHT of it, corners left out, and thin.
_BOX_CORNER = 0.08
_BOX_STRAIGHT = 0.7
_BOX_OFF = 1.5
_BOX_THIN = 0.08  # of the box's shorter side
# A ring the writing touches: the outermost ink in at least this share of directions (bins
# of 5°) within _RING_OFF px, or this share of the radius, of an ellipse.
_RING_BINS = 72
_RING_CLOSED = 0.9
_RING_OFF = 2.0
_RING_OFF_SHARE = 0.05
_RING_THIN = 0.16  # the pen at most this share of the ring's shorter extent
_RING_DEEPEST = 1.5  # times the pen: how deep (across it) the ring is taken off
_CANDIDATES = 3  # the largest pieces clear of the frame looked at as marks ...
_MARKS = 8  # ... and marks taken away at most (a form's cells, one per digit)
_EIGHT = np.ones((3, 3), dtype=bool)


def drop_marks(ink: np.ndarray) -> np.ndarray:
    """``ink`` without the marks round its writing: rings and boxes round some of it (a
    form's cells, one per digit, each its own), a line under it. A picture without them
    is returned as is (the same array)."""
    h, w = ink.shape
    if min(h, w) < MIN_SIDE:
        return ink
    for _ in range(_MARKS):
        cleared = _drop_one(ink)
        if cleared is ink:
            break
        ink = cleared
    return ink


def _drop_one(ink: np.ndarray) -> np.ndarray:
    """``ink`` without one mark (the largest found), or ``ink`` itself."""
    h, w = ink.shape
    peak = float(ink.max())
    if peak <= 0:
        return ink
    f = max(1, math.ceil(max(h, w) / _SIDE))
    mask = pool_any(ink > np.float32(_LEVEL * peak), f)
    labels, count = ndimage.label(mask, structure=_EIGHT)
    if not count:
        return ink
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    boxes = ndimage.find_objects(labels)
    writing = sizes >= _PIECE * sizes.max()
    pieces = np.flatnonzero(writing)
    inner = [int(i) for i in pieces if not _at_frame(boxes[i - 1], mask.shape)]
    # A mark is one of the largest pieces: a few are looked at, not every fragment of a
    # ruled page.
    for i in sorted(inner, key=lambda i: -sizes[i])[:_CANDIDATES]:
        box = boxes[i - 1]
        piece = labels == i
        # A ring or a box closes in far more paper than its ink (with a digit touching it
        # too); an 8, a 6 or a 9 closes in little, so the costlier tests run only then.
        # The bound by rows and columns first: it is cheap, and never below the holes.
        filled = _filled(piece, box) if _hollow(piece[box]) else None
        if filled is not None and filled.sum() < _HOLLOW * piece.sum():
            filled = None
        if len(pieces) > 1:
            rest = writing[labels] & ~piece
            if _underlines(piece, rest) or (
                filled is not None
                and _encloses(piece, filled, labels, sizes, writing, box, pool_max(ink, f))
            ):
                return _without(ink, labels, i, f)
        if filled is None:
            continue
        cleared = _unbox(ink, box, f, peak)
        if cleared is not None:
            return cleared
        # A ring is looked for on the pooled copy first (the full size's per-pixel
        # directions cost more), then at full size.
        if _outer_ellipse(piece[box]) is not None:
            cleared = _unring(ink, box, f, peak)
            if cleared is not None:
                return cleared
    return ink


def _hollow(piece: np.ndarray) -> bool:
    """Whether ``piece`` may close in :data:`_HOLLOW` times its ink: counting, along each
    row (and again each column), all from its first ink to its last, an upper bound of its
    holes (a bay of an open digit counts too)."""
    ink = int(piece.sum())
    bound = min(_spans(piece), _spans(piece.T))
    return bound >= _HOLLOW * ink


def _spans(piece: np.ndarray) -> int:
    """The pixels from the first ink to the last of each row, summed."""
    rows = piece.any(axis=1)
    first = piece.argmax(axis=1)
    last = piece.shape[1] - piece[:, ::-1].argmax(axis=1)
    return int((last - first)[rows].sum())


def _filled(piece: np.ndarray, box: tuple[slice, slice]) -> np.ndarray:
    """``piece`` with its holes filled: the paper in its box (and a pixel round it) that
    cannot reach the box's edge. Labelling that paper is several times cheaper than
    :func:`scipy.ndimage.binary_fill_holes`' iterated dilation."""
    rows, cols = box
    inside = np.pad(piece[rows, cols], 1)
    paper, _ = ndimage.label(~inside)
    # The padding joins all paper along the edge into one region; the rest is holes.
    holes = (paper > 0) & (paper != paper[0, 0])
    out = piece.copy()
    out[rows, cols] |= holes[1:-1, 1:-1]
    return out


def _encloses(
    piece: np.ndarray,
    filled: np.ndarray,
    labels: np.ndarray,
    sizes: np.ndarray,
    writing: np.ndarray,
    box: tuple[slice, slice],
    levels: np.ndarray,
) -> bool:
    """Whether ``piece`` is a ring or box round writing: thin, its outline all there is of
    it, writing of some height in its hole (``levels``: the ink's on the pooled copy), and
    no piece of writing half in and half out (other cells of a form, other digits, lie
    wholly outside)."""
    hole = filled & ~piece
    closed = int(filled.sum())
    if not hole.any() or piece.sum() > _RING_INK * closed:
        return False
    # A ring is its outline: every part of it lies within a stroke's width of the outside.
    # A stroke of the digit that touches the ring runs inwards and makes it one piece with
    # the ring; taking that piece away would take the stroke with it.
    width = 2 * float(ndimage.distance_transform_edt(np.pad(piece, 1)).max())
    depth = ndimage.distance_transform_edt(np.pad(filled, 1))[1:-1, 1:-1]
    if float((depth[piece] > width + 1).mean()) > _RING_INWARD:
        return False
    within = labels[hole]
    within = within[writing[within]]
    if not len(within):
        return False
    # Each piece of writing that reaches into the hole must lie in it.
    reached = np.unique(within)
    counts = np.bincount(within, minlength=len(writing))
    if (counts[reached] < _ENCLOSED * sizes[reached]).any():
        return False
    content = np.isin(labels, reached)
    rows = np.flatnonzero(content.any(axis=1))
    if rows[-1] - rows[0] + 1 < _ENCLOSED_TALL * (box[0].stop - box[0].start):
        return False
    return _writing(levels[content], levels[piece])


def _underlines(piece: np.ndarray, rest: np.ndarray) -> bool:
    cols = np.flatnonzero(piece.any(axis=0))
    width = int(cols[-1] - cols[0] + 1)
    counts = piece[:, cols].sum(axis=0)
    if width < _LINE_LONG * float(counts.mean()):
        return False
    rest_rows = np.flatnonzero(rest.any(axis=1))
    rest_cols = np.flatnonzero(rest.any(axis=0))
    rest_h = rest_rows[-1] - rest_rows[0] + 1
    if width < _LINE_WIDE * (rest_cols[-1] - rest_cols[0] + 1):
        return False
    rows = np.flatnonzero(piece.any(axis=1))
    if rows[0] < rest_rows[-1] - _LINE_BELOW * rest_h:
        return False
    # Straight: the centre of each column's ink stays near one fitted line.
    ys = np.arange(piece.shape[0], dtype=np.float64)[:, None]
    centres = (piece[:, cols] * ys).sum(axis=0) / np.maximum(counts, 1)
    fit = np.polyval(np.polyfit(cols, centres, 1), cols)
    return bool(np.abs(centres - fit).max() <= max(1.0, _LINE_STRAIGHT * width))


def _unbox(ink: np.ndarray, box: tuple[slice, slice], f: int, peak: float) -> np.ndarray | None:
    """``ink`` without the four sides of a printed box that the writing inside touches (a
    form's cell), or None when the piece in ``box`` (on the pooled copy) is not such a box.

    Each side is the piece's outline on that side, straight along most of its length and
    thin; a piece with nothing left inside once the sides are off (a square 0) is no box.
    The sides are taken out as a ruling is (:func:`pyfunc.paper.remove_rulings`): each pixel
    across a side takes the fainter of the two just outside it, so a stroke that crosses the
    side keeps its ink there and one that only touches it loses only the side.
    """
    y0, x0 = box[0].start * f, box[1].start * f
    y1, x1 = min(ink.shape[0], box[0].stop * f), min(ink.shape[1], box[1].stop * f)
    if min(y1 - y0, x1 - x0) < _BOX_MIN:
        return None
    crop = ink[y0:y1, x0:x1]
    mask = crop > np.float32(_LEVEL * peak)
    sides = _box_sides(mask)
    if sides is None:
        return None
    # Inside the sides (their thickness and a pixel of blur in from the crop's edges).
    depth = [_deepest(np.rot90(mask, k).shape[1], *side) for k, side in enumerate(sides)]
    top, right, bottom, left = depth  # np.rot90 turns anticlockwise: k=1 is the right side
    inner = mask[top : mask.shape[0] - bottom, left : mask.shape[1] - right]
    if inner.size == 0 or not inner.any():
        return None
    rows = np.flatnonzero(inner.any(axis=1))
    if rows[-1] - rows[0] + 1 < _ENCLOSED_TALL * inner.shape[0]:
        return None
    frame = mask.copy()
    frame[top : mask.shape[0] - bottom, left : mask.shape[1] - right] = False
    content = crop[top : mask.shape[0] - bottom, left : mask.shape[1] - right][inner]
    if not _writing(content, crop[frame]):
        return None
    out = ink.copy()
    sub = out[y0:y1, x0:x1]
    for k, side in enumerate(sides):
        view = np.rot90(sub, k)
        view[...] = _clear_side(view, *side)
    return out


def _box_sides(mask: np.ndarray) -> list[tuple[float, float, float]] | None:
    """The four sides of a box in ``mask`` (see :func:`_side`), in the order top, right,
    bottom, left (the mask turned anticlockwise by 0-3 quarter turns), or None."""
    sides = []
    for k in range(4):
        side = _side(np.rot90(mask, k))
        if side is None:
            return None
        sides.append(side)
    return sides


def _side(mask: np.ndarray) -> tuple[float, float, float] | None:
    """The top side of a box in ``mask`` (its outline along the top): slope, intercept and
    thickness in px, or None when that outline is not straight and thin."""
    h, w = mask.shape
    trim = max(1, round(_BOX_CORNER * w))
    cols = np.arange(trim, w - trim)
    part = mask[:, cols]
    if part.any(axis=0).mean() < _BOX_STRAIGHT:
        return None
    first = part.argmax(axis=0).astype(np.float64)
    slope, at = np.polyfit(cols, first, 1)
    off = np.abs(first - (at + slope * cols))
    on = off <= _BOX_OFF
    if on.mean() < _BOX_STRAIGHT:
        return None
    slope, at = np.polyfit(cols[on], first[on], 1)
    # Thickness: the run of ink down from the outline, per column where the side is alone.
    rows = np.arange(h)[:, None]
    start = first.astype(np.intp)
    gap = (rows >= start) & ~part
    run = np.where(gap.any(axis=0), gap.argmax(axis=0), h) - start
    thick = float(np.median(run[on]))
    if thick > _BOX_THIN * min(h, w):
        return None
    return float(slope), float(at), thick


def _deepest(w: int, slope: float, at: float, thick: float) -> int:
    """How far in from the crop's edge the side (and a pixel of blur) reaches at most."""
    return int(np.ceil(max(at, at + slope * (w - 1)) + thick + 2))


def _clear_side(x: np.ndarray, slope: float, at: float, thick: float) -> np.ndarray:
    """``x`` with the band of the top side (fitted line, ``thick`` px, a pixel of blur each
    way) replaced, per column, by the fainter of the pixels just above and below it."""
    h, w = x.shape
    cols = np.arange(w)
    centre = at + slope * cols
    lo = np.clip(np.floor(centre - 1).astype(np.intp), 0, h - 1)
    hi = np.clip(np.ceil(centre + thick + 1).astype(np.intp), 0, h - 1)
    up = np.where(lo > 0, x[np.maximum(lo - 1, 0), cols], 0)
    down = np.where(hi < h - 1, x[np.minimum(hi + 1, h - 1), cols], 0)
    rows = np.arange(h)[:, None]
    band = (rows >= lo) & (rows <= hi)
    return np.where(band, np.minimum(up, down)[None, :], x).astype(np.float32)


def _unring(ink: np.ndarray, box: tuple[slice, slice], f: int, peak: float) -> np.ndarray | None:
    """``ink`` without a ring drawn round the writing that the writing touches, or None
    when the piece in ``box`` (on the pooled copy) is not such a ring.

    Seen from the middle of the piece, the ring is the outermost ink in every direction,
    an ellipse's radius in nearly all of them, and as thick as one pen. Its band is taken
    off where it follows the ellipse; where a stroke runs out across it, that direction is
    left as it is. What is left inside must be writing of some height (a 0 alone is all
    ring and is left).
    """
    y0, x0 = box[0].start * f, box[1].start * f
    y1, x1 = min(ink.shape[0], box[0].stop * f), min(ink.shape[1], box[1].stop * f)
    if min(y1 - y0, x1 - x0) < _BOX_MIN:
        return None
    crop = ink[y0:y1, x0:x1]
    level = np.float32(_LEVEL * peak)
    mask = crop > level
    h, w = mask.shape
    found = _outer_ellipse(mask)
    if found is None:
        return None
    on, outer = found
    cy, cx = (h - 1) / 2, (w - 1) / 2
    centres = _bin_centres()
    yy, xx = np.mgrid[0:h, 0:w]
    bins = _bin(yy - cy, xx - cx)
    runs = _ring_runs(crop, level, cy, cx, centres[on], outer[on])
    pen = float(np.median(runs))
    if pen > _RING_THIN * min(h, w):
        return None
    # The ring is the ink within its depth of the outside (measured across it, whatever
    # its slant), in the directions where the outline is the ellipse. A stroke touching it
    # from inside loses as much of its end; one that runs out across it is left.
    filled = _filled(mask, (slice(0, h), slice(0, w)))
    depth = ndimage.distance_transform_edt(np.pad(filled, 1))[1:-1, 1:-1]
    band = mask & on[bins] & (depth <= _RING_DEEPEST * pen + 1)
    inside = mask & ~band & (depth > _RING_DEEPEST * pen + 1)
    rows = np.flatnonzero(inside.any(axis=1))
    if not len(rows) or rows[-1] - rows[0] + 1 < _ENCLOSED_TALL * h:
        return None
    if not _writing(crop[inside], crop[band & mask]):
        return None
    out = ink.copy()
    # With the ring's soft rim, below the level the band was found at.
    out[y0:y1, x0:x1][ndimage.binary_dilation(band, structure=_EIGHT) & ~inside] = 0
    return out


def _outer_ellipse(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Seen from the middle of ``mask``, its outermost ink per direction (bins of 5°), if
    that is an ellipse in nearly every direction: which bins are on it and the outermost
    radius per bin. None otherwise."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    dy, dx = ys - (h - 1) / 2, xs - (w - 1) / 2
    outer = np.zeros(_RING_BINS)
    np.maximum.at(outer, _bin(dy, dx), np.hypot(dy, dx))
    seen = outer > 0
    if seen.mean() < _RING_CLOSED:
        return None
    # The ellipse through the outermost ink: 1/r² is linear in cos², sin², sin·cos.
    centres = _bin_centres()
    terms = np.stack([np.cos(centres) ** 2, np.sin(centres) ** 2, np.sin(2 * centres)], axis=1)
    coef = np.linalg.lstsq(terms[seen], 1 / outer[seen] ** 2, rcond=None)[0]
    inverse = terms @ coef
    if (inverse <= 0).any():
        return None
    fitted = 1 / np.sqrt(inverse)
    on = seen & (np.abs(outer - fitted) <= np.maximum(_RING_OFF, _RING_OFF_SHARE * fitted))
    if on.mean() < _RING_CLOSED:
        return None
    return on, outer


def _bin(dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """The direction bin of offsets (dy, dx) from the middle."""
    turn = np.arctan2(dy, dx)
    return ((turn + np.pi) / (2 * np.pi) * _RING_BINS).astype(np.intp) % _RING_BINS


def _bin_centres() -> np.ndarray:
    return (np.arange(_RING_BINS) + 0.5) / _RING_BINS * 2 * np.pi - np.pi


def _ring_runs(
    crop: np.ndarray, level: np.float32, cy: float, cx: float, turns: np.ndarray, outer: np.ndarray
) -> np.ndarray:
    """Per direction, the run of ink (px) inwards from the outermost ink along it. The
    outermost radius is a bin's (5°): along the bin's middle the ink may start further in,
    so each ray starts a little outside it and the run is counted from its first ink."""
    steps = np.arange(-2.0, max(2.0, float(outer.max())), 0.5)
    r = outer[:, None] - steps[None, :]
    ys = cy + r * np.sin(turns)[:, None]
    xs = cx + r * np.cos(turns)[:, None]
    values = ndimage.map_coordinates(crop, [ys.ravel(), xs.ravel()], order=1, mode="constant")
    inked = values.reshape(r.shape) > level
    first = inked.argmax(axis=1)
    # From the first ink, the first sample off it (all on to the middle: the whole ray).
    after = inked & (np.arange(inked.shape[1]) >= first[:, None])
    off = ~after & (np.arange(inked.shape[1]) > first[:, None])
    last = np.where(off.any(axis=1), off.argmax(axis=1), inked.shape[1])
    return np.where(inked.any(axis=1), last - first, 0) * 0.5


def _writing(content: np.ndarray, mark: np.ndarray) -> bool:
    """Whether ink of levels ``content`` inside a mark of levels ``mark`` is writing: about
    as dark as the mark or darker. A printed ruling's pieces left inside a pen's 0 on
    squared paper are fainter than the 0, and the 0 is no ring round them."""
    if not content.size or not mark.size:
        return False
    return bool(np.median(content) >= _WRITING_LEVEL * np.median(mark))


def _at_frame(box: tuple[slice, slice], shape: tuple[int, ...]) -> bool:
    rows, cols = box
    return rows.start == 0 or cols.start == 0 or rows.stop == shape[0] or cols.stop == shape[1]


def _without(ink: np.ndarray, labels: np.ndarray, label: int, f: int) -> np.ndarray:
    """``ink`` with piece ``label``'s blocks, and one block around them that no other
    piece holds (the mark's soft edge), set to paper."""
    piece = labels == label
    drop = ndimage.binary_dilation(piece, structure=_EIGHT) & ((labels == 0) | piece)
    if f > 1:
        drop = np.repeat(np.repeat(drop, f, axis=0), f, axis=1)[: ink.shape[0], : ink.shape[1]]
    out = ink.copy()
    out[drop] = 0
    return out
