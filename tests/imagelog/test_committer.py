"""The shared committer (imagelog/committer.py) as it runs: a real committer process under
its supervisor, records sent from other real processes."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagelog.base import DuplicateRequestId, StorageError, StorageTimeout
from imagelog.committer import SharedCommitLog, Supervisor, ping
from imagelog.sqlite import LOCK_NAME, SqliteImageLog
from tests.imagelog.samples import image, large_image, make_record
from tests.support import PROJECT_ROOT

TIMEOUT = 2.0

# A worker in miniature: records one record through the committer, prints the group that
# held it (or the error's class name).
CLIENT = """
import sys
from pathlib import Path
from imagelog.committer import SharedCommitLog
from tests.imagelog.samples import image, make_record
sock, data, rid, n = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
log = SharedCommitLog(sock, data, timeout=10.0)
print("sending", flush=True)
try:
    log.record(make_record(rid, image(n)))
    print("group", log.last_group(), flush=True)
except Exception as exc:
    print("error", type(exc).__name__, flush=True)
"""


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[Supervisor]:
    supervisor = Supervisor(tmp_path, tmp_path / "committer.sock", TIMEOUT)
    supervisor.start()
    yield supervisor
    supervisor.stop()


@pytest.fixture
def client(supervised: Supervisor) -> Iterator[SharedCommitLog]:
    log = SharedCommitLog(supervised.socket_path, supervised.data_dir, timeout=TIMEOUT)
    yield log
    log.close()


def read(data_dir: Path) -> SqliteImageLog:
    return SqliteImageLog(data_dir, timeout=TIMEOUT)


def start_client(supervisor: Supervisor, request_id: str, n: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CLIENT, str(supervisor.socket_path), str(supervisor.data_dir),
         request_id, str(n)],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )  # fmt: skip


def test_records_of_two_processes_commit_in_one_group_and_a_bad_one_fails_alone(
    supervised: Supervisor, client: SharedCommitLog
):
    client.record(make_record("taken", image(1)))
    # The write lock held here: the committer waits for it with the first record that
    # came, and whatever comes meanwhile joins that group.
    lock_fd = os.open(supervised.data_dir / LOCK_NAME, os.O_RDWR)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        clients = [
            start_client(supervised, "first", 2),
            start_client(supervised, "second", 3),
            start_client(supervised, "taken", 4),  # the id of another image: refused
        ]
        for proc in clients:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "sending"
        time.sleep(0.5)  # their records on the committer's socket
    finally:
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
        os.close(lock_fd)
    outputs = [proc.communicate(timeout=30)[0].split() for proc in clients]
    assert outputs[2] == ["error", "DuplicateRequestId"]
    assert outputs[0][0] == outputs[1][0] == "group"
    assert outputs[0][1] == outputs[1][1]  # one group, one fsync, for both processes
    stored = read(supervised.data_dir)
    try:
        assert stored.get("first").sha256 == make_record("x", image(2)).sha256
        assert stored.get("second") is not None
        assert stored.get("taken").sha256 == make_record("x", image(1)).sha256
        assert stored.count() == 3
    finally:
        stored.close()


def test_every_record_is_readable_once_record_returns(client: SharedCommitLog, supervised):
    stored = read(supervised.data_dir)
    try:
        for n in range(20):
            big = n % 5 == 0  # a file image, written by the client before it sends
            data = large_image(n) if big else image(n)
            client.record(make_record(f"r{n}", data))
            assert stored.get(f"r{n}") is not None
            assert stored.image(make_record("x", data).sha256) == data
        with pytest.raises(DuplicateRequestId):
            client.record(make_record("r1", image(99)))
        assert stored.count() == 20
    finally:
        stored.close()


def test_a_killed_committer_fails_requests_at_once_and_is_restarted(
    client: SharedCommitLog, supervised: Supervisor
):
    client.record(make_record("before", image(1)))
    assert supervised.proc is not None
    first = supervised.proc.pid
    os.kill(first, signal.SIGKILL)
    supervised.proc.wait()
    started = time.monotonic()
    with pytest.raises(StorageError):
        client.record(make_record("while-down", image(2)))
    assert time.monotonic() - started < 1.0  # a closed socket, not a deadline
    until = time.monotonic() + 15
    while time.monotonic() < until:
        try:
            client.record(make_record("after", image(3)))
            break
        except StorageError:
            time.sleep(0.1)
    assert supervised.proc.pid != first and supervised.restarts == 1
    stored = read(supervised.data_dir)
    try:
        assert stored.get("after") is not None and stored.get("before") is not None
    finally:
        stored.close()


def test_a_hung_committer_costs_a_request_its_deadline_and_is_replaced(
    client: SharedCommitLog, supervised: Supervisor
):
    client.record(make_record("before", image(1)))
    assert supervised.proc is not None
    hung = supervised.proc.pid
    os.kill(hung, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(StorageTimeout):
            client.record(make_record("while-hung", image(2)))
        assert time.monotonic() - started < TIMEOUT + 1.0
        # The supervisor's ping goes unanswered for TIMEOUT: it kills and restarts it.
        until = time.monotonic() + 20
        while supervised.proc.pid == hung and time.monotonic() < until:
            time.sleep(0.1)
        assert supervised.proc.pid != hung
    finally:
        with pytest.raises(ProcessLookupError):  # killed by the supervisor, and reaped
            os.kill(hung, signal.SIGCONT)
    until = time.monotonic() + 15
    while time.monotonic() < until:
        try:
            ping(supervised.socket_path, TIMEOUT)
            break
        except OSError:
            time.sleep(0.1)
    client.record(make_record("after", image(3)))
