"""``mlflow run . -e promote``: make a registered version the Production model.

Sets both the (deprecated but still honoured) stage and the alias, so that
``models:/NAME/Production`` and ``models:/NAME@production`` name the same version.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from training import tracking

STAGE = "Production"
ALIAS = "production"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-name", default="digits")
    parser.add_argument("--version", default="", help="version to promote; default the latest")
    return parser.parse_args(argv)


def latest_version(client: MlflowClient, name: str) -> str:
    versions = client.search_model_versions(f"name = '{name}'")
    if not versions:
        raise MlflowException(f"registered model {name!r} has no versions; train one first")
    return str(max(int(v.version) for v in versions))


def promote(name: str, version: str = "") -> str:
    """Move ``version`` (default latest) to Production, archiving the previous one."""
    tracking.configure()
    client = MlflowClient()
    version = version or latest_version(client, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # stages are deprecated, still used
        client.transition_model_version_stage(name, version, STAGE, archive_existing_versions=True)
    client.set_registered_model_alias(name, ALIAS, version)
    print(f"{name} version {version} is now {STAGE} (alias @{ALIAS})")
    return version


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        promote(args.model_name, args.version)
    except MlflowException as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
