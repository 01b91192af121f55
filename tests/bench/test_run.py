"""bench.run's launch configurations: this service's variants (one worker, no stored
images) and the runtime thread setting every server states in its label, without starting
any server (make bench does that; docs/performance.md has its figures)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import ceiling, loadgen, peers, run


def spec_of(name: str, tmp_path: Path, tracking_uri: str, *extra: str):
    args = run.parse_args(["--servers", name, *extra])
    return run.make_spec(name, args, run.base_env(tracking_uri), tmp_path)


def test_variants_are_servers_of_their_own() -> None:
    args = run.parse_args(["--servers", "service,service-1w,service-nostore,service-nolog"])
    assert args.servers == ["service", "service-1w", "service-nostore", "service-nolog"]
    with pytest.raises(SystemExit):
        run.parse_args(["--servers", "service-3w"])


def test_one_worker_variant(tmp_path: Path, empty_registry) -> None:
    spec = spec_of("service-1w", tmp_path, empty_registry.tracking_uri)
    settings = spec.config["settings"]
    assert spec.name == "service-1w"
    assert spec.env["WORKERS"] == "1" and settings["workers"] == 1 and spec.workers == 1
    assert settings["store_images"] is True
    assert "1 worker(s)" in spec.label and "image log on" in spec.label


def test_default_service_has_two_workers_and_stores_images(tmp_path: Path, empty_registry) -> None:
    spec = spec_of("service", tmp_path, empty_registry.tracking_uri)
    settings = spec.config["settings"]
    assert settings["workers"] == 2 and spec.workers == 2
    assert settings["store_images"] is True
    assert settings["inference_threads"] == 1
    assert spec.label == (
        "this service (python -m serving), 2 worker(s) × 8 threads, image log on, ORT 1 thread(s)"
    )


def test_no_store_variant_keeps_no_image_bytes(tmp_path: Path, empty_registry) -> None:
    spec = spec_of("service-nostore", tmp_path, empty_registry.tracking_uri)
    settings = spec.config["settings"]
    assert spec.env["STORE_IMAGES"] == "false" and settings["store_images"] is False
    assert settings["workers"] == 2
    assert "image log without images" in spec.label
    # Its own image log, not the default configuration's.
    assert spec.env["DATA_DIR"] == str(tmp_path / "service-nostore-data")


def test_no_log_variant_switches_the_image_log_off(tmp_path: Path, empty_registry) -> None:
    spec = spec_of("service-nolog", tmp_path, empty_registry.tracking_uri)
    settings = spec.config["settings"]
    assert spec.env["IMAGE_LOG"] == "off" and settings["image_log"] is False
    assert settings["workers"] == 2 and settings["store_images"] is True
    assert spec.label == (
        "this service (python -m serving), 2 worker(s) × 8 threads, image log off, ORT 1 thread(s)"
    )
    # Even BENCH_SERVICE_ENV cannot switch it back on: the row is what its name says.
    spec = spec_of(
        "service-nolog", tmp_path, empty_registry.tracking_uri, "--service-env", "IMAGE_LOG=on"
    )
    assert spec.config["settings"]["image_log"] is False


def test_a_variant_setting_wins_over_the_service_env(tmp_path: Path, empty_registry) -> None:
    spec = spec_of(
        "service-1w",
        tmp_path,
        empty_registry.tracking_uri,
        "--service-env",
        "WORKERS=2 THREADS=4",
    )
    assert spec.config["settings"]["workers"] == 1
    assert spec.config["settings"]["threads"] == 4


def test_label_says_when_the_runtime_picks_its_threads() -> None:
    settings = {"workers": 2, "threads": 8, "store_images": True, "inference_threads": 0}
    assert run.service_label(settings).endswith("image log on, ORT default threads")


def test_mlflow_label_states_the_threads_the_model_was_logged_with(
    tmp_path: Path, registry
) -> None:
    # The tiny model is logged as the real one is: model_config inference_threads 0.
    assert run.logged_threads("models:/digits/Production", registry.tracking_uri) == 0
    assert run.logged_threads("models:/nothing/Production", registry.tracking_uri) is None
    spec = spec_of("mlflow", tmp_path, registry.tracking_uri)
    assert spec.label == "mlflow models serve, 1 worker(s), ORT default threads"
    assert spec.config["inference_threads"] == 0


def test_every_server_states_its_runtime_threads(
    tmp_path: Path, empty_registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The peers' venvs need not exist to build their launch configurations.
    monkeypatch.setattr(peers, "installed_versions", lambda kind, root=None: {})
    labels = {
        name: spec_of(name, tmp_path / name, empty_registry.tracking_uri).label
        for name in run.SERVER_NAMES
    }
    assert set(labels) >= {*run.SERVICE_VARIANTS, ceiling.NAME, *peers.PEER_NAMES}
    for name, label in labels.items():
        assert "thread" in label, (name, label)


def test_a_cells_errors_are_split_by_kind_on_its_line() -> None:
    def cell(server_errors: int, transport_errors: int) -> dict:
        result = loadgen.LoadResult(
            tool="wrk",
            concurrency=32,
            duration_s=5.0,
            responses=100,
            non_2xx=server_errors,
            transport_errors=transport_errors,
            p50_ms=1.0,
            p95_ms=2.0,
            p99_ms=3.0,
            max_ms=4.0,
            mean_ms=1.5,
            loadgen_cpu_s=0.1,
            server_errors=server_errors,
        )
        return result.as_dict()

    assert run.error_split(cell(0, 0)) == ""
    assert run.error_split(cell(280, 4)) == " (5xx 280, no answer 4)"
    assert run.error_split(cell(0, 3)) == " (5xx 0, no answer 3)"
