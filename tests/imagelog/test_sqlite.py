"""What only the SQLite backend has: files on disk, WAL, and what a failing disk does."""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from imagelog import Retention, StorageError, StorageTimeout
from imagelog.base import Deadline, DuplicateRequestId, sha256_hex
from imagelog.sqlite import (
    _MIGRATIONS,
    DB_NAME,
    SWEEP_EVERY,
    SWEPT_NAME,
    SqliteImageLog,
    _Pending,
)
from tests.imagelog.samples import image, large_image, make_record
from tests.support import in_threads


@pytest.fixture
def log(tmp_path: Path):
    log = SqliteImageLog(tmp_path / "data")
    yield log
    log.close()


def test_large_images_are_files_named_by_their_hash(log: SqliteImageLog):
    log.record(make_record("a", large_image(1)))
    sha = sha256_hex(large_image(1))
    path = log.data_dir / "images" / sha[:2] / f"{sha[2:]}.png"
    assert path.read_bytes() == large_image(1)
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
        log.record(make_record("a", large_image(1)))
    monkeypatch.undo()
    assert log.count() == 0
    assert [p for p in (log.data_dir / "images").rglob("*") if p.is_file()] == []
    log.record(make_record("a", large_image(1)))  # the disk has room again
    assert log.count() == 1


def test_a_missing_file_is_written_again_by_the_next_request_for_it(log: SqliteImageLog):
    log.record(make_record("a", large_image(1)))
    sha = sha256_hex(large_image(1))
    path = log.data_dir / "images" / sha[:2] / f"{sha[2:]}.png"
    path.unlink()
    log.record(make_record("b", large_image(1)))
    assert path.read_bytes() == large_image(1)


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


def _count_takes(log: SqliteImageLog, monkeypatch) -> list[int]:
    """The number of records each group commit takes from the queue, in order, from now on."""
    commits: list[int] = []
    real = log._take_queue

    def counting() -> list:
        batch = real()
        commits.append(len(batch))
        return batch

    monkeypatch.setattr(log, "_take_queue", counting)
    return commits


def _record_concurrently(log: SqliteImageLog, monkeypatch, senders: int) -> list[int]:
    """``senders`` threads, started together, record 10 distinct images each; the records
    each group commit took from the queue, in order."""
    commits = _count_takes(log, monkeypatch)

    def send(n: int) -> None:
        for k in range(10):
            log.record(make_record(f"r{n}-{k}", image(n * 100 + k)))

    in_threads(senders, send)
    return commits


def test_concurrent_records_share_commits_and_all_land(log: SqliteImageLog, monkeypatch):
    commits = _record_concurrently(log, monkeypatch, 16)
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


def test_records_queued_while_a_sibling_worker_commits_join_the_waiting_group(
    log: SqliteImageLog, monkeypatch
):
    # The committing thread takes the queue once the write lock is its own: what arrived
    # while another process held the file lock (its fsync) commits in the same group.
    commits = _count_takes(log, monkeypatch)
    sibling = os.open(log.data_dir / "imagelog.lock", os.O_RDWR)
    fcntl.flock(sibling, fcntl.LOCK_EX)  # a sibling worker in the middle of its commit
    try:
        first = threading.Thread(target=log.record, args=(make_record("first", image(1)),))
        first.start()
        _wait_for(lambda: log._committing)  # it leads, and polls the file lock
        others = [
            threading.Thread(target=log.record, args=(make_record(f"o{n}", image(10 + n)),))
            for n in range(3)
        ]
        for t in others:
            t.start()
        _wait_for(lambda: len(log._queue) == 4)
    finally:
        fcntl.flock(sibling, fcntl.LOCK_UN)
        os.close(sibling)
    for t in [first, *others]:
        t.join(timeout=10)
    assert commits == [4] and log.count() == 4


def _record_timing_out(log: SqliteImageLog, senders: int) -> list[BaseException]:
    """``senders`` threads record an image each; the StorageTimeouts they got."""

    def send(n: int) -> StorageTimeout | None:
        try:
            log.record(make_record(f"t{n}", image(n)))
        except StorageTimeout as exc:
            return exc
        return None

    return [e for e in in_threads(senders, send, timeout=5) if e is not None]


def test_a_file_lock_not_had_in_time_fails_what_is_queued(tmp_path: Path):
    log = SqliteImageLog(tmp_path / "data", timeout=0.5)
    sibling = os.open(log.data_dir / "imagelog.lock", os.O_RDWR)
    fcntl.flock(sibling, fcntl.LOCK_EX)  # a sibling worker that does not let go
    try:
        assert len(_record_timing_out(log, 3)) == 3
        assert log._queue == [] and not log._committing
    finally:
        fcntl.flock(sibling, fcntl.LOCK_UN)
        os.close(sibling)
    try:
        log.record(make_record("after", image(9)))  # the next record commits at once
        assert [r.request_id for r in log.records()] == ["after"]
    finally:
        log.close()


def _wait_for(condition, seconds: float = 5.0) -> None:
    until = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < until, "not reached in time"
        time.sleep(0.001)


class _CountingLock:
    """A lock that counts its acquisitions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.acquired = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got = self._lock.acquire(blocking, timeout)
        self.acquired += got
        return got

    def release(self) -> None:
        self._lock.release()

    __enter__ = acquire

    def __exit__(self, *exc: object) -> None:
        self.release()


def test_a_record_committed_by_another_thread_never_takes_the_connection(
    log: SqliteImageLog, monkeypatch
):
    # Only the thread committing a group takes the connection's lock: the others learn from
    # their record's own signal that it was committed, instead of queueing for the lock
    # one after another to find it done.
    lock = _CountingLock()
    monkeypatch.setattr(log, "_lock", lock)
    commits = _record_concurrently(log, monkeypatch, 8)
    assert log.count() == 80 and sum(commits) == 80
    assert len(commits) < 80
    assert lock.acquired == len(commits)


def test_a_group_commits_in_as_many_statements_as_one_record(log: SqliteImageLog):
    # Each statement releases the GIL; the committing thread may then wait for it while the
    # whole group waits for the commit. So statements per group do not grow with its size:
    # a group of new small images is one statement, its own transaction (the trigger's
    # runs, one a row, repeat its text).
    def statements(records: list) -> list[str]:
        seen: list[str] = []
        log._queue.extend(_Pending(r, None, None, inline=True) for r in records)
        log._conn.set_trace_callback(seen.append)
        try:
            with log._lock:
                log._commit_queued(Deadline(5))
        finally:
            log._conn.set_trace_callback(None)
        seen = [s for s in seen if not s.startswith("PRAGMA busy_timeout")]
        return [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]]

    one = statements([make_record("one", image(1))])
    many = statements([make_record(f"m{n}", image(10 + n)) for n in range(12)])
    assert len(many) == len(one) == 1
    assert log.count() == 13 and log.image_count() == 13


def test_an_unwritable_file_fails_only_its_own_record_in_a_group(log: SqliteImageLog, monkeypatch):
    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(log, "_write_file", full)
    big = make_record("big", large_image(1))
    rel = log._relpath(big.sha256, big.extension)
    pending = [
        _Pending(make_record("before", image(1)), None, None, inline=True),
        _Pending(big, rel, log.data_dir / rel),  # its file is written within the commit
        _Pending(make_record("after", image(2)), None, None, inline=True),
    ]
    log._queue.extend(pending)
    with log._lock:
        log._commit_queued(Deadline(5))
    assert isinstance(pending[1].error, StorageError) and "No space" in str(pending[1].error)
    assert pending[0].error is None and pending[2].error is None
    assert {r.request_id for r in log.records()} == {"before", "after"}
    assert log.image(big.sha256) is None and log.image_count() == 2


def test_waiters_that_ran_out_of_time_leave_no_one_committing(tmp_path: Path):
    log = SqliteImageLog(tmp_path / "data", timeout=0.5)
    try:
        with log._lock:  # e.g. retention's long transaction: the group cannot commit
            errors = _record_timing_out(log, 4)
        assert len(errors) == 4
        assert log._queue == [] and not log._committing
        log.record(make_record("after", image(9)))  # the next record commits at once
        assert [r.request_id for r in log.records()] == ["after"]
    finally:
        log.close()


def test_the_busy_timeout_is_set_again_only_when_the_deadline_needs_it(log: SqliteImageLog):
    seen: list[str] = []
    log.record(make_record("first", image(1)))
    log._conn.set_trace_callback(seen.append)
    for n in range(5):
        log.record(make_record(f"r{n}", image(10 + n)))
    assert not [s for s in seen if "busy_timeout" in s]
    # A shorter deadline than the one set: SQLite's wait is cut to it.
    with log._lock, log._transaction(Deadline(1.0)):
        pass
    (busy,) = log._conn.execute("PRAGMA busy_timeout").fetchone()
    assert 900 <= busy <= 1000
    log._conn.set_trace_callback(None)


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
    log.record(make_record("kept", large_image(1)))
    sha = sha256_hex(large_image(1))
    _old_file(images / sha[:2] / f"{sha[2:]}.png", large_image(1))  # recorded, now old
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
    assert log.image(sha) == large_image(1)  # the recorded image stays


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


def _refused_on_a_full_disk(script: str, data_dir: Path) -> subprocess.CompletedProcess:
    """Runs ``script`` (which caps its own file size) in a child, so the cap and its
    signal stay out of the test process; the script must report a refusal."""
    out = subprocess.run(
        [sys.executable, "-c", script, str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("refused:"), out.stdout
    return out


def test_the_probe_fails_when_the_disk_cannot_take_a_file(tmp_path: Path):
    out = _refused_on_a_full_disk(_FULL_DISK, tmp_path / "data")
    assert "File too large" in out.stdout


# -- small images in their row --------------------------------------------------------------


def _row(log: SqliteImageLog, data: bytes) -> tuple[str, bytes | None]:
    conn = sqlite3.connect(log.db_path)
    try:
        return conn.execute(
            "SELECT path, data FROM images WHERE sha256 = ?", (sha256_hex(data),)
        ).fetchone()
    finally:
        conn.close()


def test_a_small_image_is_kept_in_its_row_and_leaves_no_file(log: SqliteImageLog):
    log.record(make_record("small", image(1)))
    assert _image_files(log) == []
    assert _row(log, image(1)) == ("", image(1))
    assert log.get("small").image_stored is True
    assert log.image(sha256_hex(image(1))) == image(1)
    log.record(make_record("large", large_image(2)))
    (path,) = _image_files(log)
    assert path.read_bytes() == large_image(2)
    rel, data = _row(log, large_image(2))
    assert data is None and log.data_dir / rel == path
    assert log.image(sha256_hex(large_image(2))) == large_image(2)
    assert log.image_bytes() == len(image(1)) + len(large_image(2))


def test_the_bound_is_a_setting_and_inclusive(tmp_path: Path):
    from imagelog import ImageLogConfig, open_image_log

    size = len(image(1))
    for bound, files in ((0, 1), (size - 1, 1), (size, 0)):
        config = ImageLogConfig(data_dir=tmp_path / f"b{bound}", image_inline_max_bytes=bound)
        with open_image_log(config) as opened:
            assert isinstance(opened, SqliteImageLog)
            opened.record(make_record("a", image(1)))
            assert len(_image_files(opened)) == files, bound
            assert opened.image(sha256_hex(image(1))) == image(1)
    with pytest.raises(ValueError):
        ImageLogConfig(image_inline_max_bytes=-1)


def test_every_reader_takes_row_and_file_images_alike(log: SqliteImageLog):
    # Labelled export, retention (by age, then by the byte quota), review: both kinds.
    log.record(make_record("small-old", image(1), age_days=40))
    log.record(make_record("large-old", large_image(2), age_days=40))
    log.record(make_record("small", image(3)))
    log.record(make_record("large", large_image(4)))
    for rid, label in (("small-old", 1), ("small", 3), ("large", 4)):
        log.label(rid, label)
    exported = {item.request_id: item.image for item in log.labelled()}
    assert exported == {"small-old": image(1), "small": image(3), "large": large_image(4)}
    log.retention = Retention(max_age_days=30)
    assert log.apply_retention() == 1  # large-old: its file goes with it
    assert log.image(sha256_hex(large_image(2))) is None
    assert [p.read_bytes() for p in _image_files(log)] == [large_image(4)]
    log.retention = Retention(max_age_days=30, keep_labelled=False)
    assert log.apply_retention() == 1  # small-old: its row held the image
    assert log.image(sha256_hex(image(1))) is None
    assert log.image_count() == 2


def test_a_corrupt_row_image_is_not_exported(log: SqliteImageLog):
    log.record(make_record("a", image(1)))
    log.label("a", 3)
    conn = sqlite3.connect(log.db_path, isolation_level=None)
    conn.execute("UPDATE images SET data = ?", (b"bit rot",))
    conn.close()
    assert list(log.labelled()) == []


def test_an_image_kept_as_a_file_stays_one_and_a_lost_file_moves_into_the_row(tmp_path: Path):
    files_only = SqliteImageLog(tmp_path / "data", inline_max_bytes=0)  # e.g. an older log
    files_only.record(make_record("a", image(1)))
    (path,) = _image_files(files_only)
    files_only.close()
    log = SqliteImageLog(tmp_path / "data")
    try:
        log.record(make_record("b", image(1)))  # the file is there: it stays the copy
        assert _row(log, image(1))[1] is None and path.exists()
        path.unlink()  # lost (a disk's fault): the next request for the image restores it
        log.record(make_record("c", image(1)))
        assert _row(log, image(1)) == ("", image(1))
        assert log.image(sha256_hex(image(1))) == image(1)
        assert log.image_count() == 1
    finally:
        log.close()


def test_an_image_in_a_row_leaves_no_file_from_a_log_with_a_lower_bound(tmp_path: Path):
    log = SqliteImageLog(tmp_path / "data")
    lower = SqliteImageLog(tmp_path / "data", inline_max_bytes=0)  # a worker configured so
    try:
        log.record(make_record("a", image(1)))
        lower.record(make_record("b", image(1)))
        assert _image_files(log) == []
        assert lower.image(sha256_hex(image(1))) == image(1)
    finally:
        lower.close()
        log.close()


def test_sweep_removes_a_file_whose_image_is_in_its_row(log: SqliteImageLog):
    log.record(make_record("a", image(1)))
    sha = sha256_hex(image(1))
    stray = _old_file(log.images_dir / sha[:2] / f"{sha[2:]}.png", image(1))
    assert log.sweep() == 1 and not stray.exists()
    assert log.image(sha) == image(1)


_OLD_SCHEMA_VERSION = 3  # the last schema without images.data


def test_a_database_of_the_old_schema_migrates_on_open(tmp_path: Path):
    data = tmp_path / "data"
    sha = sha256_hex(image(1))
    rel = f"images/{sha[:2]}/{sha[2:]}.png"
    (data / rel).parent.mkdir(parents=True)
    (data / rel).write_bytes(image(1))
    conn = sqlite3.connect(data / DB_NAME, isolation_level=None)
    for script in _MIGRATIONS[:_OLD_SCHEMA_VERSION]:
        conn.executescript(script)
    conn.execute(f"PRAGMA user_version = {_OLD_SCHEMA_VERSION}")
    conn.execute(
        "INSERT INTO images (sha256, path, byte_size, input_format, created_at) "
        "VALUES (?, ?, ?, 'PNG', '2026-11-01T00:00:00.000000+00:00')",
        (sha, rel, len(image(1))),
    )
    conn.execute(
        "INSERT INTO requests (request_id, created_at, sha256, image_stored, byte_size, "
        "input_format, width, height, digit, confidence, probabilities, model_name, "
        "model_version) VALUES ('old', '2026-11-01T00:00:00.000000+00:00', ?, 1, ?, 'PNG', "
        "28, 28, 3, 0.9, '[0.1]', 'digits', '1')",
        (sha, len(image(1))),
    )
    assert "data" not in {row[1] for row in conn.execute("PRAGMA table_info(images)")}
    conn.close()

    log = SqliteImageLog(data)
    try:
        columns = {row[1] for row in log._conn.execute("PRAGMA table_info(images)")}
        assert "data" in columns
        assert log._conn.execute("PRAGMA user_version").fetchone()[0] == len(_MIGRATIONS)
        assert log.image(sha) == image(1)  # the old file is read as before
        log.label("old", 7)
        assert [(i.request_id, i.image) for i in log.labelled()] == [("old", image(1))]
        log.record(make_record("new", image(2)))
        assert _row(log, image(2)) == ("", image(2))
        assert [p.name for p in _image_files(log)] == [f"{sha[2:]}.png"]
        log.retention = Retention(max_age_days=1, keep_labelled=False)
        assert log.apply_retention() == 1
        assert _image_files(log) == []  # the old record's file went with it
    finally:
        log.close()


# Records small images until killed; prints each request id once record() has returned
# (the moment the service would answer).
_WRITER = """
import sys
from imagelog.sqlite import SqliteImageLog
from tests.imagelog.samples import image, make_record
log = SqliteImageLog(sys.argv[1])
n = 0
while True:
    log.record(make_record(f"r{n}", image(n)))
    print(f"r{n}", flush=True)
    n += 1
"""


def test_a_writer_killed_mid_write_leaves_every_answered_record_with_its_image(tmp_path: Path):
    data = tmp_path / "data"
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(data)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    answered = [writer.stdout.readline().strip() for _ in range(200)]
    writer.kill()  # SIGKILL: wherever it was, mid-transaction or not
    writer.wait()
    log = SqliteImageLog(data)
    try:
        records = {r.request_id: r for r in log.records()}
        assert set(answered) <= set(records)
        for record in records.values():  # none points at a missing or partial image
            assert sha256_hex(log.image(record.sha256)) == record.sha256
        assert _image_files(log) == []
    finally:
        log.close()


_FULL_DISK_ROW = """
import os, resource, signal, sys
from imagelog import StorageError
from imagelog.sqlite import DB_NAME, SqliteImageLog
from tests.imagelog.samples import image, make_record
log = SqliteImageLog(sys.argv[1])
log.record(make_record("before", image(1)))
wal = os.path.getsize(os.path.join(sys.argv[1], DB_NAME + "-wal"))
# No file of this process may grow past the WAL's size now (EFBIG, as a full disk's
# ENOSPC): the next commit's frames cannot be appended.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (wal, resource.RLIM_INFINITY))
try:
    log.record(make_record("during", image(2)))
    print("ok")
except StorageError as exc:
    print("refused:", exc)
"""


def test_a_full_disk_refuses_a_small_image_and_keeps_neither_it_nor_its_record(tmp_path: Path):
    _refused_on_a_full_disk(_FULL_DISK_ROW, tmp_path / "data")
    log = SqliteImageLog(tmp_path / "data")
    try:
        assert [r.request_id for r in log.records()] == ["before"]
        assert log.image(sha256_hex(image(2))) is None
        assert log.image(sha256_hex(image(1))) == image(1)
    finally:
        log.close()
