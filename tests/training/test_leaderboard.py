"""The leaderboard over a real sqlite registry with two tiny models: same images for both,
cached scores, latency and size, the table logged as artifacts of a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests import tiny_model
from tests.support import Registry
from tests.training.test_promote_gate import write_weak_onnx
from training.data import Mnist
from training.evidence import Evidence
from training.leaderboard import CACHE_TAG, as_json, leaderboard, log_run, markdown

VARIANTS = ("paper_jpeg", "thumbnail16")

# The family the tiny model is logged as (the Keras/ONNX class under a name of its own).
TINY_FAMILY = getattr(tiny_model, "FAMILY", "keras_example")


@pytest.fixture(scope="module")
def board_registry(tmp_path_factory: pytest.TempPathFactory, tiny_onnx: Path, mnist: Mnist):
    """v1 the tiny model, v2 a weak one (Production: register promotes the latest)."""
    root = tmp_path_factory.mktemp("board-registry")
    reg = Registry.create(root)
    tiny_model.register(reg.tracking_uri, tiny_onnx)
    tiny_model.register(reg.tracking_uri, write_weak_onnx(mnist, root / "weak.onnx"))
    return reg


def _evidence(mnist: Mnist, per_variant: int = 5) -> Evidence:
    small = Mnist(
        mnist.x_train[:1000], mnist.y_train[:1000], mnist.x_test[:300], mnist.y_test[:300]
    )
    return Evidence(small, per_variant=per_variant, variants=VARIANTS)


def test_every_version_is_a_row_scored_on_the_same_images(board_registry, mnist) -> None:
    evidence = _evidence(mnist)
    rows = leaderboard(board_registry.tracking_uri, "digits", evidence, latency_images=5)
    assert [r.version for r in rows] == ["1", "2"]
    good, weak = rows
    assert good.family == weak.family == TINY_FAMILY
    assert weak.stage == "Production" and weak.aliases == ["production"]
    assert good.stage == "Archived" and good.aliases == []
    assert set(good.accuracy) == {"mnist_test", "validation", *VARIANTS}
    assert good.accuracy["mnist_test"] > weak.accuracy["mnist_test"] + 0.1
    assert 0 <= good.refused <= 1
    for row in rows:
        assert not row.error and not row.cached
        assert row.latency_ms > 0
        assert row.size_bytes > 1000  # the ONNX graph alone is 31 kB
    table = markdown(rows, evidence, 5, 1)
    lines = table.splitlines()
    assert lines[0].startswith("| version | family | stage | aliases | mnist_test % |")
    assert lines[2].startswith(f"| 1 | {TINY_FAMILY} | Archived |  |")
    assert lines[3].startswith(f"| 2 | {TINY_FAMILY} | Production | @production |")
    assert f"evidence {evidence.fingerprint}" in table


def test_a_second_run_takes_unchanged_versions_scores_from_the_cache(board_registry, mnist):
    uri = board_registry.tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    evidence = _evidence(mnist)
    leaderboard(uri, "digits", evidence, latency_images=2)
    # A planted score under the same evidence is what the table shows: it was not rescored.
    planted = {"evidence": evidence.fingerprint, "refused": 0.5, "accuracy": {"mnist_test": 0.123}}
    client.set_model_version_tag("digits", "1", CACHE_TAG, json.dumps(planted))
    first, second = leaderboard(uri, "digits", evidence, latency_images=2)
    assert first.cached and second.cached
    assert first.accuracy == {"mnist_test": 0.123}
    assert first.latency_ms > 0  # latency is measured on every run
    # Other images (another sample size) or --rescore: scored again.
    other = leaderboard(uri, "digits", _evidence(mnist, per_variant=6), latency_images=2)
    assert not other[0].cached and other[0].accuracy["mnist_test"] > 0.5
    rescored = leaderboard(uri, "digits", evidence, latency_images=2, rescore=True)[0]
    assert not rescored.cached and rescored.accuracy["mnist_test"] > 0.5


def test_the_fingerprint_follows_the_images() -> None:
    import numpy as np

    x = np.zeros((50, 28, 28), np.uint8)
    y = np.arange(50) % 10
    base = Evidence(Mnist(x, y, x[:20], y[:20]), per_variant=2, variants=VARIANTS)
    assert (
        base.fingerprint == Evidence(Mnist(x, y, x[:20], y[:20]), 2, variants=VARIANTS).fingerprint
    )
    assert (
        base.fingerprint != Evidence(Mnist(x, y, x[:20], y[:20]), 3, variants=VARIANTS).fingerprint
    )
    assert (
        base.fingerprint
        != Evidence(Mnist(x, y, x[:20], y[:20]), 2, seed=7, variants=VARIANTS).fingerprint
    )
    other_labels = Mnist(x, y, x[:20], (y[:20] + 1) % 10)
    assert base.fingerprint != Evidence(other_labels, 2, variants=VARIANTS).fingerprint


def test_variants_are_drawn_from_different_test_digits() -> None:
    import numpy as np

    x = np.zeros((30, 28, 28), np.uint8)
    y = np.arange(30) % 10
    evidence = Evidence(Mnist(x, y, x, y), per_variant=10, variants=("paper_jpeg", "thin", "thick"))
    draws = evidence.draws
    assert all(len(d) == 10 for d in draws.values())
    assert len(set(np.concatenate(list(draws.values())))) == 30


def test_the_table_is_logged_as_artifacts_of_a_run(board_registry, mnist, tmp_path) -> None:
    uri = board_registry.tracking_uri
    evidence = _evidence(mnist)
    rows = leaderboard(uri, "digits", evidence, latency_images=2)
    table = markdown(rows, evidence, 2, 1)
    run_id = log_run(uri, "digits", table, as_json(rows, evidence, 2, 1), {"threads": 1})
    client = MlflowClient(tracking_uri=uri)
    assert {a.path for a in client.list_artifacts(run_id)} == {"leaderboard.md", "leaderboard.json"}
    document = json.loads(
        Path(client.download_artifacts(run_id, "leaderboard.json", str(tmp_path))).read_text()
    )
    assert [v["version"] for v in document["versions"]] == ["1", "2"]
    assert document["evidence"]["fingerprint"] == evidence.fingerprint
    assert client.get_run(run_id).info.run_name == "leaderboard"


@pytest.mark.skipif(
    not hasattr(tiny_model, "fit_pooled"), reason="tests/tiny_model.py has no second family"
)
def test_versions_of_two_families_share_the_table(tmp_path, tiny_onnx, mnist) -> None:
    reg = Registry.create(tmp_path / "reg")
    tiny_model.register(reg.tracking_uri, tiny_onnx)
    tiny_model.register_pooled(
        reg.tracking_uri, tiny_model.fit_pooled(mnist.x_train, mnist.y_train)
    )
    evidence = _evidence(mnist)
    rows = leaderboard(reg.tracking_uri, "digits", evidence, latency_images=3)
    assert [r.family for r in rows] == [TINY_FAMILY, tiny_model.POOLED_FAMILY]
    for row in rows:
        assert not row.error and row.latency_ms > 0
        assert set(row.accuracy) == {"mnist_test", "validation", *VARIANTS}
        assert row.accuracy["mnist_test"] > 0.7


@pytest.mark.integration
def test_the_entry_point_logs_the_table(tmp_path, tiny_onnx, mnist_path) -> None:
    from tests.support import run_checked

    reg = Registry.create(tmp_path / "reg")
    tiny_model.register(reg.tracking_uri, tiny_onnx)
    out = run_checked(
        # 3 renderings per variant: the entry point's path, not its default 500.
        reg.mlflow_run("leaderboard", data_path=mnist_path, wild_limit=3, latency_images=5),
        env=reg.env,
        timeout=600,
    )
    assert "| version | family |" in out and "1 versions scored, 0 from cache" in out
    client = MlflowClient(tracking_uri=reg.tracking_uri)
    (run,) = client.search_runs(
        [client.get_experiment_by_name("digits").experiment_id],
        "tags.`mlflow.project.entryPoint` = 'leaderboard'",
    )
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
        "leaderboard.md",
        "leaderboard.json",
    }
    assert run.data.params["wild_limit"] == "3" and "evidence" in run.data.params
