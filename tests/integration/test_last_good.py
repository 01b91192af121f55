"""The last good model over real processes: Production moves to a version whose artifacts
are broken and the artifacts of the version served are gone, then a worker is killed and
the whole server restarted; each time the service answers with the version kept on the
machine, /ready 200 "degraded". And the promotion gate refuses a version that does not
load, forced or not."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import mlflow
import pytest
import requests

from tests import tiny_model
from tests.support import (
    PROJECT_ROOT,
    Registry,
    access_lines,
    add_version,
    run_server,
    set_production,
    wait_for_every_worker,
)

LEAKS = ("Traceback", "SELECT", "sqlite", "mlruns", "/tmp", "File ")


@pytest.fixture
def tiny_registry(tmp_path: Path, tiny_onnx) -> Registry:
    """A registry of the test's own (it gets broken): the tiny model as Production v1."""
    reg = Registry.create(tmp_path / "registry")
    tiny_model.register(reg.tracking_uri, tiny_onnx)
    return reg


def _version_dir(reg: Registry, version: str) -> Path:
    client = mlflow.MlflowClient(reg.tracking_uri, reg.tracking_uri)
    return Path(client.get_model_version_download_uri("digits", version).removeprefix("file://"))


def _register_broken(reg: Registry, tmp_path: Path) -> str:
    broken = tmp_path / "broken"
    shutil.copytree(_version_dir(reg, "1"), broken)
    for weights in broken.rglob("*.onnx"):
        weights.write_bytes(b"these are not weights")
    return add_version(reg.tracking_uri, str(broken))


def _wait(predicate, timeout: float, step: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def _ready(url: str, request_id: str | None = None) -> requests.Response:
    headers = {"X-Request-ID": request_id} if request_id else {}
    return requests.get(f"{url}/ready", timeout=30, headers=headers)


def _all_answer_v1(url: str, image: bytes, n: int = 20) -> None:
    for _ in range(n):
        ready = _ready(url)
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["status"] == "degraded" and body["degraded"]["code"] == "load_failed"
        assert body["model"]["version"] == "1"
        for word in LEAKS:
            assert word not in ready.text, word
        answer = requests.post(
            f"{url}/recognize", data=image, headers={"Content-Type": "image/png"}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"]["version"] == "1"


def test_worker_restart_and_full_restart_serve_the_last_good_version(
    tiny_registry, tmp_path, seed_png
):
    reg = tiny_registry
    scratch = tmp_path / "tmp"  # the servers' temporary files: none may be left
    scratch.mkdir()
    extra = {
        "TMPDIR": str(scratch),
        "STATE_DIR": str(tmp_path / "state"),
        "WORKERS": "2",
        "FRONT": "none",  # a probe must be able to reach the restarted worker
        "MODEL_POLL_INTERVAL": "1",
        "MODEL_RETRY_MAX_SECONDS": "2",
    }
    with run_server(reg.env, extra, log_dir=tmp_path) as server:
        url = server.url
        wait_for_every_worker(url, server.log_path, 2)
        v2 = _register_broken(reg, tmp_path)
        set_production(reg.tracking_uri, v2)
        shutil.rmtree(_version_dir(reg, "1"))  # the served version's artifacts gone too

        def degraded_everywhere() -> bool:
            answers = [_ready(url).json() for _ in range(8)]
            return all(a.get("status") == "degraded" for a in answers)

        assert _wait(degraded_everywhere, timeout=60), _ready(url).text
        old_pids = {line["pid"] for line in access_lines(server.log_path)}
        os.kill(next(iter(old_pids)), signal.SIGKILL)

        # The worker gunicorn starts in its place cannot load v1 or v2 from the registry.
        def a_new_worker_answered() -> bool:
            probe = f"probe-{uuid.uuid4().hex[:12]}"
            response = _ready(url, probe)
            pids = {
                line["pid"]
                for line in access_lines(server.log_path)
                if line.get("request_id") == probe
            }
            return bool(pids - old_pids) and response.status_code == 200

        assert _wait(a_new_worker_answered, timeout=120), server.log_path.read_text()[-4000:]
        _all_answer_v1(url, seed_png)
        log = server.log_path.read_text()
        assert "serving the last good version 1" in log
    # Whatever the killed worker was downloading went with the instance's runtime directory.
    assert list(scratch.iterdir()) == []

    # A full restart: no worker has anything loaded, the registry has nothing loadable.
    (tmp_path / "restart").mkdir()
    with run_server(reg.env, extra, log_dir=tmp_path / "restart") as server:
        wait_for_every_worker(server.url, server.log_path, 2)
        _all_answer_v1(server.url, seed_png)
    assert list(scratch.iterdir()) == []


def _promote(reg: Registry, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "training.promote", "--wild-limit", "0", *args],
        env=reg.env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_promotion_gate_refuses_a_version_that_does_not_load(
    tiny_registry, tmp_path, mnist_path
):
    reg = tiny_registry
    v2 = _register_broken(reg, tmp_path)
    for args in (["--force", "true"], ["--data-path", str(mnist_path)]):
        refused = _promote(reg, "--version", v2, *args)
        assert refused.returncode == 3, refused.stdout + refused.stderr
        assert "cannot be loaded from the registry the way the servers load it" in refused.stderr
    client = mlflow.MlflowClient(reg.tracking_uri, reg.tracking_uri)
    assert str(client.get_model_version_by_alias("digits", "production").version) == "1"
