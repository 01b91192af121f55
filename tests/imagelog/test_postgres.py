"""What only the PostgreSQL backend has: migrations shared by replicas, a server that goes
away and comes back. Against the real server (tests/support.py: database_url_for_tests)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from imagelog import StorageError, StorageTimeout
from imagelog.postgres import SCHEMA_VERSION, PostgresImageLog
from tests.imagelog.samples import image, make_record
from tests.support import free_port, postgres_schema


@pytest.fixture
def schema(pg_url: str):
    with postgres_schema(pg_url) as name:
        yield name


def test_replicas_starting_together_migrate_once(pg_url: str, schema: str):
    replicas = 6
    barrier = threading.Barrier(replicas)
    opened: list[PostgresImageLog] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            barrier.wait()
            log = PostgresImageLog(pg_url, schema=schema)
            log.ensure_schema()
            opened.append(log)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(replicas)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        opened[0].record(make_record("a", image(1)))
        assert [log.count() for log in opened] == [1] * replicas
        with psycopg.connect(pg_url) as conn:
            versions = conn.execute(f"SELECT version FROM {schema}.schema_version").fetchall()
        assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
    finally:
        for log in opened:
            log.close()


def test_a_schema_newer_than_the_code_is_refused(pg_url: str, schema: str):
    PostgresImageLog(pg_url, schema=schema).close()
    with psycopg.connect(pg_url) as conn:
        conn.execute(f"INSERT INTO {schema}.schema_version (version) VALUES (99)")
    log = PostgresImageLog(pg_url, schema=schema)
    try:
        with pytest.raises(StorageError, match="newer than this code"):
            log.check()  # /ready says why
        with pytest.raises(StorageError, match="newer than this code"):
            log.record(make_record("a", image(1)))
    finally:
        log.close()


class Proxy:
    """A TCP forwarder to PostgreSQL that the test can cut and restore ("database down"),
    or freeze: connections stay open and nothing is answered, as with a server stopped by
    SIGSTOP or a frozen VM (its kernel still acknowledges every packet)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.port = target, free_port()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._thawed = threading.Event()
        self._thawed.set()

    def freeze(self) -> None:
        self._thawed.clear()

    def thaw(self) -> None:
        self._thawed.set()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                self._thawed.wait()
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        if self._listener is not None:
            # close() alone leaves a listener blocked in accept() listening (Linux).
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._sockets.clear()


def test_database_down_is_a_storage_error_until_it_is_back(pg_url: str, schema: str):
    parts = urlsplit(pg_url)
    proxy = Proxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    netloc = f"{parts.username}@127.0.0.1:{proxy.port}" if parts.username else None
    proxied = urlunsplit(parts._replace(netloc=netloc or f"127.0.0.1:{proxy.port}"))
    proxy.start()
    # Each call below waits out the pool's timeout for a connection: 1 s, not more.
    log = PostgresImageLog(proxied, schema=schema, timeout=1)
    try:
        log.record(make_record("before", image(1)))
        log.check()
        proxy.stop()
        with pytest.raises(StorageError):
            log.check()  # what /ready reports
        with pytest.raises(StorageError):
            log.record(make_record("during", image(2)))
        with pytest.raises(StorageError):
            log.label("before", 1)
        proxy.start()
        # The pool reconnects in the background with backoff: back within seconds.
        deadline = time.monotonic() + 60
        while True:
            try:
                log.record(make_record("after", image(3)))
                break
            except StorageError:
                if time.monotonic() > deadline:
                    raise
        assert {r.request_id for r in log.records()} == {"before", "after"}
    finally:
        proxy.stop()
        log.close()


def _proxied(pg_url: str, proxy: Proxy) -> str:
    parts = urlsplit(pg_url)
    netloc = f"{parts.username}@127.0.0.1:{proxy.port}" if parts.username else None
    return urlunsplit(parts._replace(netloc=netloc or f"127.0.0.1:{proxy.port}"))


def test_a_server_that_stops_answering_is_a_timeout_not_a_hang(pg_url: str, schema: str):
    parts = urlsplit(pg_url)
    proxy = Proxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    proxy.start()
    log = PostgresImageLog(_proxied(pg_url, proxy), schema=schema, timeout=1.0)
    try:
        log.record(make_record("before", image(1)))
        proxy.freeze()
        for call in (
            lambda: log.record(make_record("during", image(2))),
            lambda: log.label("before", 1),
            log.check,  # what /ready reports
        ):
            started = time.monotonic()
            with pytest.raises(StorageTimeout):
                call()
            assert time.monotonic() - started < 1.0 + 1.0
        proxy.thaw()
        # Cut connections were discarded; fresh ones serve the next calls.
        deadline = time.monotonic() + 30
        while True:
            try:
                log.record(make_record("after", image(3)))
                break
            except StorageError:
                if time.monotonic() > deadline:
                    raise
        assert {r.request_id for r in log.records()} >= {"before", "after"}
    finally:
        proxy.thaw()
        proxy.stop()
        log.close()


def test_a_statement_past_statement_timeout_is_a_timeout(pg_url: str, schema: str):
    log = PostgresImageLog(pg_url, schema=schema, timeout=1.0)
    try:
        log.check()
        started = time.monotonic()
        with pytest.raises(StorageTimeout), log._connection() as conn:
            conn.execute("SELECT pg_sleep(5)")
        assert time.monotonic() - started < 2.0
        log.record(make_record("after", image(1)))  # the connection is usable again
    finally:
        log.close()


def test_connections_carry_every_timeout(pg_url: str, schema: str):
    log = PostgresImageLog(pg_url, schema=schema, timeout=2.5)
    try:
        with log._connection() as conn:
            settings = {
                name: conn.execute(f"SHOW {name}").fetchone()[0]
                for name in ("statement_timeout", "lock_timeout", "synchronous_commit")
            }
            params = conn.info.get_parameters()
        assert settings == {
            "statement_timeout": "2500ms",
            "lock_timeout": "2500ms",
            "synchronous_commit": "on",
        }
        assert params["connect_timeout"] == "2"
        assert params["keepalives"] == "1"
        assert params["tcp_user_timeout"] == "2500"
    finally:
        log.close()


def test_a_server_that_never_answered_is_a_storage_error(schema: str):
    log = PostgresImageLog(
        f"postgresql://postgres@127.0.0.1:{free_port()}/test", schema=schema, timeout=0.5
    )
    try:
        with pytest.raises(StorageError):
            log.record(make_record("a", image(1)))
    finally:
        log.close()
