"""Following the registry over real processes: hot swap under load, broken versions, admin
reload, the registry going away, and prediction off-loaded to `mlflow models serve`."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pytest
import requests

from tests.support import (
    WORKER_STARTED,
    Registry,
    add_version,
    base_env,
    free_port,
    server_log,
    set_production,
    start_scorer,
    start_server,
    stop,
    wait_for,
)

POLL = 1.0


@dataclass
class Answer:
    at: float
    status: int
    version: str | None


@dataclass
class Load:
    """A client loop posting the seed image until stopped."""

    url: str
    image: bytes
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            try:
                r = session.post(
                    f"{self.url}/recognize",
                    data=self.image,
                    headers={"Content-Type": "image/png"},
                    timeout=30,
                )
                version = r.json().get("model", {}).get("version") if r.ok else None
                self.answers.append(Answer(time.monotonic(), r.status_code, version))
            except requests.RequestException:
                self.answers.append(Answer(time.monotonic(), 0, None))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def _wait(predicate, timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _load_seconds(log_dir: Path, version: str) -> float:
    """The slowest worker's load time for ``version``, from the servers' logs."""
    pattern = re.compile(rf"now serving digits version {version} .* loaded in ([\d.]+) s")
    times = [
        float(m) for log in log_dir.glob("server-*.log") for m in pattern.findall(log.read_text())
    ]
    assert times, f"no worker reported loading version {version}"
    return max(times)


def _every_worker_serving(url: str, log_dir: Path, workers: int = 2) -> None:
    """Wait until each worker has loaded the first version at start: one still starting when
    the registry changes would load the new version first (seen once on a loaded machine).
    Read from the workers' log lines: behind the front, nginx reuses its connections to the
    workers, so no request can be sent to a chosen worker to ask it."""
    started = re.compile(WORKER_STARTED)
    log = server_log(log_dir, url)
    assert _wait(lambda: len(started.findall(log.read_text())) >= workers, timeout=120)


def _answered(load: Load, version: str) -> int:
    return sum(a.version == version for a in load.answers)


def _versions(url: str, n: int = 12) -> set[str]:
    return {requests.get(f"{url}/ready", timeout=10).json()["model"]["version"] for _ in range(n)}


def test_promotion_under_load_swaps_without_a_failed_request(tmp_path, model_dir, seed_png):
    reg = Registry.create(tmp_path / "reg")
    set_production(reg.tracking_uri, add_version(reg.tracking_uri, str(model_dir)))
    extra = {"MODEL_POLL_INTERVAL": str(POLL), "WORKERS": "2"}
    with start_server(reg.env, extra, log_dir=tmp_path) as url, Load(url, seed_png) as load:
        _every_worker_serving(url, tmp_path)
        assert _wait(lambda: _answered(load, "1") >= 10, timeout=60)
        v2 = add_version(reg.tracking_uri, str(model_dir))
        promoted_at = time.monotonic()
        set_production(reg.tracking_uri, v2)
        assert _wait(lambda: _versions(url) == {v2}, timeout=60)
        assert _wait(lambda: _answered(load, v2) >= 10, timeout=60)  # load on it too
    answers = load.answers
    assert answers and all(a.status == 200 for a in answers), {a.status for a in answers}
    last_old = max(a.at for a in answers if a.version == "1") - promoted_at
    first_new = min(a.at for a in answers if a.version == v2) - promoted_at
    load_s = _load_seconds(tmp_path, v2)
    print(
        f"\nhot swap: {len(answers)} requests, 0 failed; first answer from v{v2} "
        f"{first_new:.2f} s and last from v1 {last_old:.2f} s after promotion; "
        f"poll interval {POLL} s, load+warm-up {load_s:.2f} s"
    )
    assert last_old <= POLL + load_s + 1.0


def test_broken_version_leaves_the_old_one_serving(tmp_path, model_dir, seed_png):
    reg = Registry.create(tmp_path / "reg")
    set_production(reg.tracking_uri, add_version(reg.tracking_uri, str(model_dir)))
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(model_dir), str(broken)], check=True)
    for weights in [*broken.rglob("*.keras"), *broken.rglob("*.onnx")]:
        weights.write_bytes(b"these are not weights")
    with start_server(reg.env, {"MODEL_POLL_INTERVAL": str(POLL)}, log_dir=tmp_path) as url:
        _every_worker_serving(url, tmp_path)
        v2 = add_version(reg.tracking_uri, str(broken))
        set_production(reg.tracking_uri, v2)

        def failure_reported() -> bool:
            body = requests.get(f"{url}/ready", timeout=10).json()
            return (body.get("last_load_failure") or {}).get("version") == v2

        assert _wait(failure_reported, timeout=60)
        ready = requests.get(f"{url}/ready", timeout=10)
        assert ready.status_code == 200
        assert ready.json()["model"]["version"] == "1"
        # Still answering, but not with the version Production names: degraded, and why.
        assert ready.json()["status"] == "degraded"
        assert ready.json()["degraded"]["code"] == "load_failed"
        assert str(broken) not in ready.text  # the failure's details are not public
        response = requests.post(
            f"{url}/recognize", data=seed_png, headers={"Content-Type": "image/png"}, timeout=30
        )
        assert response.status_code == 200
        assert response.json()["model"]["version"] == "1"


def test_admin_reload_needs_the_token_and_reaches_every_worker(tmp_path, model_dir):
    reg = Registry.create(tmp_path / "reg")
    set_production(reg.tracking_uri, add_version(reg.tracking_uri, str(model_dir)))
    extra = {"MODEL_POLL_INTERVAL": "0", "ADMIN_TOKEN": "s3cret", "WORKERS": "2"}
    with start_server(reg.env, extra, log_dir=tmp_path) as url:
        _every_worker_serving(url, tmp_path)
        assert requests.post(f"{url}/admin/reload", timeout=30).status_code == 401
        wrong = requests.post(
            f"{url}/admin/reload", timeout=30, headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 403
        assert wrong.json()["error"]["code"] == "forbidden"
        v2 = add_version(reg.tracking_uri, str(model_dir))
        set_production(reg.tracking_uri, v2)
        time.sleep(2 * POLL)
        assert _versions(url) == {"1"}, "polling is off: nothing may change by itself"
        ok = requests.post(
            f"{url}/admin/reload", timeout=120, headers={"Authorization": "Bearer s3cret"}
        )
        assert ok.status_code == 200, ok.text
        assert ok.json()["model"]["version"] == v2
        assert _wait(lambda: _versions(url) == {v2}, timeout=60)


@pytest.fixture
def tracking_server(tmp_path):
    """A real `mlflow server` (sqlite backend, proxied artifacts) that a test may stop."""
    port = free_port()
    log = open(tmp_path / "mlflow-server.log", "wb")  # noqa: SIM115 - closed below
    argv = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination",
        str(tmp_path / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    server = {"argv": argv, "url": f"http://127.0.0.1:{port}", "proc": None, "log": log}

    def start() -> None:
        server["proc"] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True
        )
        wait_for(f"{server['url']}/health", 200, 120, server["proc"])

    server["start"] = start
    yield server
    if server["proc"] is not None:
        stop(server["proc"])
    log.close()


def test_registry_unreachable_at_start_and_while_running(tmp_path, model_dir, tracking_server):
    env = base_env(MLFLOW_TRACKING_URI=tracking_server["url"])
    extra = {"MODEL_POLL_INTERVAL": str(POLL), "MODEL_RETRY_MAX_SECONDS": "2"}
    with start_server(env, extra, log_dir=tmp_path, wait_ready=False) as url:
        # Registry down at start: alive, not ready.
        ready = requests.get(f"{url}/ready", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["registry"]["state"] == "unreachable"
        # It comes up with a Production model: the service retries its way to ready.
        tracking_server["start"]()
        mlflow.set_tracking_uri(tracking_server["url"])
        with mlflow.start_run() as run:
            mlflow.log_artifacts(str(model_dir), artifact_path="model")
        version = add_version(
            tracking_server["url"], f"runs:/{run.info.run_id}/model", run.info.run_id
        )
        set_production(tracking_server["url"], version)
        assert _wait(
            lambda: requests.get(f"{url}/ready", timeout=10).status_code == 200, timeout=120
        )
        # Registry gone while running: keep serving, still ready, say so.
        stop(tracking_server["proc"])
        tracking_server["proc"] = None
        assert _wait(
            lambda: (
                requests.get(f"{url}/ready", timeout=10).json()["registry"]["state"]
                == "unreachable"
            ),
            timeout=30,
        )
        ready = requests.get(f"{url}/ready", timeout=10)
        assert ready.status_code == 200
        assert ready.json()["registry"]["state"] == "unreachable"
        assert ready.json()["degraded"]["code"] == "registry_unreachable"
        answer = requests.post(f"{url}/recognize", json={"image": ""}, timeout=10)
        assert answer.status_code == 400  # request handling unaffected


def test_remote_predictor_mode(registry, seed_png, tmp_path):
    with start_scorer(registry.env, tmp_path) as (scorer_url, scorer):
        extra = {
            "PREDICTOR": "remote",
            "REMOTE_PREDICTOR_URL": f"{scorer_url}/invocations",
            "REMOTE_TIMEOUT_SECONDS": "2",
            "REMOTE_RETRIES": "1",
        }
        with start_server(registry.env, extra, log_dir=tmp_path) as url:

            def recognise() -> requests.Response:
                return requests.post(
                    f"{url}/recognize",
                    data=seed_png,
                    headers={"Content-Type": "image/png"},
                    timeout=30,
                )

            answer = recognise()
            assert answer.status_code == 200, answer.text
            assert answer.json()["digit"] == 9
            assert answer.json()["model"] == {
                "name": "digits",
                "version": "1",
                "family": "keras_example",
            }
            # Validation stays local: a bad image never reaches the scorer.
            blank = requests.post(
                f"{url}/recognize",
                data=b"GIF89a",
                timeout=30,
                headers={"Content-Type": "image/gif"},
            )
            assert blank.status_code == 400
            # A scorer that hangs: 504 after the timeout.
            os.killpg(scorer.pid, signal.SIGSTOP)
            slow = recognise()
            assert slow.status_code == 504, slow.text
            assert slow.json()["error"]["code"] == "predictor_timeout"
            os.killpg(scorer.pid, signal.SIGCONT)
            # A scorer that is gone: 502. SIGKILL, so no graceful drain keeps its port open.
            stop(scorer, signal.SIGKILL)
            port = int(scorer_url.rsplit(":", 1)[1])
            assert _wait(lambda: not _listening(port), timeout=30), "scorer still listening"
            gone = recognise()
            assert gone.status_code == 502, gone.text
            assert gone.json()["error"]["code"] == "predictor_unavailable"
