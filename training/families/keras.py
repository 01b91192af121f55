"""The Keras families (``keras_example``, ``cnn_bn``): a network from
:mod:`training.network`, trained on augmented batches, exported to ONNX for serving."""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pyfunc.model import KERAS_ARTIFACT, ONNX_ARTIFACT, DigitModel
from training import strokes
from training.augment import Augmentation
from training.copies import cache_dir, cached, estimate_seconds, is_cached
from training.families.base import Fitted, Job
from training.progress import duration


def augmentation(args: argparse.Namespace) -> Augmentation:
    if not args.augment:
        return Augmentation(
            rotation_deg=0, shift=0, scale=0, stroke=False, elastic_alpha=0, photos=0
        )
    return Augmentation(
        args.rotation,
        args.shift,
        args.scale,
        args.stroke,
        args.augment_fraction,
        elastic_alpha=args.elastic_alpha,
        elastic_sigma=args.elastic_sigma,
        photos=args.photos,
    )


def photo_share(digits: np.ndarray, share: float, seed: int) -> np.ndarray | None:
    """The indices of the ``share`` of ``digits`` replaced by phone-photo copies, drawn from
    ``seed``; None when the share is 0."""
    if share <= 0 or len(digits) == 0:
        return None
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(len(digits), size=max(1, round(share * len(digits))), replace=False))


def with_photos(
    digits: np.ndarray, normalised: np.ndarray, share: float, seed: int
) -> np.ndarray | None:
    """``normalised`` (the pre-processed ``digits``) with a random ``share`` of them replaced
    by their phone-photo copies (training.photos); None when the share is 0."""
    chosen = photo_share(digits, share, seed)
    if chosen is None:
        return None
    from training import photos

    out = normalised.copy()
    out[chosen] = cached("photos", digits[chosen], seed, photos.__file__, photos.preprocessed)
    return out


def announce_preparation(digits: np.ndarray, pens: bool, share: float, seed: int) -> None:
    """One line before the copies are prepared: how many, and either that they come from
    the cache or how long drawing them takes on this machine (timed on a few digits here).
    Minutes on two cores before the first batch: unsaid, the first start looks hung."""
    from training import photos

    chosen = photo_share(digits, share, seed)
    todo: list[tuple[str, np.ndarray, str, Callable[..., np.ndarray]]] = []
    if pens:
        todo.append(("pens", digits, strokes.__file__, strokes.repen))
    if chosen is not None:
        todo.append(("photos", digits[chosen], photos.__file__, photos.preprocessed))
    if not todo:
        return
    missing = [t for t in todo if not is_cached(t[0], t[1], seed, t[2])]
    what = f"preparing {len(digits):,} training digits (other pens, phone-photo copies)"
    if not missing:
        print(f"{what}: from the cache ({cache_dir()})", flush=True)
        return
    seconds = sum(estimate_seconds(x, seed, make) for _, x, _, make in missing)
    kept = cache_dir()
    then = f"; kept in {kept} for the next run with seed {seed}" if kept else ""
    print(f"{what}: about {duration(seconds)} on this machine (timed on a few digits){then}")
    sys.stdout.flush()


def params(args: argparse.Namespace, aug: Augmentation) -> dict[str, object]:
    # Resolved values under their own keys: `mlflow run` logs the entry point's parameters
    # as typed ("0", "2e-3"), and a param may not change its value.
    return {
        "batch_size": args.batch_size,
        "opt_epochs": args.epochs,
        "optimizer": "adam",
        "opt_learning_rate": args.learning_rate,
        "lr_schedule": "cosine",
        "opt_label_smoothing": args.label_smoothing,
        "opt_ema_momentum": args.ema_momentum,
        "members": args.members,
        "aug_rotation_deg": aug.rotation_deg,
        "aug_shift": aug.shift,
        "aug_scale": aug.scale,
        "aug_stroke": aug.stroke,
        "aug_fraction": aug.fraction,
        "aug_elastic_alpha": aug.elastic_alpha,
        "aug_elastic_sigma": aug.elastic_sigma,
        "aug_photos": aug.photos,
    }


def fit(job: Job) -> Fitted:
    import keras
    import mlflow

    from training.augment import dataset
    from training.network import BUILDERS, ensemble
    from training.register import export_onnx, pip_requirements

    args = job.args
    build = BUILDERS[args.family]
    aug = augmentation(args)
    x_train, n_digits = job.x_train, len(job.digits)
    feedback = x_train[n_digits:]  # users' images come with their own pens and photos
    x_pen = x_photo = None
    pens = aug.enabled and aug.stroke
    announce_preparation(job.digits, pens, aug.photos, args.seed)
    prepared = time.perf_counter()
    if pens:
        pen = cached("pens", job.digits, args.seed, strokes.__file__, strokes.repen)
        x_pen = np.concatenate([pen, feedback])
    photo = with_photos(job.digits, x_train[:n_digits], aug.photos, args.seed)
    if photo is not None:
        x_photo = np.concatenate([photo, feedback])
    if pens or photo is not None:
        print(f"prepared in {duration(time.perf_counter() - prepared)}", flush=True)
    validation = (job.x_val, job.y_val) if len(job.x_val) else None

    steps = math.ceil(len(x_train) / args.batch_size) * args.epochs
    started = time.perf_counter()
    members, histories = [], []
    for i in range(args.members):
        # Member i: its own initial weights and augmentation draws (seed + i); member 0
        # is exactly the single network a run with members=1 trains.
        keras.utils.set_random_seed(args.seed + i)
        member = build(
            keras.optimizers.schedules.CosineDecay(args.learning_rate, steps),
            label_smoothing=args.label_smoothing,
            ema_momentum=args.ema_momentum,
            name=f"{args.family}_{i}" if args.members > 1 else args.family,
        )
        history = member.fit(
            dataset(x_train, job.y_train, args.batch_size, aug, args.seed + i, x_pen, x_photo),
            epochs=args.epochs,
            validation_data=validation,
            callbacks=job.callbacks(f"member{i}_" if i else ""),
            # A progress bar for people at a terminal, one line per epoch in logs.
            verbose=1 if sys.stdout.isatty() else 2,
        )
        members.append(member)
        histories.append(history.history)
        if args.members > 1:  # each member is a run of the single recipe: its own score
            _, accuracy = member.evaluate(job.x_test, job.y_test, verbose=0)
            mlflow.log_metric(f"member{i}_test_accuracy", float(accuracy))
    model = ensemble(members)
    train_seconds = time.perf_counter() - started
    metrics: dict[str, float] = {}
    if len(members) > 1 and validation:
        val_loss, val_accuracy = model.evaluate(*validation, verbose=0)
        metrics = {
            "ensemble_val_loss": float(val_loss),
            "ensemble_val_accuracy": float(val_accuracy),
        }

    keras_path = Path(job.out_dir) / "mnist_cnn.keras"
    model.save(keras_path)
    onnx_path = export_onnx(model, Path(job.out_dir) / "mnist_cnn.onnx")
    return Fitted(
        python_model=DigitModel(family=args.family),
        artifacts={KERAS_ARTIFACT: str(keras_path), ONNX_ARTIFACT: str(onnx_path)},
        pip_requirements=pip_requirements(with_onnx=True),
        train_seconds=train_seconds,
        params={**params(args, aug), "parameters": model.count_params()},
        # The learning curves are member 0's (a single network's, as in every other run).
        history={k: [float(v) for v in vs] for k, vs in histories[0].items()},
        metrics=metrics,
    )
