"""``mlflow run . -e evaluate``: accuracy of a registered model on the MNIST test split and on
"real world" variants of it (paper, canvas alpha, thick/thin, rotated, off-centre, thumbnail)."""

from __future__ import annotations

import argparse
import sys

import mlflow
import numpy as np

from training import tracking
from training.data import DataError, load_mnist
from training.wild import evaluate_variants, markdown


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-uri", default="models:/digits/Production")
    parser.add_argument("--data-path", default="")
    parser.add_argument("--experiment-name", default="digits")
    parser.add_argument(
        "--wild-limit",
        type=int,
        default=2000,
        help="test digits per variant (0 skips the variants, -1 uses all 10,000)",
    )
    return parser.parse_args(argv)


def accuracy(model: mlflow.pyfunc.PyFuncModel, images: np.ndarray, labels: np.ndarray) -> float:
    """Share of ``images`` the pyfunc labels correctly, through its public predict()."""
    predicted = model.predict({"image": images})["digit"].to_numpy()
    return float(np.mean(predicted == labels))


def evaluate(args: argparse.Namespace) -> dict[str, float]:
    data = load_mnist(args.data_path)
    tracking.use_experiment(args.experiment_name)
    model = mlflow.pyfunc.load_model(args.model_uri)
    with mlflow.start_run():
        mlflow.log_param("model_uri", args.model_uri)
        metrics = {"test_accuracy": accuracy(model, data.x_test, data.y_test)}
        if args.wild_limit:
            n = len(data.x_test) if args.wild_limit < 0 else args.wild_limit
            mlflow.log_param("wild_images_per_variant", n)
            rows = evaluate_variants(model.unwrap_python_model(), data.x_test[:n], data.y_test[:n])
            for row in rows:
                metrics[f"wild_{row.variant}_accuracy"] = row.pipeline
                metrics[f"naive_{row.variant}_accuracy"] = row.naive
            table = markdown(rows)
            mlflow.log_text(table, "wild_accuracy.md")
            print(table)
        mlflow.log_metrics(metrics)
    print(f"test_accuracy: {metrics['test_accuracy']:.4f}")
    return metrics


def main(argv: list[str] | None = None) -> int:
    try:
        evaluate(parse_args(argv))
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
