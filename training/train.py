"""``mlflow run . -e train``: fit one model family, log everything, register a pyfunc version.

``--family`` picks the family (training.families; ``--list-families`` names them); options
of other families are ignored, and listed in the run's ``ignored_params``."""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.data.numpy_dataset import from_numpy

import quiet
from pyfunc.preprocess import pre_process
from training import families, feedback, reports, tracking
from training.augment import Augmentation
from training.data import (
    VALIDATION_SPLIT,
    DataError,
    load_mnist,
    resolve_path,
    validation_size,
)
from training.families.base import Fitted

# Re-exported: the Keras families' augmentation options, as tests and callers know them.
from training.families.keras import augmentation  # noqa: F401


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--family",
        default=families.DEFAULT_FAMILY,
        choices=families.names(),
        help="the model family to train (docs/model.md)",
    )
    parser.add_argument(
        "--list-families", action="store_true", help="print the family names, one a line"
    )
    parser.add_argument(
        "--epochs", type=int, default=0, help="Keras families; 0 = the family's default"
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--data-path", default="", help="MNIST .npz; default $MNIST_PATH")
    parser.add_argument("--limit", type=int, default=0, help="first N training images; 0 = all")
    parser.add_argument("--model-name", default="digits", help="registered model name")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--validation-split", type=float, default=VALIDATION_SPLIT)
    parser.add_argument("--experiment-name", default="digits")
    parser.add_argument(
        "--rejector",
        type=_flag,
        default=True,
        help="fit the no-digit rejector for the trained model (training.rejector)",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=0.0,
        help="initial Adam rate, cosine-decayed to 0 over the run; 0 = the family's default",
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
    aug = parser.add_argument_group("augmentation (Keras families; 0/false switches one off)")
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
    sk = parser.add_argument_group("scikit-learn family (pca_svm)")
    sk.add_argument(
        "--pca-components", type=_positive, default=50, help="PCA components fed to the SVM"
    )
    sk.add_argument("--svm-c", type=float, default=10.0, help="the SVM's C (less regularised up)")
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


def _mlflow_epoch_logger(prefix: str = ""):
    import keras

    class LogEpochs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            metrics = {f"{prefix}{k}": float(v) for k, v in (logs or {}).items()}
            mlflow.log_metrics(metrics, step=epoch)

    return LogEpochs()


def keras_callbacks(prefix: str = "") -> list[Any]:
    """The callbacks every Keras network's fit gets (``prefix``: its metrics' prefix)."""
    from training import progress  # its estimate and time left stand in for Keras's logger

    return [_mlflow_epoch_logger(prefix), progress.callback(prefix.rstrip("_"))]


class Served:
    """A loaded pyfunc's ``probabilities`` behind the ``predict`` the reports call: the
    test split is scored by what serves (ONNX Runtime for the networks), not by Keras."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict(self, x: np.ndarray, batch_size: int = 512, verbose: int = 0) -> np.ndarray:
        step = max(1, batch_size)
        return np.concatenate(
            [self.model.probabilities(x[i : i + step]) for i in range(0, len(x), step)]
        )


def load_fitted(fitted: Fitted) -> Any:
    """A copy of the fitted pyfunc, loaded from its artifacts as MLflow would load it (the
    original stays unloaded: it is what gets pickled into the logged model)."""
    from mlflow.pyfunc import PythonModelContext

    model = copy.deepcopy(fitted.python_model)
    model.load_context(PythonModelContext(artifacts=fitted.artifacts, model_config={}))
    return model


def train(args: argparse.Namespace) -> str:
    """Run one training; returns the registered model version (as a string)."""
    from training import rejector
    from training.families.base import Job
    from training.register import log_family
    from training.rejector import VALIDATION_DIGITS

    args = families.resolve(args)
    family = families.get(args.family)
    data = load_mnist(args.data_path).limited(args.limit)
    extra = feedback.load_for_training(args.feedback_path) if args.include_feedback else None
    x_all, x_test = pre_process(data.x_train), pre_process(data.x_test)
    # Validation is the tail of the training split; the test split is only for the final score.
    n_val = validation_size(len(x_all), args.validation_split)
    n_train = len(x_all) - n_val
    x_train, y_train = x_all[:n_train], data.y_train[:n_train]
    x_val, y_val = x_all[n_train:], data.y_train[n_train:]
    if extra:
        # Training split only: validation stays MNIST, comparable from run to run.
        x_train = np.concatenate([x_train, pre_process(extra.x)])
        y_train = np.concatenate([y_train, extra.y.astype(y_train.dtype)])

    tracking.use_experiment(args.experiment_name)
    with mlflow.start_run() as run, tempfile.TemporaryDirectory() as tmp:
        source = resolve_path(args.data_path)
        mlflow.set_tag("family", family.name)
        mlflow.log_params(
            {
                "family": family.name,
                "model_summary": family.summary,
                "limit": args.limit,
                "seed": args.seed,
                "validation_split": args.validation_split,
                "train_images": len(x_train),
                "data_source": str(source) if source else "keras.datasets.mnist",
                "feedback_images": len(extra) if extra is not None else 0,
                # `mlflow run` logs every entry-point parameter: these changed nothing.
                "ignored_params": ",".join(families.ignored(family)) or "none",
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
        job = Job(
            args=args,
            x_train=x_train,
            y_train=y_train,
            x_val=x_val,
            y_val=y_val,
            x_test=x_test,
            y_test=data.y_test,
            digits=data.x_train[:n_train],
            out_dir=Path(tmp),
            callbacks=keras_callbacks,
        )
        fitted = families.trainer(family).fit(job)
        mlflow.log_params(fitted.params)
        model = load_fitted(fitted)
        # The test split, once, through the model as it will serve.
        evaluation = reports.log_all(Served(model), x_test, data.y_test, fitted.history)
        probs = np.clip(evaluation.probabilities[np.arange(len(x_test)), data.y_test], 1e-12, 1)
        mlflow.log_metrics(
            {
                **fitted.metrics,
                "test_loss": float(-np.mean(np.log(probs))),
                "test_accuracy": evaluation.accuracy,
                "train_seconds": fitted.train_seconds,
            }
        )
        print(
            f"{family.name}: test accuracy {evaluation.accuracy:.4f} after "
            f"{fitted.train_seconds:.0f} s of training"
        )
        artifacts = dict(fitted.artifacts)
        if args.rejector:
            # The no-digit rejector, fitted for this very model (training.rejector); its
            # threshold is set on the validation digits (the training tail without any).
            held_out = data.x_train[n_train:] if n_val else data.x_train[-VALIDATION_DIGITS:]
            fitted_rejector = rejector.fit(data.x_train[:n_train], held_out, model.probabilities)
            mlflow.log_metric("rejector_threshold", fitted_rejector.threshold)
            artifacts[rejector.REJECT_ARTIFACT] = str(
                fitted_rejector.save(Path(tmp) / "rejector.npz")
            )
        info = log_family(
            fitted.python_model,
            artifacts,
            data.x_train[0],
            args.model_name,
            fitted.pip_requirements,
        )
        version = str(info.registered_model_version)
        mlflow.set_tag("registered_version", version)
        # The version names its family too (the registry UI, the service, the leaderboard).
        mlflow.MlflowClient().set_model_version_tag(args.model_name, version, "family", family.name)
        reports.publish_model_card(args, version, evaluation, validation_images=n_val)
        print(f"registered {args.model_name} version {version} (run {run.info.run_id})")
        return version


def main(argv: list[str] | None = None) -> int:
    quiet.install()  # before TensorFlow is imported
    args = parse_args(argv)
    if args.list_families:
        print("\n".join(families.names()))
        return 0
    try:
        train(args)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
