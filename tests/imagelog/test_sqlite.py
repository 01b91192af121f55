"""What only the SQLite backend has: files on disk, WAL, and what a failing disk does."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from imagelog import StorageError, StorageTimeout
from imagelog.base import Deadline, DuplicateRequestId, sha256_hex
from imagelog.sqlite import (
    _MIGRATIONS,
    DB_NAME,
    SWEEP_EVERY,
    SWEPT_NAME,
    SqliteImageLog,
    _Pending,
)
from tests.imagelog.samples import image, make_record


@pytest.fixture
def log(tmp_path: Path):
    log = SqliteImageLog(tmp_path / "data")
    yield log
    log.close()


def test_images_are_files_named_by_their_hash(log: SqliteImageLog):
    log.record(make_record("a", image(1)))
    sha = sha256_hex(image(1))
    path = log.data_dir / "images" / sha[:2] / f"{sha[2:]}.png"
    assert path.read_bytes() == image(1)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left over


def test_the_index_is_wal_with_full_sync(log: SqliteImageLog):
    conn = sqlite3.connect(log.data_dir / DB_NAME)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert log._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_a_full_disk_is_a_storage_error_and_leaves_no_trace(log: SqliteImageLog, monkeypatch):
    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("imagelog.sqlite.os.fsync", no_space)
    with pytest.raises(StorageError, match="No space left"):
        log.record(make_record("a", image(1)))
    monkeypatch.undo()
    assert log.count() == 0
    assert [p for p in (log.data_dir / "images").rglob("*") if p.is_file()] == []
    log.record(make_record("a", image(1)))  # the disk has room again
    assert log.count() == 1


def test_a_missing_file_is_written_again_by_the_next_request_for_it(log: SqliteImageLog):
    log.record(make_record("a", image(1)))
    sha = sha256_hex(image(1))
    path = log.data_dir / "images" / sha[:2] / f"{sha[2:]}.png"
    path.unlink()
    log.record(make_record("b", image(1)))
    assert path.read_bytes() == image(1)


def test_an_unusable_data_dir_fails_writes_until_it_is_usable(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    log = SqliteImageLog(blocker / "data")  # opening must not kill the worker
    with pytest.raises(StorageError, match="cannot open the image log"):
        log.check()  # what /ready reports
    with pytest.raises(StorageError, match="cannot open the image log"):
        log.record(make_record("a", image(1)))
    blocker.unlink()
    blocker.mkdir()
    log.check()
    log.record(make_record("a", image(1)))  # the next write opens it
    assert log.count() == 1
    log.close()
    with pytest.raises(StorageError, match="closed"):
        log.record(make_record("b", image(2)))


def test_several_opens_of_a_new_log_migrate_once(tmp_path: Path):
    logs = [SqliteImageLog(tmp_path / "data") for _ in range(3)]
    logs[0].record(make_record("a", image(1)))
    assert [other.count() for other in logs] == [1, 1, 1]
    version = logs[1]._conn.execute("PRAGMA user_version").fetchone()[0]
    assert version == len(_MIGRATIONS)
    for opened in logs:
        opened.close()


def test_concurrent_records_share_commits_and_all_land(log: SqliteImageLog, monkeypatch):
    commits = []
    real = log._commit_queued

    def counting(deadline: Deadline) -> None:
        commits.append(len(log._queue))
        real(deadline)

    monkeypatch.setattr(log, "_commit_queued", counting)
    barrier = threading.Barrier(16)

    def send(n: int) -> None:
        barrier.wait()
        for k in range(10):
            log.record(make_record(f"r{n}-{k}", image(n * 100 + k)))

    threads = [threading.Thread(target=send, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.count() == 160 and log.image_count() == 160
    assert sum(commits) == 160
    assert len(commits) < 160  # some commits carried several records


def test_a_reused_request_id_fails_only_its_own_record_in_a_group(log: SqliteImageLog):
    log.record(make_record("taken", image(1)))
    queued = [make_record("taken", image(2)), make_record("fresh", image(3))]
    pending = [_Pending(r, None, None) for r in queued]
    log._queue.extend(pending)
    with log._lock:
        log._commit_queued(Deadline(5))
    assert isinstance(pending[0].error, DuplicateRequestId)
    assert pending[1].error is None and pending[1].done
    assert log.get("fresh") is not None and log.get("taken").sha256 == sha256_hex(image(1))


def _image_files(log: SqliteImageLog) -> list[Path]:
    return [p for p in (log.data_dir / "images").rglob("*") if p.is_file()]


def _old_file(path: Path, data: bytes, age_seconds: float = 7200) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    then = time.time() - age_seconds
    os.utime(path, (then, then))
    return path


def test_sweep_removes_only_old_files_no_record_refers_to(log: SqliteImageLog):
    """A killed worker leaves .tmp- files and image files whose row never committed."""
    images = log.data_dir / "images"
    log.record(make_record("kept", image(1)))
    sha = sha256_hex(image(1))
    _old_file(images / sha[:2] / f"{sha[2:]}.png", image(1))  # recorded, now old
    orphan_sha = sha256_hex(image(2))
    orphan = _old_file(images / orphan_sha[:2] / f"{orphan_sha[2:]}.png", image(2))
    half_written = _old_file(images / sha[:2] / ".tmp-abc123", b"partial")
    # Young files may belong to a request in flight.
    young_tmp = images / sha[:2] / ".tmp-inflight"
    young_tmp.write_bytes(b"being written now")
    young_orphan = images / "ff" / f"{'0' * 62}.png"
    young_orphan.parent.mkdir()
    young_orphan.write_bytes(image(3))

    assert log.sweep() == 2
    assert not orphan.exists() and not half_written.exists()
    assert young_tmp.exists() and young_orphan.exists()
    assert log.image(sha) == image(1)  # the recorded image stays


def test_sweep_runs_at_most_once_a_day(log: SqliteImageLog):
    images = log.data_dir / "images"
    assert log.sweep() == 0  # nothing to remove, but it ran
    orphan = _old_file(images / "ab" / f"{'1' * 62}.png", image(2))
    assert log.sweep() == 0 and orphan.exists()  # another worker starting: skipped
    marker = log.data_dir / SWEPT_NAME
    then = time.time() - SWEEP_EVERY.total_seconds() - 60
    os.utime(marker, (then, then))
    assert log.sweep() == 1 and not orphan.exists()


def test_another_connection_holding_sqlites_lock_is_a_timeout(tmp_path: Path):
    log = SqliteImageLog(tmp_path / "data", timeout=1.0)
    try:
        log.record(make_record("before", image(1)))
        other = sqlite3.connect(log.db_path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # e.g. a tool writing to the index
        started = time.monotonic()
        with pytest.raises(StorageTimeout, match="locked"):
            log.record(make_record("during", image(2)))
        assert 0.8 < time.monotonic() - started < 2.0
        other.execute("ROLLBACK")
        other.close()
        log.record(make_record("after", image(3)))
        assert log.count() == 2
    finally:
        log.close()


def test_the_probe_writes_a_file_and_leaves_none(log: SqliteImageLog, monkeypatch):
    written: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        written.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    log.check()
    assert any(".probe-" in path for path in written)
    assert not list(log.images_dir.glob(".probe-*"))


_FULL_DISK = """
import resource, signal, sys
from imagelog import StorageError
from imagelog.sqlite import PROBE_BYTES, SqliteImageLog
log = SqliteImageLog(sys.argv[1])
log.check()
# The kernel refuses to grow any file of this process past the limit (EFBIG), as a full
# disk refuses with ENOSPC: the first write that needs the space fails.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (PROBE_BYTES // 2, resource.RLIM_INFINITY))
try:
    log.check()
    print("ok")
except StorageError as exc:
    print("refused:", exc)
"""


def test_the_probe_fails_when_the_disk_cannot_take_a_file(tmp_path: Path):
    out = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("refused:"), out.stdout
    assert "File too large" in out.stdout
