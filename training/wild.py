"""Accuracy on "real world" variants of MNIST test digits: the pipeline against a naive resize.

The naive baseline is what the seed did (decode, greyscale, resize to 28×28, scale to
[0, 1]); it is a yardstick for this report, not a pre-processing path of the product.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pyfunc.model import DigitModel
from training.variants import VARIANTS

CHUNK = 256


@dataclass(frozen=True)
class Row:
    variant: str
    images: int
    naive: float
    pipeline: float


def naive_batch(encoded: Iterable[bytes]) -> np.ndarray:
    """The seed's approach: no polarity, no cropping, no centring."""
    arrays = []
    for data in encoded:
        with Image.open(io.BytesIO(data)) as img:
            grey = img.convert("L").resize((28, 28), Image.Resampling.BILINEAR)
        arrays.append(np.asarray(grey, dtype=np.float32) / 255.0)
    return np.stack(arrays)[..., None]


def evaluate_variants(
    model: DigitModel, x: np.ndarray, y: np.ndarray, variants: Iterable[str] | None = None
) -> list[Row]:
    rows = []
    for name in variants or VARIANTS:
        build = VARIANTS[name]
        naive_hits = pipeline_hits = 0
        for start in range(0, len(x), CHUNK):
            xs, ys = x[start : start + CHUNK], y[start : start + CHUNK]
            encoded = [build(digit, start + i) for i, digit in enumerate(xs)]
            naive = model.probabilities(naive_batch(encoded)).argmax(axis=1)
            ours = np.array([p.digit for p in model.classify(encoded)])
            naive_hits += int((naive == ys).sum())
            pipeline_hits += int((ours == ys).sum())
        rows.append(Row(name, len(x), naive_hits / len(x), pipeline_hits / len(x)))
    return rows


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
