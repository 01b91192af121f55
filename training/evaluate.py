"""``mlflow run . -e evaluate``: accuracy of a registered model on the MNIST test split and on
"real world" variants of it (paper, canvas alpha, thick/thin, rotated, off-centre, thumbnail).

``--split validation`` scores the held-out tail of the training split instead (the digits
training validates on, never trained on): recipes are chosen there, so the test split is
measured once per chosen model and never tuned on."""

from __future__ import annotations

import argparse
import sys

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PyFuncModel

from training import tracking
from training.data import VALIDATION_SPLIT, DataError, Mnist, load_mnist, validation_size
from training.wild import evaluate_variants, markdown

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


def accuracy(model: PyFuncModel, images: np.ndarray, labels: np.ndarray) -> float:
    """Share of ``images`` the pyfunc labels correctly, through its public predict()."""
    answer = model.predict({"image": images})
    if not isinstance(answer, pd.DataFrame):  # DigitModel.predict answers one
        raise TypeError(f"{type(answer).__name__} from the model, not a DataFrame")
    predicted = answer["digit"].to_numpy()
    return float(np.mean(predicted == labels))


def held_out(data: Mnist, split: str, validation_split: float) -> tuple[np.ndarray, np.ndarray]:
    """The digits to score: the test split, or the validation tail training holds out."""
    if split == "test":
        return data.x_test, data.y_test
    n_val = validation_size(len(data.x_train), validation_split)
    if n_val < 1:
        raise DataError(f"validation split {validation_split} of {len(data.x_train)} is empty")
    return data.x_train[-n_val:], data.y_train[-n_val:]


def evaluate(args: argparse.Namespace) -> dict[str, float]:
    x, y = held_out(load_mnist(args.data_path), args.split, args.validation_split)
    prefix = "" if args.split == "test" else f"{args.split}_"
    tracking.use_experiment(args.experiment_name)
    model = mlflow.pyfunc.load_model(args.model_uri)
    with mlflow.start_run():
        mlflow.log_params({"model_uri": args.model_uri, "split": args.split})
        metrics = {f"{args.split}_accuracy": accuracy(model, x, y)}
        if args.wild_limit:
            n = len(x) if args.wild_limit < 0 else args.wild_limit
            mlflow.log_param("wild_images_per_variant", n)
            rows = evaluate_variants(model.unwrap_python_model(), x[:n], y[:n])
            for row in rows:
                metrics[f"{prefix}wild_{row.variant}_accuracy"] = row.pipeline
                metrics[f"{prefix}naive_{row.variant}_accuracy"] = row.naive
                metrics[f"{prefix}wild_{row.variant}_confident_wrong"] = row.confident_wrong
            table = markdown(rows)
            mlflow.log_text(table, f"{prefix}wild_accuracy.md")
            print(table)
        mlflow.log_metrics(metrics)
    print(f"{args.split}_accuracy: {metrics[f'{args.split}_accuracy']:.4f}")
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
