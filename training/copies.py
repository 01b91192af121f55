"""A disk cache for the training digits' prepared copies (other pens, phone photos).

Preparing them costs minutes of CPU on two cores before the first batch (about 10-20 ms a
digit through the product's pre-processing), and they are the same for every family and
every run with the same digits and seed. So each is kept as one ``.npy`` file named by what
it depends on: the digits' bytes, the seed, and the source of the code that draws them (the
module that renders, and ``pyfunc/``, which normalises). A change to any of these is a new
name, never a stale copy. Hand-written because it is four lines of hashing around ``np.save``;
joblib.Memory would hash the same things but not the source of ``pyfunc/`` it calls into.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from locations import PROJECT_ROOT

CACHE_ENV = "DIGITS_CACHE_DIR"
DEFAULT_CACHE_DIR = PROJECT_ROOT / ".cache" / "copies"


def cache_dir() -> Path | None:
    """``DIGITS_CACHE_DIR`` if set (an empty value switches the cache off), else
    ``.cache/copies`` under the project root."""
    named = os.environ.get(CACHE_ENV)
    if named is None:
        return DEFAULT_CACHE_DIR
    return Path(named) if named else None


def _source_digest(module_file: str) -> str:
    h = hashlib.sha256()
    files = [Path(module_file), *sorted((PROJECT_ROOT / "pyfunc").glob("*.py"))]
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def key(kind: str, x: np.ndarray, seed: int, module_file: str) -> str:
    """The file name for ``kind`` copies of ``x`` drawn with ``seed`` by ``module_file``."""
    h = hashlib.sha256()
    h.update(str((x.shape, str(x.dtype), seed)).encode())
    h.update(np.ascontiguousarray(x).tobytes())
    h.update(_source_digest(module_file).encode())
    return f"{kind}-{h.hexdigest()[:24]}.npy"


def is_cached(kind: str, x: np.ndarray, seed: int, module_file: str) -> bool:
    """Whether :func:`cached` would read this call's copies from disk."""
    where = cache_dir()
    return where is not None and (where / key(kind, x, seed, module_file)).is_file()


def estimate_seconds(
    x: np.ndarray, seed: int, make: Callable[..., np.ndarray], sample: int = 16
) -> float:
    """How long ``make(x, seed)`` will take here: ``sample`` digits drawn in this process
    (the first one leaves its imports out of the pace), scaled to all of them on every core
    (the drawing runs in one worker process per core)."""
    import time

    if len(x) == 0:
        return 0.0
    make(x[:1], seed, workers=1)
    started = time.perf_counter()
    n = min(sample, len(x))
    make(x[:n], seed, workers=1)
    per_digit = (time.perf_counter() - started) / n
    return per_digit * len(x) / max(1, min(os.cpu_count() or 1, len(x)))


def cached(
    kind: str,
    x: np.ndarray,
    seed: int,
    module_file: str,
    make: Callable[[np.ndarray, int], np.ndarray],
) -> np.ndarray:
    """``make(x, seed)``, read from the cache when an identical call was made before."""
    where = cache_dir()
    if where is None:
        return make(x, seed)
    path = where / key(kind, x, seed, module_file)
    if path.is_file():
        try:
            return np.load(path)
        except (OSError, ValueError):  # a damaged file: draw again and replace it
            pass
    out = make(x, seed)
    where.mkdir(parents=True, exist_ok=True)
    # Written beside and renamed, so a run stopped mid-write never leaves half a file.
    fd, tmp = tempfile.mkstemp(dir=where, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, out)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
    return out
