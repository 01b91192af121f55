"""Pen-width augmentation at the scale people write at, through the product's own pipeline.

A bold marker or a fine pen changes the stroke on the page, before anyone normalises the
image: the digit's box grows or shrinks with the stroke, and the 20 px fit then rescales
both. Dilating an already normalised 28×28 digit gets that wrong (the box overflows, the
strokes keep MNIST's proportions), so each training digit is enlarged to a page-like size,
given a wider or finer pen there, and sent through :func:`pyfunc.preprocess.pre_process`
like any upload. Done once per training run, in worker processes.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image

from pyfunc.errors import ImageError
from pyfunc.preprocess import pre_process

# Page sizes and pen changes, drawn per digit. Kernel sides are for a 112 px page and
# scale with the drawn size; odd, so the pen grows evenly on both sides.
_SIDES = (84, 140)
_BOLDER = (3, 5, 7, 9)  # MaxFilter: about +1 to +4 px of stroke on each side
_FINER = (3, 5)  # MinFilter: about -1 to -2 px


def _odd(value: float) -> int:
    return max(3, int(np.rint(value)) // 2 * 2 + 1)


def _rank(page: np.ndarray, kernel: int, bolder: bool) -> np.ndarray:
    """Grey dilation (bolder) or erosion over a kernel×kernel square, done separably: the
    same result as Pillow's MaxFilter/MinFilter at a fraction of the cost."""
    pick = np.maximum if bolder else np.minimum
    r = kernel // 2
    out = page
    for axis in (0, 1):
        padded = np.pad(out, [(r, r) if a == axis else (0, 0) for a in (0, 1)], mode="edge")
        size = out.shape[axis]
        out = pick.reduce([padded.take(range(i, i + size), axis=axis) for i in range(kernel)])
    return out


def _repen(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    side = int(rng.integers(_SIDES[0], _SIDES[1] + 1))
    page = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC))
    bolder = rng.random() < 0.6
    kernel = _odd(rng.choice(_BOLDER if bolder else _FINER) * side / 112)
    out = _rank(page, kernel, bolder)
    # A fine pen can wipe out a faint digit: keep the original pen then.
    return out if out.max() >= 96 else page


def _chunk(args: tuple[np.ndarray, int]) -> np.ndarray:
    digits, seed = args
    rng = np.random.default_rng(seed)
    out = np.empty((len(digits), 28, 28, 1), dtype=np.float32)
    for i, digit in enumerate(digits):
        try:
            out[i] = pre_process(_repen(digit, rng))[0]
        except ImageError:  # a pen the pipeline would refuse: the digit keeps its own
            out[i] = pre_process(digit)[0]
    return out


def repen(x: np.ndarray, seed: int, workers: int | None = None, chunk: int = 2000) -> np.ndarray:
    """(N, 28, 28) uint8 MNIST digits -> (N, 28, 28, 1) float32: each digit with a random
    bolder or finer pen, drawn at page scale and normalised by the product's pre_process."""
    if len(x) == 0:
        return np.zeros((0, 28, 28, 1), dtype=np.float32)
    jobs = [(x[i : i + chunk], seed + i) for i in range(0, len(x), chunk)]
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(jobs) == 1:
        return np.concatenate([_chunk(job) for job in jobs])
    # spawn, not fork: the training process has TensorFlow loaded, which is not fork-safe.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return np.concatenate(list(pool.map(_chunk, jobs)))
