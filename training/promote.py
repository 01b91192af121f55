"""``mlflow run . -e promote``: gated promotion of a registered version to Production.

The candidate (default: the latest version) and the current Production model (the
champion), of any families, answer the very same held-out images (``training.evidence``:
all of MNIST test, the validation digits and seeded renderings of the real-world variants).
Each image is a pair of outcomes; the gate decides on the difference of the two accuracies
and its interval from the discordant pairs (``training.paired``): the candidate is refused
only when it is worse than the champion by more than ``margin`` with confidence
``1 - alpha``. ``--force`` overrides (that is also how to roll back: ``--version <old>
--force true``). The comparison is recorded in the version's tags and description. The
previous Production version is archived, never deleted. Both the (deprecated, still
honoured) stage and the alias are set, so ``models:/NAME/Production`` and
``models:/NAME@production`` agree.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from training import tracking
from training.paired import ALPHA, Paired

STAGE = "Production"
ALIAS = "production"
DEFAULT_FAMILY = "keras_example"  # versions logged before families existed


class GateRefused(Exception):
    """The candidate is worse than the champion by more than the margin, confidently."""


class CandidateDoesNotLoad(GateRefused):
    """The candidate cannot be loaded from the registry the way the servers load it."""


def _points(share: float) -> str:
    return f"{100 * share:+.2f}"


@dataclass
class Comparison:
    candidate: str
    champion: str | None
    margin: float
    alpha: float = ALPHA
    forced: bool = False
    candidate_family: str = ""
    champion_family: str = ""
    # Per held-out set, and all images pooled (what the gate decides on).
    sets: dict[str, Paired] = field(default_factory=dict)
    evidence: str = ""

    @property
    def overall(self) -> Paired | None:
        if not self.sets:
            return None
        parts = list(self.sets.values())
        return Paired(
            n=sum(p.n for p in parts),
            b=sum(p.b for p in parts),
            c=sum(p.c for p in parts),
            both=sum(p.both for p in parts),
            alpha=self.alpha,
        )

    @property
    def candidate_score(self) -> float:
        return self.overall.candidate_accuracy if self.overall else float("nan")

    @property
    def champion_score(self) -> float:
        return self.overall.champion_accuracy if self.overall else float("nan")

    @property
    def passed(self) -> bool:
        if self.forced or self.champion is None or self.overall is None:
            return True
        return self.overall.non_inferior(self.margin)

    @property
    def decision(self) -> str:
        if self.forced:
            return "forced"
        return "promoted" if self.passed else "refused"

    def _name(self, version: str, family: str) -> str:
        return f"v{version}" + (f" ({family})" if family else "")

    def rule(self) -> str:
        return (
            f"refused only if the candidate is worse than the champion by more than "
            f"{100 * self.margin:.2f} points with {100 * (1 - self.alpha):.0f} % confidence "
            f"(the one-sided upper bound of the difference below {_points(-self.margin)})"
        )

    def verdict(self) -> str:
        """The numbers the decision rests on, in one sentence."""
        overall = self.overall
        if overall is None:
            return ""
        lower, upper = overall.interval
        return (
            f"{overall.n:,} paired images: the candidate alone right on {overall.b}, the "
            f"champion alone on {overall.c}; difference {_points(overall.difference)} points, "
            f"one-sided {100 * (1 - self.alpha):.0f} % bounds [{_points(lower)}, "
            f"{_points(upper)}] points; P(worse by more than the margin) test p = "
            f"{overall.p_worse_than(self.margin):.3g}; exact McNemar p (any difference) = "
            f"{overall.mcnemar_p:.3g}"
        )

    def markdown(self) -> str:
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        head = (
            f"## Promotion gate, {when}: {self.decision}\n\n"
            f"Candidate {self._name(self.candidate, self.candidate_family)} against "
            + (
                f"champion {self._name(self.champion, self.champion_family)}"
                if self.champion
                else "no champion"
            )
            + f", margin {100 * self.margin:.2f} points.\n"
        )
        overall = self.overall
        if overall is None:
            return head
        rows = [
            "",
            f"Rule: {self.rule()}. Evidence {self.evidence}.",
            "",
            "| held-out set | images | candidate | champion | candidate alone right "
            "| champion alone right | difference (points) |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, paired in [*self.sets.items(), ("**all (decides)**", overall)]:
            rows.append(
                f"| {name} | {paired.n:,} | {100 * paired.candidate_accuracy:.2f} % "
                f"| {100 * paired.champion_accuracy:.2f} % | {paired.b} | {paired.c} "
                f"| {_points(paired.difference)} |"
            )
        return head + "\n".join(rows) + f"\n\n{self.verdict()}: {self.decision}.\n"

    def short_markdown(self) -> str:
        """The report without its table, for a description near the registry's limit."""
        full = self.markdown()
        if self.overall is None:
            return full
        head = full.split("\n\nRule:")[0]
        return f"{head}\n\n{self.verdict()}: {self.decision}.\n"

    def tags(self) -> dict[str, str]:
        tags = {
            "gate.decision": self.decision,
            "gate.champion_version": self.champion or "",
            "gate.margin": str(self.margin),
            "gate.alpha": str(self.alpha),
        }
        if self.candidate_family:
            tags["gate.candidate_family"] = self.candidate_family
        if self.champion_family:
            tags["gate.champion_family"] = self.champion_family
        overall = self.overall
        if overall is not None:
            lower, upper = overall.interval
            tags.update(
                {
                    "gate.candidate_score": f"{overall.candidate_accuracy:.6f}",
                    "gate.champion_score": f"{overall.champion_accuracy:.6f}",
                    "gate.images": str(overall.n),
                    "gate.candidate_only_right": str(overall.b),
                    "gate.champion_only_right": str(overall.c),
                    "gate.difference": f"{overall.difference:.6f}",
                    "gate.difference_lower": f"{lower:.6f}",
                    "gate.difference_upper": f"{upper:.6f}",
                    "gate.p_worse_than_margin": f"{overall.p_worse_than(self.margin):.4g}",
                    "gate.mcnemar_p": f"{overall.mcnemar_p:.4g}",
                    "gate.evidence": self.evidence,
                }
            )
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
    parser.add_argument(
        "--alpha",
        type=float,
        default=ALPHA,
        help="refuse only when the candidate is worse by more than the margin with "
        "confidence 1 - alpha",
    )
    parser.add_argument("--force", default="false", help="true: skip the gate (rollbacks)")
    parser.add_argument("--data-path", default="", help="MNIST .npz; default $MNIST_PATH")
    parser.add_argument(
        "--wild-limit",
        type=int,
        default=500,
        help="seeded renderings of test digits per real-world variant (0: no variants)",
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


def family_of(model: Any) -> str:
    return str(getattr(model, "family", None) or DEFAULT_FAMILY)


def score(uri: str, name: str, version: str, evidence: Any) -> tuple[str, dict[str, np.ndarray]]:
    """The version's family and, per held-out set, which images its top answer gets right.
    Loaded as the servers load it (pyfunc.loading: no download left behind)."""
    from pyfunc.loading import load_version
    from training.evidence import score as score_evidence

    # One runtime thread, as the service runs it: results do not depend on it, and a
    # runtime's own thread pool only fights the other work of a shared machine.
    model = load_version(uri, name, version, threads=1)
    outcomes = score_evidence(model, evidence)
    return family_of(model), {set_name: o.right for set_name, o in outcomes.items()}


def check_loads(uri: str, name: str, version: str) -> None:
    """Load the version from the registry as the servers do (pyfunc.loading: the same
    download, model_config and warm-up), or refuse it with the reason."""
    from pyfunc.loading import load_version

    try:
        load_version(uri, name, version, threads=1)
    except Exception as exc:
        raise CandidateDoesNotLoad(
            f"v{version} cannot be loaded from the registry the way the servers load it "
            f"({type(exc).__name__}: {str(exc)[:300]}): not promoted; register a version "
            "whose artifacts load"
        ) from exc


def compare(args: argparse.Namespace, client: MlflowClient, uri: str) -> Comparison:
    """Candidate against champion on the same images, in the registry at ``uri``."""
    from training.data import load_mnist
    from training.evidence import Evidence

    candidate = args.version or latest_version(client, args.model_name)
    client.get_model_version(args.model_name, candidate)  # fails clearly if absent
    check_loads(uri, args.model_name, candidate)  # forced or not: a broken version serves nobody
    champion = production_version(client, args.model_name)
    comparison = Comparison(
        candidate,
        champion if champion != candidate else None,
        args.margin,
        alpha=args.alpha,
        forced=args.force.strip().lower() in ("1", "true", "yes"),
    )
    if comparison.forced or comparison.champion is None:
        return comparison
    evidence = Evidence(load_mnist(args.data_path), per_variant=max(args.wild_limit, 0))
    comparison.evidence = describe(evidence)
    comparison.candidate_family, candidate_right = score(uri, args.model_name, candidate, evidence)
    comparison.champion_family, champion_right = score(
        uri, args.model_name, comparison.champion, evidence
    )
    comparison.sets = {
        name: Paired.of(candidate_right[name], champion_right[name], args.alpha)
        for name in evidence.names()
        if len(candidate_right[name])
    }
    return comparison


def describe(evidence: Any) -> str:
    sizes = evidence.sizes()
    variants = [n for n in evidence.variants if sizes[n]]
    text = f"MNIST test {sizes['mnist_test']:,}, validation {sizes['validation']:,}"
    if variants:
        text += f", {len(variants)} variants x {evidence.per_variant} (seed {evidence.seed})"
    return f"{text}; fingerprint {evidence.fingerprint}"


def record(client: MlflowClient, name: str, comparison: Comparison) -> None:
    for key, value in comparison.tags().items():
        client.set_model_version_tag(name, comparison.candidate, key, value)
    previous = client.get_model_version(name, comparison.candidate).description or ""
    text = description_with(previous, comparison.markdown(), comparison.short_markdown())
    client.update_model_version(name, comparison.candidate, description=text)


# The registry's description column is varchar(5000) (enforced on PostgreSQL).
DESCRIPTION_LIMIT = 5000
REPORT_HEAD = "## Promotion gate"


def description_with(previous: str, report: str, short_report: str) -> str:
    """``previous`` (the model card and earlier gate reports) with ``report`` appended,
    within :data:`DESCRIPTION_LIMIT`: the oldest reports go first, then the table (the
    ``short_report``); the version's tags keep the numbers."""
    card, *reports = previous.split(f"\n{REPORT_HEAD}")
    reports = [REPORT_HEAD + r for r in reports]
    card = card.rstrip()
    for latest in (report, short_report):
        kept = list(reports)
        while True:
            text = "\n\n".join(p.rstrip() for p in [card, *kept, latest] if p.strip()) + "\n"
            if len(text) <= DESCRIPTION_LIMIT or not kept:
                break
            kept.pop(0)
        if len(text) <= DESCRIPTION_LIMIT:
            return text
    return text[: DESCRIPTION_LIMIT - 2].rstrip() + "…\n"


def force_hint() -> str:
    """The override in the words of the command the user typed: ``make promote`` names itself
    in ``PROMOTE_COMMAND``, ``mlflow run`` sets ``MLFLOW_RUN_ID``, else the module's own flag."""
    if command := os.environ.get("PROMOTE_COMMAND"):
        return f"{command} FORCE=true"
    if os.environ.get("MLFLOW_RUN_ID"):
        return "-P force=true"
    return "--force true"


def promote(args: argparse.Namespace) -> Comparison:
    uri = tracking.configure()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    comparison = compare(args, client, uri)
    record(client, args.model_name, comparison)
    print(comparison.markdown())
    if not comparison.passed:
        raise GateRefused(
            f"v{comparison.candidate} scores {100 * comparison.candidate_score:.2f} % against "
            f"v{comparison.champion}'s {100 * comparison.champion_score:.2f} % on the same "
            f"images, worse by more than {100 * comparison.margin:.2f} points with "
            f"{100 * (1 - comparison.alpha):.0f} % confidence ({comparison.verdict()}): "
            f"not promoted; {force_hint()} overrides"
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
