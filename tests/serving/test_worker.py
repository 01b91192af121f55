"""The gunicorn worker's accept gate: a worker with all threads busy, or busier than a
sibling, leaves new connections to its siblings for a moment, then takes them one at a
time. And what the worker changes of gthread's own request handling: one send per answer,
heartbeats spaced."""

from __future__ import annotations

import multiprocessing
import os
import socket
import time

import pytest

from serving.worker import (
    ACCEPT_DEFER_SECONDS,
    AcceptGate,
    BalancedThreadWorker,
    CoalescedResponse,
    LoadBoard,
)


def test_a_worker_with_a_free_thread_accepts_at_once() -> None:
    gate = AcceptGate(threads=4, defer=0.02)
    assert all(gate.open(busy, now=0.0) for busy in range(4))
    assert gate.poll_timeout(1.0) == 1.0  # the event loop may sleep as usual


def waiting() -> bool:
    return True


def test_a_busy_worker_takes_a_connection_only_once_it_has_waited() -> None:
    gate = AcceptGate(threads=4, defer=0.02)
    assert not gate.open(4, now=1.000, waiting=waiting)  # all busy: a sibling may take it
    gate.notice(1.000)  # the listening socket said one arrived
    assert not gate.watching  # stop listening to it: it would wake the loop at once
    assert gate.poll_timeout(1.0) == 0.01  # look again within the wait
    assert not gate.open(5, now=1.010, waiting=waiting)
    assert gate.open(5, now=1.020, waiting=waiting)  # still unclaimed: this worker takes it,
    assert gate.poll_timeout(1.0) == 0.0  # without waiting for one to come
    assert not gate.open(6, now=1.021, waiting=waiting)  # and the next waits its own turn
    gate.notice(1.021)
    assert not gate.open(6, now=1.040, waiting=waiting)
    assert gate.open(6, now=1.041, waiting=waiting)


def test_a_busy_worker_with_nothing_arriving_sleeps_watching_its_socket() -> None:
    asked = []
    gate = AcceptGate(threads=4, defer=0.02)
    for now in (1.0, 1.5, 2.0):
        assert not gate.open(4, now=now, waiting=lambda: asked.append(1) or True)
        assert gate.watching
        assert gate.poll_timeout(1.0) == 1.0  # no turn every defer / 2 any more
    assert not asked  # nor a look at the queue: the socket's readiness says it


def test_a_connection_a_sibling_took_does_not_count_for_the_next() -> None:
    gate = AcceptGate(threads=4, defer=0.02)
    assert not gate.open(4, now=1.000, waiting=waiting)
    gate.notice(1.000)
    assert not gate.open(4, now=1.015, waiting=lambda: False)  # a sibling accepted it
    assert gate.watching
    # One arriving now is not taken at once although the worker has been busy for 20 ms.
    gate.notice(1.020)
    assert not gate.open(4, now=1.020, waiting=waiting)
    assert gate.open(4, now=1.040, waiting=waiting)


def test_a_freed_thread_opens_the_gate_again() -> None:
    gate = AcceptGate(threads=2, defer=0.02)
    assert not gate.open(2, now=0.0)
    gate.notice(0.0)
    assert gate.open(1, now=0.001)
    assert not gate.watching
    assert gate.poll_timeout(1.0) == 1.0


def test_a_worker_busier_than_a_sibling_leaves_it_the_connection() -> None:
    gate = AcceptGate(threads=8, defer=0.02)
    assert gate.open(1, now=0.0, least_elsewhere=1)  # equally busy: no waiting
    assert not gate.open(2, now=0.0, least_elsewhere=1, waiting=waiting)  # a freer sibling
    gate.notice(0.0)
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


# --- the worker itself: responses, accepting, heartbeats ---------------------------------


class _Socket:
    """Records what a response sends, one entry per ``sendall``."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sent.append(bytes(data))


def _answer(response_class, method: str, status: str, headers, chunks) -> list[bytes]:
    from types import SimpleNamespace

    from gunicorn.config import Config

    request = SimpleNamespace(version=(1, 1), method=method, should_close=lambda: False)
    sock = _Socket()
    response = response_class(request, sock, Config())
    response.start_response(status, list(headers))
    for chunk in chunks:
        response.write(chunk)
    response.close()
    return sock.sent


JSON = b'{"digit": 9, "confidence": 0.99}'
ANSWERS = [
    # method, status, headers, chunks
    ("POST", "200 OK", [("Content-Type", "application/json"), ("Content-Length", "32")], [JSON]),
    ("GET", "200 OK", [("Content-Length", "6")], [b"abc", b"def"]),
    ("GET", "200 OK", [("Content-Type", "text/plain")], [b"no length", b"given"]),
    ("HEAD", "200 OK", [("Content-Length", "32")], [JSON]),
    ("GET", "204 No Content", [], [b""]),
    ("GET", "200 OK", [("Content-Length", "0")], [b""]),
    ("GET", "200 OK", [("Content-Length", "3")], [b"abcdef"]),  # more than it said
]


@pytest.mark.parametrize("answer", ANSWERS, ids=lambda a: f"{a[0]}-{a[1][:3]}-{len(a[3])}")
def test_a_coalesced_response_sends_the_bytes_gunicorns_would(answer, monkeypatch) -> None:
    from gunicorn import util
    from gunicorn.http.wsgi import Response

    monkeypatch.setattr(util, "http_date", lambda *_: "Tue, 01 Dec 2026 03:00:00 GMT")
    ours = _answer(CoalescedResponse, *answer)
    assert b"".join(ours) == b"".join(_answer(Response, *answer))


def test_a_json_answer_leaves_in_one_send(monkeypatch) -> None:
    from gunicorn.http.wsgi import Response

    sent = _answer(CoalescedResponse, *ANSWERS[0])
    assert len(sent) == 1 and sent[0].endswith(b"\r\n\r\n" + JSON)
    assert len(_answer(Response, *ANSWERS[0])) == 2  # gunicorn's own: head, then body


def _worker(threads: int = 2, workers: int = 2) -> BalancedThreadWorker:
    """A worker as gunicorn would make it, without its process (no arbiter, no fork)."""
    from gunicorn.config import Config
    from gunicorn.glogging import Logger

    cfg = Config()
    cfg.set("workers", workers)
    cfg.set("threads", threads)
    return BalancedThreadWorker(0, os.getppid(), [], None, 30, cfg, Logger(cfg))


def test_the_worker_answers_a_kept_connection_with_its_coalesced_response() -> None:
    from gunicorn.workers.gthread import TConn

    def app(environ, start_response):
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [body[:5]]

    worker = _worker()
    worker.wsgi, worker.alive, worker.nr, worker.max_requests = app, True, 0, 100
    ours, theirs = socket.socketpair()
    sends: list[bytes] = []
    conn = TConn(worker.cfg, ours, "", "unix")
    try:
        for _ in range(2):  # a kept connection: the second request on the same socket
            theirs.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\nhello!!")
            conn.sock = _Recording(ours, sends)
            assert worker.handle(conn) is True  # kept alive
            conn.sock = ours
            answer = theirs.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nhello")
        assert len(sends) == 2  # one send per answer
    finally:
        ours.close()
        theirs.close()


class _Recording:
    def __init__(self, inner: socket.socket, sends: list[bytes]) -> None:
        self.inner, self.sends = inner, sends

    def sendall(self, data: bytes) -> None:
        self.sends.append(bytes(data))
        self.inner.sendall(data)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def test_a_crowded_worker_notices_an_arrival_without_accepting_it() -> None:
    worker = _worker(threads=1)
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    try:
        worker.sockets = [listener]
        worker.nr_conns = 1  # its one thread busy
        assert worker.worker_connections > worker.nr_conns  # watching: still listening
        worker.accept(listener)
        assert worker.nr_conns == 1  # left to a sibling
        assert worker._gate is not None and worker._gate.unclaimed_since is not None
        assert worker.worker_connections == worker.nr_conns  # not listened to meanwhile
        time.sleep(ACCEPT_DEFER_SECONDS * 2)
        assert worker.worker_connections > worker.nr_conns  # unclaimed: its turn now
        worker.tpool = _NoPool()
        worker.accept(listener)
        assert worker.nr_conns == 2
    finally:
        client.close()
        listener.close()


class _NoPool:
    def submit(self, *_args):
        from concurrent.futures import Future

        return Future()


def test_heartbeats_and_parent_checks_are_spaced(monkeypatch) -> None:
    from gunicorn.workers.base import Worker

    calls: list[str] = []
    monkeypatch.setattr(Worker, "notify", lambda self: calls.append("notify"))
    worker = _worker()
    monkeypatch.setattr(os, "getppid", lambda: calls.append("getppid") or worker.ppid)
    for _ in range(100):
        worker.notify()
        assert worker.is_parent_alive()
    assert calls == ["notify", "getppid"]
    monkeypatch.setattr(worker, "_last_heartbeat", -1e9)
    monkeypatch.setattr(worker, "_last_parent_check", -1e9)
    worker.notify()
    assert worker.is_parent_alive()
    assert calls == ["notify", "getppid"] * 2
