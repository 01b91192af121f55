"""Exit 0 when the registry has a Production version of the model, 1 otherwise.

Used by ``make serve`` to decide whether a first model must be trained.
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args(argv)
    found = has_production(args.model_name)
    print(f"{args.model_name}: {'a' if found else 'no'} Production version")
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main())
