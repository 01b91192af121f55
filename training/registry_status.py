"""Exit 0 when the registry has a Production version of the model, 1 otherwise.

Used by ``make serve`` to decide whether a first model must be trained.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from training import tracking


def has_production(name: str) -> bool:
    tracking.configure()
    client = MlflowClient()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return False
    return any(v.current_stage == "Production" for v in versions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-name", default="digits")
    parser.add_argument(
        "--first-start",
        type=int,
        default=0,
        metavar="EPOCHS",
        help="say what make serve does next when there is no Production version: train a "
        "quick model of EPOCHS epochs, promote it, serve it",
    )
    parser.add_argument("--url", default="", help="where make serve will serve, for that line")
    args = parser.parse_args(argv)
    found = has_production(args.model_name)
    if found or not args.first_start:
        print(f"{args.model_name}: {'a' if found else 'no'} Production version")
    else:
        print(first_start_message(args.model_name, args.first_start, args.url), flush=True)
    return 0 if found else 1


def first_start_message(name: str, epochs: int, url: str) -> str:
    """What ``make serve`` is about to do on an empty registry. How long the training takes
    on this machine follows from the training itself, timed on its first batches
    (training.progress): a figure from elsewhere would say nothing about here."""
    where = f" on {url}" if url else ""
    registry = re.sub(r"//[^/@]*@", "//", tracking.tracking_uri())  # no password on screen
    return (
        f"make serve: no Production version of '{name}' in {registry} yet. "
        f"Training a quick one ({epochs} epoch{'s' if epochs != 1 else ''} on the MNIST "
        "training digits: they are prepared first, then its first batches are timed and how "
        "long it takes on this machine is printed), then the promotion gate scores it, then "
        f"it is served{where}."
    )


if __name__ == "__main__":
    sys.exit(main())
