"""Saying "I can't read this": which normalised images hold no digit.

The network answers one of ten digits for anything, and its softmax is as sure of a printed
"A" as of many real digits. A second, much smaller convolutional network looks at the same
normalised 28×28 image, together with the first network's probabilities in decreasing order
(how sure it is, not of which digit), and scores how unlike a handwritten digit it is; above
a threshold chosen on held-out digits the image is refused with ``no_digit``. The rule, its
training data and the curve it was chosen on are in ``docs/rejection.md``.

It is trained with Keras when a version is registered (``training.rejector``) and stored as
plain weight arrays in an ``.npz`` artifact of that version, run here in numpy: two small
convolutions and two dense layers are a few lines, and load without unpickling anything.

Versions logged by this code also carry the network's ONNX graph with the rejector
appended (``training.rejector_onnx``, artifact :data:`SCORED_ARTIFACT`): one ONNX Runtime
call then gives the probabilities and P(no digit) together, and the numpy rejector is only
the fallback for probabilities that did not come from that call (:class:`PassScores`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pyfunc.errors import NoDigit

REJECT_ARTIFACT = "rejector"
FORMAT = 2
# The network's ONNX graph with the rejector inside: its outputs are the network's
# probabilities, then SCORE_OUTPUT, P(no digit) ``(N, 1)`` float32.
SCORED_ARTIFACT = "onnx_model_scored"
SCORE_OUTPUT = "not_digit_score"


def ranked(probs: np.ndarray) -> np.ndarray:
    """The network's probabilities per image in decreasing order, ``(N, 10)`` float32."""
    return -np.sort(-np.asarray(probs, dtype=np.float32), axis=1)


def _conv_relu(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Keras Conv2D, 'valid' padding, stride 1, channels last, ReLU.

    As one matrix product over the image's 3×3 patches (im2col): ``np.einsum`` over a
    sliding-window view gave the same numbers at five times the CPU for one image, most of
    it choosing its contraction path on every call."""
    kh, kw, channels, out = kernel.shape
    n, h, w, _ = x.shape
    oh, ow = h - kh + 1, w - kw + 1
    patches = np.empty((n, oh, ow, kh, kw, channels), dtype=np.float32)
    for i in range(kh):
        for j in range(kw):
            patches[:, :, :, i, j, :] = x[:, i : i + oh, j : j + ow, :]
    flat = patches.reshape(-1, kh * kw * channels) @ kernel.reshape(kh * kw * channels, out)
    return np.maximum(flat.reshape(n, oh, ow, out) + bias, 0.0)


def _pool2(x: np.ndarray) -> np.ndarray:
    """Keras MaxPooling2D(2): 2×2 blocks, an odd last row/column dropped. The maximum of
    four strided views (a reshape and ``max`` over two axes cost three to five times as
    much)."""
    _, h, w, _ = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    return np.maximum(
        np.maximum(x[:, 0::2, 0::2], x[:, 1::2, 0::2]),
        np.maximum(x[:, 0::2, 1::2], x[:, 1::2, 1::2]),
    )


class Refused(NoDigit):
    """A decodable image with marks the rejector does not read as a digit."""

    def __init__(self, score: float, threshold: float | None = None) -> None:
        above = f", refused above {threshold:.2f}" if threshold is not None else ""
        super().__init__(
            "no handwritten digit recognised: the image has marks, but they do not look like "
            f"a digit (not-a-digit score {score:.2f}{above})"
        )
        self.not_digit_score = score


@dataclass(frozen=True)
class Rejector:
    """Conv(3×3)+ReLU+MaxPool(2) blocks on the image, then dense ReLU layers on the
    flattened features joined with the ranked probabilities, a logistic output scoring
    P(no digit), and the score above which an image is refused."""

    convs: tuple[tuple[np.ndarray, np.ndarray], ...]  # (kernel (3, 3, in, out), bias)
    dense: tuple[tuple[np.ndarray, np.ndarray], ...]  # (weights (in, out), bias); last: 1 out
    threshold: float

    def scores(self, batch: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """P(no digit) per image of a normalised ``(N, 28, 28, 1)`` batch, ``(N,)``."""
        h = np.asarray(batch, dtype=np.float32)
        for kernel, bias in self.convs:
            h = _pool2(_conv_relu(h, kernel, bias))
        h = np.concatenate([h.reshape(len(h), -1), ranked(probs)], axis=1)
        for w, b in self.dense[:-1]:
            h = np.maximum(h @ w + b, 0.0)
        w, b = self.dense[-1]
        z = (h @ w + b)[:, 0].astype(np.float64)
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))

    def refusals(self, batch: np.ndarray, probs: np.ndarray) -> list[Refused | None]:
        """For each image the refusal it gets, or None when it reads as a digit."""
        return self.refusals_for(self.scores(batch, probs))

    def refusals_for(self, scores: np.ndarray) -> list[Refused | None]:
        return [Refused(float(s), self.threshold) if s > self.threshold else None for s in scores]

    def with_threshold(self, threshold: float) -> Rejector:
        return Rejector(self.convs, self.dense, float(threshold))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        arrays: dict[str, np.ndarray] = {}
        for kind, layers in (("conv", self.convs), ("dense", self.dense)):
            for i, (w, b) in enumerate(layers):
                arrays[f"{kind}{i}_w"], arrays[f"{kind}{i}_b"] = w, b
        np.savez(
            path,
            format=np.int64(FORMAT),
            convs=np.int64(len(self.convs)),
            dense=np.int64(len(self.dense)),
            threshold=np.float64(self.threshold),
            # mypy matches **arrays against allow_pickle: bool too; every key is a layer's.
            **arrays,  # type: ignore[arg-type]
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> Rejector:
        with np.load(path, allow_pickle=False) as z:
            if int(z["format"]) != FORMAT:
                raise ValueError(f"{path}: rejector format {int(z['format'])}, expected {FORMAT}")

            def layers(kind: str) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
                return tuple(
                    (z[f"{kind}{i}_w"].astype(np.float32), z[f"{kind}{i}_b"].astype(np.float32))
                    for i in range(int(z[f"{kind}s" if kind == "conv" else kind]))
                )

            return cls(layers("conv"), layers("dense"), float(z["threshold"]))


class PassScores(threading.local):
    """The rejector's scores of this thread's last pass through the scored graph, kept for
    the very probabilities array that pass returned: ``judge`` gets that array back (the
    contract calls ``probabilities`` and then ``judge`` in one thread) and takes its scores
    instead of running the rejector again. Any other array is not found, nor is any array
    once the model's rejector has other weights than the graph's (an evaluation swapping
    rejectors): the numpy rejector scores those."""

    probs: np.ndarray | None = None
    scores: np.ndarray | None = None

    def __init__(self, rejector: Rejector) -> None:
        # Per thread, set in each thread's first use from the arguments given here.
        self.weights = (rejector.convs, rejector.dense)

    def keep(self, probs: np.ndarray, scores: np.ndarray) -> None:
        self.probs, self.scores = probs, scores

    def take(self, probs: np.ndarray, rejector: Any) -> np.ndarray | None:
        """The scores kept for ``probs`` (this very object), once, if ``rejector`` has the
        graph's weights (any threshold); else None."""
        if probs is not self.probs:
            return None
        scores, self.probs, self.scores = self.scores, None, None
        convs, dense = self.weights
        if (
            getattr(rejector, "convs", None) is not convs
            or getattr(rejector, "dense", None) is not dense
        ):
            return None
        return scores


def load(path: str | Path | None) -> Rejector | None:
    """The artifact's rejector; None for model versions logged without one."""
    return Rejector.load(path) if path else None
