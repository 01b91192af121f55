"""Accuracy on "real world" variants of MNIST test digits: the pipeline against a naive resize.

The naive baseline is what the seed did (decode, greyscale, resize to 28×28, scale to
[0, 1]); it is a yardstick for this report, not a pre-processing path of the product.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pyfunc.errors import ImageError
from pyfunc.model import DigitModel
from training.variants import VARIANTS

CHUNK = 256


@dataclass(frozen=True)
class Row:
    variant: str
    images: int
    naive: float
    pipeline: float


def build_sets(x: np.ndarray, variants: Iterable[str] | None = None) -> dict[str, list[bytes]]:
    """Encoded images per variant, built once so several models see the very same bytes."""
    return {
        name: [VARIANTS[name](digit, i) for i, digit in enumerate(x)]
        for name in (variants or VARIANTS)
    }


def naive_batch(encoded: Iterable[bytes]) -> np.ndarray:
    """The seed's approach: no polarity, no cropping, no centring."""
    arrays = []
    for data in encoded:
        with Image.open(io.BytesIO(data)) as img:
            grey = img.convert("L").resize((28, 28), Image.Resampling.BILINEAR)
        arrays.append(np.asarray(grey, dtype=np.float32) / 255.0)
    return np.stack(arrays)[..., None]


def _digits(model: DigitModel, chunk: Sequence[bytes]) -> np.ndarray:
    """Predicted digits; -1 where the pipeline refused the image (a refusal is a miss)."""
    try:
        return np.array([p.digit for p in model.classify(chunk)])
    except ImageError:
        digits = []
        for image in chunk:
            try:
                digits.append(model.classify([image])[0].digit)
            except ImageError:
                digits.append(-1)
        return np.array(digits)


def pipeline_accuracy(model: DigitModel, encoded: Sequence[bytes], y: np.ndarray) -> float:
    hits = 0
    for start in range(0, len(encoded), CHUNK):
        digits = _digits(model, encoded[start : start + CHUNK])
        hits += int((digits == y[start : start + CHUNK]).sum())
    return hits / len(encoded)


def naive_accuracy(model: DigitModel, encoded: Sequence[bytes], y: np.ndarray) -> float:
    hits = 0
    for start in range(0, len(encoded), CHUNK):
        probs = model.probabilities(naive_batch(encoded[start : start + CHUNK]))
        hits += int((probs.argmax(axis=1) == y[start : start + CHUNK]).sum())
    return hits / len(encoded)


def evaluate_variants(
    model: DigitModel, x: np.ndarray, y: np.ndarray, variants: Iterable[str] | None = None
) -> list[Row]:
    return [
        Row(name, len(y), naive_accuracy(model, encoded, y), pipeline_accuracy(model, encoded, y))
        for name, encoded in build_sets(x, variants).items()
    ]


def markdown(rows: list[Row]) -> str:
    lines = [
        "| variant | images | naive resize | this pipeline |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r.variant} | {r.images} | {100 * r.naive:.2f} % | {100 * r.pipeline:.2f} % |"
        for r in rows
    ]
    return "\n".join(lines)
