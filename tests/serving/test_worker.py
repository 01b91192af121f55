"""The gunicorn worker's accept gate: a worker with all threads busy, or busier than a
sibling, leaves new connections to its siblings for a moment, then takes them one at a
time."""

from __future__ import annotations

import multiprocessing
import os
import time

from serving.worker import AcceptGate, LoadBoard


def test_a_worker_with_a_free_thread_accepts_at_once() -> None:
    gate = AcceptGate(threads=4, defer=0.02)
    assert all(gate.open(busy, now=0.0) for busy in range(4))
    assert gate.poll_timeout(1.0) == 1.0  # the event loop may sleep as usual


def waiting() -> bool:
    return True


def test_a_busy_worker_takes_a_connection_only_once_it_has_waited() -> None:
    gate = AcceptGate(threads=4, defer=0.02)
    assert not gate.open(4, now=1.000, waiting=waiting)  # all busy: a sibling may take it
    assert gate.poll_timeout(1.0) == 0.01  # look again within the wait
    assert not gate.open(5, now=1.010, waiting=waiting)
    assert gate.open(5, now=1.020, waiting=waiting)  # still unclaimed: this worker takes it,
    assert gate.poll_timeout(1.0) == 0.0  # without waiting for one to come
    assert not gate.open(6, now=1.021, waiting=waiting)  # and the next waits its own turn
    assert gate.open(6, now=1.041, waiting=waiting)


def test_a_connection_a_sibling_took_does_not_count_for_the_next() -> None:
    gate = AcceptGate(threads=4, defer=0.02)
    assert not gate.open(4, now=1.000, waiting=waiting)
    assert not gate.open(4, now=1.015, waiting=lambda: False)  # a sibling accepted it
    # One arriving now is not taken at once although the worker has been busy for 20 ms.
    assert not gate.open(4, now=1.020, waiting=waiting)
    assert gate.open(4, now=1.040, waiting=waiting)


def test_a_freed_thread_opens_the_gate_again() -> None:
    gate = AcceptGate(threads=2, defer=0.02)
    assert not gate.open(2, now=0.0)
    assert gate.open(1, now=0.001)
    assert gate.poll_timeout(1.0) == 1.0


def test_a_worker_busier_than_a_sibling_leaves_it_the_connection() -> None:
    gate = AcceptGate(threads=8, defer=0.02)
    assert gate.open(1, now=0.0, least_elsewhere=1)  # equally busy: no waiting
    assert not gate.open(2, now=0.0, least_elsewhere=1, waiting=waiting)  # a freer sibling
    assert gate.poll_timeout(1.0) == 0.01
    assert gate.open(2, now=0.02, least_elsewhere=1, waiting=waiting)  # it did not take it


def test_the_board_reports_the_least_busy_other_worker() -> None:
    board = LoadBoard(slots=3)
    a, b = board.join(101), board.join(102)
    assert (a, b) == (0, 1)
    assert board.least_elsewhere(a) == 0
    board.publish(a, 3)
    board.publish(b, 2)
    assert board.least_elsewhere(a) == 2
    assert board.least_elsewhere(b) == 3
    board.leave(102)  # a dead worker's count no longer counts
    assert board.least_elsewhere(a) is None
    assert board.join(103) == 1  # and its slot is reused, starting idle
    assert board.least_elsewhere(a) == 0


def test_a_full_board_leaves_a_worker_without_a_slot() -> None:
    board = LoadBoard(slots=1)
    assert board.join(1) == 0
    assert board.join(2) is None


def test_forked_workers_see_each_others_counts() -> None:
    board = LoadBoard(slots=2)
    mine = board.join(os.getpid())
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()

    def sibling() -> None:
        board.publish(board.join(os.getpid()), 5)
        ready.set()
        time.sleep(5)

    child = ctx.Process(target=sibling)
    child.start()
    try:
        assert ready.wait(10)
        assert board.least_elsewhere(mine) == 5
    finally:
        child.kill()
        child.join()
