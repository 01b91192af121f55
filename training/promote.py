"""``mlflow run . -e promote``: gated promotion of a registered version to Production.

The candidate (default: the latest version) and the current Production model (the
champion) are scored on the same held-out data: the MNIST test split plus the
"real world" variants of the evaluate entry point. The candidate is promoted only if its
mean accuracy is no worse than the champion's by more than ``margin``; ``--force``
overrides (that is also how to roll back: ``--version <old> --force true``). The
comparison is recorded in the version's tags and description. The previous Production
version is archived, never deleted. Both the (deprecated, still honoured) stage and the
alias are set, so ``models:/NAME/Production`` and ``models:/NAME@production`` agree.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from training import tracking

STAGE = "Production"
ALIAS = "production"


class GateRefused(Exception):
    """The candidate scored worse than the champion by more than the margin."""


class CandidateDoesNotLoad(GateRefused):
    """The candidate cannot be loaded from the registry the way the servers load it."""


@dataclass
class Comparison:
    candidate: str
    champion: str | None
    margin: float
    candidate_scores: dict[str, float] = field(default_factory=dict)
    champion_scores: dict[str, float] = field(default_factory=dict)
    forced: bool = False

    @staticmethod
    def _mean(scores: dict[str, float]) -> float:
        return float(np.mean(list(scores.values()))) if scores else float("nan")

    @property
    def candidate_score(self) -> float:
        return self._mean(self.candidate_scores)

    @property
    def champion_score(self) -> float:
        return self._mean(self.champion_scores)

    @property
    def passed(self) -> bool:
        if self.forced or self.champion is None:
            return True
        return self.candidate_score >= self.champion_score - self.margin

    @property
    def decision(self) -> str:
        if self.forced:
            return "forced"
        return "promoted" if self.passed else "refused"

    def markdown(self) -> str:
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        head = (
            f"## Promotion gate, {when}: {self.decision}\n\n"
            f"Candidate v{self.candidate} against "
            + (f"champion v{self.champion}" if self.champion else "no champion")
            + f", margin {100 * self.margin:.2f} points.\n"
        )
        if not self.candidate_scores:
            return head
        rows = ["", "| held-out set | candidate | champion |", "|---|---:|---:|"]
        for name, score in self.candidate_scores.items():
            champ = self.champion_scores.get(name)
            champ_text = f"{100 * champ:.2f} %" if champ is not None else "–"
            rows.append(f"| {name} | {100 * score:.2f} % | {champ_text} |")
        champ_mean = f"{100 * self.champion_score:.2f} %" if self.champion_scores else "–"
        rows.append(f"| **mean** | **{100 * self.candidate_score:.2f} %** | **{champ_mean}** |")
        return head + "\n".join(rows) + "\n"

    def tags(self) -> dict[str, str]:
        tags = {
            "gate.decision": self.decision,
            "gate.champion_version": self.champion or "",
            "gate.margin": str(self.margin),
        }
        if self.candidate_scores:
            tags["gate.candidate_score"] = f"{self.candidate_score:.6f}"
        if self.champion_scores:
            tags["gate.champion_score"] = f"{self.champion_score:.6f}"
        return tags


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-name", default="digits")
    parser.add_argument("--version", default="", help="version to promote; default the latest")
    parser.add_argument(
        "--margin",
        type=float,
        default=0.001,
        help="how much worse (accuracy, 0-1) than the champion a candidate may be",
    )
    parser.add_argument("--force", default="false", help="true: skip the gate (rollbacks)")
    parser.add_argument("--data-path", default="", help="MNIST .npz; default $MNIST_PATH")
    parser.add_argument(
        "--wild-limit",
        type=int,
        default=500,
        help="test digits per real-world variant in the comparison (0: MNIST test only)",
    )
    return parser.parse_args(argv)


def latest_version(client: MlflowClient, name: str) -> str:
    versions = client.search_model_versions(f"name = '{name}'")
    if not versions:
        raise MlflowException(f"registered model {name!r} has no versions; train one first")
    return str(max(int(v.version) for v in versions))


def production_version(client: MlflowClient, name: str) -> str | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        current = [
            v for v in client.search_model_versions(f"name = '{name}'") if v.current_stage == STAGE
        ]
    return str(max(int(v.version) for v in current)) if current else None


def make_production(client: MlflowClient, name: str, version: str) -> None:
    """Stage Production + alias for ``version``; the previous Production version(s) archived.

    Archiving is done here rather than with ``archive_existing_versions=True``, whose query
    compares an integer column with a string and fails on a PostgreSQL backend store."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # stages are deprecated, still used
        client.transition_model_version_stage(name, version, STAGE)
        for other in client.search_model_versions(f"name = '{name}'"):
            if other.current_stage == STAGE and str(other.version) != str(version):
                client.transition_model_version_stage(name, str(other.version), "Archived")
    client.set_registered_model_alias(name, ALIAS, version)


def score(
    name: str, version: str, data_path: str, wild_limit: int, cache: dict
) -> dict[str, float]:
    """Accuracy per held-out set: the MNIST test split and each real-world variant."""
    from pyfunc.loading import load_version
    from training.data import load_mnist
    from training.wild import build_sets, pipeline_accuracy

    if "data" not in cache:
        data = load_mnist(data_path)
        cache["data"] = data
        cache["sets"] = build_sets(data.x_test[:wild_limit]) if wild_limit else {}
    data, sets = cache["data"], cache["sets"]
    # Loaded as the servers load it, and no download left behind.
    python_model = load_version(mlflow.get_registry_uri(), name, version)
    predicted = python_model.predict(None, {"image": data.x_test})["digit"].to_numpy()
    scores = {"mnist_test": float(np.mean(predicted == data.y_test))}
    for variant, encoded in sets.items():
        scores[variant] = pipeline_accuracy(python_model, encoded, data.y_test[:wild_limit])
    return scores


def check_loads(name: str, version: str) -> None:
    """Load the version from the registry as the servers do (pyfunc.loading: the same
    download, model_config and warm-up), or refuse it with the reason."""
    from pyfunc.loading import load_version

    try:
        load_version(mlflow.get_registry_uri(), name, version, threads=1)
    except Exception as exc:
        raise CandidateDoesNotLoad(
            f"v{version} cannot be loaded from the registry the way the servers load it "
            f"({type(exc).__name__}: {str(exc)[:300]}): not promoted; register a version "
            "whose artifacts load"
        ) from exc


def compare(args: argparse.Namespace, client: MlflowClient) -> Comparison:
    candidate = args.version or latest_version(client, args.model_name)
    client.get_model_version(args.model_name, candidate)  # fails clearly if absent
    check_loads(args.model_name, candidate)  # forced or not: a broken version serves nobody
    champion = production_version(client, args.model_name)
    comparison = Comparison(
        candidate,
        champion if champion != candidate else None,
        args.margin,
        forced=args.force.strip().lower() in ("1", "true", "yes"),
    )
    if comparison.forced or comparison.champion is None:
        return comparison
    cache: dict = {}
    comparison.candidate_scores = score(
        args.model_name, candidate, args.data_path, args.wild_limit, cache
    )
    comparison.champion_scores = score(
        args.model_name, comparison.champion, args.data_path, args.wild_limit, cache
    )
    return comparison


def record(client: MlflowClient, name: str, comparison: Comparison) -> None:
    for key, value in comparison.tags().items():
        client.set_model_version_tag(name, comparison.candidate, key, value)
    previous = client.get_model_version(name, comparison.candidate).description or ""
    text = (previous.rstrip() + "\n\n" if previous else "") + comparison.markdown()
    client.update_model_version(name, comparison.candidate, description=text)


def force_hint() -> str:
    """The override in the words of the command the user typed: ``make promote`` names itself
    in ``PROMOTE_COMMAND``, ``mlflow run`` sets ``MLFLOW_RUN_ID``, else the module's own flag."""
    if command := os.environ.get("PROMOTE_COMMAND"):
        return f"{command} FORCE=true"
    if os.environ.get("MLFLOW_RUN_ID"):
        return "-P force=true"
    return "--force true"


def promote(args: argparse.Namespace) -> Comparison:
    tracking.configure()
    client = MlflowClient()
    comparison = compare(args, client)
    record(client, args.model_name, comparison)
    print(comparison.markdown())
    if not comparison.passed:
        raise GateRefused(
            f"v{comparison.candidate} scores {100 * comparison.candidate_score:.2f} % against "
            f"v{comparison.champion}'s {100 * comparison.champion_score:.2f} % (margin "
            f"{100 * comparison.margin:.2f} points): not promoted; {force_hint()} overrides"
        )
    make_production(client, args.model_name, comparison.candidate)
    print(f"{args.model_name} version {comparison.candidate} is now {STAGE} (alias @{ALIAS})")
    return comparison


def main(argv: list[str] | None = None) -> int:
    from training.data import DataError

    try:
        promote(parse_args(argv))
    except GateRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 3
    except (MlflowException, DataError) as exc:
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
