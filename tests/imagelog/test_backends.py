"""The ImageLog contract, run against both backends (SQLite files, real PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from imagelog import DuplicateRequestId, ImageLog, Retention
from imagelog.base import TooManyLabels, sha256_hex, utc_now
from tests.imagelog.samples import image, large_image, make_record
from tests.support import in_threads


def test_a_record_reads_back_whole(log: ImageLog):
    entry = make_record("req-1", image(1))
    log.record(entry)
    stored = log.get("req-1")
    assert stored is not None
    assert (stored.request_id, stored.sha256, stored.byte_size) == ("req-1", entry.sha256, 40)
    assert (stored.input_format, stored.width, stored.height) == ("PNG", 28, 28)
    assert (stored.digit, stored.confidence, stored.probabilities) == (
        3,
        0.875,
        entry.probabilities,
    )
    assert (stored.model_name, stored.model_version) == ("digits", "7")
    assert stored.created_at == entry.created_at
    assert stored.image_stored is True
    assert stored.label is None
    assert log.image(entry.sha256) == image(1)
    assert log.get("nope") is None


def test_images_are_deduplicated_requests_are_not(log: ImageLog):
    for i in range(6):
        log.record(make_record(f"req-{i}", image(i % 2)))
    assert log.count() == 6
    assert log.image_count() == 2


def test_a_retry_is_idempotent_and_a_reused_id_is_refused(log: ImageLog):
    log.record(make_record("same", image(1)))
    log.record(make_record("same", image(1)))
    assert log.count() == 1
    with pytest.raises(DuplicateRequestId):
        log.record(make_record("same", image(2)))
    assert log.get("same").sha256 == sha256_hex(image(1))


@pytest.mark.parametrize("sample", [image, large_image], ids=["small", "large"])
def test_a_reused_id_keeps_none_of_its_image(log: ImageLog, sample):
    # The refused record's image must not stay behind in the log (SQLite keeps a small
    # image in the same transaction as its record, PostgreSQL every image).
    log.record(make_record("same", sample(1)))
    with pytest.raises(DuplicateRequestId):
        log.record(make_record("same", sample(2)))
    assert log.image(sha256_hex(sample(2))) is None
    assert log.image_count() == 1
    assert log.image_bytes() == len(sample(1))


def test_large_and_small_images_read_back_alike(log: ImageLog):
    """SQLite keeps the small in their row and the large as files; every reader takes both."""
    log.record(make_record("large", large_image(1), age_days=40))
    log.record(make_record("small", image(2), age_days=40))
    log.record(make_record("large-again", large_image(1)))
    assert log.get("large").image_stored and log.get("small").image_stored
    assert log.image(sha256_hex(large_image(1))) == large_image(1)
    assert log.image(sha256_hex(image(2))) == image(2)
    log.label("large", 1)
    log.label("small", 2, hold=True)
    (held,) = log.held()
    log.review(held.id, accept=True)
    exported = [(item.request_id, item.label, item.image) for item in log.labelled()]
    assert exported == [("large", 1, large_image(1)), ("small", 2, image(2))]
    log.retention = Retention(max_age_days=30, keep_labelled=False)
    assert log.apply_retention() == 2
    assert log.image(sha256_hex(image(2))) is None
    assert log.image(sha256_hex(large_image(1))) == large_image(1)  # "large-again" uses it
    assert log.image_count() == 1


def test_labels_replace_and_keep_their_history(log: ImageLog):
    log.record(make_record("a", image(1)))
    log.record(make_record("b", image(2)))
    assert log.label("unknown", 3) is False
    first, second = utc_now(), utc_now() + timedelta(seconds=1)
    assert log.label("a", 7, at=first) is True
    assert log.label("a", 1, at=second) is True
    assert log.get("a").label == 1
    history = log.history("a")
    assert [(f.label, f.labelled_at) for f in history] == [(7, first), (1, second)]
    assert [(item.request_id, item.label, item.image) for item in log.labelled()] == [
        ("a", 1, image(1))
    ]


def test_without_images_predictions_are_still_logged(open_log):
    log = open_log(store_images=False)
    log.record(make_record("a", image(1)))
    stored = log.get("a")
    assert stored.image_stored is False
    assert stored.sha256 == sha256_hex(image(1))
    assert log.image(stored.sha256) is None
    assert log.image_count() == 0
    assert log.label("a", 4) is True
    assert list(log.labelled()) == []  # nothing to train on without the image


def test_records_survive_reopening(open_log):
    first = open_log()
    first.record(make_record("kept", image(1)))
    first.label("kept", 5)
    first.close()
    again = open_log()
    assert again.get("kept").label == 5
    assert again.image(sha256_hex(image(1))) == image(1)


def test_retention_by_age_spares_labelled_records(log: ImageLog):
    log.record(make_record("old", image(1), age_days=40))
    log.record(make_record("old-labelled", image(2), age_days=40))
    log.record(make_record("old-shared", image(3), age_days=40))
    log.record(make_record("new-shared", image(3)))
    log.record(make_record("new", image(4)))
    log.label("old-labelled", 2)
    log.retention = Retention(max_age_days=30)
    assert log.apply_retention() == 2
    assert {r.request_id for r in log.records()} == {"old-labelled", "new-shared", "new"}
    assert log.image(sha256_hex(image(1))) is None  # no record left uses it
    assert log.image(sha256_hex(image(3))) == image(3)  # "new-shared" still does
    assert log.image_count() == 3


def test_retention_can_include_labelled_records(log: ImageLog):
    log.record(make_record("old-labelled", image(1), age_days=40))
    log.label("old-labelled", 2)
    log.retention = Retention(max_age_days=30, keep_labelled=False)
    assert log.apply_retention() == 1
    assert log.count() == 0
    assert log.image_count() == 0
    assert log.history("old-labelled") == []


def test_retention_by_count_keeps_the_newest(log: ImageLog):
    for i in range(6):
        log.record(make_record(f"r{i}", image(i), age_days=6 - i))
    log.label("r0", 0)
    log.retention = Retention(max_count=3)
    assert log.apply_retention() == 2
    assert [r.request_id for r in log.records()] == ["r0", "r3", "r4", "r5"]
    assert log.apply_retention() == 0


def test_retention_off_deletes_nothing(log: ImageLog):
    log.retention = Retention()
    log.record(make_record("old", image(1), age_days=10_000))
    assert log.apply_retention() == 0
    assert log.count() == 1


def test_threads_writing_at_once_lose_and_duplicate_nothing(log: ImageLog):
    threads, per_thread, distinct = 8, 40, 10

    def write(t: int) -> BaseException | str:
        try:
            for i in range(per_thread):
                log.record(make_record(f"t{t}-{i}", image((t * per_thread + i) % distinct)))
        except BaseException as exc:
            return exc
        return "written"

    assert in_threads(threads, write) == ["written"] * threads
    records = list(log.records())
    assert len(records) == log.count() == threads * per_thread
    assert len({r.request_id for r in records}) == threads * per_thread
    assert log.image_count() == distinct
    for n in range(distinct):
        assert sha256_hex(log.image(sha256_hex(image(n)))) == sha256_hex(image(n))


def test_several_writers_on_one_store_lose_and_duplicate_nothing(open_log):
    """Like gunicorn workers (SQLite) or replicas (PostgreSQL): separate connections."""
    writers, per_writer, distinct = 4, 60, 7
    logs = [open_log() for _ in range(writers)]

    def write(w: int) -> BaseException | str:
        try:
            for i in range(per_writer):
                logs[w].record(make_record(f"w{w}-{i}", image(i % distinct)))
                logs[w].record(make_record(f"w{w}-{i}", image(i % distinct)))  # a retry
        except BaseException as exc:
            return exc
        return "written"

    assert in_threads(writers, write) == ["written"] * writers
    assert logs[0].count() == writers * per_writer
    assert logs[-1].image_count() == distinct


def test_the_label_history_is_capped(log: ImageLog):
    log.record(make_record("capped", image(1)))
    for label in range(3):
        assert log.label("capped", label, max_labels=3) is True
    with pytest.raises(TooManyLabels):
        log.label("capped", 9, max_labels=3)
    assert [f.label for f in log.history("capped")] == [0, 1, 2]
    assert log.label("unknown", 1, max_labels=3) is False


def test_concurrent_labels_never_pass_the_cap(log: ImageLog):
    log.record(make_record("race", image(1)))

    def label(n: int) -> bool | str:
        try:
            return log.label("race", n, max_labels=5)
        except TooManyLabels:
            return "capped"

    outcomes = in_threads(8, label)
    assert sorted(map(str, outcomes)) == ["True"] * 5 + ["capped"] * 3
    assert len(log.history("race")) == 5


def test_held_labels_are_exported_only_once_accepted(log: ImageLog):
    log.record(make_record("held", image(1), digit=1))
    log.record(make_record("plain", image(2)))
    assert log.label("plain", 4) is True
    assert log.label("held", 8, hold=True) is True
    assert [item.request_id for item in log.labelled()] == ["plain"]
    (pending,) = log.held()
    assert (pending.request_id, pending.label, pending.digit, pending.review) == (
        "held",
        8,
        1,
        "pending",
    )
    assert log.history("held")[0].review == "pending"
    assert log.review(pending.id, accept=True) is True
    assert log.held() == []
    assert [h.request_id for h in log.held("accepted")] == ["held"]
    exported = {item.request_id: item.label for item in log.labelled()}
    assert exported == {"plain": 4, "held": 8}
    assert log.review(10**9, accept=True) is False


def test_a_rejected_label_is_never_exported_an_earlier_one_is(log: ImageLog):
    log.record(make_record("r", image(1), digit=1))
    log.label("r", 1)
    log.label("r", 7, hold=True)
    (pending,) = log.held()
    assert [(i.request_id, i.label) for i in log.labelled()] == [("r", 1)]
    assert log.review(pending.id, accept=False) is True
    assert [(i.request_id, i.label) for i in log.labelled()] == [("r", 1)]
    assert [h.label for h in log.held("rejected")] == [7]
    # A label that was never held cannot be reviewed.
    plain_id = pending.id - 1
    assert log.review(plain_id, accept=False) is False


def test_the_shared_secret_is_the_first_one_stored(open_log):
    first, second = open_log(), open_log()  # two processes, or two replicas
    kept = first.shared_secret("feedback", b"a" * 32)
    assert kept == b"a" * 32
    assert second.shared_secret("feedback", b"b" * 32) == kept
    assert second.shared_secret("other", b"c" * 32) == b"c" * 32
