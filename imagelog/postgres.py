"""The image log in PostgreSQL, shared by several replicas.

Image bytes live in the database (``images``, a ``bytea`` keyed by sha256), so replicas on
different machines share them and de-duplicate with ``ON CONFLICT DO NOTHING``. One
transaction writes the image and the request row; ``synchronous_commit`` is forced on, so
a committed record is on disk before the client hears back.

The schema is created and migrated by the first replica that starts (``schema_version``
records what was applied); an advisory lock keeps replicas that start together from racing.

Every wait has a deadline (``timeout``): a connection from the pool, connecting
(``connect_timeout``), statements and locks on the server (``statement_timeout``,
``lock_timeout``), a peer that vanished (TCP keepalives, ``tcp_user_timeout``), and, for
a server that is alive to the kernel but never answers (stopped, wedged), a watchdog that
cuts the connection of a call past its deadline.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from imagelog.base import (
    PROBE_TIMEOUT,
    RETENTION_BATCH,
    STALL_SECONDS,
    Deadline,
    DuplicateRequestId,
    Feedback,
    HeldLabel,
    ImageLog,
    LabelledImage,
    Record,
    Retention,
    StorageError,
    StorageTimeout,
    StoredRecord,
    TooManyLabels,
    enough_to_free,
    utc_now,
)

log = logging.getLogger(__name__)

# pg_advisory_xact_lock(classid, objid): classid says "this project's image log", objid
# the schema, so logs in different schemas do not wait for each other.
_LOCK_CLASS = 0x64696769  # "digi"
_MIGRATE, _RETAIN = 1, 2

# Version n is _MIGRATIONS[n - 1]; never edit one that has shipped, append a new one.
# Each runs within STORAGE_TIMEOUT_SECONDS (statement_timeout and the watchdog): one that
# may take longer on a large table (an index build, a rewrite) must be run out of band.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE images (
            sha256 text PRIMARY KEY,
            data bytea NOT NULL,
            byte_size integer NOT NULL,
            input_format text,
            created_at timestamptz NOT NULL DEFAULT now()
        )""",
        """CREATE TABLE requests (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            request_id text NOT NULL UNIQUE,
            created_at timestamptz NOT NULL,
            sha256 text NOT NULL,
            image_stored boolean NOT NULL,
            byte_size integer NOT NULL,
            input_format text,
            width integer,
            height integer,
            digit smallint NOT NULL,
            confidence double precision NOT NULL,
            probabilities double precision[] NOT NULL,
            model_name text NOT NULL,
            model_version text NOT NULL
        )""",
        "CREATE INDEX requests_created_at ON requests (created_at)",
        "CREATE INDEX requests_sha256 ON requests (sha256)",
        """CREATE TABLE feedback (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            request_id text NOT NULL REFERENCES requests (request_id) ON DELETE CASCADE,
            label smallint NOT NULL CHECK (label BETWEEN 0 AND 9),
            labelled_at timestamptz NOT NULL
        )""",
        "CREATE INDEX feedback_request ON feedback (request_id, id)",
    ),
    (
        "ALTER TABLE requests ADD COLUMN trailing_bytes integer NOT NULL DEFAULT 0",
        "CREATE TABLE probe (id smallint PRIMARY KEY, at timestamptz NOT NULL)",
    ),
    (
        "ALTER TABLE feedback ADD COLUMN review text "
        "CHECK (review IN ('pending', 'accepted', 'rejected'))",
        "ALTER TABLE feedback ADD COLUMN reviewed_at timestamptz",
        "CREATE INDEX feedback_review ON feedback (review, id) WHERE review IS NOT NULL",
        "CREATE TABLE secrets (name text PRIMARY KEY, value bytea NOT NULL)",
    ),
)

SCHEMA_VERSION = len(_MIGRATIONS)

_RECORD_COLUMNS = (
    "r.request_id, r.created_at, r.sha256, r.byte_size, r.input_format, r.width, r.height, "
    "r.digit, r.confidence, r.probabilities, r.model_name, r.model_version, r.image_stored, "
    "(SELECT f.label FROM feedback f WHERE f.request_id = r.request_id "
    "ORDER BY f.id DESC LIMIT 1), r.trailing_bytes"
)
# Retention and the quota spare labelled records; a label a reviewer rejected is none.
_UNLABELLED = (
    "NOT EXISTS (SELECT 1 FROM feedback f WHERE f.request_id = requests.request_id "
    "AND coalesce(f.review, 'accepted') <> 'rejected')"
)


def _scalar(cursor: psycopg.Cursor[Any]) -> Any:
    """The value of a query that always answers one row (an aggregate, a row just upserted)."""
    row = cursor.fetchone()
    if row is None:
        raise LookupError("the query answered no row")
    return row[0]


def _stored(row: tuple) -> StoredRecord:
    # The row is _RECORD_COLUMNS in StoredRecord's order; mypy cannot count a starred slice.
    return StoredRecord(*row[:9], list(row[9]), *row[10:12], bool(row[12]), row[13], row[14])  # type: ignore[call-arg]


def connection_options(schema: str, timeout: float) -> dict[str, object]:
    """libpq parameters: every wait on the server or the network ends within ``timeout``."""
    ms = max(1, round(timeout * 1000))
    return {
        "connect_timeout": max(2, round(timeout)),  # libpq's minimum is 2 s
        # A peer that vanished (cable, crash of its machine): keepalives notice an idle
        # connection, tcp_user_timeout one with data unacknowledged.
        "keepalives": 1,
        "keepalives_idle": max(1, round(timeout)),
        "keepalives_interval": max(1, round(timeout / 3)),
        "keepalives_count": 3,
        "tcp_user_timeout": ms,
        # Durability must not depend on the server's default; neither must how long a
        # statement or a lock may take.
        "options": f"-c search_path={schema} -c synchronous_commit=on "
        f"-c statement_timeout={ms} -c lock_timeout={ms}",
    }


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(
        exc, PoolTimeout | psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable
    )


class _Alarm:
    def __init__(self, at: float, conn: psycopg.Connection) -> None:
        self.at, self.conn = at, conn
        self.lock = threading.Lock()
        self.fired = self.disarmed = False

    def fire(self) -> None:
        with self.lock:
            if self.disarmed:
                return
            self.fired = True
            log.warning("image log database: no answer by the deadline; connection cut")
            # shutdown, not close: the fd stays psycopg's, and the call blocked on it
            # returns an error now; the pool then discards the broken connection.
            with contextlib.suppress(OSError, ValueError):
                sock = socket.socket(fileno=_dup(self.conn.pgconn.socket))
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                finally:
                    sock.close()

    def disarm(self) -> bool:
        """Stop the alarm; True if it had fired (the connection is cut)."""
        with self.lock:
            self.disarmed = True
            return self.fired


def _dup(fd: int) -> int:
    return os.dup(fd)


class _Watchdog:
    """One thread that cuts the connection of a call still running at its deadline.

    ``statement_timeout`` needs a server that runs, and a stopped or wedged one (SIGSTOP,
    a frozen VM) still has its kernel acknowledge our packets, so neither the server's
    timeouts nor TCP keepalives or ``tcp_user_timeout`` ever fire: a blocked call would
    wait forever, holding a request thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Alarm]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def arm(self, at: float, conn: psycopg.Connection) -> _Alarm:
        alarm = _Alarm(at, conn)
        with self._cond:
            if self._thread is None:  # started by the first call, not by the constructor
                self._thread = threading.Thread(
                    target=self._run, name="imagelog-watchdog", daemon=True
                )
                self._thread.start()
            heapq.heappush(self._heap, (at, next(self._order), alarm))
            if self._heap[0][2] is alarm:
                self._cond.notify()
        return alarm

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        alarm = heapq.heappop(self._heap)[2]
                        break
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
                else:
                    return
            if not alarm.disarmed:
                alarm.fire()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()


class PostgresImageLog(ImageLog):
    def __init__(
        self,
        url: str,
        schema: str = "image_log",
        store_images: bool = True,
        retention: Retention | None = None,
        timeout: float = 10.0,
        pool_size: int = 4,
        max_inflight: int | None = None,
        stall_seconds: float = STALL_SECONDS,
    ) -> None:
        inflight = pool_size if max_inflight is None else max_inflight
        super().__init__(store_images, retention, timeout, inflight, stall_seconds)
        if not url:
            raise ValueError("the postgres image log needs DATABASE_URL")
        self.schema = schema
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        self._watchdog = _Watchdog()
        self._local = threading.local()  # the calling thread's deadline, for _check
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max(1, pool_size),
            timeout=timeout,
            open=False,
            # A connection the server dropped (restart, failover) is replaced, not used.
            check=self._check,
            kwargs=connection_options(schema, timeout),
            name=f"imagelog-{schema}",
        )
        # Connect in the background: a database that is down at start makes requests
        # answer 503 until it is back, it does not stop the service from starting.
        self._pool.open(wait=False)
        with contextlib.suppress(StorageError):
            self.ensure_schema()

    # -- connections and schema -------------------------------------------------------------
    def _check(self, conn: psycopg.Connection) -> None:
        """The pool's check of a connection it hands out, within the caller's deadline."""
        deadline: Deadline = getattr(self._local, "deadline", None) or Deadline(self.timeout)
        with self._watched(conn, deadline):
            ConnectionPool.check_connection(conn)

    @contextlib.contextmanager
    def _watched(self, conn: psycopg.Connection, deadline: Deadline) -> Iterator[None]:
        alarm = self._watchdog.arm(deadline.at, conn)
        try:
            yield
        except psycopg.Error as exc:
            if alarm.disarm():
                raise StorageTimeout(
                    f"image log database: no answer within {deadline.seconds:g} s"
                ) from exc
            raise
        finally:
            alarm.disarm()

    @contextlib.contextmanager
    def _connection(
        self,
        migrate: bool = True,
        deadline: Deadline | None = None,
        watch: bool = True,
    ) -> Iterator[psycopg.Connection]:
        """A pooled connection in a transaction, committed when the block succeeds, all
        before ``deadline`` (``watch=False``: only getting the connection is bounded, for
        reads that stream for as long as their reader takes)."""
        deadline = deadline or Deadline(self.timeout)
        if migrate:
            self.ensure_schema(deadline)
        try:
            self._local.deadline = deadline
            try:
                conn = self._pool.getconn(timeout=deadline.remaining("image log connection"))
            finally:
                self._local.deadline = None
            try:
                with self._watched(conn, deadline) if watch else contextlib.nullcontext():
                    try:
                        yield conn
                        conn.commit()
                    except BaseException:
                        with contextlib.suppress(psycopg.Error):
                            conn.rollback()
                        raise
            finally:
                self._pool.putconn(conn)  # after the watchdog let go of it
        except (psycopg.Error, PoolTimeout) as exc:
            kind = StorageTimeout if _is_timeout(exc) else StorageError
            raise kind(f"image log database: {type(exc).__name__}: {exc}") from exc

    def ensure_schema(self, deadline: Deadline | None = None) -> None:
        """Create or migrate the schema once per process (a no-op when it is current)."""
        if self._schema_ready:
            return
        deadline = deadline or Deadline(self.timeout)
        if not self._schema_lock.acquire(timeout=deadline.remaining("image log schema")):
            raise StorageTimeout("image log schema: another thread is still creating it")
        try:
            if self._schema_ready:
                return
            with self._connection(migrate=False, deadline=deadline) as conn:
                conn.execute(
                    "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                    (_LOCK_CLASS + _MIGRATE, self.schema),
                )
                conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
                )
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version ("
                    "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                )
                current = _scalar(
                    conn.execute("SELECT coalesce(max(version), 0) FROM schema_version")
                )
                if current > SCHEMA_VERSION:
                    raise StorageError(
                        f"schema {self.schema} is at version {current}, newer than this code "
                        f"({SCHEMA_VERSION}); upgrade the service"
                    )
                for number, statements in enumerate(_MIGRATIONS[current:], start=current + 1):
                    for statement in statements:
                        conn.execute(statement)
                    conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (number,))
                    log.info("image log schema %s: version %d", self.schema, number)
            self._schema_ready = True
        finally:
            self._schema_lock.release()

    # -- the interface ----------------------------------------------------------------------
    def check(self) -> None:
        # A real write transaction (a schema the server refuses is reported too), within
        # a probe's patience rather than the pool's.
        with (
            self.guard.call("image log probe", timeout=PROBE_TIMEOUT) as deadline,
            self._connection(deadline=deadline) as conn,
        ):
            conn.execute(
                "INSERT INTO probe (id, at) VALUES (1, now()) "
                "ON CONFLICT (id) DO UPDATE SET at = excluded.at"
            )

    def image_bytes(self) -> int:
        with self._connection() as conn:
            return _scalar(conn.execute("SELECT coalesce(sum(byte_size), 0) FROM images"))

    def record(self, entry: Record) -> None:
        keep = self.store_images and entry.image is not None
        with (
            self.guard.call("image log write") as deadline,
            self._connection(deadline=deadline) as conn,
        ):
            if keep:
                conn.execute(
                    "INSERT INTO images (sha256, data, byte_size, input_format) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (sha256) DO NOTHING",
                    (entry.sha256, entry.image, entry.byte_size, entry.input_format),
                )
            inserted = conn.execute(
                "INSERT INTO requests (request_id, created_at, sha256, image_stored, byte_size, "
                "input_format, width, height, digit, confidence, probabilities, model_name, "
                "model_version, trailing_bytes) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (request_id) DO NOTHING",
                (
                    entry.request_id,
                    entry.created_at,
                    entry.sha256,
                    keep,
                    entry.byte_size,
                    entry.input_format,
                    entry.width,
                    entry.height,
                    entry.digit,
                    entry.confidence,
                    entry.probabilities,
                    entry.model_name,
                    entry.model_version,
                    entry.trailing_bytes,
                ),
            ).rowcount
            if not inserted:
                existing = _scalar(
                    conn.execute(
                        "SELECT sha256 FROM requests WHERE request_id = %s", (entry.request_id,)
                    )
                )
                if existing != entry.sha256:
                    raise DuplicateRequestId(entry.request_id)

    def label(
        self,
        request_id: str,
        label: int,
        at: datetime | None = None,
        max_labels: int = 0,
        hold: bool = False,
    ) -> bool:
        with (
            self.guard.call("image log label") as deadline,
            self._connection(deadline=deadline) as conn,
        ):
            # The record's row lock queues concurrent labels of one record, so the count
            # and the insert see each other; retention cannot delete it meanwhile.
            found = conn.execute(
                "SELECT 1 FROM requests WHERE request_id = %s FOR UPDATE", (request_id,)
            ).fetchone()
            if found is None:
                return False
            if max_labels:
                count = _scalar(
                    conn.execute(
                        "SELECT count(*) FROM feedback WHERE request_id = %s", (request_id,)
                    )
                )
                if count >= max_labels:
                    raise TooManyLabels(request_id)
            conn.execute(
                "INSERT INTO feedback (request_id, label, labelled_at, review) "
                "VALUES (%s, %s, %s, %s)",
                (request_id, label, at or utc_now(), "pending" if hold else None),
            )
            return True

    def held(self, review: str = "pending", limit: int = 100) -> list[HeldLabel]:
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT f.id, f.request_id, f.label, f.labelled_at, r.digit, r.confidence, "
                "f.review FROM feedback f JOIN requests r ON r.request_id = f.request_id "
                "WHERE f.review = %s ORDER BY f.id LIMIT %s",
                (review, limit),
            ).fetchall()
        return [HeldLabel(*row) for row in rows]

    def review(self, label_id: int, accept: bool, at: datetime | None = None) -> bool:
        with (
            self.guard.call("image log review") as deadline,
            self._connection(deadline=deadline) as conn,
        ):
            return (
                conn.execute(
                    "UPDATE feedback SET review = %s, reviewed_at = %s "
                    "WHERE id = %s AND review IS NOT NULL",
                    ("accepted" if accept else "rejected", at or utc_now(), label_id),
                ).rowcount
                == 1
            )

    def shared_secret(self, name: str, candidate: bytes) -> bytes:
        with (
            self.guard.call("image log secret") as deadline,
            self._connection(deadline=deadline) as conn,
        ):
            conn.execute(
                "INSERT INTO secrets (name, value) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
                (name, candidate),
            )
            value = _scalar(conn.execute("SELECT value FROM secrets WHERE name = %s", (name,)))
        return bytes(value)

    def get(self, request_id: str) -> StoredRecord | None:
        with self._connection() as conn:
            row = conn.execute(
                f"SELECT {_RECORD_COLUMNS} FROM requests r WHERE r.request_id = %s", (request_id,)
            ).fetchone()
        return _stored(row) if row else None

    def history(self, request_id: str) -> list[Feedback]:
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT label, labelled_at, review FROM feedback WHERE request_id = %s ORDER BY id",
                (request_id,),
            ).fetchall()
        return [Feedback(label, at, review) for label, at, review in rows]

    def records(self) -> Iterator[StoredRecord]:
        with self._connection(watch=False) as conn, conn.cursor(name="records") as cursor:
            cursor.execute(f"SELECT {_RECORD_COLUMNS} FROM requests r ORDER BY r.seq")
            for row in cursor:
                yield _stored(row)

    def image(self, sha256: str) -> bytes | None:
        with self._connection() as conn:
            row = conn.execute("SELECT data FROM images WHERE sha256 = %s", (sha256,)).fetchone()
        return bytes(row[0]) if row else None

    def labelled(self) -> Iterator[LabelledImage]:
        with self._connection(watch=False) as conn, conn.cursor(name="labelled") as cursor:
            cursor.execute(
                "SELECT r.request_id, f.label, f.labelled_at, r.sha256, i.data "
                "FROM requests r JOIN images i ON i.sha256 = r.sha256 "
                "JOIN LATERAL (SELECT label, labelled_at FROM feedback "
                "WHERE request_id = r.request_id AND coalesce(review, 'accepted') = 'accepted' "
                "ORDER BY id DESC LIMIT 1) f ON true "
                "WHERE r.image_stored ORDER BY r.seq"
            )
            for request_id, label, labelled_at, sha256, data in cursor:
                yield LabelledImage(request_id, label, labelled_at, sha256, bytes(data))

    def count(self) -> int:
        with self._connection() as conn:
            return _scalar(conn.execute("SELECT count(*) FROM requests"))

    def image_count(self) -> int:
        with self._connection() as conn:
            return _scalar(conn.execute("SELECT count(*) FROM images"))

    def apply_retention(self, now: datetime | None = None) -> int:
        policy = self.retention
        if not policy.active:
            return 0
        spare = f"AND {_UNLABELLED}" if policy.keep_labelled else ""
        cutoff = policy.cutoff(now or utc_now())
        gone = 0
        if cutoff is not None:
            gone += self._delete_while(
                lambda conn: conn.execute(
                    f"SELECT seq FROM requests WHERE created_at < %s {spare} ORDER BY seq LIMIT %s",
                    (cutoff, RETENTION_BATCH),
                ).fetchall()
            )
        if policy.max_count:
            gone += self._delete_while(
                lambda conn: conn.execute(
                    "SELECT seq FROM requests WHERE seq IN (SELECT seq FROM requests "
                    f"WHERE true {spare} ORDER BY created_at DESC, seq DESC OFFSET %s) "
                    "ORDER BY seq LIMIT %s",
                    (policy.max_count, RETENTION_BATCH),
                ).fetchall()
            )
        if policy.max_image_bytes:
            gone += self._delete_while(self._over_quota)
        if gone:
            log.info("image log retention: %d record(s) deleted", gone)
        return gone

    def _over_quota(self, conn: psycopg.Connection) -> list[tuple[int]]:
        """As in the SQLite backend: the oldest unlabelled records with a stored image,
        as many as bring the images back under the quota."""
        quota = self.retention.max_image_bytes
        total = _scalar(conn.execute("SELECT coalesce(sum(byte_size), 0) FROM images"))
        if total <= quota:
            return []
        rows = conn.execute(
            f"SELECT seq, sha256, byte_size FROM requests WHERE image_stored AND {_UNLABELLED} "
            "ORDER BY created_at, seq LIMIT %s",
            (RETENTION_BATCH,),
        ).fetchall()
        return enough_to_free(rows, total - quota)

    def _delete_while(self, select: Callable[[psycopg.Connection], list[tuple]]) -> int:
        """Delete the records ``select`` names, a batch per transaction, until it names none
        (or another replica is at it); images no stored record uses go with them."""
        gone = 0
        while True:
            with self._connection() as conn:
                mine = _scalar(
                    conn.execute(
                        "SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))",
                        (_LOCK_CLASS + _RETAIN, self.schema),
                    )
                )
                if not mine:  # one replica at a time; the others have nothing left to do
                    return gone
                seqs = [row[0] for row in select(conn)]
                if not seqs:
                    return gone
                shas = {
                    sha
                    for (sha,) in conn.execute(
                        "DELETE FROM requests WHERE seq = ANY(%s) RETURNING sha256", (seqs,)
                    )
                }
                # Writers insert into images (ROW EXCLUSIVE) in the same transaction as
                # their request row: this lock waits for those in flight and holds off new
                # ones, so the NOT EXISTS below sees every request that could use an image.
                conn.execute("LOCK TABLE images IN SHARE ROW EXCLUSIVE MODE")
                conn.execute(
                    "DELETE FROM images i WHERE i.sha256 = ANY(%s) AND NOT EXISTS "
                    "(SELECT 1 FROM requests r WHERE r.sha256 = i.sha256 AND r.image_stored)",
                    (sorted(shas),),
                )
            gone += len(seqs)

    def close(self) -> None:
        self._pool.close()
        self._watchdog.close()
