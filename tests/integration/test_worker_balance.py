"""The real server spreads new connections over its workers by free threads, not by luck."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from tests.support import WORKER_STARTED, run_server

WORKERS, THREADS = 2, 3
# A request whose body never completes keeps the thread reading it busy.
PARTIAL = (
    b"POST /recognize HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
    b"Content-Length: 1000\r\n\r\n\x89PNG"
)


def _wait_for_every_worker(log: Path, workers: int, timeout: float = 120) -> None:
    # A worker still loading its model is not listening yet: the others would take all.
    started = re.compile(WORKER_STARTED)
    deadline = time.monotonic() + timeout
    while len(started.findall(log.read_text())) < workers:
        assert time.monotonic() < deadline, "not every worker started serving"
        time.sleep(0.1)
    time.sleep(0.5)  # from the model loaded to the worker's event loop listening


def _connections_per_worker(master: psutil.Process, port: int, clients: set[int]) -> list[int]:
    counts = []
    for worker in master.children():
        held = [
            c
            for c in worker.net_connections(kind="tcp")
            if c.laddr and c.laddr.port == port and c.raddr and c.raddr.port in clients
        ]
        counts.append(len(held))
    return sorted(counts)


def _stall(port: int, count: int) -> list[socket.socket]:
    clients: list[socket.socket] = []
    for _ in range(count):
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
        client.sendall(PARTIAL)
        clients.append(client)
        time.sleep(0.2)  # accepted and busy before the next one comes
    return clients


def _spread(registry, tmp_path, stalled: int) -> list[int]:
    """How many of ``stalled`` half-sent requests each worker holds."""
    # gunicorn alone: the balancing is between clients and workers, which the nginx front
    # (the default) otherwise stands between, holding half-sent requests itself.
    extra = {"WORKERS": str(WORKERS), "THREADS": str(THREADS), "FRONT": "none"}
    with run_server(registry.env, extra, tmp_path) as server:
        _wait_for_every_worker(server.log_path, WORKERS)
        port = urlsplit(server.url).port
        master = psutil.Process(server.proc.pid)
        clients = _stall(port, stalled)
        try:
            ports = {c.getsockname()[1] for c in clients}
            return _connections_per_worker(master, port, ports)
        finally:
            for client in clients:
                client.close()


def test_a_worker_with_busy_threads_leaves_new_connections_to_one_with_free_threads(
    registry, tmp_path
):
    # Plain gthread splits six such clients 3/3 only by chance (5 times in 16).
    assert _spread(registry, tmp_path, WORKERS * THREADS) == [THREADS] * WORKERS


def test_connections_are_spread_before_any_worker_is_full(registry, tmp_path):
    # Two clients, three threads each: without the shared board both may go to one worker
    # (neither has all its threads busy), as 8 clients went 8/0 on 2 × 8 threads.
    assert _spread(registry, tmp_path, WORKERS) == [1] * WORKERS
