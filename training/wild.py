"""Accuracy on "real world" variants of MNIST test digits: the pipeline against a naive resize.

The naive baseline is what the seed did (decode, greyscale, resize to 28×28, scale to
[0, 1]); it is a yardstick for this report, not a pre-processing path of the product.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from pyfunc.errors import ImageError
from pyfunc.model import Prediction
from training.variants import VARIANTS

CHUNK = 256
# The service flags answers below this confidence (serving's low_confidence_threshold):
# a wrong answer at or above it reaches the user as if it were right.
CONFIDENT = 0.5


@dataclass(frozen=True)
class Row:
    variant: str
    images: int
    naive: float
    pipeline: float
    # Share of the images answered wrongly with confidence >= CONFIDENT (a refusal is not).
    confident_wrong: float = 0.0


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


def _answers(model: Any, chunk: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Predicted digits and their confidence; digit -1 (confidence 0) where the pipeline
    refused the image (a refusal is a miss, never a confident one)."""
    predictions: list[Prediction | None]
    try:
        predictions = list(model.classify(chunk))
    except ImageError:
        predictions = []
        for image in chunk:
            try:
                predictions.append(model.classify([image])[0])
            except ImageError:
                predictions.append(None)
    digits = np.array([-1 if p is None else p.digit for p in predictions])
    confidence = np.array([0.0 if p is None else p.confidence for p in predictions])
    return digits, confidence


def pipeline_scores(model: Any, encoded: Sequence[bytes], y: np.ndarray) -> tuple[float, float]:
    """Accuracy and the share answered wrongly with confidence >= :data:`CONFIDENT`."""
    hits = confident_wrong = 0
    for start in range(0, len(encoded), CHUNK):
        digits, confidence = _answers(model, encoded[start : start + CHUNK])
        right = digits == y[start : start + CHUNK]
        hits += int(right.sum())
        confident_wrong += int((~right & (digits >= 0) & (confidence >= CONFIDENT)).sum())
    return hits / len(encoded), confident_wrong / len(encoded)


def pipeline_accuracy(model: Any, encoded: Sequence[bytes], y: np.ndarray) -> float:
    return pipeline_scores(model, encoded, y)[0]


def naive_applies(model: Any) -> bool:
    """The naive batch is 28×28×1 in [0, 1]: only a family taking MNIST-normalised 28×28×1
    can be fed one (the contract's ``input_spec``; objects without one are the Keras CNN)."""
    spec = getattr(model, "input_spec", None)
    if spec is None:
        return True
    return (spec.height, spec.width, spec.channels, spec.normalisation) == (28, 28, 1, "mnist")


def naive_accuracy(model: Any, encoded: Sequence[bytes], y: np.ndarray) -> float:
    """Accuracy of the naive resize fed to the model's network; NaN for a family whose
    network takes another input (see :func:`naive_applies`)."""
    if not naive_applies(model):
        return float("nan")
    hits = 0
    for start in range(0, len(encoded), CHUNK):
        probs = model.probabilities(naive_batch(encoded[start : start + CHUNK]))
        hits += int((probs.argmax(axis=1) == y[start : start + CHUNK]).sum())
    return hits / len(encoded)


def evaluate_variants(
    model: Any, x: np.ndarray, y: np.ndarray, variants: Iterable[str] | None = None
) -> list[Row]:
    return [
        Row(name, len(y), naive_accuracy(model, encoded, y), *pipeline_scores(model, encoded, y))
        for name, encoded in build_sets(x, variants).items()
    ]


def markdown(rows: list[Row]) -> str:
    lines = [
        "| variant | images | naive resize | this pipeline | confidently wrong |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.variant} | {r.images} | {_pct(r.naive)} | {100 * r.pipeline:.2f} % "
        f"| {100 * r.confident_wrong:.2f} % |"
        for r in rows
    ]
    return "\n".join(lines)


def _pct(share: float) -> str:
    return "–" if np.isnan(share) else f"{100 * share:.2f} %"
