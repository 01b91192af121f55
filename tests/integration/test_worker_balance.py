"""The real server spreads new connections over its workers by free threads, not by luck."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest

from tests import tiny_model
from tests.support import Registry, run_server, wait_for_every_worker

WORKERS, THREADS = 2, 3
# A request whose body never completes keeps the thread reading it busy.
PARTIAL = (
    b"POST /recognize HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
    b"Content-Length: 1000\r\n\r\n\x89PNG"
)


@pytest.fixture(scope="module")
def tiny_registry(tmp_path_factory: pytest.TempPathFactory, tiny_onnx: Path) -> Registry:
    """The in-process tests' tiny model: the stalled requests never reach a model."""
    reg = Registry.create(tmp_path_factory.mktemp("balance-registry"))
    tiny_model.register(reg.tracking_uri, tiny_onnx)
    return reg


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


def _spread(registry: Registry, tmp_path: Path, stalled: int) -> list[int]:
    """How many of ``stalled`` half-sent requests each worker holds."""
    # gunicorn alone: the balancing is between clients and workers, which the nginx front
    # (the default) otherwise stands between, holding half-sent requests itself.
    extra = {"WORKERS": str(WORKERS), "THREADS": str(THREADS), "FRONT": "none"}
    with run_server(registry.env, extra, tmp_path) as server:
        # A worker still loading its model is not listening yet: the others would take
        # all. Each has answered /ready once this returns (its pid in the access log).
        wait_for_every_worker(server.url, server.log_path, WORKERS)
        # The board holds each worker's busy threads as of its loop's last turn, which the
        # /ready requests' connections (closed by the client a moment ago) may have left
        # counted; an idle loop turns at least once a second (gthread's poll timeout).
        time.sleep(1.2)
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
    tiny_registry, tmp_path
):
    # Plain gthread splits six such clients 3/3 only by chance (5 times in 16).
    assert _spread(tiny_registry, tmp_path, WORKERS * THREADS) == [THREADS] * WORKERS


def test_connections_are_spread_before_any_worker_is_full(tiny_registry, tmp_path):
    # Two clients, three threads each: without the shared board both may go to one worker
    # (neither has all its threads busy), as 8 clients went 8/0 on 2 × 8 threads.
    assert _spread(tiny_registry, tmp_path, WORKERS) == [1] * WORKERS
