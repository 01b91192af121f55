"""Sick storage against a live server (`python -m serving`, several workers): a store that
hangs answers 503 ``storage_unavailable`` within ``STORAGE_TIMEOUT_SECONDS`` and /health
keeps answering at once, while clients keep sending. Both ways a store hangs: another
process holding the SQLite image log's lock, a PostgreSQL that stops answering (frozen
behind a proxy, as under SIGSTOP: connections open, nothing said). And /ready, which
writes to find out, says 503 when the disk cannot take a write."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests import tiny_model
from tests.imagelog.test_postgres import Proxy, _proxied
from tests.support import PROJECT_ROOT, Registry, postgres_schema, run_server
from training.data import Mnist
from training.variants import png_bytes

pytestmark = pytest.mark.integration

TIMEOUT = 3.0  # STORAGE_TIMEOUT_SECONDS of the servers here
STALL = 0.5  # their STORAGE_STALL_SECONDS
CLIENTS = 24  # more than the server's threads (2 workers x 8)
HANG_SECONDS = 8.0


@pytest.fixture(scope="module")
def tiny_registry(tmp_path_factory, tiny_onnx) -> Registry:
    """The in-process tests' tiny model: these tests are about storage, not the model."""
    reg = Registry.create(tmp_path_factory.mktemp("storage-registry"))
    tiny_model.register(reg.tracking_uri, tiny_onnx)
    return reg


@pytest.fixture(scope="module")
def png(mnist: Mnist) -> bytes:
    return png_bytes(mnist.x_test[0])


@contextlib.contextmanager
def flock_held(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _under_load(url: str, png: bytes, seconds: float) -> tuple[list, list]:
    """CLIENTS threads post /recognize for ``seconds`` while one probes /health every 50 ms;
    returns (status, code, seconds) of each /recognize and the seconds of each /health."""
    answers: list[tuple[int, str | None, float]] = []
    health: list[float] = []
    stop = time.monotonic() + seconds

    def client() -> None:
        with requests.Session() as session:
            while time.monotonic() < stop:
                started = time.monotonic()
                response = session.post(
                    f"{url}/recognize", data=png, headers={"Content-Type": "image/png"}, timeout=30
                )
                body = response.json()
                code = (
                    (body.get("error") or {}).get("code") if response.status_code >= 400 else None
                )
                answers.append((response.status_code, code, time.monotonic() - started))

    def prober() -> None:
        with requests.Session() as session:
            while time.monotonic() < stop:
                started = time.monotonic()
                response = session.get(f"{url}/health", timeout=30)
                assert response.status_code == 200
                health.append(time.monotonic() - started)
                time.sleep(0.05)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    threads.append(threading.Thread(target=prober))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 60)
    return answers, health


def _check_hung(answers: list, health: list, label: str) -> None:
    slowest = max(took for _, _, took in answers)
    codes = {(status, code) for status, code, _ in answers}
    health_p50, health_max = statistics.median(health), max(health)
    print(
        f"\n{label}: {len(answers)} /recognize answers {sorted(codes)}, slowest {slowest:.2f} s; "
        f"/health p50 {health_p50 * 1000:.1f} ms, max {health_max * 1000:.0f} ms "
        f"({len(health)} probes)"
    )
    assert codes == {(503, "storage_unavailable")}
    assert slowest < TIMEOUT + 1.5
    assert health_p50 < 0.2  # queued behind the clients' own (fast) requests, never the store
    # At the hang's onset, a worker's threads may all be inside the store until the first
    # has been stuck STORAGE_STALL_SECONDS; after that, the store costs them nothing.
    assert health_max < STALL + 1.0


def _recovers(url: str, png: bytes) -> None:
    deadline = time.monotonic() + 30
    while True:
        response = requests.post(
            f"{url}/recognize", data=png, headers={"Content-Type": "image/png"}, timeout=30
        )
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert response.status_code == 200, response.text


def test_a_held_sqlite_lock_is_a_fast_503_and_health_stays_fast(tiny_registry, png, tmp_path):
    data_dir = tmp_path / "data"
    env = {
        **tiny_registry.env,
        "IMAGE_LOG_BACKEND": "sqlite",
        "DATA_DIR": str(data_dir),
        "STORAGE_TIMEOUT_SECONDS": str(TIMEOUT),
        "STORAGE_STALL_SECONDS": str(STALL),
        "WORKERS": "2",
    }
    (tmp_path / "logs").mkdir()
    with run_server(env, {}, tmp_path / "logs") as server:
        _recovers(server.url, png)
        with flock_held(data_dir / "imagelog.lock"):  # another process holds the lock
            answers, health = _under_load(server.url, png, HANG_SECONDS)
        _check_hung(answers, health, "SQLite lock held by another process")
        _recovers(server.url, png)


def test_a_frozen_postgres_is_a_fast_503_and_health_stays_fast(
    tiny_registry, png, tmp_path, pg_url
):
    parts = urlsplit(pg_url)
    proxy = Proxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    proxy.start()
    try:
        with postgres_schema(pg_url) as schema:
            env = {
                **tiny_registry.env,
                "IMAGE_LOG_BACKEND": "postgres",
                "DATABASE_URL": _proxied(pg_url, proxy),
                "DATABASE_SCHEMA": schema,
                "DATA_DIR": str(tmp_path / "data"),
                "STORAGE_TIMEOUT_SECONDS": str(TIMEOUT),
                "STORAGE_STALL_SECONDS": str(STALL),
                "WORKERS": "2",
            }
            (tmp_path / "logs").mkdir()
            with run_server(env, {}, tmp_path / "logs") as server:
                _recovers(server.url, png)
                proxy.freeze()
                try:
                    answers, health = _under_load(server.url, png, HANG_SECONDS)
                finally:
                    proxy.thaw()
                _check_hung(answers, health, "PostgreSQL frozen")
                _recovers(server.url, png)
    finally:
        proxy.stop()


_READY_ON_A_FULL_DISK = """
import json, resource, signal, sys, time
from serving import create_app
app = create_app({"mlflow_tracking_uri": sys.argv[1], "workers": 1,
                  "image_log_backend": "sqlite", "data_dir": sys.argv[2]})
client = app.test_client()
deadline = time.monotonic() + 120
while (before := client.get("/ready")).status_code != 200 and time.monotonic() < deadline:
    time.sleep(0.2)
# From here the kernel refuses to grow any file of this process past 32 KiB (EFBIG), as a
# full disk refuses (ENOSPC) the first write that needs space.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, resource.RLIM_INFINITY))
time.sleep(1.6)  # past the cached probe
after = client.get("/ready")
print(json.dumps([before.status_code, after.status_code, after.get_json()]))
"""


def test_ready_is_503_when_the_disk_cannot_take_a_write(tiny_registry, tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _READY_ON_A_FULL_DISK,
            tiny_registry.tracking_uri,
            str(tmp_path / "d"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PROJECT_ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    before, after, body = json.loads(out.stdout.strip().splitlines()[-1])
    assert (before, after) == (200, 503)
    assert body["error"]["code"] == "storage_unavailable"
    assert body["storage"]["state"] == "unavailable"
