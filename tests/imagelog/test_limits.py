"""The ImageLog contract on limits, against both backends: deadlines on every wait (another
process or connection holds the store's lock), failing fast while the store is stuck, the
byte quota with its eviction order, default retention, trailing bytes."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import psycopg

import imagelog.postgres
import imagelog.sqlite
from imagelog import ImageLog, ImageLogConfig, Retention, StorageTimeout
from imagelog.base import PROBE_TIMEOUT, sha256_hex
from imagelog.sqlite import LOCK_NAME, SqliteImageLog
from tests.imagelog.samples import image, make_record

# Holds the SQLite image log's file lock (the one every writer queues on) until killed.
_HOLD_FLOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(120)
"""


@contextlib.contextmanager
def store_held(log: ImageLog, config: dict) -> Iterator[None]:
    """Another party holds what writers wait for: another process the SQLite log's lock,
    another PostgreSQL connection the tables (as a migration or a stuck session would)."""
    if isinstance(log, SqliteImageLog):
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLD_FLOCK, str(log.data_dir / LOCK_NAME)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout.readline().strip() == "held"
            yield
        finally:
            holder.kill()
            holder.wait()
        return
    schema = config["database_schema"]
    with psycopg.connect(config["database_url"]) as conn:
        conn.execute(f"LOCK TABLE {schema}.requests, {schema}.probe IN ACCESS EXCLUSIVE MODE")
        yield
        conn.rollback()


def _timed(call) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        call()
    except Exception as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


def test_a_held_store_fails_writes_within_the_timeout(open_log, image_log_config):
    log = open_log(storage_timeout_seconds=0.5)
    log.record(make_record("before", image(1)))
    with store_held(log, image_log_config):
        took, error = _timed(lambda: log.record(make_record("during", image(2))))
        assert isinstance(error, StorageTimeout), error
        assert 0.4 < took < 1.5
        took, error = _timed(lambda: log.label("before", 4))
        assert isinstance(error, StorageTimeout), error
        assert took < 1.5
    log.record(make_record("after", image(3)))  # released: writes go through again
    assert log.label("before", 4) is True
    assert {r.request_id for r in log.records()} == {"before", "after"}


def test_the_probe_fails_on_a_held_store_within_its_own_patience(
    open_log, image_log_config, monkeypatch
):
    # A shorter patience than PROBE_TIMEOUT's 2 s, set where each backend reads it: the
    # probe still gives up on its own, far within the calls' 10 s.
    patience = 0.5
    assert patience < PROBE_TIMEOUT
    for module in (imagelog.sqlite, imagelog.postgres):
        monkeypatch.setattr(module, "PROBE_TIMEOUT", patience)
    log = open_log(storage_timeout_seconds=10.0)
    log.check()
    with store_held(log, image_log_config):
        took, error = _timed(log.check)
        assert isinstance(error, StorageTimeout), error
        assert took < patience + 1.0
    log.check()


def test_while_one_call_is_stuck_the_others_fail_at_once(open_log, image_log_config):
    log = open_log(storage_timeout_seconds=4.0)
    log.guard.stall_seconds = 0.3
    log.record(make_record("before", image(1)))
    stuck: list[BaseException | None] = []
    with store_held(log, image_log_config):
        first = threading.Thread(
            target=lambda: stuck.append(_timed(lambda: log.record(make_record("a", image(2))))[1])
        )
        first.start()
        time.sleep(0.6)  # the first call has now waited past stall_seconds
        for call in (
            lambda: log.record(make_record("b", image(3))),
            lambda: log.label("before", 1),
            log.check,
        ):
            took, error = _timed(call)
            assert isinstance(error, StorageTimeout), error
            assert took < 0.25, f"waited {took:.2f} s on a store known to be stuck"
            assert "not answering" in str(error)
    first.join(timeout=10)
    assert not first.is_alive()
    # Released before its deadline, the first call went through; the store is usable again.
    assert stuck == [None]
    log.record(make_record("c", image(4)))
    assert {r.request_id for r in log.records()} == {"before", "a", "c"}


def test_after_a_timeout_calls_go_one_at_a_time_until_one_succeeds(open_log, image_log_config):
    log = open_log(storage_timeout_seconds=1.0)
    log.guard.stall_seconds = 1.0  # the stall rule would not bite within the checks below
    log.record(make_record("before", image(1)))
    with store_held(log, image_log_config):
        _, error = _timed(lambda: log.record(make_record("a", image(2))))
        assert isinstance(error, StorageTimeout)
        trial = threading.Thread(target=_timed, args=(lambda: log.label("before", 1),))
        trial.start()
        time.sleep(0.2)
        took, error = _timed(lambda: log.record(make_record("b", image(3))))
        assert isinstance(error, StorageTimeout) and took < 0.1
        assert "another is trying it now" in str(error)
        trial.join(timeout=5)
    log.record(make_record("c", image(4)))  # the first call after: alone, and it succeeds
    calls = [
        threading.Thread(target=log.record, args=(make_record(f"d{n}", image(10 + n)),))
        for n in range(4)
    ]
    for t in calls:
        t.start()
    for t in calls:
        t.join()
    assert log.count() == 6  # before, c, d0-d3: all went through together again


def test_at_most_max_inflight_calls_wait_inside_the_store(open_log, image_log_config):
    log = open_log(storage_timeout_seconds=2.0)
    log.guard.max_inflight = 2
    log.guard.stall_seconds = 2.0  # only the slot limit is at work here
    log.record(make_record("before", image(1)))
    inside: list[int] = []
    with store_held(log, image_log_config):
        threads = [
            threading.Thread(
                target=_timed, args=(lambda n=n: log.record(make_record(f"t{n}", image(10 + n))),)
            )
            for n in range(4)
        ]
        for t in threads:
            t.start()
        time.sleep(0.5)
        inside.append(len(log.guard._inflight))
    # Released (rather than left to run out of time): all four go through.
    for t in threads:
        t.join(timeout=10)
    assert inside == [2]  # the other two waited outside, holding no connection or lock
    assert log.count() == 5


def _sized(n: int, size: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + n.to_bytes(4, "big") + bytes(size - 12)


def test_over_the_quota_the_oldest_unlabelled_records_go_first(log: ImageLog):
    for n in range(6):  # r0 oldest … r5 newest, 1000 bytes each
        log.record(make_record(f"r{n}", _sized(n, 1000), age_days=6 - n))
    log.label("r0", 0)
    log.label("r2", 2)
    assert log.image_bytes() == 6000
    log.retention = Retention(max_image_bytes=3500)
    assert log.apply_retention() == 3
    assert [r.request_id for r in log.records()] == ["r0", "r2", "r5"]
    assert log.image_bytes() == 3000
    assert log.image(sha256_hex(_sized(1, 1000))) is None
    assert log.apply_retention() == 0


def test_labelled_records_are_never_evicted_for_space(log: ImageLog):
    for n in range(4):
        log.record(make_record(f"r{n}", _sized(n, 1000), age_days=4 - n))
    log.label("r0", 0)
    log.label("r3", 3)
    # Labelled records sharing an image with an unlabelled one keep it stored.
    log.record(make_record("shares-r0", _sized(0, 1000), age_days=10))
    log.retention = Retention(max_image_bytes=100, keep_labelled=False)
    assert log.apply_retention() == 3
    assert [r.request_id for r in log.records()] == ["r0", "r3"]
    assert log.image(sha256_hex(_sized(0, 1000))) == _sized(0, 1000)
    assert log.image_bytes() == 2000  # over the quota, but all of it is labelled


def test_default_retention_is_ninety_days_and_a_quota(open_log):
    config = ImageLogConfig()
    assert config.retention == Retention(
        max_age_days=90, max_count=0, keep_labelled=True, max_image_bytes=5 * 1024**3
    )
    log = open_log()
    log.record(make_record("old", image(1), age_days=91))
    log.record(make_record("old-labelled", image(2), age_days=91))
    log.record(make_record("recent", image(3), age_days=89))
    log.label("old-labelled", 2)
    assert log.apply_retention() == 1
    assert [r.request_id for r in log.records()] == ["old-labelled", "recent"]


def test_retention_deletes_in_batches_that_each_commit(log: ImageLog, monkeypatch):
    for module in (imagelog.sqlite, imagelog.postgres):
        monkeypatch.setattr(module, "RETENTION_BATCH", 3)
    for n in range(8):
        log.record(make_record(f"r{n}", image(n), age_days=100))
    log.retention = Retention(max_age_days=30)
    assert log.apply_retention() == 8
    assert log.count() == 0 and log.image_count() == 0


def test_trailing_bytes_are_counted_not_stored(log: ImageLog):
    picture = image(1)
    log.record(replace(make_record("phone", picture), trailing_bytes=123_456))
    stored = log.get("phone")
    assert stored.trailing_bytes == 123_456
    assert stored.byte_size == len(picture)
    assert log.image(stored.sha256) == picture
    assert next(log.records()).trailing_bytes == 123_456
    log.record(make_record("plain", image(2)))
    assert log.get("plain").trailing_bytes == 0


def test_a_label_a_reviewer_rejected_does_not_protect_a_record(log: ImageLog):
    for n in range(3):
        log.record(make_record(f"r{n}", _sized(n, 1000), age_days=3 - n))
    log.label("r0", 1, hold=True)  # held for review, then rejected
    (held,) = log.held()
    assert log.review(held.id, accept=False) is True
    log.label("r1", 1, hold=True)  # still pending: a label until a reviewer says no
    log.retention = Retention(max_image_bytes=1000)
    assert log.apply_retention() == 2
    assert [r.request_id for r in log.records()] == ["r1"]
