"""Finding the digits of an image, left to right: boxes, and 28×28 crops for the model.

An image is decoded to its ink map by :func:`pyfunc.preprocess.decode_image` (the one
decoding path: polarity, paper, rulings, noise). Its strokes' 8-connected components are
grouped into digits by where they lie along the line of writing:

- specks (under a tenth of the largest component, as :mod:`pyfunc.preprocess` drops them)
  are not digits;
- components whose columns overlap belong to one digit: the separate top bar of a 5, the
  dots of a dotted 7, a stroke broken by a thin pen; neighbours one above the other with
  no row in common are pieces of one digit too (a slanted 1 a removed ruling broke);
  pieces lower than half the tallest digit join a digit nearer than 0.3 of its height, or
  are marks (a dot, a dash);
- ink cut by the frame's edge is not a digit when there is ink that is not;
- a group wider than :data:`SPLIT_WIDTH` times the line's height is touching digits: it is
  cut into ``round(width / (TYPICAL_WIDTH * height))`` parts, each cut at paper, else at
  the column of least ink, near where an even split would put it; :func:`read_number`
  then cuts it again where the model reads the parts best (:func:`recut_touching`).

Each digit's crop is its ink with the other digits' ink removed, framed as MNIST frames a
digit (:attr:`Digit.crop`). Boxes are ``(x, y, w, h)`` in the pixels of the image as sent
(after its EXIF orientation). The thresholds were chosen on the MNIST validation split and
the wild variants (training/numbers.py, docs/numbers.md).
"""

from __future__ import annotations

import io
import itertools
import math
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image
from scipy import ndimage

from pyfunc.encoding import b64decode
from pyfunc.errors import ImageError, MultipleDigits, NoDigit, TooManyDigits
from pyfunc.preprocess import DEFAULT_LIMITS, Limits, decode_image, ink_map, normalise

if TYPE_CHECKING:
    from pyfunc.model import Prediction

__all__ = [
    "MERGE_GAP",
    "SPLIT_WIDTH",
    "TYPICAL_WIDTH",
    "Digit",
    "Segmentation",
    "count_digits",
    "find_digits",
    "read_number",
    "require_single",
    "segment_ink",
]

# Stroke pixels: at least this fraction of the peak ink (as pyfunc.preprocess's core).
_CORE_FRACTION = 0.2
# Components under this fraction of the largest (in pixels) are specks, not strokes.
_SPECK_FRACTION = 0.1
# Components closer than this share of the writing's height (columns apart) are one digit.
# 0: only overlapping columns; digits written 1 px apart at MNIST's scale stay apart (0.05
# merged 1 in 10 such 4-digit numbers on the validation split, 0.12 two in five).
MERGE_GAP = 0.0
# Groups lower than this share of the tallest are marks or pieces of a digit, not digits ...
_LOW = 0.5
# ... pieces when they are nearer to a digit than this share of the tallest's height.
_JOIN_GAP = 0.3
# A group wider than this many times the line's height holds touching digits (chosen on the
# validation split: 1.15 cut 3.7 % of lone MNIST digits in two, 1.3 1.2 %, 1.45 0.5 %, and
# found 31, 24 and 15 of 40 touching pairs) ...
SPLIT_WIDTH = 1.3
# ... each about this wide (the median width / height of MNIST digits other than 1).
TYPICAL_WIDTH = 0.8
# A cut is looked for within this share of a part's width around the even split: paper
# (a column without ink) within the wider, the least ink within the narrower.
_GAP_WINDOW = 0.4
_INK_WINDOW = 0.15
# Re-cutting touching digits with the model (read_number): cuts at least this share of the
# line's height apart, at most this many tried per digit the width suggests ...
_MIN_PART = 0.16
_CANDIDATES_PER_DIGIT = 5
# ... and each part adds this to the sum of the parts' log confidences (without it, fewer
# parts always score better). Chosen on 120 touching validation numbers of 2-4 digits with
# a 98.9 % model: exact 16.7 % cut by the ink alone; bonus 0 / 0.25 / 0.5: 24 / 25 / 22 %
# (3 cuts per digit, 0.12 apart), then 0.16 apart and 5 per digit: 39 % (3 per digit:
# 28 %, 0.2 apart: 38 %).
_PART_BONUS = 0.25
# The best path has at least this many parts: with the part bonus, two confident halves
# of a digit outscore the whole (on 69 lone validation digits the ink cut in two, a CNN never
# preferred the whole that way), and a weak model reads a blob of two as confidently as
# either. The whole is weighed apart, without the bonus (_WHOLE_MARGIN).
_MIN_PARTS = 2
# The model chooses the count of parts within this many of the ink's estimate (from the
# width): a weak model reads thin slivers as confidently as whole digits.
_COUNT_SLACK = 1
# ... but a group the ink would cut in two stays one digit (a wide 2, 5 or 7) when the
# model reads it whole with a log confidence this much above the best two parts' sum (no
# part bonus). Chosen on the validation split with a 99.66 % CNN: of 48 lone digits wider
# than 1.25 times their height that the ink cut, 0.1 / 0.3 / 0.5 kept 46 / 40 / 18 whole
# (all read right), and took 1 / 0 / 0 of 54 touching pairs for one digit (one read right
# when cut at 0.1).
_WHOLE_MARGIN = 0.3
# Noise can make thousands of components; only the largest are grouped.
_MAX_COMPONENTS = 256
_EIGHT_CONNECTED = np.ones((3, 3), bool)
# The crop's margin around the box, as a share of its longer side (pre_process crops again).
_MARGIN = 0.2


@dataclass(frozen=True)
class Digit:
    """One digit found: its box in the image as sent, and its ink cut out of the ink map
    (float32, ink = 1, with a margin); :attr:`crop` is what the model is given."""

    box: tuple[int, int, int, int]
    ink: np.ndarray
    # Cut out of a wider group of ink (touching digits), not separated by paper.
    touching: bool = False
    # Which of the segmentation's touching groups it was cut from (None: not cut).
    group: int | None = None
    # The model's rejector took the crop for no digit, but other digits of the number were
    # read: its reading is kept, for the answer to flag as low confidence.
    refused: bool = False

    @cached_property
    def crop(self) -> np.ndarray:
        """The digit as MNIST frames one: 28×28, fitted into 20×20 and centred by its
        centre of mass (:func:`pyfunc.preprocess.normalise`), white on black.

        The model's pre-processing would frame :attr:`ink` the same way, but it first takes
        any image for a photo: a white ring on black (a 0 cut out of a number) passes for a
        sheet of paper on a desk and comes back filled. A 28×28 digit in MNIST's form is
        the one input every family reads as it is. Ink too faint to frame is handed over
        as it is, for the model to refuse."""
        try:
            return normalise(self.ink)
        except NoDigit:
            return self.ink


@dataclass(frozen=True)
class Touching:
    """A group of ink too wide for one digit, kept so that :func:`read_number` can try other
    cuts of it with the model: its mask and the ink map (both of the ink map's size), the
    line's height and the ink-map-to-image scale of the boxes."""

    mask: np.ndarray
    ink: np.ndarray
    height: int
    scale: tuple[float, float]


@dataclass(frozen=True)
class Segmentation:
    digits: list[Digit]
    touching: tuple[Touching, ...] = ()

    @property
    def boxes(self) -> list[tuple[int, int, int, int]]:
        return [d.box for d in self.digits]

    def __len__(self) -> int:
        return len(self.digits)


def find_digits(
    image: bytes | str | np.ndarray,
    limits: Limits = DEFAULT_LIMITS,
    *,
    split_touching: bool = True,
) -> Segmentation:
    """The digits of one image (encoded bytes, base64 or a decoded array), left to right.

    ``split_touching``: cut groups too wide for one digit into touching digits. Without it
    only digits with paper between them are told apart: one MNIST digit in 300 is wider
    than 1.3 times its height, so width alone cannot tell a wide digit from two.

    Raises :class:`~pyfunc.errors.ImageError` as decoding does, :class:`NoDigit` when there
    is no ink."""
    if isinstance(image, str):
        image = b64decode(image)
    ink = _ink(image, limits)
    return segment_ink(ink, scale=_scale(image, ink), split_touching=split_touching)


def _ink(image: bytes | np.ndarray, limits: Limits) -> np.ndarray:
    if isinstance(image, np.ndarray):
        # A request's DecodedImage keeps the map for the model's normalisation.
        return ink_map(image)
    return decode_image(bytes(image), limits)


def _scale(image: bytes | np.ndarray, ink: np.ndarray) -> tuple[float, float]:
    """(x, y) from the ink map's pixels to those of the image as sent."""
    if isinstance(image, np.ndarray):
        size = (image.shape[1], image.shape[0])
    else:
        size = _size_as_sent(bytes(image), ink.shape)
    return (size[0] / ink.shape[1], size[1] / ink.shape[0])


class Classifier(Protocol):
    def classify(self, model_input: Any, limits: Limits | None = None) -> list[Prediction]: ...


def read_number(
    model: Classifier,
    image: bytes | str | np.ndarray,
    limits: Limits = DEFAULT_LIMITS,
    *,
    max_digits: int | None = None,
    recut: bool = True,
) -> list[tuple[Digit, Prediction]]:
    """Every digit of ``image``, left to right, with the model's prediction for its crop.

    ``recut``: touching digits are cut where the model reads the parts best (see
    :func:`recut_touching`), not only where the ink is thinnest.

    :class:`TooManyDigits` when there are more than ``max_digits``; errors of decoding and
    :class:`NoDigit` (no ink, or the model's rejector refuses a crop) as for one digit."""
    found = find_digits(image, limits)
    if recut and found.touching:
        found = recut_touching(model, found, limits)
    if max_digits is not None and len(found) > max_digits:
        raise TooManyDigits(
            f"the image holds {len(found)} digits; at most {max_digits} are read at once"
        )
    predictions, refused = _classify_all(model, [d.crop for d in found.digits], limits)
    digits = [
        replace(d, refused=True) if r else d for d, r in zip(found.digits, refused, strict=True)
    ]
    return list(zip(digits, predictions, strict=True))


def _classify_all(
    model: Classifier, crops: list[np.ndarray], limits: Limits
) -> tuple[list[Prediction], list[bool]]:
    """The model's reading of every crop, and which of them its rejector refused.

    One odd digit of a number (a 5 whose bar is a separate dash) should not cost the
    whole reading a 422: a refused crop keeps the network's reading and is flagged, as
    long as some crop of the number is a digit. Every crop refused: :class:`NoDigit`."""
    judge = getattr(model, "judge", None)
    if judge is None:  # a model without the rejector's interface refuses by raising
        return model.classify(crops, limits=limits), [False] * len(crops)
    from pyfunc.contract import predictions

    batch = model.pre_process(crops, limits)  # type: ignore[attr-defined]
    probs = model.probabilities(batch)  # type: ignore[attr-defined]
    judged = judge(batch, probs)
    refused = [isinstance(j, NoDigit) for j in judged]
    if all(refused):
        raise NoDigit(
            f"none of the {len(crops)} marks found is a digit: {judged[0]}"
            if len(crops) > 1
            else str(judged[0])
        )
    plain = predictions(probs)
    return [p if r else j for p, j, r in zip(plain, judged, refused, strict=True)], refused


def recut_touching(
    model: Classifier, found: Segmentation, limits: Limits = DEFAULT_LIMITS
) -> Segmentation:
    """``found`` with each group of touching digits cut where the model reads it best.

    Cuts are tried at the columns of least ink (and at paper), at least
    :data:`_MIN_PART` of the line's height apart; every part between two of them no wider
    than one digit (:data:`SPLIT_WIDTH`) is classified, and the cut of at least
    :data:`_MIN_PARTS` parts whose log confidences, each part counted with
    :data:`_PART_BONUS`, add up to most wins (a best path over the cut columns), unless
    the model reads a group of about two digits' width as one digit far more confidently
    (:data:`_WHOLE_MARGIN`): a wide single digit. The ink's estimate (:func:`_split`)
    stays where the model finds no reading at all."""
    if not found.touching:
        return found
    digits = [d for d in found.digits if d.group is None]
    for index, group in enumerate(found.touching):
        ink_cut = sum(d.group == index for d in found.digits)
        best = _best_cut(model, group, limits, index, ink_cut)
        digits.extend(best or [d for d in found.digits if d.group == index])
    digits.sort(key=lambda d: d.box[0] + d.box[2] / 2)
    return Segmentation(digits, found.touching)


def _best_cut(
    model: Classifier, group: Touching, limits: Limits, index: int, ink_cut: int
) -> list[Digit] | None:
    mask, a, h = group.mask, group.ink, group.height
    cols = np.flatnonzero(mask.any(axis=0))
    x0, x1 = int(cols[0]), int(cols[-1]) + 1
    column_ink = np.where(mask, a, 0).sum(axis=0)
    positions = [x0, *_cut_candidates(column_ink, x0, x1, h), x1]
    spans: list[tuple[int, int]] = []
    crops: list[Digit] = []
    for i, j in itertools.combinations(range(len(positions)), 2):
        width = positions[j] - positions[i]
        if width > SPLIT_WIDTH * h and j > i + 1:
            continue
        part = mask.copy()
        part[:, : positions[i]] = False
        part[:, positions[j] :] = False
        if not part.any():
            continue
        spans.append((i, j))
        crops.append(_digit(part, a, group.scale, True, index))
    # The whole group, read as one digit, against the cuts (see _WHOLE_MARGIN).
    whole = _digit(mask, a, group.scale, False) if ink_cut <= 2 else None
    extra = [whole.crop] if whole is not None else []
    scores = _log_confidences(model, [d.crop for d in crops] + extra, limits)
    whole_score = scores.pop() if whole is not None else -math.inf
    # best[c][j]: the best score of a cut of [x0, positions[j]) into c parts; came: the
    # part that ends it.
    n = len(positions)
    best = [[-math.inf] * n for _ in range(n)]
    came: list[list[int | None]] = [[None] * n for _ in range(n)]
    best[0][0] = 0.0
    order = sorted(range(len(spans)), key=lambda k: spans[k][1])
    for c in range(1, n):
        for k in order:
            i, j = spans[k]
            total = best[c - 1][i] + scores[k] + _PART_BONUS
            if total > best[c][j]:
                best[c][j], came[c][j] = total, k
    lo, hi = max(_MIN_PARTS, ink_cut - _COUNT_SLACK), ink_cut + _COUNT_SLACK
    counts = [c for c in range(lo, min(hi + 1, n)) if math.isfinite(best[c][-1])]
    if not counts:
        return None
    c = max(counts, key=lambda c: best[c][-1])
    if whole is not None and whole_score > best[c][-1] - c * _PART_BONUS + _WHOLE_MARGIN:
        return [whole]
    out: list[Digit] = []
    j = n - 1
    while c:
        ending = came[c][j]
        assert ending is not None  # each (count, position) reached has the part that ends it
        out.append(crops[ending])
        j, c = spans[ending][0], c - 1
    return out[::-1]


def _cut_candidates(column_ink: np.ndarray, x0: int, x1: int, h: int) -> list[int]:
    """Columns to try cuts at: the least inked (paper first), each at least
    :data:`_MIN_PART` of ``h`` from the group's ends and from each other."""
    gap = max(1, round(_MIN_PART * h))
    inner = np.arange(x0 + gap, x1 - gap + 1)
    if inner.size == 0:
        return []
    chosen: list[int] = []
    limit = _CANDIDATES_PER_DIGIT * max(1, round((x1 - x0) / (TYPICAL_WIDTH * h)))
    for c in inner[np.argsort(column_ink[inner], kind="stable")]:
        if all(abs(int(c) - o) >= gap for o in chosen):
            chosen.append(int(c))
            if len(chosen) >= limit:
                break
    return sorted(chosen)


def _log_confidences(model: Classifier, crops: list[np.ndarray], limits: Limits) -> list[float]:
    """log(confidence) of the model's reading of each crop; -inf for a crop it refuses."""
    if not crops:
        return []
    judge = getattr(model, "judge", None)
    try:
        if judge is not None:
            # One batch through the network and the rejector: refused crops score -inf.
            # Classifying them one by one after a refusal spoiled the batch cost 20-60x the
            # time of the ink's cut, most of it the rejector's convolutions on single crops.
            batch = model.pre_process(crops, limits)  # type: ignore[attr-defined]
            judged = judge(batch, model.probabilities(batch))  # type: ignore[attr-defined]
            return [
                -math.inf if isinstance(j, NoDigit) else math.log(max(j.confidence, 1e-12))
                for j in judged
            ]
        return [math.log(max(p.confidence, 1e-12)) for p in model.classify(crops, limits=limits)]
    except ImageError:
        pass
    scores = []
    for crop in crops:  # one refused crop spoils the batch: the others are still scored
        try:
            (p,) = model.classify([crop], limits=limits)
            scores.append(math.log(max(p.confidence, 1e-12)))
        except ImageError:
            scores.append(-math.inf)
    return scores


def require_single(image: bytes | str | np.ndarray, limits: Limits = DEFAULT_LIMITS) -> None:
    """:class:`MultipleDigits` when ``image`` holds several digits with paper between them.

    Digits touching each other are not counted apart here (see :func:`find_digits`), and an
    image without ink passes: what to say about it is the pre-processing's business."""
    if isinstance(image, str):
        image = b64decode(image)
    try:
        ink = _ink(image, limits)
    except NoDigit:
        return
    # Counted without building each digit's mask and crop; only a refusal needs the boxes.
    if count_digits(ink) > 1:
        found = segment_ink(ink, scale=_scale(image, ink), split_touching=False)
        raise MultipleDigits(
            f"the image holds {len(found)} digits side by side, not one",
            found.boxes,
        )


def _size_as_sent(data: bytes, ink_shape: tuple[int, ...]) -> tuple[int, int]:
    """(width, height) of the image as its viewer shows it: decoding may have reduced it
    and turned it by its EXIF orientation."""
    with Image.open(io.BytesIO(data)) as img:
        w, h = img.size
    ink_h, ink_w = ink_shape[:2]
    # Turned by 90° when the sides' order differs (an orientation tag of 5-8).
    if (w > h) != (ink_w > ink_h) and w != h and ink_w != ink_h:
        w, h = h, w
    return w, h


def segment_ink(
    ink: np.ndarray, scale: tuple[float, float] = (1.0, 1.0), *, split_touching: bool = True
) -> Segmentation:
    """The digits of a 2-D ink map (float, ink = 1), left to right. ``scale`` (x, y) maps
    ink-map pixels to the image's for the boxes."""
    a, labels, kept = _strokes(ink)
    groups = _groups(labels, kept)
    masks = [np.isin(labels, kept[members] + 1) for members in groups]
    # The line's height: a short wide digit (a 2, a 7) beside taller ones is not two.
    line = max(int(np.ptp(np.flatnonzero(m.any(axis=1)))) + 1 for m in masks)
    digits: list[Digit] = []
    touching: list[Touching] = []
    for mask in masks:
        pieces = _split(mask, a, line) if split_touching else [(mask, False)]
        group = None
        if any(cut for _, cut in pieces):
            group = len(touching)
            touching.append(Touching(mask, a, line, scale))
        digits.extend(_digit(piece, a, scale, cut, group) for piece, cut in pieces)
    digits.sort(key=lambda d: d.box[0] + d.box[2] / 2)
    return Segmentation(digits, tuple(touching))


def count_digits(ink: np.ndarray) -> int:
    """How many digits :func:`segment_ink` finds in a 2-D ink map without cutting touching
    ones (``split_touching=False``), 0 for a blank one: the same grouping, without the
    masks and crops it builds for each digit (the single-digit check needs only the count)."""
    try:
        _, labels, kept = _strokes(ink)
    except NoDigit:
        return 0
    if len(kept) == 1:  # one stroke is one group, whatever _tidy makes of it
        return 1
    return len(_groups(labels, kept))


def _strokes(ink: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ink map with its background taken off, its strokes' 8-connected labels, and the
    indices of the components that are not specks, largest first."""
    a = np.asarray(ink, dtype=np.float32)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    # A border without ink has no background to take off: its median (14 µs, a tenth of
    # the single-digit check on a 28×28 digit) is only needed when some of it is inked.
    if border.max() > 0:
        background = float(np.median(border))
        if background > 0:
            a = np.clip(a - np.float32(background), 0.0, 1.0)
    peak = float(a.max())
    if peak <= 0:
        raise NoDigit("no digit found: the image is blank")
    labels, count = ndimage.label(a >= _CORE_FRACTION * peak, structure=_EIGHT_CONNECTED)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    kept = np.flatnonzero(sizes >= _SPECK_FRACTION * sizes.max())
    kept = kept[np.argsort(-sizes[kept], kind="stable")][:_MAX_COMPONENTS]
    return a, labels, kept


def _groups(labels: np.ndarray, kept: np.ndarray) -> list[list[int]]:
    """The kept components (indices into ``kept``) grouped into digits."""
    slices = ndimage.find_objects(labels)
    spans = [
        (slices[i][1].start, slices[i][1].stop, slices[i][0].start, slices[i][0].stop) for i in kept
    ]
    height = max(s[3] for s in spans) - min(s[2] for s in spans)
    return _tidy(_group(spans, MERGE_GAP * height), spans, labels.shape)


def _group(spans: list[tuple[int, int, int, int]], gap: float) -> list[list[int]]:
    """Indices of ``spans`` (x0, x1, y0, y1) grouped by columns that overlap or lie closer
    than ``gap``: one pass over the spans sorted by their left edge."""
    order = sorted(range(len(spans)), key=lambda i: spans[i][0])
    groups: list[list[int]] = []
    right = -math.inf
    for i in order:
        x0, x1 = spans[i][0], spans[i][1]
        if groups and x0 - right < gap:
            groups[-1].append(i)
            right = max(right, x1)
        else:
            groups.append([i])
            right = x1
    return groups


def _tidy(
    groups: list[list[int]], spans: list[tuple[int, int, int, int]], shape: tuple[int, ...]
) -> list[list[int]]:
    """Groups that are digits: not cut by the frame's edge (a desk's corner, a shadow, the
    sheet's edge) when any group is not, and at least :data:`_LOW` of the tallest one's
    height; a lower group joins its neighbour when it is as near as a digit's own broken
    stroke, else it is a mark (a dot, a dash), not a digit."""

    def box(group: list[int]) -> tuple[int, int, int, int]:
        return (
            min(spans[i][0] for i in group),
            max(spans[i][1] for i in group),
            min(spans[i][2] for i in group),
            max(spans[i][3] for i in group),
        )

    boxes = [box(g) for g in groups]
    h, w = shape[:2]
    inside = [b[0] > 0 and b[2] > 0 and b[1] < w and b[3] < h for b in boxes]
    if any(inside):
        groups = [g for g, keep in zip(groups, inside, strict=True) if keep]
        boxes = [b for b, keep in zip(boxes, inside, strict=True) if keep]
    groups = _join_stacked(groups, boxes)
    boxes = [box(g) for g in groups]
    tall = max(b[3] - b[2] for b in boxes)
    full = [i for i, b in enumerate(boxes) if b[3] - b[2] >= _LOW * tall]
    out = {i: list(groups[i]) for i in full}
    for i, b in enumerate(boxes):
        if i in out:
            continue
        gaps = {j: max(boxes[j][0] - b[1], b[0] - boxes[j][1]) for j in full}
        nearest = min(gaps, key=lambda j: gaps[j])
        if gaps[nearest] < _JOIN_GAP * tall:
            out[nearest].extend(groups[i])
    return [out[i] for i in full]


def _join_stacked(
    groups: list[list[int]], boxes: list[tuple[int, int, int, int]]
) -> list[list[int]]:
    """Neighbouring groups (left to right) one above the other, with no row in common, are
    pieces of one digit when together they are no wider than one digit: a slanted 1 or 7
    broken where a ruling was taken out. Digits of one line of writing share rows (a tilt
    of 30° still leaves neighbours half their height in common), so numbers keep them."""
    out: list[list[int]] = []
    last: tuple[int, int, int, int] | None = None
    for group, (x0, x1, y0, y1) in zip(groups, boxes, strict=True):
        if last is not None and (y0 >= last[3] or y1 <= last[2]):
            joined = (min(x0, last[0]), max(x1, last[1]), min(y0, last[2]), max(y1, last[3]))
            if joined[1] - joined[0] <= SPLIT_WIDTH * (joined[3] - joined[2]):
                out[-1] = out[-1] + group
                last = joined
                continue
        out.append(list(group))
        last = (x0, x1, y0, y1)
    return out


def _split(mask: np.ndarray, a: np.ndarray, h: int) -> list[tuple[np.ndarray, bool]]:
    """A group's mask as one digit, or cut into touching digits when it is too wide for
    one digit of the line's height ``h``."""
    cols = np.flatnonzero(mask.any(axis=0))
    x0, x1 = int(cols[0]), int(cols[-1] + 1)
    w = x1 - x0
    if w <= SPLIT_WIDTH * h:
        return [(mask, False)]
    k = max(2, round(w / (TYPICAL_WIDTH * h)))
    # Ink per column: the cut goes where the digits meet, the thinnest join.
    column_ink = np.where(mask, a, 0).sum(axis=0)
    step = w / k
    cuts = [x0]
    for j in range(1, k):
        centre = round(x0 + j * step)
        cut = _cut(column_ink, centre, round(_GAP_WINDOW * step), cuts[-1] + 1, x1 - 1)
        if cut is None:  # no room left: fewer parts
            continue
        cuts.append(cut)
    cuts.append(x1)
    out = []
    for left, right in itertools.pairwise(cuts):
        part = mask.copy()
        part[:, :left] = False
        part[:, right:] = False
        if part.any():
            out.append((part, True))
    return out


def _cut(column_ink: np.ndarray, centre: int, window: int, lo: int, hi: int) -> int | None:
    """Where to cut near ``centre``: paper between digits that stand close (a column
    without ink) within ``window``, the one nearest ``centre``; else the column of least
    ink within a narrower window (a wide window would cut through the hollow of a 0)."""
    lo, hi = max(lo, centre - window), min(hi, centre + window + 1)
    if hi <= lo:
        return None
    columns = range(lo, hi)
    empty = [c for c in columns if column_ink[c] == 0]
    if empty:
        return min(empty, key=lambda c: abs(c - centre))
    narrow = max(1, round(window * _INK_WINDOW / _GAP_WINDOW))
    near = range(max(lo, centre - narrow), min(hi, centre + narrow + 1)) or columns
    # Least ink, and of equal ones the nearest to the even split.
    return min(near, key=lambda c: (column_ink[c], abs(c - centre)))


def _digit(
    mask: np.ndarray,
    a: np.ndarray,
    scale: tuple[float, float],
    touching: bool,
    group: int | None = None,
) -> Digit:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    # The soft rim around the core strokes belongs to the digit too.
    near = ndimage.binary_dilation(mask[y0:y1, x0:x1], iterations=2)
    margin = max(2, round(_MARGIN * max(y1 - y0, x1 - x0)))
    crop = np.zeros((y1 - y0 + 2 * margin, x1 - x0 + 2 * margin), dtype=np.float32)
    crop[margin:-margin, margin:-margin] = np.where(near, a[y0:y1, x0:x1], 0)
    sx, sy = scale
    box = (
        math.floor(x0 * sx),
        math.floor(y0 * sy),
        max(1, math.ceil((x1 - x0) * sx)),
        max(1, math.ceil((y1 - y0) * sy)),
    )
    return Digit(box=box, ink=crop, touching=touching, group=group)
