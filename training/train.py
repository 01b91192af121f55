"""``mlflow run . -e train``: fit the CNN, log everything, register a pyfunc version."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import mlflow
from pyfunc.preprocess import pre_process

from training import tracking
from training.data import DataError, load_mnist, resolve_path
from training.register import log_pyfunc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--data-path", default="", help="MNIST .npz; default $MNIST_PATH")
    parser.add_argument("--limit", type=int, default=0, help="first N training images; 0 = all")
    parser.add_argument("--model-name", default="digits", help="registered model name")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--validation-split", type=float, default=0.1)
    parser.add_argument("--experiment-name", default="digits")
    return parser.parse_args(argv)


def _mlflow_epoch_logger():
    import keras

    class LogEpochs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            mlflow.log_metrics({k: float(v) for k, v in (logs or {}).items()}, step=epoch)

    return LogEpochs()


def train(args: argparse.Namespace) -> str:
    """Run one training; returns the registered model version (as a string)."""
    import keras

    from training.network import build_cnn

    data = load_mnist(args.data_path).limited(args.limit)
    keras.utils.set_random_seed(args.seed)
    x_train, x_test = pre_process(data.x_train), pre_process(data.x_test)

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
                "optimizer": "adam",
            }
        )
        mlflow.log_input(
            mlflow.data.from_numpy(
                data.x_train,
                targets=data.y_train,
                name="mnist-train",
                source=str(source) if source else None,
            ),
            context="training",
        )
        model = build_cnn()
        started = time.perf_counter()
        model.fit(
            x_train,
            data.y_train,
            batch_size=args.batch_size,
            epochs=args.epochs,
            validation_split=args.validation_split,
            callbacks=[_mlflow_epoch_logger()],
            # A progress bar for people at a terminal, one line per epoch in logs.
            verbose=1 if sys.stdout.isatty() else 2,
        )
        train_seconds = time.perf_counter() - started
        test_loss, test_accuracy = model.evaluate(x_test, data.y_test, verbose=0)
        mlflow.log_metrics(
            {
                "test_loss": float(test_loss),
                "test_accuracy": float(test_accuracy),
                "train_seconds": train_seconds,
            }
        )
        print(f"test accuracy {test_accuracy:.4f} after {train_seconds:.0f} s of training")

        with tempfile.TemporaryDirectory() as tmp:
            keras_path = Path(tmp) / "mnist_cnn.keras"
            model.save(keras_path)
            info = log_pyfunc(keras_path, data.x_train[0], args.model_name)
        version = str(info.registered_model_version)
        mlflow.set_tag("registered_version", version)
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
