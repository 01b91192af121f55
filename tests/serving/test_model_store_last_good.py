"""The last good model: each version loaded is kept on the machine, and a worker that cannot
load the version behind MODEL_URI at start serves the kept one, degraded and saying why;
downloads leave no temporary directory behind."""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path

import mlflow
import pytest

from serving import create_app
from serving.config import Settings
from serving.last_good import RECORD, LastGood
from serving.model_store import ModelStore
from tests import tiny_model
from tests.support import Registry, add_version, free_port, set_production

LEAKS = ("Traceback", "SELECT", "sqlite", "mlruns", "/tmp", "File ")


@pytest.fixture
def reg(tmp_path: Path, tiny_onnx: Path) -> Registry:
    """A registry of its own (the test breaks it): tiny v1 in Production (the session's
    fitted graph: registering copies it into the run's artifacts)."""
    reg = Registry.create(tmp_path / "registry")
    tiny_model.register(reg.tracking_uri, tiny_onnx)
    return reg


def _settings(reg: Registry, state: Path, **extra) -> Settings:
    return Settings(
        mlflow_tracking_uri=reg.tracking_uri,
        state_dir=state,
        batching=False,
        model_poll_interval=0,
        **extra,
    )


def _version_dir(reg: Registry, version: str) -> Path:
    client = mlflow.MlflowClient(reg.tracking_uri, reg.tracking_uri)
    return Path(client.get_model_version_download_uri("digits", version).removeprefix("file://"))


def _promote_broken_copy(reg: Registry, tmp_path: Path) -> str:
    """A v2 whose weights are not weights, made Production as by hand (no gate)."""
    broken = tmp_path / "broken"
    shutil.copytree(_version_dir(reg, "1"), broken)
    for weights in broken.rglob("*.onnx"):
        weights.write_bytes(b"these are not weights")
    version = add_version(reg.tracking_uri, str(broken))
    set_production(reg.tracking_uri, version)
    return version


def _check_no_leak(text: str, *paths: Path) -> None:
    for word in (*LEAKS, *(str(p) for p in paths)):
        assert word not in text, f"{word!r} leaked: {text}"


def test_a_restarted_worker_serves_the_last_good_version_when_production_is_broken(
    reg, tmp_path, seed_png
):
    state = tmp_path / "state"
    first = ModelStore(_settings(reg, state))
    first.check()
    assert first.current.ref.version == "1" and first.served_from == "registry"
    assert first.degraded() is None
    record = json.loads(next(state.rglob(RECORD)).read_text())
    assert record["version"] == "1"

    v2 = _promote_broken_copy(reg, tmp_path)
    # And v1's artifacts vanish from the registry too: only the copy kept here is left.
    shutil.rmtree(_version_dir(reg, "1"))

    restarted = ModelStore(_settings(reg, state))
    restarted.check()
    assert restarted.current.ref.version == "1"
    assert restarted.served_from == "last_good"
    assert restarted.degraded()["code"] == "load_failed"
    assert restarted.last_failure["version"] == v2
    assert restarted.current.model.classify([seed_png])[0].digit == 9

    app = create_app(_settings(reg, state, admin_token="t0ken"))
    client = app.test_client()
    ready = client.get("/ready")
    assert ready.status_code == 200
    body = ready.get_json()
    assert body["status"] == "degraded"
    assert body["degraded"]["code"] == "load_failed"
    assert body["model"]["version"] == "1"
    assert body["last_load_failure"]["version"] == v2
    _check_no_leak(ready.get_data(as_text=True), tmp_path)
    answer = client.post("/recognize", data=seed_png, content_type="image/png")
    assert answer.status_code == 200
    assert answer.get_json()["model"]["version"] == "1"
    # The details are for the operator, behind the token.
    assert client.get("/admin/status").status_code == 401
    detail = client.get("/admin/status", headers={"Authorization": "Bearer t0ken"}).get_json()
    assert detail["served_from"] == "last_good"
    assert detail["wanted_version"] == v2
    assert detail["last_load_failure_detail"]["error"]  # the exception's own text
    assert detail["last_good"]["version"] == "1"


def test_without_a_kept_version_the_worker_is_not_ready_and_says_so_without_details(reg, tmp_path):
    _promote_broken_copy(reg, tmp_path)
    app = create_app(_settings(reg, tmp_path / "empty-state"))
    client = app.test_client()
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert ready.get_json()["error"]["code"] == "model_unavailable"
    _check_no_leak(ready.get_data(as_text=True), tmp_path)
    answer = client.post("/recognize", data=b"\x89PNG\r\n\x1a\n", content_type="image/png")
    assert answer.status_code in (400, 503)
    _check_no_leak(answer.get_data(as_text=True), tmp_path)


def test_the_broken_version_is_tried_again_and_served_once_repaired(reg, tmp_path):
    state = tmp_path / "state"
    ModelStore(_settings(reg, state)).check()
    v2 = _promote_broken_copy(reg, tmp_path)
    store = ModelStore(_settings(reg, state, model_retry_max_seconds=0.01))
    store.check()
    assert store.current.ref.version == "1" and store.degraded()["code"] == "load_failed"
    # The artifacts are put right: the next check loads v2 and the store is whole again.
    v2_dir = _version_dir(reg, v2)
    shutil.rmtree(v2_dir)
    shutil.copytree(next(p for p in state.rglob("v1") if p.is_dir()), v2_dir)
    result = store.check()
    assert result.changed and store.current.ref.version == v2
    assert store.served_from == "registry" and store.degraded() is None


def test_registry_unreachable_at_start_serves_the_kept_version(reg, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    # A tracking server nobody answers at, which this machine once loaded version 1 from.
    down = f"http://127.0.0.1:{free_port()}"
    LastGood(tmp_path / "state", down, "digits").remember("1", _version_dir(reg, "1"))
    settings = Settings(
        mlflow_tracking_uri=down,
        state_dir=tmp_path / "state",
        batching=False,
        model_poll_interval=0,
    )
    store = ModelStore(settings)
    store.check()
    assert store.registry_state == "unreachable"
    assert store.current.ref.version == "1" and store.served_from == "last_good"
    assert store.degraded()["code"] == "registry_unreachable"
    _check_no_leak(json.dumps(store.status()), tmp_path)
    assert store.admin_status()["registry_error_detail"]


def test_loading_leaves_no_temporary_directory_and_the_model_needs_no_files(
    reg, tmp_path, monkeypatch, seed_png
):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    store = ModelStore(_settings(reg, tmp_path / "state"))
    store.check()
    assert store.current is not None
    assert list(scratch.iterdir()) == []
    # The registry's files and the kept copy gone: the loaded model still answers.
    shutil.rmtree(_version_dir(reg, "1"))
    shutil.rmtree(tmp_path / "state")
    assert store.current.model.classify([seed_png])[0].digit == 9


def test_a_version_logged_without_the_threads_key_leaves_no_copy_behind(reg, tmp_path, monkeypatch):
    """Such versions used to be copied into a temporary directory that was never removed."""
    from mlflow.models import Model
    from mlflow.models.model import MLMODEL_FILE_NAME, MODEL_CONFIG

    old = tmp_path / "old"
    shutil.copytree(_version_dir(reg, "1"), old)
    meta = Model.load(str(old))
    meta.flavors["python_function"].pop(MODEL_CONFIG, None)
    meta.save(str(old / MLMODEL_FILE_NAME))
    set_production(reg.tracking_uri, add_version(reg.tracking_uri, str(old)))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    store = ModelStore(_settings(reg, tmp_path / "state"))
    store.check()
    assert store.current.ref.version == "2"
    assert list(scratch.iterdir()) == []


def test_the_record_names_the_newest_version_and_two_copies_are_kept(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "MLmodel").write_text("flavors: {}\n")
    kept = LastGood(tmp_path / "state", "sqlite:///somewhere.db", "digits")
    assert kept.recall() is None
    for version in ("1", "2", "3"):
        kept.remember(version, model)
        kept.remember(version, model)  # again (another worker): the same copy, no error
    assert kept.recall().version == "3"
    assert sorted(p.name for p in kept.root.iterdir() if p.is_dir()) == ["v2", "v3"]
    assert not [p for p in kept.root.iterdir() if p.name.startswith(".")]  # no staging left
    # Another registry or model name has a record of its own.
    assert LastGood(tmp_path / "state", "sqlite:///elsewhere.db", "digits").recall() is None
    # A record whose copy is gone is no record.
    shutil.rmtree(kept.root / "v3")
    assert kept.recall() is None


def test_nothing_behind_the_uri_any_more_keeps_the_model_and_says_so(reg, tmp_path):
    store = ModelStore(_settings(reg, tmp_path / "state"))
    store.check()
    client = mlflow.MlflowClient(reg.tracking_uri, reg.tracking_uri)
    client.delete_registered_model_alias("digits", "production")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # stages are deprecated, still used
        client.transition_model_version_stage("digits", "1", "Archived")
    store.check()
    assert store.current.ref.version == "1"
    assert store.degraded()["code"] == "no_version"
