"""``mlflow run . -e evaluate``: accuracy of a registered model, of any family, on the MNIST
test split, the validation digits and "real world" variants of the test digits (paper, canvas
alpha, thick/thin, rotated, off-centre, thumbnail, photos).

``--split validation`` scores the held-out tail of the training split alone, and variants of
its digits (the digits training validates on, never trained on): recipes are chosen there, so
the test split is measured once per chosen model and never tuned on.

The model is scored through the digit-model contract (``pre_process``, ``probabilities``,
``classify`` of the loaded pyfunc), as the promotion gate and the leaderboard score it
(``training.evidence``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import mlflow
import numpy as np

from training import tracking
from training.data import VALIDATION_SPLIT, DataError, Mnist, load_mnist, validation_size
from training.evidence import outcomes
from training.wild import evaluate_variants, markdown

DEFAULT_FAMILY = "keras_example"  # versions logged before families existed

SPLITS = ("test", "validation")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-uri", default="models:/digits/Production")
    parser.add_argument("--data-path", default="")
    parser.add_argument("--experiment-name", default="digits")
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default="test",
        help="test: MNIST's test split; validation: the tail of the training split that "
        "training holds out (--validation-split of it)",
    )
    parser.add_argument("--validation-split", type=float, default=VALIDATION_SPLIT)
    parser.add_argument(
        "--wild-limit",
        type=int,
        default=2000,
        help="test digits per variant (0 skips the variants, -1 uses all 10,000)",
    )
    return parser.parse_args(argv)


def accuracy(model: Any, images: np.ndarray, labels: np.ndarray) -> float:
    """Share of ``images`` whose top answer from the model (any family) is the label."""
    return outcomes(model, images, labels).accuracy


def held_out(data: Mnist, split: str, validation_split: float) -> tuple[np.ndarray, np.ndarray]:
    """The digits to score: the test split, or the validation tail training holds out."""
    if split == "test":
        return data.x_test, data.y_test
    n_val = validation_size(len(data.x_train), validation_split)
    if n_val < 1:
        raise DataError(f"validation split {validation_split} of {len(data.x_train)} is empty")
    return data.x_train[-n_val:], data.y_train[-n_val:]


def evaluate(args: argparse.Namespace) -> dict[str, float]:
    data = load_mnist(args.data_path)
    x, y = held_out(data, args.split, args.validation_split)
    prefix = "" if args.split == "test" else f"{args.split}_"
    tracking.use_experiment(args.experiment_name)
    model = mlflow.pyfunc.load_model(args.model_uri).unwrap_python_model()
    family = str(getattr(model, "family", None) or DEFAULT_FAMILY)
    with mlflow.start_run():
        mlflow.log_params({"model_uri": args.model_uri, "split": args.split, "family": family})
        mlflow.set_tag("family", family)
        scored = outcomes(model, x, y)
        metrics = {
            f"{args.split}_accuracy": scored.accuracy,
            f"{args.split}_refused": scored.refused_share,
        }
        if args.split == "test":  # the validation digits too: the gate's evidence
            validation = outcomes(model, *held_out(data, "validation", args.validation_split))
            metrics["validation_accuracy"] = validation.accuracy
            metrics["validation_refused"] = validation.refused_share
        if args.wild_limit:
            n = len(x) if args.wild_limit < 0 else args.wild_limit
            mlflow.log_param("wild_images_per_variant", n)
            rows = evaluate_variants(model, x[:n], y[:n])
            for row in rows:
                metrics[f"{prefix}wild_{row.variant}_accuracy"] = row.pipeline
                if not np.isnan(row.naive):
                    metrics[f"{prefix}naive_{row.variant}_accuracy"] = row.naive
                metrics[f"{prefix}wild_{row.variant}_confident_wrong"] = row.confident_wrong
            table = markdown(rows)
            mlflow.log_text(table, f"{prefix}wild_accuracy.md")
            print(table)
        mlflow.log_metrics(metrics)
    print(f"family: {family}")
    for name in ("test_accuracy", "validation_accuracy"):
        if name in metrics:
            print(f"{name}: {metrics[name]:.4f}")
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
