"""``make leaderboard`` (``mlflow run . -e leaderboard``): every registered version of the model,
of any family, on the same held-out images, with its latency in the service's path and size.

Accuracy is the promotion gate's evidence (``training.evidence``: all of MNIST test, the
validation digits, seeded renderings of each real-world variant), scored through the
digit-model contract. Per version it is cached in the version's tag ``leaderboard.scores``
under the evidence's fingerprint, so a second run scores only new versions (or all of them
after a change to the images or to the rendering and pre-processing code). Latency is
measured again on every run, all versions in the same run, since timings of this shared
machine are only comparable within one run: single images (28×28 PNGs of test digits)
through ``pre_process`` and ``probabilities`` of the version loaded as the service loads it
(``pyfunc.loading``, ONNX Runtime with the service's thread setting), median over N.

The table is printed as Markdown and logged as ``leaderboard.md`` and ``leaderboard.json``
artifacts of a run named ``leaderboard`` in the ``digits`` experiment.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from training.evidence import PER_VARIANT, SEED, Evidence, score

CACHE_TAG = "leaderboard.scores"
# serving/config.py's inference_threads default: one runtime thread per worker.
SERVICE_THREADS = 1
LATENCY_IMAGES = 200
DEFAULT_FAMILY = "keras_example"  # versions logged before families existed


@dataclass
class Row:
    version: str
    family: str = ""
    stage: str = ""
    aliases: list[str] = field(default_factory=list)
    # Share right per held-out set (training.evidence's names).
    accuracy: dict[str, float] = field(default_factory=dict)
    # Share of all evidence images not answered: no digit found, or the rejector refused it.
    refused: float = math.nan
    latency_ms: float = math.nan
    size_bytes: int = 0
    cached: bool = False
    error: str = ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-name", default="digits")
    parser.add_argument("--data-path", default="", help="MNIST .npz; default $MNIST_PATH")
    parser.add_argument(
        "--wild-limit",
        type=int,
        default=PER_VARIANT,
        help="seeded renderings of test digits per real-world variant (0: no variants)",
    )
    parser.add_argument("--latency-images", type=int, default=LATENCY_IMAGES)
    parser.add_argument(
        "--threads",
        type=int,
        default=SERVICE_THREADS,
        help="runtime threads per model, as the service's inference_threads",
    )
    parser.add_argument(
        "--rescore", default="false", help="true: score every version again, cache or not"
    )
    parser.add_argument("--experiment-name", default="digits")
    return parser.parse_args(argv)


def leaderboard(
    tracking_uri: str,
    name: str,
    evidence: Evidence,
    latency_images: int = LATENCY_IMAGES,
    threads: int = SERVICE_THREADS,
    rescore: bool = False,
) -> list[Row]:
    """A row per registered version of ``name``, oldest first."""
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # stages are deprecated, still shown
        versions = sorted(client.search_model_versions(f"name = '{name}'"), key=_number)
    if not versions:
        raise MlflowException(f"registered model {name!r} has no versions; train one first")
    singles = _latency_inputs(evidence, latency_images)
    rows = []
    for version in versions:
        row = Row(str(version.version), stage=version.current_stage or "")
        # search_model_versions leaves aliases out; get_model_version has them.
        row.aliases = sorted(client.get_model_version(name, row.version).aliases or [])
        rows.append(row)
        try:
            model, row.size_bytes = _load(tracking_uri, name, row.version, threads)
        except Exception as exc:  # a broken version is a row, not the end of the table
            row.error = f"does not load: {type(exc).__name__}: {str(exc)[:200]}"
            row.family = _run_family(client, version.run_id)
            continue
        row.family = str(getattr(model, "family", None) or _run_family(client, version.run_id))
        cached = None if rescore else _cached(version.tags, evidence.fingerprint)
        if cached is not None:
            row.accuracy, row.refused, row.cached = cached["accuracy"], cached["refused"], True
        else:
            _score(row, model, evidence)
            client.set_model_version_tag(name, row.version, CACHE_TAG, _cache_value(row, evidence))
        row.latency_ms = latency_ms(model, singles)
    return rows


def _number(version: Any) -> int:
    return int(version.version)


def _load(tracking_uri: str, name: str, version: str, threads: int) -> tuple[Any, int]:
    """The version loaded as the service loads it, and the size of its files."""
    from pyfunc.loading import load_version

    sizes: list[int] = []

    def measure(path: Path) -> None:
        sizes.append(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()))

    model = load_version(tracking_uri, name, version, threads=threads, keep=measure)
    return model, sizes[0] if sizes else 0


def _run_family(client: MlflowClient, run_id: str | None) -> str:
    try:
        tags = client.get_run(run_id).data.tags if run_id else {}
    except MlflowException:
        tags = {}
    return tags.get("family") or DEFAULT_FAMILY


def _cached(tags: dict[str, str], fingerprint: str) -> dict[str, Any] | None:
    try:
        cached = json.loads(tags.get(CACHE_TAG) or "null")
    except ValueError:
        return None
    if not isinstance(cached, dict) or cached.get("evidence") != fingerprint:
        return None
    return cached


def _score(row: Row, model: Any, evidence: Evidence) -> None:
    outcomes = score(model, evidence)
    row.accuracy = {name: o.accuracy for name, o in outcomes.items() if len(o.right)}
    refused = np.concatenate([o.refused for o in outcomes.values()])
    row.refused = float(refused.mean()) if len(refused) else math.nan


def _cache_value(row: Row, evidence: Evidence) -> str:
    return json.dumps(
        {
            "evidence": evidence.fingerprint,
            "accuracy": {k: round(v, 6) for k, v in row.accuracy.items()},
            "refused": round(row.refused, 6),
        },
        separators=(",", ":"),
    )


def _latency_inputs(evidence: Evidence, n: int) -> list[bytes]:
    """The first ``n`` MNIST test digits as 28×28 PNGs, as a client sends them."""
    from training.variants import png_bytes

    return [png_bytes(digit) for digit in evidence.data.x_test[:n]]


def latency_ms(model: Any, images: list[bytes]) -> float:
    """Median milliseconds per single image through ``pre_process`` and ``probabilities``."""
    if not images:
        return math.nan
    model.probabilities(model.pre_process([images[0]]))  # warm caches before timing
    times = []
    for image in images:
        start = time.perf_counter()
        model.probabilities(model.pre_process([image]))
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def _pct(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def markdown(rows: list[Row], evidence: Evidence, latency_images: int, threads: int) -> str:
    sets = evidence.names()
    sizes = evidence.sizes()
    variants = [n for n in evidence.variants if sizes[n]]
    head = (
        ["version", "family", "stage", "aliases"]
        + [f"{n} %" for n in sets if sizes[n]]
        + (["variants mean %"] if variants else [])
        + ["refused %", "ms / image", "size MB"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 4 + "---:|" * (len(head) - 4)]
    for row in rows:
        if row.error:
            cells = [row.version, row.family, row.stage, " ".join(row.aliases), row.error]
            lines.append("| " + " | ".join(cells) + " |")
            continue
        accuracy = [_pct(row.accuracy.get(n)) for n in sets if sizes[n]]
        mean = [_pct(float(np.mean([row.accuracy[n] for n in variants])))] if variants else []
        cells = [
            row.version,
            row.family,
            row.stage,
            " ".join(f"@{a}" for a in row.aliases),
            *accuracy,
            *mean,
            _pct(row.refused),
            f"{row.latency_ms:.2f}",
            f"{row.size_bytes / 1e6:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    notes = (
        f"\nImages: MNIST test {sizes['mnist_test']:,}, validation {sizes['validation']:,}"
        + (f", {evidence.per_variant} per variant (seed {evidence.seed})" if variants else "")
        + f"; evidence {evidence.fingerprint}. Accuracy: the top answer is the label; refused: "
        f"the share of all these digits not answered (no digit found, or the version's "
        f"rejector refused it). Latency: median of "
        f"{latency_images} single 28x28 PNGs through pre_process + probabilities, "
        f"{threads} runtime thread(s), measured "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} in one run.\n"
    )
    return "\n".join(lines) + "\n" + notes


def as_json(rows: list[Row], evidence: Evidence, latency_images: int, threads: int) -> dict:
    return {
        "evidence": {
            "fingerprint": evidence.fingerprint,
            "per_variant": evidence.per_variant,
            "seed": evidence.seed,
            "images": evidence.sizes(),
        },
        "latency": {"images": latency_images, "threads": threads},
        "measured": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": [
            {
                k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in asdict(r).items()
            }
            for r in rows
        ],
    }


def log_run(
    tracking_uri: str, experiment: str, table: str, document: dict, params: dict[str, Any]
) -> str:
    """A run named ``leaderboard`` with the table as artifacts; its id. Inside ``mlflow run``
    the entry point's own run is used (tagged ``mlflow.project.entryPoint`` leaderboard)."""
    import os

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else _create_experiment(experiment)
        run_id = client.create_run(experiment_id, run_name="leaderboard").info.run_id
    # mlflow run has logged the entry point's parameters already (as typed: a param may
    # not change value), so only the others are added.
    logged = client.get_run(run_id).data.params
    for key, value in params.items():
        if key not in logged:
            client.log_param(run_id, key, value)
    client.log_text(run_id, table, "leaderboard.md")
    client.log_dict(run_id, document, "leaderboard.json")
    if not os.environ.get("MLFLOW_RUN_ID"):
        client.set_terminated(run_id)
    return run_id


def _create_experiment(name: str) -> str:
    from training import tracking

    tracking.configure()
    return tracking.ensure_experiment(name)


def main(argv: list[str] | None = None) -> int:
    from training import tracking
    from training.data import DataError, load_mnist

    args = parse_args(argv)
    uri = tracking.configure()
    try:
        evidence = Evidence(load_mnist(args.data_path), per_variant=max(args.wild_limit, 0))
        rescore = args.rescore.strip().lower() in ("1", "true", "yes")
        rows = leaderboard(
            uri, args.model_name, evidence, args.latency_images, args.threads, rescore
        )
    except (MlflowException, DataError) as exc:
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    table = markdown(rows, evidence, args.latency_images, args.threads)
    document = as_json(rows, evidence, args.latency_images, args.threads)
    params = {
        "model_name": args.model_name,
        "wild_limit": evidence.per_variant,
        "seed": SEED,
        "evidence": evidence.fingerprint,
        "latency_images": args.latency_images,
        "threads": args.threads,
    }
    run_id = log_run(uri, args.experiment_name, table, document, params)
    print(table)
    cached = sum(r.cached for r in rows)
    broken = sum(bool(r.error) for r in rows)
    print(
        f"{len(rows) - cached - broken} versions scored, {cached} from cache, "
        f"{broken} not loadable; run {run_id}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
