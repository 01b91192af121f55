"""The shared image-log committer behind `python -m serving` (2 workers, SQLite): answers
come after their record is committed, and a committer that dies or hangs costs requests a
JSON 503 within the storage deadline, never a hang, until its supervisor has replaced it."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from imagelog.sqlite import SqliteImageLog
from tests import tiny_model
from tests.support import PROJECT_ROOT, Registry, Server, in_threads, run_server

SEVEN = (PROJECT_ROOT / "examples" / "seven.png").read_bytes()
STORAGE_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("committer-data")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_onnx, data_dir: Path) -> Iterator[Server]:
    reg = Registry.create(tmp_path_factory.mktemp("committer-registry"))
    tiny_model.register(reg.tracking_uri, tiny_onnx)
    env = {
        "WORKERS": "2",
        "DATA_DIR": str(data_dir),
        "STORAGE_TIMEOUT_SECONDS": str(STORAGE_TIMEOUT),
        "IMAGE_LOG_COMMITTER": "true",
    }
    with run_server(reg.env, env, tmp_path_factory.mktemp("committer-logs")) as running:
        yield running


def committer_pid(data_dir: Path) -> int | None:
    """The committer process serving ``data_dir``, found by its command line."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"imagelog.committer" in argv and str(data_dir).encode() in argv:
            return int(entry.name)
    return None


def recognize(url: str, session: requests.Session | None = None) -> requests.Response:
    return (session or requests).post(
        f"{url}/recognize", data=SEVEN, headers={"Content-Type": "image/png"}, timeout=30
    )


def succeeds_again(url: str, within: float = 20.0) -> requests.Response:
    until = time.monotonic() + within
    while True:
        response = recognize(url)
        if response.status_code == 200 or time.monotonic() > until:
            return response
        time.sleep(0.2)


def test_each_answer_comes_after_its_record_is_committed(server: Server, data_dir: Path):
    assert committer_pid(data_dir) is not None
    stored = SqliteImageLog(data_dir)

    def client(_: int) -> list[bool]:
        found = []
        with requests.Session() as session:
            for _ in range(15):
                response = recognize(server.url, session)
                assert response.status_code == 200, response.text
                # Read on a connection of its own the moment the answer is here.
                found.append(stored.get(response.json()["record_id"]) is not None)
        return found

    try:
        results = in_threads(8, client)
    finally:
        stored.close()
    assert all(per_client is not None and all(per_client) for per_client in results)


def test_a_killed_committer_costs_a_503_then_is_restarted(server: Server, data_dir: Path):
    pid = committer_pid(data_dir)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    response = recognize(server.url)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "storage_unavailable"
    assert time.monotonic() - started < STORAGE_TIMEOUT + 1
    assert succeeds_again(server.url).status_code == 200
    assert committer_pid(data_dir) not in (None, pid)


def test_a_hung_committer_costs_a_503_within_the_deadline_then_is_replaced(
    server: Server, data_dir: Path
):
    assert succeeds_again(server.url).status_code == 200
    pid = committer_pid(data_dir)
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        response = recognize(server.url)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "storage_unavailable"
        assert time.monotonic() - started < STORAGE_TIMEOUT + 1.5
        assert succeeds_again(server.url, within=30).status_code == 200
        assert committer_pid(data_dir) not in (None, pid)
    finally:
        if committer_pid(data_dir) == pid:
            os.kill(pid, signal.SIGCONT)
