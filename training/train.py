"""``mlflow run . -e train``: fit the CNN, log everything, register a pyfunc version."""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
from mlflow.data.numpy_dataset import from_numpy

from pyfunc.preprocess import pre_process
from training import feedback, reports, tracking
from training.augment import Augmentation
from training.data import (
    VALIDATION_SPLIT,
    DataError,
    load_mnist,
    resolve_path,
    validation_size,
)
from training.register import export_onnx, log_pyfunc
from training.strokes import repen


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--data-path", default="", help="MNIST .npz; default $MNIST_PATH")
    parser.add_argument("--limit", type=int, default=0, help="first N training images; 0 = all")
    parser.add_argument("--model-name", default="digits", help="registered model name")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--validation-split", type=float, default=VALIDATION_SPLIT)
    parser.add_argument("--experiment-name", default="digits")
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=1e-3,
        help="initial Adam rate, cosine-decayed to 0 over the run",
    )
    parser.add_argument(
        "--members",
        type=_positive,
        default=1,
        help="networks trained with seeds seed..seed+N-1 whose probabilities are averaged",
    )
    parser.add_argument(
        "--label-smoothing",
        type=float,
        # Chosen on validation digits: thick strokes and rotated digits gained most (README).
        default=0.1,
        help="share of each target spread over the other classes; 0 = plain cross-entropy",
    )
    parser.add_argument(
        "--ema-momentum",
        type=float,
        default=0.0,
        help="keep a moving average of the weights (e.g. 0.999) and end with it; 0 = off",
    )
    parser.add_argument(
        "--include-feedback",
        type=_flag,
        default=False,
        help="also train on the images users labelled via POST /feedback",
    )
    parser.add_argument(
        "--feedback-path",
        default="",
        help="feedback .npz (training.export_feedback); default: export the image log now",
    )
    aug = parser.add_argument_group("augmentation (0/false switches one off)")
    aug.add_argument("--augment", type=_flag, default=True, help="master switch")
    aug.add_argument(
        "--rotation", type=float, default=Augmentation.rotation_deg, help="max rotation, degrees"
    )
    aug.add_argument(
        "--shift", type=float, default=Augmentation.shift, help="max shift, fraction of the side"
    )
    aug.add_argument("--scale", type=float, default=Augmentation.scale, help="max zoom ±")
    aug.add_argument(
        "--stroke",
        type=_flag,
        default=Augmentation.stroke,
        help="a bolder or finer pen, drawn at page scale before normalisation",
    )
    aug.add_argument(
        "--augment-fraction",
        type=float,
        default=Augmentation.fraction,
        help="share of each batch that is augmented",
    )
    aug.add_argument(
        "--elastic-alpha",
        type=float,
        default=Augmentation.elastic_alpha,
        help="elastic distortion strength, px per unit of smoothed noise (Simard: 34); 0 = off",
    )
    aug.add_argument(
        "--elastic-sigma",
        type=float,
        default=Augmentation.elastic_sigma,
        help="elastic distortion smoothness, Gaussian std in px",
    )
    aug.add_argument(
        "--photos",
        type=float,
        default=Augmentation.photos,
        help="share of training digits also rendered as a phone photo (ruled/squared paper, "
        "a desk, a shadow) and pre-processed; shown in the digit's place half of the time",
    )
    return parser.parse_args(argv)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


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


def with_photos(
    digits: np.ndarray, normalised: np.ndarray, share: float, seed: int
) -> np.ndarray | None:
    """``normalised`` (the pre-processed ``digits``) with a random ``share`` of them replaced
    by their phone-photo copies (training.photos); None when the share is 0."""
    if share <= 0 or len(digits) == 0:
        return None
    from training import photos

    rng = np.random.default_rng(seed)
    chosen = np.sort(
        rng.choice(len(digits), size=max(1, round(share * len(digits))), replace=False)
    )
    out = normalised.copy()
    out[chosen] = photos.preprocessed(digits[chosen], seed)
    return out


def _mlflow_epoch_logger(prefix: str = ""):
    import keras

    class LogEpochs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            metrics = {f"{prefix}{k}": float(v) for k, v in (logs or {}).items()}
            mlflow.log_metrics(metrics, step=epoch)

    return LogEpochs()


def train(args: argparse.Namespace) -> str:
    """Run one training; returns the registered model version (as a string)."""
    import keras

    from training.augment import dataset
    from training.network import build_cnn, ensemble

    data = load_mnist(args.data_path).limited(args.limit)
    keras.utils.set_random_seed(args.seed)
    x_all, x_test = pre_process(data.x_train), pre_process(data.x_test)
    # Validation is the tail of the training split; the test split is only for the final score.
    n_val = validation_size(len(x_all), args.validation_split)
    x_train, y_train = x_all[: len(x_all) - n_val], data.y_train[: len(x_all) - n_val]
    x_val, y_val = x_all[len(x_all) - n_val :], data.y_train[len(x_all) - n_val :]
    aug = augmentation(args)
    x_pen = repen(data.x_train[: len(x_train)], args.seed) if aug.enabled and aug.stroke else None
    x_photo = with_photos(data.x_train[: len(x_train)], x_train, aug.photos, args.seed)
    extra = feedback.load_for_training(args.feedback_path) if args.include_feedback else None
    if extra:
        # Training split only: validation stays MNIST, comparable from run to run.
        x_extra = pre_process(extra.x)
        x_train = np.concatenate([x_train, x_extra])
        y_train = np.concatenate([y_train, extra.y.astype(y_train.dtype)])
        # Users' images come with their own pens.
        x_pen = None if x_pen is None else np.concatenate([x_pen, x_extra])
        x_photo = None if x_photo is None else np.concatenate([x_photo, x_extra])

    tracking.use_experiment(args.experiment_name)
    with mlflow.start_run() as run:
        source = resolve_path(args.data_path)
        mlflow.log_params(
            {
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "limit": args.limit,
                "seed": args.seed,
                "validation_split": args.validation_split,
                "train_images": len(x_train),
                "data_source": str(source) if source else "keras.datasets.mnist",
                # Resolved values under their own keys: `mlflow run` logs the entry point's
                # parameters as typed ("0", "2e-3"), and a param may not change its value.
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
                "feedback_images": len(extra) if extra is not None else 0,
            }
        )
        if extra is not None:
            feedback.log_input(extra)
        mlflow.log_input(
            from_numpy(
                data.x_train,
                targets=data.y_train,
                name="mnist-train",
                # None: MLflow names the code as the source (its hint leaves None out).
                source=str(source) if source else None,  # type: ignore[arg-type]
            ),
            context="training",
        )
        steps = math.ceil(len(x_train) / args.batch_size) * args.epochs
        started = time.perf_counter()
        members, histories = [], []
        for i in range(args.members):
            # Member i: its own initial weights and augmentation draws (seed + i); member 0
            # is exactly the single network a run with members=1 trains.
            if i:
                keras.utils.set_random_seed(args.seed + i)
            member = build_cnn(
                keras.optimizers.schedules.CosineDecay(args.learning_rate, steps),
                label_smoothing=args.label_smoothing,
                ema_momentum=args.ema_momentum,
                name=f"mnist_cnn_{i}" if args.members > 1 else "mnist_cnn",
            )
            history = member.fit(
                dataset(x_train, y_train, args.batch_size, aug, args.seed + i, x_pen, x_photo),
                epochs=args.epochs,
                validation_data=(x_val, y_val) if n_val else None,
                callbacks=[_mlflow_epoch_logger(prefix=f"member{i}_" if i else "")],
                # A progress bar for people at a terminal, one line per epoch in logs.
                verbose=1 if sys.stdout.isatty() else 2,
            )
            members.append(member)
            histories.append(history.history)
            if args.members > 1:  # each member is a run of the single recipe: its own score
                _, accuracy = member.evaluate(x_test, data.y_test, verbose=0)
                mlflow.log_metric(f"member{i}_test_accuracy", float(accuracy))
        model = ensemble(members)
        train_seconds = time.perf_counter() - started
        if len(members) > 1 and n_val:
            val_loss, val_accuracy = model.evaluate(x_val, y_val, verbose=0)
            mlflow.log_metrics(
                {"ensemble_val_loss": float(val_loss), "ensemble_val_accuracy": float(val_accuracy)}
            )
        test_loss, test_accuracy = model.evaluate(x_test, data.y_test, verbose=0)
        mlflow.log_metrics(
            {
                "test_loss": float(test_loss),
                "test_accuracy": float(test_accuracy),
                "train_seconds": train_seconds,
            }
        )
        print(f"test accuracy {test_accuracy:.4f} after {train_seconds:.0f} s of training")
        # The learning curves are member 0's (a single network's, as in every other run).
        evaluation = reports.log_all(model, x_test, data.y_test, histories[0])

        with tempfile.TemporaryDirectory() as tmp:
            keras_path = Path(tmp) / "mnist_cnn.keras"
            model.save(keras_path)
            onnx_path = export_onnx(model, Path(tmp) / "mnist_cnn.onnx")
            info = log_pyfunc(keras_path, data.x_train[0], args.model_name, onnx_path)
        version = str(info.registered_model_version)
        mlflow.set_tag("registered_version", version)
        reports.publish_model_card(args, version, evaluation, validation_images=n_val)
        print(f"registered {args.model_name} version {version} (run {run.info.run_id})")
        return version


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        train(args)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
