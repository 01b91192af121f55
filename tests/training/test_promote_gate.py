"""The promotion gate over a real sqlite registry: tiny models compared on the same images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from tests import tiny_model
from tests.support import Registry, add_version
from training.data import Mnist
from training.evidence import gate_variants
from training.promote import (
    DESCRIPTION_LIMIT,
    Comparison,
    compare,
    description_with,
    make_production,
    parse_args,
)

# The family the tiny model is logged as (the Keras/ONNX class under a name of its own).
TINY_FAMILY = getattr(tiny_model, "FAMILY", "keras_example")


def write_weak_onnx(mnist: Mnist, path: Path) -> Path:
    """A much weaker softmax than the tiny model: 100 digits, 3 steps (well under 80 %)."""
    import onnx

    from pyfunc.preprocess import pre_process

    x = pre_process(mnist.x_train[:100]).reshape(100, tiny_model.PIXELS)
    weights, bias = tiny_model.fit_softmax(x, mnist.y_train[:100], steps=3)
    onnx.save(tiny_model.onnx_graph(weights, bias), str(path))
    return path


# Images of each "real world" variant: drawing them (phone photos) and pre-processing them
# for both models is most of a comparison's time; the MNIST digits go as one fast batch.
WILD = "2"


@pytest.fixture(scope="module")
def gate_registry(tmp_path_factory: pytest.TempPathFactory, tiny_onnx: Path, mnist: Mnist):
    """v1 the tiny model (Production), v2 a weak one, v3 the very files of v1 again."""
    root = tmp_path_factory.mktemp("gate-registry")
    reg = Registry.create(root)
    tiny_model.register(reg.tracking_uri, tiny_onnx)
    tiny_model.register(reg.tracking_uri, write_weak_onnx(mnist, root / "weak.onnx"))
    client = MlflowClient(tracking_uri=reg.tracking_uri, registry_uri=reg.tracking_uri)
    make_production(client, "digits", "1")
    first = client.get_model_version("digits", "1")
    assert add_version(reg.tracking_uri, first.source, first.run_id) == "3"
    return reg, client


def _compare(gate_registry, small_mnist_path: Path, version: str) -> Comparison:
    reg, client = gate_registry
    args = parse_args(
        ["--version", version, "--data-path", str(small_mnist_path), "--wild-limit", WILD]
    )
    return compare(args, client, reg.tracking_uri)


def test_a_clearly_worse_candidate_is_refused(gate_registry, small_mnist_path) -> None:
    comparison = _compare(gate_registry, small_mnist_path, "2")
    assert comparison.champion == "1"
    assert comparison.decision == "refused" and not comparison.passed
    overall = comparison.overall
    assert overall is not None
    # Every image of MNIST test, validation and each variant's renderings, for both models.
    assert overall.n == 1_000 + 200 + len(gate_variants()) * int(WILD)
    assert overall.c > overall.b > 0
    assert overall.interval[1] < -comparison.margin
    assert set(comparison.sets) >= {"mnist_test", "validation", "paper_jpeg", "desk_photo"}
    assert comparison.candidate_family == comparison.champion_family == TINY_FAMILY
    tags = comparison.tags()
    assert tags["gate.decision"] == "refused"
    assert int(tags["gate.champion_only_right"]) == overall.c
    assert float(tags["gate.difference_upper"]) < -0.001
    report = comparison.markdown()
    assert "| mnist_test | 1,000 |" in report and "**all (decides)**" in report
    assert "exact McNemar" in report


def test_the_same_model_again_is_promoted_with_no_discordant_pair(gate_registry, small_mnist_path):
    comparison = _compare(gate_registry, small_mnist_path, "3")
    overall = comparison.overall
    assert overall is not None and (overall.b, overall.c) == (0, 0)
    assert comparison.passed and comparison.decision == "promoted"


def test_a_better_candidate_is_promoted(gate_registry, small_mnist_path) -> None:
    _, client = gate_registry
    make_production(client, "digits", "2")
    try:
        comparison = _compare(gate_registry, small_mnist_path, "1")
    finally:
        make_production(client, "digits", "1")
    overall = comparison.overall
    assert overall is not None and overall.interval[0] > 0
    assert comparison.passed
    assert np.isclose(comparison.candidate_score, overall.candidate_accuracy)


def test_a_forced_promotion_scores_nothing(gate_registry, small_mnist_path) -> None:
    reg, client = gate_registry
    args = parse_args(["--version", "2", "--force", "true", "--data-path", str(small_mnist_path)])
    comparison = compare(args, client, reg.tracking_uri)
    assert comparison.decision == "forced" and comparison.overall is None


SECOND_FAMILY = hasattr(tiny_model, "fit_pooled")


@pytest.mark.skipif(not SECOND_FAMILY, reason="tests/tiny_model.py has no second family")
def test_the_gate_compares_across_families(tmp_path, tiny_onnx, mnist, small_mnist_path):
    reg = Registry.create(tmp_path / "reg")
    tiny_model.register(reg.tracking_uri, tiny_onnx)
    second = tiny_model.register_pooled(
        reg.tracking_uri, tiny_model.fit_pooled(mnist.x_train, mnist.y_train)
    )
    client = MlflowClient(tracking_uri=reg.tracking_uri, registry_uri=reg.tracking_uri)
    make_production(client, "digits", "1")
    args = parse_args(
        ["--version", second, "--data-path", str(small_mnist_path), "--wild-limit", WILD]
    )
    comparison = compare(args, client, reg.tracking_uri)
    assert comparison.candidate_family == tiny_model.POOLED_FAMILY
    assert comparison.champion_family == TINY_FAMILY
    overall = comparison.overall
    assert overall is not None and overall.n == 1_000 + 200 + len(gate_variants()) * int(WILD)
    # Different models: they disagree somewhere, and the decision follows the rule.
    assert overall.b + overall.c > 0
    assert comparison.passed == (overall.interval[1] >= -comparison.margin)
    assert comparison.tags()["gate.candidate_family"] == tiny_model.POOLED_FAMILY


def test_the_description_keeps_the_card_and_the_newest_report_within_the_limit() -> None:
    card = "# Model card\n\n" + "x" * 1500
    old = [f"## Promotion gate, day {i}: refused\n\n" + "r" * 1400 for i in range(3)]
    report = "## Promotion gate, today: promoted\n\n" + "t" * 1400
    short = "## Promotion gate, today: promoted\n\nverdict"
    assert description_with(card, report, short) == f"{card}\n\n{report}\n"
    text = description_with("\n\n".join([card, *old]), report, short)
    assert len(text) <= DESCRIPTION_LIMIT
    assert text.startswith(card) and text.rstrip().endswith(report)
    assert "day 0" not in text and "day 2" in text  # the oldest reports go first
    # A card that leaves no room for the table: the short report, then a cut.
    assert description_with("y" * 4000, report, short).endswith(short + "\n")
    assert len(description_with("z" * 6000, report, short)) <= DESCRIPTION_LIMIT
