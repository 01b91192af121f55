"""The held-out evidence models are compared on: the same images for every model and family.

Three kinds of image, none of them ever trained on:

- ``mnist_test``: all of MNIST's test split, as arrays;
- ``validation``: the tail of the training split that training holds out (as arrays);
- one set per real-world variant (``training.variants``: paper, canvas, strokes, rotation,
  photos, ...) except ``clean`` (the test digits as PNGs again): ``per_variant`` encoded
  renderings of test digits drawn with a fixed seed, a different draw of digits for each
  variant while there are enough, each digit rendered with its index as the seed.

A model is scored through the digit-model contract alone (``pre_process`` and
``probabilities`` of the loaded pyfunc), so every family is scored alike. Per image the
outcome is "the top answer is the label"; an image the pre-processing refuses is wrong.
Images not answered are counted apart (``refused``: the pre-processing found no digit, or
the rejector refused it): the rejector is a separate part of a version, and a family
without one would otherwise look better for answering everything.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from pyfunc.errors import ImageError, NoDigit
from training.data import VALIDATION_SPLIT, Mnist, validation_size

PER_VARIANT = 500
SEED = 19
CHUNK = 256
# Sets of arrays first, then the variants, in VARIANTS' order.
ARRAY_SETS = ("mnist_test", "validation")
# Rendering and pre-processing code: a change to it changes the images, so cached scores
# (training.leaderboard) name it in their fingerprint.
_ROOT = Path(__file__).resolve().parent.parent
_SOURCES = ("training/variants.py", "training/photos.py", "training/evidence.py", "pyfunc")


def gate_variants() -> list[str]:
    """Every evaluated variant but ``clean`` (MNIST test already holds those digits)."""
    from training.variants import VARIANTS

    return [name for name in VARIANTS if name != "clean"]


@dataclass(frozen=True)
class Outcomes:
    """Per image of one set: top answer right, and not answered (no digit, or refused)."""

    right: np.ndarray
    refused: np.ndarray

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.right)) if len(self.right) else math.nan

    @property
    def refused_share(self) -> float:
        return float(np.mean(self.refused)) if len(self.refused) else math.nan


@dataclass
class Evidence:
    """Which images and labels, built lazily: the variants are rendered on first use."""

    data: Mnist
    per_variant: int = PER_VARIANT
    seed: int = SEED
    variants: Sequence[str] = field(default_factory=gate_variants)
    validation_split: float = VALIDATION_SPLIT

    @cached_property
    def validation(self) -> tuple[np.ndarray, np.ndarray]:
        n_val = validation_size(len(self.data.x_train), self.validation_split)
        return self.data.x_train[len(self.data.x_train) - n_val :], self.data.y_train[
            len(self.data.y_train) - n_val :
        ]

    @cached_property
    def draws(self) -> dict[str, np.ndarray]:
        """Test-digit indices per variant: consecutive slices of one seeded permutation, so
        the variants use different digits while 10,000 go round."""
        n_test = len(self.data.x_test)
        if not self.per_variant or not n_test:
            return {name: np.arange(0) for name in self.variants}
        rng = np.random.default_rng(self.seed)
        need = self.per_variant * len(self.variants)
        order = np.concatenate([rng.permutation(n_test) for _ in range(-(-need // n_test))])
        return {
            name: order[i * self.per_variant : (i + 1) * self.per_variant]
            for i, name in enumerate(self.variants)
        }

    def names(self) -> list[str]:
        return [*ARRAY_SETS, *self.variants]

    def labels(self, name: str) -> np.ndarray:
        if name == "mnist_test":
            return self.data.y_test
        if name == "validation":
            return self.validation[1]
        return self.data.y_test[self.draws[name]]

    def images(self, name: str) -> np.ndarray | list[bytes]:
        if name == "mnist_test":
            return self.data.x_test
        if name == "validation":
            return self.validation[0]
        return self.rendered[name]

    @cached_property
    def rendered(self) -> dict[str, list[bytes]]:
        """Encoded images per variant, built once so every model sees the very same bytes."""
        from training.variants import VARIANTS

        return {
            name: [VARIANTS[name](self.data.x_test[i], int(i)) for i in self.draws[name]]
            for name in self.variants
        }

    def sizes(self) -> dict[str, int]:
        return {name: len(self.labels(name)) for name in self.names()}

    @cached_property
    def fingerprint(self) -> str:
        """Changes whenever the images or labels would: the settings, the digits drawn and
        the rendering and pre-processing code (cheap: nothing is rendered)."""
        digest = hashlib.sha256()
        settings = {
            "per_variant": self.per_variant,
            "seed": self.seed,
            "variants": list(self.variants),
            "validation_split": self.validation_split,
        }
        digest.update(json.dumps(settings, sort_keys=True).encode())
        for name in ARRAY_SETS:
            digest.update(np.ascontiguousarray(self.images(name)).tobytes())
            digest.update(np.ascontiguousarray(self.labels(name)).tobytes())
        for name in self.variants:
            digest.update(np.ascontiguousarray(self.draws[name]).tobytes())
        for path in _source_files():
            digest.update(path.relative_to(_ROOT).as_posix().encode())
            digest.update(path.read_bytes())
        return digest.hexdigest()[:16]


def _source_files() -> list[Path]:
    files: list[Path] = []
    for source in _SOURCES:
        path = _ROOT / source
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


def score(
    model: Any, evidence: Evidence, names: Iterable[str] | None = None
) -> dict[str, Outcomes]:
    """Per set: the outcomes of ``model`` (any family's loaded pyfunc) on every image."""
    return {
        name: outcomes(model, evidence.images(name), evidence.labels(name))
        for name in (names or evidence.names())
    }


def outcomes(model: Any, images: np.ndarray | Sequence[Any], labels: np.ndarray) -> Outcomes:
    right = np.zeros(len(labels), bool)
    refused = np.zeros(len(labels), bool)
    for start in range(0, len(labels), CHUNK):
        stop = min(start + CHUNK, len(labels))
        digits, rejected = _answers(model, images[start:stop])
        right[start:stop] = digits == labels[start:stop]
        refused[start:stop] = rejected
    return Outcomes(right, refused)


def _answers(model: Any, chunk: np.ndarray | Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Top digit (-1 where pre-processing refused the image) and the rejector's verdict."""
    rows = _pre_process_rows(model, chunk)
    kept = [i for i, row in enumerate(rows) if not isinstance(row, ImageError)]
    digits = np.full(len(rows), -1)
    rejected = np.ones(len(rows), bool)
    if kept:
        batch = np.stack([rows[i] for i in kept])
        probs = model.probabilities(batch)
        digits[kept] = np.asarray(probs).argmax(axis=1)
        judge: Callable[..., list[Any]] | None = getattr(model, "judge", None)
        if judge is not None:
            rejected[kept] = [isinstance(j, NoDigit) for j in judge(batch, probs)]
        else:
            rejected[kept] = False
    return digits, rejected


def _pre_process_rows(model: Any, chunk: np.ndarray | Sequence[Any]) -> list[Any]:
    """The batch at once, or image by image when one of them is refused."""
    try:
        return list(model.pre_process(chunk))
    except ImageError:
        pass
    rows: list[Any] = []
    for image in chunk:
        try:
            rows.append(model.pre_process([image])[0])
        except ImageError as exc:
            rows.append(exc)
    return rows
