"""``python -m training.numbers``: how well the service reads numbers, measured.

Numbers of 2-6 digits are composed from MNIST digits (the validation split to choose the
segmentation's thresholds, the test split to measure once), with the gap between digits
from wide to touching, written on plain paper (a PNG scan) or photographed on ruled,
squared or plain paper (the camera of :mod:`training.photos`). Each is read the way
``POST /read`` reads it (:func:`pyfunc.segment.read_number`) and counts only when the whole
number is exact. Pillow, numpy and the model: TensorFlow only as the model's runtime.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pyfunc.errors import ImageError, MultipleDigits
from pyfunc.segment import read_number, require_single
from training import photos
from training.data import VALIDATION_SPLIT, load_mnist, validation_size
from training.variants import VARIANTS, encode

# Gap between neighbouring digits' ink boxes, in pixels of the 28-px MNIST scale (a digit's
# ink is about 20 px tall). "touching": the boxes overlap until the strokes meet.
SPACINGS: dict[str, tuple[float, float]] = {
    "wide": (8.0, 14.0),
    "normal": (3.0, 7.0),
    "close": (1.0, 2.5),
    "touching": (-4.0, -1.0),
}
STYLES = ("plain", "photo")
LENGTHS = (2, 3, 4, 5, 6)
_SCALE = 3  # plain scans: the composed strip drawn three times as large


@dataclass(frozen=True)
class Number:
    text: str
    image: bytes
    spacing: str
    style: str
    # The MNIST digits it is written with (indices into the split's arrays).
    indices: tuple[int, ...] = ()


def _ink_box(digit: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(digit.max(axis=1) > 0)
    cols = np.flatnonzero(digit.max(axis=0) > 0)
    return digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def compose(digits: Sequence[np.ndarray], spacing: str, rng: np.random.Generator) -> np.ndarray:
    """MNIST digits (28×28 uint8, white on black) side by side -> one uint8 strip, white
    ink on black, at MNIST's scale, with a margin. Touching digits are moved together until
    their strokes meet (ink is combined by its maximum, as one pen would draw it)."""
    lo, hi = SPACINGS[spacing]
    crops = [_ink_box(np.asarray(d)) for d in digits]
    height = max(c.shape[0] for c in crops) + 6
    margin = 10
    width = sum(c.shape[1] for c in crops) + int(hi + 2) * len(crops) + 2 * margin
    strip = np.zeros((height + 2 * margin, width), dtype=np.uint8)
    x = margin
    for i, crop in enumerate(crops):
        h, w = crop.shape
        y = margin + (height - h) // 2 + int(rng.integers(-2, 3))
        y = min(max(0, y), strip.shape[0] - h)
        if i and spacing == "touching":
            x = _touch(strip, crop, x, y, int(rng.integers(1, 4)))
        region = strip[y : y + h, x : x + w]
        np.maximum(region, crop, out=region)
        gap = rng.uniform(lo, hi)
        x += w + (round(gap) if spacing != "touching" else 0)
    cols = np.flatnonzero(strip.max(axis=0) > 0)
    return strip[:, : cols[-1] + 1 + margin]


def _touch(strip: np.ndarray, crop: np.ndarray, x: int, y: int, overlap: int) -> int:
    """The left edge for ``crop`` at which its ink meets the strip's by ``overlap`` pixels;
    digits whose strokes do not meet within a third of its width are left that close."""
    h, w = crop.shape
    ink = crop > 64
    furthest = max(0, x - w // 3)
    for left in range(x, furthest, -1):
        placed = strip[y : y + h, left : left + w] > 64
        if (placed & ink[:, : placed.shape[1]]).sum() >= overlap:
            return left
    return furthest


def plain(strip: np.ndarray) -> bytes:
    """Dark ink on white paper, drawn three times as large: a scan or a screenshot, PNG."""
    big = Image.fromarray(strip).resize(
        (strip.shape[1] * _SCALE, strip.shape[0] * _SCALE), Image.Resampling.BICUBIC
    )
    return encode(Image.fromarray(255 - np.asarray(big)), "PNG")


def photo(strip: np.ndarray, rng: np.random.Generator) -> bytes:
    """The number written on plain, ruled or squared paper and photographed (the scene and
    camera of :mod:`training.photos`: pen colours, tilt, uneven light, blur, noise, JPEG)."""
    digit_box = photos._u(rng, 40, 80)  # a digit's 20 px drawn this many pixels tall
    factor = digit_box / 20
    cover = Image.fromarray(strip).resize(
        (max(8, round(strip.shape[1] * factor)), max(8, round(strip.shape[0] * factor))),
        Image.Resampling.BICUBIC,
    )
    coverage = np.asarray(cover, np.float32) / 255
    ch, cw = coverage.shape
    w, h = cw + int(rng.integers(60, 200)), ch + int(rng.integers(60, 160))
    pad = 24
    kind = rng.random()
    if kind < 0.6:
        spacing = photos._u(rng, 14, 24) if kind < 0.3 else photos._u(rng, 10, 18)
        sheet = photos._ruled_sheet(rng, h + 2 * pad, w + 2 * pad, spacing, grid=kind >= 0.3)
    else:
        paper = photos._paper_colour(rng)
        sheet = np.broadcast_to(paper, (h + 2 * pad, w + 2 * pad, 3)).astype(np.float32)
    centre = (pad + w / 2 + photos._u(rng, -0.1, 0.1) * w, pad + h / 2)
    pen = photos._colour(rng, photos._pick(rng))
    photos._draw_ink(sheet, coverage * np.float32(photos._u(rng, 0.85, 1.0)), centre, pen)
    return photos._camera(rng, photos._tilted(rng, sheet, (w, h), 3.0), light=0.25)


def numbers(
    x: np.ndarray,
    y: np.ndarray,
    length: int,
    spacing: str,
    style: str,
    count: int,
    seed: int,
) -> list[Number]:
    """``count`` numbers of ``length`` digits drawn from ``x``/``y`` (reproducible by seed)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        idx = rng.choice(len(x), size=length, replace=False)
        strip = compose([x[i] for i in idx], spacing, rng)
        image = plain(strip) if style == "plain" else photo(strip, rng)
        text = "".join(str(int(y[i])) for i in idx)
        out.append(Number(text, image, spacing, style, tuple(int(i) for i in idx)))
    return out


@dataclass(frozen=True)
class Cell:
    length: int
    spacing: str
    style: str
    exact: int
    count_right: int
    total: int
    # Numbers whose every digit the model reads right when it is sent alone, as the MNIST
    # array it is: what a perfect segmentation would read ...
    alone_right: int = 0
    # ... and those read with the right count but a digit wrong that it reads right alone.
    lost_by_crop: int = 0


@dataclass(frozen=True)
class Score:
    exact: int
    count_right: int
    # Numbers read with the right count of digits but a digit wrong that the model reads
    # right alone: the cut or the crop's framing lost it, not the model.
    lost_by_crop: int


def measure(
    model, items: Sequence[Number], alone: np.ndarray | None = None, *, recut: bool = True
) -> Score:
    """How ``items`` are read. ``alone``: the model's digit for each MNIST digit sent on
    its own (indexed as :attr:`Number.indices`), to tell crops from the model's own
    misreadings. ``recut``: as :func:`pyfunc.segment.read_number`'s."""
    exact = count_right = lost = 0
    for item in items:
        try:
            read = read_number(model, item.image, recut=recut)
        except ImageError:
            continue
        text = "".join(str(p.digit) for _, p in read)
        exact += text == item.text
        count_right += len(text) == len(item.text)
        if alone is not None and len(text) == len(item.text) and text != item.text:
            truth = [int(c) for c in item.text]
            got = [int(c) for c in text]
            lost += any(
                g != t and alone[i] == t for g, t, i in zip(got, truth, item.indices, strict=True)
            )
    return Score(exact, count_right, lost)


def read_alone(model, x: np.ndarray) -> np.ndarray:
    """The model's digit for each of ``x`` (MNIST arrays) sent alone (its rejector, if it
    has one, is not asked: a digit it would refuse still has a reading)."""
    out = [
        model.probabilities(model.pre_process(x[start : start + 1000])).argmax(axis=1)
        for start in range(0, len(x), 1000)
    ]
    return np.concatenate(out)


def false_multiple(x: np.ndarray, per_variant: int) -> list[tuple[str, int, int]]:
    """(variant, refused as multiple_digits, images) for single digits: all of ``x`` as
    they are (clean arrays), and the first ``per_variant`` of ``x`` in every wild variant
    (:data:`training.variants.VARIANTS`, photos included), as /recognize would judge them."""

    def refused(image: bytes | np.ndarray) -> bool:
        try:
            require_single(image)
        except MultipleDigits:
            return True
        except ImageError:  # refused for another reason: not this one's false alarm
            return False
        return False

    rows = [("MNIST as arrays", sum(refused(d) for d in x), len(x))]
    for name, build in VARIANTS.items():
        chosen = x[:per_variant]
        rows.append((name, sum(refused(build(d, i)) for i, d in enumerate(chosen)), len(chosen)))
    return rows


def markdown(cells: Sequence[Cell]) -> str:
    lines = [
        "| digits | spacing | paper | exact | right count of digits | every digit right alone "
        "| numbers |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        lines.append(
            f"| {c.length} | {c.spacing} | {c.style} | {100 * c.exact / c.total:.1f} % "
            f"| {100 * c.count_right / c.total:.1f} % | {100 * c.alone_right / c.total:.1f} % "
            f"| {c.total} |"
        )
    return "\n".join(lines)


def breakdown(cells: Sequence[Cell]) -> str:
    """Where the numbers of ``cells`` that are not read exactly went wrong."""
    total = sum(c.total for c in cells)
    wrong = total - sum(c.exact for c in cells)
    count = total - sum(c.count_right for c in cells)
    crop = sum(c.lost_by_crop for c in cells)
    return (
        f"{wrong} of {total} not exact: {count} with the wrong count of digits (segmentation), "
        f"{crop} with a digit misread that the model reads right alone (the cut or the crop), "
        f"{wrong - count - crop} with digits the model misreads alone too"
    )


def summary(cells: Sequence[Cell], lengths: Sequence[int], spacings: Sequence[str]) -> str:
    chosen = [c for c in cells if c.length in lengths and c.spacing in spacings]
    exact = sum(c.exact for c in chosen)
    total = sum(c.total for c in chosen)
    return f"{exact}/{total} = {100 * exact / max(1, total):.2f} % exact"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-uri", default="models:/digits/Production")
    parser.add_argument("--split", choices=("validation", "test"), default="validation")
    parser.add_argument("--count", type=int, default=100, help="numbers per table cell")
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    parser.add_argument("--spacings", default=",".join(SPACINGS))
    parser.add_argument("--styles", default=",".join(STYLES))
    parser.add_argument("--data-path", default=os.environ.get("MNIST_PATH", ""))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--recut",
        choices=("true", "false"),
        default="true",
        help="false: touching digits cut by their ink alone, not re-cut with the model",
    )
    parser.add_argument(
        "--false-multiple",
        type=int,
        metavar="PER_VARIANT",
        default=0,
        help="instead: how often single digits are refused as multiple_digits (no model)",
    )
    args = parser.parse_args(argv)

    import mlflow

    data = load_mnist(args.data_path or None)
    if args.split == "test":
        x, y = data.x_test, data.y_test
    else:
        n_val = validation_size(len(data.x_train), VALIDATION_SPLIT)
        x, y = data.x_train[-n_val:], data.y_train[-n_val:]
    if args.false_multiple:
        rows = false_multiple(x, args.false_multiple)
        print("| single digits | refused as multiple_digits | images | rate |")
        print("|---|---|---|---|")
        for name, bad, n in rows:
            print(f"| {name} | {bad} | {n} | {100 * bad / n:.2f} % |")
        bad, n = sum(r[1] for r in rows), sum(r[2] for r in rows)
        print(f"| all | {bad} | {n} | {100 * bad / n:.3f} % |")
        return 0
    model = mlflow.pyfunc.load_model(args.model_uri).unwrap_python_model()
    alone = read_alone(model, x)
    print(f"the model alone: {100 * float(np.mean(alone == y)):.2f} % of the split's digits")
    cells = []
    lengths = [int(n) for n in args.lengths.split(",")]
    spacings = args.spacings.split(",")
    for style in args.styles.split(","):
        for spacing in spacings:
            for length in lengths:
                seed = args.seed + 1000 * length + 100 * list(SPACINGS).index(spacing)
                seed += 10 * STYLES.index(style)
                items = numbers(x, y, length, spacing, style, args.count, seed)
                score = measure(model, items, alone, recut=args.recut == "true")
                right = sum(all(alone[i] == y[i] for i in item.indices) for item in items)
                cells.append(
                    Cell(
                        length,
                        spacing,
                        style,
                        score.exact,
                        score.count_right,
                        len(items),
                        right,
                        score.lost_by_crop,
                    )
                )
                print(
                    f"{style} {spacing} {length}: {score.exact}/{len(items)} exact, "
                    f"{score.count_right} right count, {right} right alone",
                    file=sys.stderr,
                    flush=True,
                )
    print(markdown(cells))
    separate = [s for s in spacings if s != "touching"]
    print()
    print(f"2-4 digits, not touching: {summary(cells, [2, 3, 4], separate)}")
    chosen = [c for c in cells if c.length in (2, 3, 4) and c.spacing in separate]
    print(f"  {breakdown(chosen)}")
    print(f"2-6 digits, touching: {summary(cells, lengths, ['touching'])}")
    print(f"all: {summary(cells, lengths, spacings)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
