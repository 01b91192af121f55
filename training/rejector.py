"""Fitting a model version's no-digit rejector (:mod:`pyfunc.reject`) when it is registered.

Digits: MNIST training digits, clean and sent through the client variants of
:mod:`training.variants` (so a thumbnail, a canvas export or a photo of paper looks like a
digit to it too), and digits printed and drawn in the fitting fonts (so "printed" is not
learnt as "no digit"). Non-digits: the fitting half of :mod:`training.nondigits`, without the
letters that are digits' twins (an O *is* a 0 to a reader; refusing it would refuse zeros).
Both go through the product's own pre-processing; what it already refuses needs no rejector.

The refusal threshold is then set on digits neither network trained on (the validation tail
of the training split, through every variant): the score that at most
:data:`DIGIT_REFUSAL` of them exceed. The measuring fonts are not used here at all.

``python -m training.rejector --model-uri models:/digits/Production`` fits one for an
already registered version and registers a new version of the same weights with it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pyfunc.errors import ImageError
from pyfunc.preprocess import decode_images, normalise_decoded
from pyfunc.reject import REJECT_ARTIFACT, Rejector, ranked
from training import nondigits
from training.data import VALIDATION_SPLIT, load_mnist, validation_size
from training.variants import VARIANTS

__all__ = [
    "REJECT_ARTIFACT",
    "FittingSets",
    "fit",
    "fit_artifact",
    "fit_on",
    "fitting_sets",
    "normalised",
    "threshold_for",
]

Forward = Callable[[np.ndarray], np.ndarray]  # normalised (N, 28, 28, 1) -> softmax (N, 10)

CLEAN_DIGITS = 6000  # training digits as they are (cheap: MNIST's own form) ...
# ... and as many again turned by ±15° (cheap too): slanted digits were the ones the
# rejector refused most until it saw more of them (docs/rejection.md).
ROTATED_DIGITS = 6000
VARIANT_DIGITS = 2000  # training digits sent through a client variant each
# ... and more through the photo variants alone (ruled and squared paper were the digits
# the rejector refused most): with two more draws of non-digits, 1.5-3 points more
# non-digits caught at the same digit cost on validation (docs/rejection.md). One per
# PHOTO_SHARE training digits, at most PHOTO_DIGITS (small CI runs render fewer).
PHOTO_DIGITS = 2000
PHOTO_SHARE = 27
PHOTO_VARIANTS = ("ruled_paper", "squared_paper", "desk_photo", "shadow")
PHOTO_SEED = 10_000_000
VALIDATION_DIGITS = 1300  # validation digits, each through a variant, for the threshold
GLYPH_DIGITS = 880
# Draws of the fitting non-digit set (different seeds): more non-digits caught the most
# (docs/rejection.md); fewer for small training runs (a draw is ~2,000 usable images).
NONDIGIT_DRAWS = 6
DIGITS_PER_DRAW = 9_000
# Per draw, this many more drawn letters and as many scribbles of the kinds only the fit
# sees (nondigits.build_varied: other pens, joined pairs, unfinished letters, loops, arrows,
# symbols ...): drawn letters and scribbles were what the rejector missed most.
VARIED_PER_DRAW = 800
VARIED_CHUNK = 400
EPOCHS = 20
# Share of validation digits the rejector alone may refuse, chosen on the validation curve
# (docs/rejection.md): 0.2 % caught a tenth fewer non-digits than 0.5 % for 0.3 % fewer
# digits refused; the low-confidence flag spends the rest of the digits' budget.
DIGIT_REFUSAL = 0.005


# --------------------------------------------------------------------------- data


def normalised(images: Sequence[bytes | np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Images -> their normalised ``(N, 28, 28, 1)`` batch (zeros where refused) and a mask
    of those the pre-processing refused (``NoDigit`` and other image errors)."""
    results: list[np.ndarray | ImageError] = []
    for image in images:
        try:
            results.append(normalise_decoded(decode_images([image]))[0])
        except ImageError as exc:
            results.append(exc)
    refused = np.array([isinstance(r, ImageError) for r in results], dtype=bool)
    batch = np.zeros((len(results), 28, 28, 1), dtype=np.float32)
    for i, r in enumerate(results):
        if not isinstance(r, ImageError):
            batch[i, :, :, 0] = r
    return batch, refused


def as_variants(x: np.ndarray, offset: int = 0) -> list[bytes]:
    """Each digit through one client variant, in turn (digit i gets variant i mod count)."""
    builders = list(VARIANTS.values())
    return [builders[(offset + i) % len(builders)](d, offset + i) for i, d in enumerate(x)]


def as_photos(x: np.ndarray, offset: int = 0) -> list[bytes]:
    """Each digit as a phone photo of paper, the photo variants in turn, with seeds apart
    from those the measured sets use (a digit's index there)."""
    builders = [VARIANTS[name] for name in PHOTO_VARIANTS]
    return [
        builders[(offset + i) % len(builders)](d, PHOTO_SEED + offset + i) for i, d in enumerate(x)
    ]


def _render(job: tuple) -> tuple[np.ndarray, np.ndarray]:
    """One chunk of images built and normalised (in a worker process)."""
    kind, *args = job
    if kind == "variants":
        x, offset = args
        return normalised(as_variants(x, offset))
    if kind == "photos":
        x, offset = args
        return normalised(as_photos(x, offset))
    if kind == "glyphs":
        split, n, seed = args
        return normalised(nondigits.digit_glyphs(split, n, seed)[0])
    if kind == "varied":
        category, n, seed = args
        return normalised([s.data for s in nondigits.build_varied(category, n, seed)])
    split, category, seed = args
    samples = nondigits.build_category(split, category, seed=seed)
    return normalised([s.data for s in samples if not s.lookalike])


def _render_all(jobs: list[tuple], workers: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(jobs) == 1:
        return [_render(job) for job in jobs]
    # spawn, not fork: the training process has TensorFlow loaded, which is not fork-safe.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_render, jobs))


def _kept(parts: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    return np.concatenate([batch[~refused] for batch, refused in parts])


def _chunks(x: np.ndarray, size: int, offset: int = 0) -> list[tuple]:
    return [("variants", x[i : i + size], offset + i) for i in range(0, len(x), size)]


# --------------------------------------------------------------------------- the network


def build_net(seed: int = 0):
    """The rejector as Keras trains it; :func:`to_rejector` copies its weights out."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    image, probs = keras.Input((28, 28, 1), name="image"), keras.Input((10,), name="ranked")
    h = layers.Conv2D(16, 3, activation="relu")(image)
    h = layers.MaxPooling2D(2)(h)
    h = layers.Conv2D(32, 3, activation="relu")(h)
    h = layers.MaxPooling2D(2)(h)
    h = layers.Concatenate()([layers.Flatten()(h), probs])
    h = layers.Dropout(0.3)(h)
    h = layers.Dense(32, activation="relu")(h)
    out = layers.Dense(1, activation="sigmoid")(h)
    net = keras.Model([image, probs], out, name="rejector")
    net.compile("adam", keras.losses.BinaryCrossentropy(label_smoothing=0.02))
    return net


def to_rejector(net, threshold: float) -> Rejector:
    from keras import layers

    convs = tuple(
        tuple(np.asarray(v, dtype=np.float32) for v in layer.get_weights())
        for layer in net.layers
        if isinstance(layer, layers.Conv2D)
    )
    dense = tuple(
        tuple(np.asarray(v, dtype=np.float32) for v in layer.get_weights())
        for layer in net.layers
        if isinstance(layer, layers.Dense)
    )
    return Rejector(convs, dense, threshold)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- fitting


@dataclass(frozen=True)
class FittingSets:
    """What a rejector is fitted on, normalised by the product's pre-processing (what it
    refuses left out): digits (class 0), non-digits (class 1) and held-out digits for the
    threshold. None of it depends on the network, so one build serves several fits."""

    digits: np.ndarray
    others: np.ndarray
    held_out: np.ndarray


def fitting_sets(
    x_train: np.ndarray,
    x_val: np.ndarray,
    seed: int = 0,
    workers: int | None = None,
    draws: int | None = None,
    photo_digits: int | None = None,
    varied: int | None = None,
) -> FittingSets:
    """The digits and non-digits of a fit from ``x_train`` and the threshold's digits from
    ``x_val`` (uint8 (N, 28, 28) arrays); ``draws`` of the fitting non-digits (default: one
    per :data:`DIGITS_PER_DRAW` training digits, at most :data:`NONDIGIT_DRAWS`) and
    ``varied`` more drawn letters and as many scribbles (default: :data:`VARIED_PER_DRAW`
    per draw)."""
    if draws is None:
        draws = max(1, min(NONDIGIT_DRAWS, len(x_train) // DIGITS_PER_DRAW))
    if varied is None:
        varied = VARIED_PER_DRAW * draws
    if photo_digits is None:
        photo_digits = min(PHOTO_DIGITS, len(x_train) // PHOTO_SHARE)
    positives = _chunks(x_train[:VARIANT_DIGITS], 250)
    photos = x_train[VARIANT_DIGITS : VARIANT_DIGITS + photo_digits]
    positives += [("photos", photos[i : i + 250], i) for i in range(0, len(photos), 250)]
    positives.append(("glyphs", "fit", GLYPH_DIGITS, seed))
    negatives: list[tuple] = [
        ("nondigits", "fit", c, seed + d) for d in range(draws) for c in nondigits.CATEGORIES
    ]
    negatives += [
        ("varied", category, min(VARIED_CHUNK, varied - start), seed * 1000 + start)
        for category in ("drawn", "scribble")
        for start in range(0, varied, VARIED_CHUNK)
    ]
    held_out = _chunks(x_val[:VALIDATION_DIGITS], 250, offset=1)
    parts = _render_all(positives + negatives + held_out, workers)
    a, b = len(positives), len(positives) + len(negatives)
    rotate = VARIANTS["rotated"]
    slanted = [
        rotate(d, i) for i, d in enumerate(x_train[-CLEAN_DIGITS - ROTATED_DIGITS : -CLEAN_DIGITS])
    ]
    clean, clean_refused = normalised(list(x_train[-CLEAN_DIGITS:]) + slanted)
    pos = np.concatenate([clean[~clean_refused], _kept(parts[:a])])
    return FittingSets(pos, _kept(parts[a:b]), _kept(parts[b:]))


def fit(
    x_train: np.ndarray,
    x_val: np.ndarray,
    forward: Forward,
    seed: int = 0,
    epochs: int = EPOCHS,
    digit_refusal: float = DIGIT_REFUSAL,
    workers: int | None = None,
) -> Rejector:
    """A rejector for the network ``forward``: trained on ``x_train`` digits and the fitting
    non-digits, its threshold set on ``x_val`` digits (uint8 (N, 28, 28) arrays)."""
    sets = fitting_sets(x_train, x_val, seed=seed, workers=workers)
    return fit_on(sets, forward, seed=seed, epochs=epochs, digit_refusal=digit_refusal)


def fit_on(
    sets: FittingSets,
    forward: Forward,
    seed: int = 0,
    epochs: int = EPOCHS,
    digit_refusal: float = DIGIT_REFUSAL,
) -> Rejector:
    """The rejector of the network ``forward`` fitted on ``sets``."""
    pos, neg = sets.digits, sets.others
    x = np.concatenate([pos, neg])
    p = ranked(forward(x))
    y = np.concatenate([np.zeros(len(pos)), np.ones(len(neg))]).astype(np.float32)
    net = build_net(seed)
    net.fit(
        [x, p],
        y,
        batch_size=128,
        epochs=epochs,
        # Non-digits are the fewer: weighted up to balance the classes.
        class_weight={0: 1.0, 1: len(pos) / max(1, len(neg))},
        shuffle=True,
        verbose=0,
    )
    rejector = to_rejector(net, 1.0)
    return rejector.with_threshold(threshold_for(rejector, sets.held_out, forward, digit_refusal))


def threshold_for(
    rejector: Rejector, digits: np.ndarray, forward: Forward, digit_refusal: float
) -> float:
    """The score that at most ``digit_refusal`` of ``digits`` (normalised) exceed."""
    scores = rejector.scores(digits, forward(digits))
    return float(np.quantile(scores, 1.0 - digit_refusal, method="higher"))


def _forward_of(keras_path: Path, onnx_path: Path | None) -> Forward:
    from mlflow.pyfunc import PythonModelContext

    from pyfunc.model import KERAS_ARTIFACT, ONNX_ARTIFACT, DigitModel

    model = DigitModel()
    artifacts = {KERAS_ARTIFACT: str(keras_path)}
    if onnx_path is not None:
        artifacts[ONNX_ARTIFACT] = str(onnx_path)
    model.load_context(PythonModelContext(artifacts=artifacts, model_config={}))
    return model.probabilities


def _training_digits() -> tuple[np.ndarray, np.ndarray]:
    """The active run's MNIST training digits and its validation tail (as train.py split
    them: its logged data source, limit and validation split)."""
    import mlflow

    run = mlflow.active_run()
    params = mlflow.get_run(run.info.run_id).data.params if run else {}
    source = params.get("data_source")
    data = load_mnist(None if source in (None, "keras.datasets.mnist") else source)
    data = data.limited(int(params.get("limit") or 0))
    n_val = validation_size(
        len(data.x_train), float(params.get("validation_split") or VALIDATION_SPLIT)
    )
    x = data.x_train
    if n_val == 0:  # nothing held out: the threshold is set on training digits then
        return x, x[-VALIDATION_DIGITS:]
    return x[: len(x) - n_val], x[len(x) - n_val :]


def fit_artifact(keras_path: Path, onnx_path: Path | None = None) -> Path:
    """Fit the rejector of the network being logged and write it next to its weights; its
    threshold is logged to the active run."""
    import mlflow

    x_train, x_val = _training_digits()
    rejector = fit(x_train, x_val, _forward_of(Path(keras_path), onnx_path))
    if mlflow.active_run():
        mlflow.log_metric("rejector_threshold", rejector.threshold)
    return rejector.save(Path(keras_path).parent / "rejector.npz")


# --------------------------------------------------------------------------- CLI


def source_family(model_dir: Path) -> str:
    """The family a downloaded model directory was logged as (its MLmodel metadata; models
    logged before families existed are the Keras example)."""
    from mlflow.models import Model

    from pyfunc.contract import DEFAULT_FAMILY, FAMILY_METADATA

    metadata = Model.load(str(model_dir)).metadata or {}
    return str(metadata.get(FAMILY_METADATA) or DEFAULT_FAMILY)


def artifact_paths(model_dir: Path) -> dict[str, Path]:
    """A downloaded model directory's pyfunc artifacts by name (its MLmodel), as local paths.
    By name, not by file pattern: a version may hold two ONNX files (the network and the
    scored graph of training.rejector_onnx)."""
    from mlflow.models import Model

    conf = Model.load(str(model_dir)).flavors["python_function"].get("artifacts", {})
    return {name: model_dir / spec["path"] for name, spec in conf.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-uri", default="models:/digits/Production")
    parser.add_argument("--model-name", default="digits", help="registered name of the copy")
    parser.add_argument("--data-path", default="", help="MNIST .npz; default $MNIST_PATH")
    parser.add_argument("--experiment-name", default="digits")
    args = parser.parse_args(argv)

    import mlflow

    from pyfunc.model import KERAS_ARTIFACT, ONNX_ARTIFACT
    from training import tracking
    from training.data import resolve_path
    from training.register import log_copy

    source = resolve_path(args.data_path)
    example = load_mnist(source).x_train[0]
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(args.model_uri, dst_path=tmp))
        paths = artifact_paths(local)
        if KERAS_ARTIFACT not in paths:
            raise SystemExit(f"{args.model_uri} has no {KERAS_ARTIFACT} artifact")
        tracking.use_experiment(args.experiment_name)
        version = log_copy(
            paths[KERAS_ARTIFACT],
            example,
            args.model_name,
            paths.get(ONNX_ARTIFACT),
            source_family(local),
            "add-rejector",
            {
                "source_model": args.model_uri,
                "data_source": str(source) if source else "keras.datasets.mnist",
                "limit": 0,
                "validation_split": VALIDATION_SPLIT,
            },
        )
    print(f"registered {args.model_name} version {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
