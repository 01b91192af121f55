"""The gunicorn worker's accept gate: a worker with all threads busy leaves new connections
to its siblings for a moment, then takes them one at a time."""

from __future__ import annotations

from serving.worker import AcceptGate


def test_a_worker_with_a_free_thread_accepts_at_once() -> None:
    gate = AcceptGate(threads=4, defer=0.02)
    assert all(gate.open(busy, now=0.0) for busy in range(4))
    assert gate.poll_timeout(1.0) == 1.0  # the event loop may sleep as usual


def test_a_busy_worker_waits_then_takes_one_connection_per_wait() -> None:
    gate = AcceptGate(threads=4, defer=0.02)
    assert not gate.open(4, now=1.000)  # all busy: a sibling may take it
    assert gate.poll_timeout(1.0) == 0.02  # look again when the wait is over
    assert not gate.open(5, now=1.010)
    assert gate.open(5, now=1.020)  # nobody did: this worker takes one that is waiting,
    assert gate.poll_timeout(1.0) == 0.0  # without waiting for one to come
    assert not gate.open(6, now=1.021)  # and the next waits again
    assert gate.open(6, now=1.041)


def test_a_freed_thread_opens_the_gate_again() -> None:
    gate = AcceptGate(threads=2, defer=0.02)
    assert not gate.open(2, now=0.0)
    assert gate.open(1, now=0.001)
    assert gate.poll_timeout(1.0) == 1.0
