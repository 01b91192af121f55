"""The image log in PostgreSQL, shared by several replicas.

Image bytes live in the database (``images``, a ``bytea`` keyed by sha256), so replicas on
different machines share them and de-duplicate with ``ON CONFLICT DO NOTHING``. One
transaction writes the image and the request row; ``synchronous_commit`` is forced on, so
a committed record is on disk before the client hears back.

The schema is created and migrated by the first replica that starts (``schema_version``
records what was applied); an advisory lock keeps replicas that start together from racing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from datetime import datetime

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from imagelog.base import (
    DuplicateRequestId,
    Feedback,
    ImageLog,
    LabelledImage,
    Record,
    Retention,
    StorageError,
    StoredRecord,
    utc_now,
)

log = logging.getLogger(__name__)

# pg_advisory_xact_lock(classid, objid): classid says "this project's image log", objid
# the schema, so logs in different schemas do not wait for each other.
_LOCK_CLASS = 0x64696769  # "digi"
_MIGRATE, _RETAIN = 1, 2

# Version n is _MIGRATIONS[n - 1]; never edit one that has shipped, append a new one.
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
)

SCHEMA_VERSION = len(_MIGRATIONS)

_RECORD_COLUMNS = (
    "r.request_id, r.created_at, r.sha256, r.byte_size, r.input_format, r.width, r.height, "
    "r.digit, r.confidence, r.probabilities, r.model_name, r.model_version, r.image_stored, "
    "(SELECT f.label FROM feedback f WHERE f.request_id = r.request_id "
    "ORDER BY f.id DESC LIMIT 1)"
)


def _stored(row: tuple) -> StoredRecord:
    return StoredRecord(*row[:9], list(row[9]), *row[10:12], bool(row[12]), row[13])


class PostgresImageLog(ImageLog):
    def __init__(
        self,
        url: str,
        schema: str = "image_log",
        store_images: bool = True,
        retention: Retention | None = None,
        timeout: float = 10.0,
        pool_size: int = 4,
    ) -> None:
        super().__init__(store_images, retention)
        if not url:
            raise ValueError("the postgres image log needs DATABASE_URL")
        self.schema = schema
        self.timeout = timeout
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max(1, pool_size),
            timeout=timeout,
            open=False,
            # A connection the server dropped (restart, failover) is replaced, not used.
            check=ConnectionPool.check_connection,
            kwargs={
                "connect_timeout": max(1, round(timeout)),
                # Durability must not depend on the server's default.
                "options": f"-c search_path={schema} -c synchronous_commit=on",
            },
            name=f"imagelog-{schema}",
        )
        # Connect in the background: a database that is down at start makes requests
        # answer 503 until it is back, it does not stop the service from starting.
        self._pool.open(wait=False)
        with contextlib.suppress(StorageError):
            self.ensure_schema()

    # -- connections and schema -------------------------------------------------------------
    @contextlib.contextmanager
    def _connection(
        self, migrate: bool = True, timeout: float | None = None
    ) -> Iterator[psycopg.Connection]:
        """A pooled connection in a transaction, committed when the block succeeds."""
        if migrate:
            self.ensure_schema()
        try:
            with self._pool.connection(timeout=timeout) as conn:
                yield conn
        except (psycopg.Error, PoolTimeout) as exc:
            raise StorageError(f"image log database: {type(exc).__name__}: {exc}") from exc

    def ensure_schema(self) -> None:
        """Create or migrate the schema once per process (a no-op when it is current)."""
        if self._schema_ready:
            return
        with self._schema_lock:
            if self._schema_ready:
                return
            with self._connection(migrate=False) as conn:
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
                (current,) = conn.execute(
                    "SELECT coalesce(max(version), 0) FROM schema_version"
                ).fetchone()
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

    # -- the interface ----------------------------------------------------------------------
    def check(self) -> None:
        # /ready asks this on every probe: answer within a probe's patience, not the pool's.
        with self._connection(migrate=False, timeout=min(self.timeout, 2.0)) as conn:
            conn.execute("SELECT 1")
        self.ensure_schema()  # the server answers: a schema it refuses is reported too

    def record(self, entry: Record) -> None:
        keep = self.store_images and entry.image is not None
        with self._connection() as conn:
            if keep:
                conn.execute(
                    "INSERT INTO images (sha256, data, byte_size, input_format) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (sha256) DO NOTHING",
                    (entry.sha256, entry.image, entry.byte_size, entry.input_format),
                )
            inserted = conn.execute(
                "INSERT INTO requests (request_id, created_at, sha256, image_stored, byte_size, "
                "input_format, width, height, digit, confidence, probabilities, model_name, "
                "model_version) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
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
                ),
            ).rowcount
            if not inserted:
                (existing,) = conn.execute(
                    "SELECT sha256 FROM requests WHERE request_id = %s", (entry.request_id,)
                ).fetchone()
                if existing != entry.sha256:
                    raise DuplicateRequestId(entry.request_id)

    def label(self, request_id: str, label: int, at: datetime | None = None) -> bool:
        with self._connection() as conn:
            # The foreign key makes this fail, not dangle, should retention delete the
            # record between the check and the insert.
            return (
                conn.execute(
                    "INSERT INTO feedback (request_id, label, labelled_at) SELECT %s, %s, %s "
                    "WHERE EXISTS (SELECT 1 FROM requests WHERE request_id = %s)",
                    (request_id, label, at or utc_now(), request_id),
                ).rowcount
                == 1
            )

    def get(self, request_id: str) -> StoredRecord | None:
        with self._connection() as conn:
            row = conn.execute(
                f"SELECT {_RECORD_COLUMNS} FROM requests r WHERE r.request_id = %s", (request_id,)
            ).fetchone()
        return _stored(row) if row else None

    def history(self, request_id: str) -> list[Feedback]:
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT label, labelled_at FROM feedback WHERE request_id = %s ORDER BY id",
                (request_id,),
            ).fetchall()
        return [Feedback(label, at) for label, at in rows]

    def records(self) -> Iterator[StoredRecord]:
        with self._connection() as conn, conn.cursor(name="records") as cursor:
            cursor.execute(f"SELECT {_RECORD_COLUMNS} FROM requests r ORDER BY r.seq")
            for row in cursor:
                yield _stored(row)

    def image(self, sha256: str) -> bytes | None:
        with self._connection() as conn:
            row = conn.execute("SELECT data FROM images WHERE sha256 = %s", (sha256,)).fetchone()
        return bytes(row[0]) if row else None

    def labelled(self) -> Iterator[LabelledImage]:
        with self._connection() as conn, conn.cursor(name="labelled") as cursor:
            cursor.execute(
                "SELECT r.request_id, f.label, f.labelled_at, r.sha256, i.data "
                "FROM requests r JOIN images i ON i.sha256 = r.sha256 "
                "JOIN LATERAL (SELECT label, labelled_at FROM feedback "
                "WHERE request_id = r.request_id ORDER BY id DESC LIMIT 1) f ON true "
                "WHERE r.image_stored ORDER BY r.seq"
            )
            for request_id, label, labelled_at, sha256, data in cursor:
                yield LabelledImage(request_id, label, labelled_at, sha256, bytes(data))

    def count(self) -> int:
        with self._connection() as conn:
            return conn.execute("SELECT count(*) FROM requests").fetchone()[0]

    def image_count(self) -> int:
        with self._connection() as conn:
            return conn.execute("SELECT count(*) FROM images").fetchone()[0]

    def apply_retention(self, now: datetime | None = None) -> int:
        policy = self.retention
        if not policy.active:
            return 0
        unlabelled = (
            "AND NOT EXISTS (SELECT 1 FROM feedback f WHERE f.request_id = requests.request_id)"
            if policy.keep_labelled
            else ""
        )
        cutoff = policy.cutoff(now or utc_now())
        with self._connection() as conn:
            # One replica at a time; the others have nothing left to do.
            (mine,) = conn.execute(
                "SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))",
                (_LOCK_CLASS + _RETAIN, self.schema),
            ).fetchone()
            if not mine:
                return 0
            gone: list[str] = []
            if cutoff is not None:
                gone += [
                    sha
                    for (sha,) in conn.execute(
                        f"DELETE FROM requests WHERE created_at < %s {unlabelled} RETURNING sha256",
                        (cutoff,),
                    )
                ]
            if policy.max_count:
                gone += [
                    sha
                    for (sha,) in conn.execute(
                        "DELETE FROM requests WHERE seq IN (SELECT seq FROM requests "
                        f"WHERE true {unlabelled} ORDER BY created_at DESC, seq DESC "
                        "OFFSET %s) RETURNING sha256",
                        (policy.max_count,),
                    )
                ]
            if gone:
                # Writers insert into images (ROW EXCLUSIVE) in the same transaction as their
                # request row: this lock waits for those in flight and holds off new ones, so
                # the NOT EXISTS below sees every request that could still use an image.
                conn.execute("LOCK TABLE images IN SHARE ROW EXCLUSIVE MODE")
                conn.execute(
                    "DELETE FROM images i WHERE i.sha256 = ANY(%s) AND NOT EXISTS "
                    "(SELECT 1 FROM requests r WHERE r.sha256 = i.sha256 AND r.image_stored)",
                    (sorted(set(gone)),),
                )
        if gone:
            log.info("image log retention: %d record(s) deleted", len(gone))
        return len(gone)

    def close(self) -> None:
        self._pool.close()
