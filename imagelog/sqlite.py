"""The embedded image log: a SQLite index (WAL) holding small images in their row, plus
content-addressed files for the larger ones.

Layout under ``data_dir``::

    imagelog.sqlite3            requests, images, feedback (see _MIGRATIONS); an image of
                                at most ``inline_max_bytes`` in ``images.data``
    imagelog.lock               writers of every process queue on it (flock)
    imagelog.swept              its mtime: the last sweep of leftover files
    images/ab/cdef….jpg         the bytes of a larger image whose sha256 is abcdef…
    images/.probe-<pid>         /ready's write probe, removed right after

Every wait has a deadline (``timeout``): the process's own lock, the file lock, SQLite's
busy handler and the file writes (done on a small pool of threads, so a disk that hangs
costs a request its deadline, not its thread forever).

Durability: commits use ``synchronous=FULL``, so a committed row survives a crash or power
loss. A small image (every 28×28 PNG, a /read crop, a drawing from the web page) goes into
its ``images`` row in the same transaction as its request record: both commit together or
not at all, and concurrent requests share one fsync of the WAL (the group commit below).
A larger image (a phone photo) is a file, written to a temporary name, fsynced, renamed
into place and its directory fsynced *before* the row that refers to it is committed, so
no committed row points at a missing or partial file. Per distinct image the file costs
a create, two fsyncs and a rename, about 1.2-1.6 ms of kernel time (docs/performance.md),
which the row saves. Several processes (gunicorn workers) share the
files safely: writes serialise on SQLite's lock (``BEGIN IMMEDIATE``), and a file is
only ever created whole by ``os.replace``.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from imagelog.base import (
    INLINE_MAX_BYTES,
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
    sha256_hex,
    utc_now,
)

log = logging.getLogger(__name__)

DB_NAME = "imagelog.sqlite3"
LOCK_NAME = "imagelog.lock"  # writers of all processes queue on it (flock)
IMAGES_DIR = "images"
SWEPT_NAME = "imagelog.swept"  # its mtime: when leftovers were last swept
SWEEP_EVERY = timedelta(days=1)
# /ready writes and fsyncs this much: a disk that cannot take it cannot take an image.
PROBE_BYTES = 64 * 1024
# Polling the file lock: first and longest sleep between tries (see _flock).
FLOCK_FIRST_SLEEP, FLOCK_MAX_SLEEP = 0.0002, 0.002
# SQLite's busy timeout must end within a transaction's deadline. Setting it is a statement
# (parsed anew for each value), so the one set is kept while it lies within this share of
# the time left, and a new one is set to BUSY_SET of it: a writer gives up on a foreign
# lock at most a tenth early, and most transactions set nothing.
BUSY_KEEP, BUSY_SET = 0.9, 0.95
# Threads writing image files (each mostly waits for its fsync): more than a worker's
# request threads, so they never queue for one.
WRITE_THREADS = 16
# ``images.path`` of an image held in ``images.data`` (the column is NOT NULL from the
# first schema, and an added column cannot lift that).
NO_FILE = ""

# Version n is _MIGRATIONS[n - 1]; PRAGMA user_version holds the version applied.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE images (
        sha256 TEXT PRIMARY KEY,
        path TEXT NOT NULL,
        byte_size INTEGER NOT NULL,
        input_format TEXT,
        created_at TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE requests (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        request_id TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        image_stored INTEGER NOT NULL,
        byte_size INTEGER NOT NULL,
        input_format TEXT,
        width INTEGER,
        height INTEGER,
        digit INTEGER NOT NULL,
        confidence REAL NOT NULL,
        probabilities TEXT NOT NULL,
        model_name TEXT NOT NULL,
        model_version TEXT NOT NULL
    );
    CREATE INDEX requests_created_at ON requests (created_at);
    CREATE INDEX requests_sha256 ON requests (sha256);
    CREATE TABLE feedback (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        request_id TEXT NOT NULL REFERENCES requests (request_id) ON DELETE CASCADE,
        label INTEGER NOT NULL CHECK (label BETWEEN 0 AND 9),
        labelled_at TEXT NOT NULL
    );
    CREATE INDEX feedback_request ON feedback (request_id, id);
    """,
    """
    ALTER TABLE requests ADD COLUMN trailing_bytes INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE probe (id INTEGER PRIMARY KEY, at TEXT NOT NULL);
    """,
    """
    ALTER TABLE feedback ADD COLUMN review TEXT
        CHECK (review IN ('pending', 'accepted', 'rejected'));
    ALTER TABLE feedback ADD COLUMN reviewed_at TEXT;
    CREATE INDEX feedback_review ON feedback (review, id) WHERE review IS NOT NULL;
    CREATE TABLE secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL);
    """,
    # Small images in their row; path is NO_FILE then. ADD COLUMN only rewrites the schema,
    # not the table, so a large log migrates at once while its workers start.
    """
    ALTER TABLE images ADD COLUMN data BLOB;
    """,
)

_REQUEST_COLUMNS = (
    "request_id, created_at, sha256, image_stored, byte_size, input_format, width, height, "
    "digit, confidence, probabilities, model_name, model_version, trailing_bytes"
)
_REQUEST_WIDTH = len(_REQUEST_COLUMNS.split(","))
# A group whose images all go in their rows (or are not kept) commits in ONE statement: an
# INSERT into this view of the connection's own (TEMP: nothing on disk, no migration), whose
# trigger writes each row's request and image. Alone in autocommit, the statement is its
# own transaction (write lock at its start, synchronous=FULL commit at its end), so it
# is what BEGIN IMMEDIATE, two INSERTs and COMMIT were, and the committing thread releases
# the GIL for one statement instead of four, each time waiting to take it back while the
# whole group waits for the commit (and the other worker for the file lock). What the
# trigger cannot decide alone (a reused request id; an image stored before as a file) it
# refuses with _FALLBACK, which undoes the statement, and the group takes the statements
# of _commit_in_transaction.
_GROUP_VIEW = "group_rows"
_FALLBACK = "imagelog: group needs a transaction"
_GROUP_OBJECTS = (
    f"CREATE TEMP VIEW IF NOT EXISTS {_GROUP_VIEW} AS SELECT "
    + ", ".join(f"NULL AS {c.strip()}" for c in [*_REQUEST_COLUMNS.split(","), "data"]),
    f"""CREATE TEMP TRIGGER IF NOT EXISTS {_GROUP_VIEW}_insert INSTEAD OF INSERT ON {_GROUP_VIEW}
    BEGIN
        SELECT RAISE(ABORT, '{_FALLBACK}')
        WHERE EXISTS (SELECT 1 FROM requests
                      WHERE request_id = NEW.request_id AND sha256 <> NEW.sha256)
           OR (NEW.data IS NOT NULL
               AND EXISTS (SELECT 1 FROM images WHERE sha256 = NEW.sha256 AND path <> ''));
        INSERT INTO requests ({_REQUEST_COLUMNS}) VALUES
            ({", ".join(f"NEW.{c.strip()}" for c in _REQUEST_COLUMNS.split(","))})
            ON CONFLICT (request_id) DO NOTHING;
        INSERT INTO images (sha256, path, byte_size, input_format, created_at, data)
            SELECT NEW.sha256, '', NEW.byte_size, NEW.input_format, NEW.created_at, NEW.data
            WHERE NEW.data IS NOT NULL
            ON CONFLICT (sha256) DO NOTHING;
    END""",
)
# Rows per multi-row INSERT: few distinct statements for SQLite's statement cache (128 per
# connection), and far below its limit of bound variables (32,766).
CHUNK_ROWS = 16
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


def _ts(value: datetime) -> str:
    # One fixed-width UTC form, so text order is time order.
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _dt(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _stored(row: tuple) -> StoredRecord:
    return StoredRecord(
        request_id=row[0],
        created_at=_dt(row[1]),
        sha256=row[2],
        byte_size=row[3],
        input_format=row[4],
        width=row[5],
        height=row[6],
        digit=row[7],
        confidence=row[8],
        probabilities=json.loads(row[9]),
        model_name=row[10],
        model_version=row[11],
        image_stored=bool(row[12]),
        label=row[13],
        trailing_bytes=row[14],
    )


def _locked() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass(eq=False)
class _Pending:
    """A record waiting for the next group commit: its image goes into the row
    (``inline``), or is the file at ``path`` (``rel`` under data_dir), or is not kept.

    Its parameters are made by the recording thread when it is queued, so the committing
    thread, which holds the connection while every other record waits, only executes."""

    entry: Record
    rel: str | None
    path: Path | None
    inline: bool = False
    stamp: str = field(init=False)
    row: tuple = field(init=False)
    group_row: tuple = field(init=False)
    # Held until a commit ended with this record in it, or it is this record's turn to
    # commit what is queued (``lead``): its thread waits on it, no other lock.
    signal: threading.Lock = field(init=False, default_factory=_locked)
    lead: bool = field(init=False, default=False)
    file_row: bool = field(init=False, default=False)  # its file needs an images row
    done: bool = field(init=False, default=False)
    error: Exception | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        entry = self.entry
        self.stamp = _ts(entry.created_at)
        self.row = (
            entry.request_id,
            self.stamp,
            entry.sha256,
            int(self.inline or self.path is not None),
            entry.byte_size,
            entry.input_format,
            entry.width,
            entry.height,
            entry.digit,
            entry.confidence,
            json.dumps(entry.probabilities),
            entry.model_name,
            entry.model_version,
            entry.trailing_bytes,
        )
        # The group statement's row: the request's, then the bytes its images row holds.
        self.group_row = (*self.row, entry.image if self.inline else None)

    def wake(self) -> None:
        # Caller holds the queue lock. Released at most once while its thread waits; a
        # thread that committed its own record holds its signal itself, no one waits on it.
        if self.signal.locked():
            self.signal.release()


def _result(write: Future, timeout: float | None, what: str) -> None:
    try:
        write.result(timeout)
    except FutureTimeout:
        raise StorageTimeout(f"{what}: not done within {timeout:.3g} s") from None
    except OSError as exc:
        raise StorageError(f"{what} failed: {exc}") from exc


def _sqlite_error(exc: sqlite3.Error, what: str) -> StorageError:
    # SQLite's busy handler gave up: another connection held the lock past our deadline.
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return StorageTimeout(f"{what}: {exc}")
    return StorageError(f"{what}: {exc}")


@contextlib.contextmanager
def _begun(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction holding SQLite's write lock from its first statement."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _older(path: Path, cutoff: float) -> bool:
    try:
        return path.is_file() and path.stat().st_mtime < cutoff
    except FileNotFoundError:
        return False


def _chunks(items: list) -> Iterator[list]:
    for start in range(0, len(items), CHUNK_ROWS):
        yield items[start : start + CHUNK_ROWS]


@functools.cache
def _placeholders(columns: int, rows: int) -> str:
    row = f"({', '.join('?' * columns)})"
    return ", ".join([row] * rows)


def _present(path: Path) -> bool:
    # A file that cannot even be looked at is as good as lost: the row takes the image.
    try:
        return path.exists()
    except OSError:
        return False


def _referenced(conn: sqlite3.Connection, path: Path) -> bool:
    """Whether a committed row refers to the image file (a .tmp- file never is; nor is a
    file of an image whose row holds its bytes)."""
    if path.name.startswith(".tmp-"):
        return False
    sha256 = path.parent.name + path.name.partition(".")[0]
    row = conn.execute(
        "SELECT 1 FROM images WHERE sha256 = ? AND data IS NULL", (sha256,)
    ).fetchone()
    return row is not None


class SqliteImageLog(ImageLog):
    def __init__(
        self,
        data_dir: str | os.PathLike,
        store_images: bool = True,
        retention: Retention | None = None,
        timeout: float = 10.0,
        max_inflight: int = 8,
        stall_seconds: float = STALL_SECONDS,
        inline_max_bytes: int = INLINE_MAX_BYTES,
    ) -> None:
        super().__init__(store_images, retention, timeout, max_inflight, stall_seconds)
        # 0: every image a file, as before the images' data column.
        self.inline_max_bytes = inline_max_bytes
        self.data_dir = Path(data_dir)
        self.images_dir = self.data_dir / IMAGES_DIR
        self.db_path = self.data_dir / DB_NAME
        # One connection per process, used under a lock: SQLite admits one writer at a
        # time anyway, and the slow part (writing and fsyncing the file) happens outside.
        self._lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._stager: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._busy_ms = 0  # the connection's busy timeout as last set (0: not set)
        # A thread is committing the queue, or waiting for the connection to (see _record).
        self._committing = False
        self._lock_fd = -1
        self._closed = False
        try:
            self._open()
        except StorageError as exc:
            # A worker must not die over its storage (gunicorn halts when one fails to
            # boot): requests get storage_unavailable meanwhile, and each write retries.
            log.error("%s; retried on the next write", exc)

    def _open(self) -> sqlite3.Connection:
        try:
            self.images_dir.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(self.data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
            conn = self._connect()
            try:
                self._migrate(conn)
                for statement in _GROUP_OBJECTS:
                    conn.execute(statement)
            except BaseException:
                conn.close()
                os.close(lock_fd)
                raise
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open the image log in {self.data_dir}: {exc}") from exc
        self._conn, self._lock_fd, self._busy_ms = conn, lock_fd, 0
        return conn

    # -- connections and schema -------------------------------------------------------------
    def _connect(self, readonly: bool = False) -> sqlite3.Connection:
        # isolation_level=None: transactions are exactly the BEGIN/COMMIT written here.
        conn = sqlite3.connect(
            self.db_path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = FULL")
        if not readonly:
            conn.execute("PRAGMA journal_mode = WAL")
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        # Up to date already (the usual case): don't queue for the write lock, which busy
        # sibling workers may hold long enough to fail this worker's start.
        if conn.execute("PRAGMA user_version").fetchone()[0] >= len(_MIGRATIONS):
            return
        conn.execute("BEGIN IMMEDIATE")  # several workers start at once: one migrates
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")
                log.info("image log %s: schema version %d", self.db_path, number)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _require(self) -> sqlite3.Connection:
        # Caller holds self._lock.
        if self._closed:
            raise StorageError("the image log is closed")
        return self._conn or self._open()

    @contextlib.contextmanager
    def _write(self, deadline: Deadline | None = None) -> Iterator[sqlite3.Connection]:
        """A write transaction holding SQLite's write lock from its first statement."""
        deadline = deadline or Deadline(self.timeout)
        self.guard.wait_lock(self._lock, deadline, "image log lock (this process)")
        try:
            with self._transaction(deadline) as conn:
                yield conn
        finally:
            self._lock.release()

    def _flock(self, deadline: Deadline) -> None:
        """Take the file lock all processes' writers queue on, before ``deadline``.

        Polled in sub-millisecond steps rather than blocked on (a blocking flock has no
        timeout): SQLite's own busy handler sleeps in growing steps (1, 2, 5, 10 … 100 ms)
        while a sibling worker writes, which made the slowest answers under load wait tens
        of milliseconds; these steps stay under FLOCK_MAX_SLEEP."""
        sleep = FLOCK_FIRST_SLEEP
        while True:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            time.sleep(min(sleep, deadline.remaining("image log file lock")))
            sleep = min(sleep * 2, FLOCK_MAX_SLEEP)

    @contextlib.contextmanager
    def _transaction(self, deadline: Deadline) -> Iterator[sqlite3.Connection]:
        # Caller holds self._lock.
        with self._writer(deadline) as conn, _begun(conn):
            yield conn

    @contextlib.contextmanager
    def _writer(self, deadline: Deadline) -> Iterator[sqlite3.Connection]:
        """The connection, with the file lock all processes' writers queue on; a transaction
        is the caller's (:func:`_begun`, or one statement alone)."""
        # Caller holds self._lock.
        conn = self._require()
        try:
            self._flock(deadline)
            try:
                self._bound_busy_wait(conn, deadline)
                yield conn
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        except sqlite3.Error as exc:
            raise _sqlite_error(exc, "image log write failed") from exc
        except OSError as exc:
            raise StorageError(f"image file write failed: {exc}") from exc

    def _bound_busy_wait(self, conn: sqlite3.Connection, deadline: Deadline) -> None:
        # A connection outside this code (another tool) may hold SQLite's lock.
        left_ms = deadline.remaining("image log database lock") * 1000
        if not BUSY_KEEP * left_ms <= self._busy_ms <= left_ms:
            self._busy_ms = max(1, int(left_ms * BUSY_SET))
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        # Readers get their own connection: WAL lets them run beside the writer.
        try:
            conn = self._connect(readonly=True)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the image log: {exc}") from exc
        try:
            yield conn
        except sqlite3.Error as exc:
            raise StorageError(f"image log read failed: {exc}") from exc
        finally:
            conn.close()

    # -- files ------------------------------------------------------------------------------
    def _relpath(self, sha256: str, extension: str) -> str:
        return f"{IMAGES_DIR}/{sha256[:2]}/{sha256[2:]}.{extension}"

    def _write_file(self, path: Path, data: bytes) -> None:
        parent = path.parent
        if not parent.is_dir():
            parent.mkdir(exist_ok=True)
            _fsync_dir(self.images_dir)
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(parent)

    def _pool(self) -> ThreadPoolExecutor:
        # Its own lock, not self._lock: file writes must not queue behind a commit.
        with self._pool_lock:
            if self._closed:
                raise StorageError("the image log is closed")
            if self._stager is None:
                self._stager = ThreadPoolExecutor(
                    WRITE_THREADS, thread_name_prefix="imagelog-write"
                )
            return self._stager

    def _write_file_within(self, path: Path, data: bytes, deadline: Deadline) -> None:
        """Write a file on the pool, waiting no longer than ``deadline``."""
        left = deadline.remaining("image file write")
        _result(self._pool().submit(self._write_file, path, data), left, "image file write")

    def _probe_file(self) -> None:
        path = self.images_dir / f".probe-{os.getpid()}-{threading.get_ident()}"
        try:
            with open(path, "wb") as out:
                out.write(os.urandom(PROBE_BYTES))
                out.flush()
                os.fsync(out.fileno())
        finally:
            with contextlib.suppress(OSError):
                path.unlink()

    # -- the interface ----------------------------------------------------------------------
    def check(self) -> None:
        with self.guard.call("image log probe", timeout=PROBE_TIMEOUT) as deadline:
            if self.store_images:
                left = deadline.remaining("image log probe")
                if self._conn is None:  # opening failed before: retry now
                    self.guard.wait_lock(self._lock, deadline, "image log lock (this process)")
                    try:
                        self._require()
                    finally:
                        self._lock.release()
                probe = self._pool().submit(self._probe_file)
                _result(probe, left, f"write probe in {self.images_dir}")
            with self._write(deadline) as conn:
                conn.execute(
                    "INSERT OR REPLACE INTO probe (id, at) VALUES (1, ?)", (_ts(utc_now()),)
                )

    def image_bytes(self) -> int:
        with self._read() as conn:
            return conn.execute("SELECT coalesce(sum(byte_size), 0) FROM images").fetchone()[0]

    def sweep(self, older_than: timedelta = timedelta(hours=1)) -> int:
        """As :meth:`ImageLog.sweep`, at most once a day per data directory: it reads every
        image file's age, which a large log should not pay at each worker start."""
        try:
            removed = self._sweep(older_than)
        except OSError as exc:  # a read-only or vanished directory: the caller logs it
            raise StorageError(f"image log sweep failed: {exc}") from exc
        if removed:
            log.info("image log: removed %d file(s) of requests that never committed", removed)
        return removed

    def _sweep(self, older_than: timedelta) -> int:
        if not self.images_dir.is_dir() or not self._sweep_due():
            return 0
        cutoff = time.time() - older_than.total_seconds()
        old = [p for p in self.images_dir.glob("*/*") if _older(p, cutoff)]
        if not old:
            return 0
        # Look up on a reader first, so writers wait only for the few files found orphaned.
        with self._read() as conn:
            candidates = [p for p in old if not _referenced(conn, p)]
        removed = 0
        if candidates:
            with self._write() as conn:  # no record can be committing one of these now
                for path in candidates:
                    if not _referenced(conn, path):
                        with contextlib.suppress(FileNotFoundError):
                            path.unlink()
                            removed += 1
        return removed

    def _sweep_due(self) -> bool:
        marker = self.data_dir / SWEPT_NAME
        try:
            if time.time() - marker.stat().st_mtime < SWEEP_EVERY.total_seconds():
                return False
        except FileNotFoundError:
            pass
        marker.touch()  # before sweeping: workers starting together sweep once between them
        return True

    def record(self, entry: Record) -> None:
        with self.guard.call("image log write") as deadline:
            self._record(entry, deadline)

    def _record(self, entry: Record, deadline: Deadline) -> None:
        if self._conn is None:  # opening failed before: retry now, before writing a file
            self.guard.wait_lock(self._lock, deadline, "image log lock (this process)")
            try:
                self._require()
            finally:
                self._lock.release()
        keep = self.store_images and entry.image is not None
        inline = keep and len(entry.image or b"") <= self.inline_max_bytes
        rel = self._relpath(entry.sha256, entry.extension) if keep and not inline else None
        path = self.data_dir / rel if rel else None
        if path is not None and entry.image is not None and not path.exists():
            self._write_file_within(path, entry.image, deadline)
        pending = _Pending(entry, rel, path, inline=inline)
        # Group commit: one thread at a time commits every record queued so far in one
        # transaction, so concurrent requests share one fsync of the WAL. The others wait on
        # their record's own signal: woken once, when a commit took their record or when it
        # is their turn to commit, never queueing for the connection to find theirs done.
        with self._queue_lock:
            self._queue.append(pending)
            pending.lead = not self._committing
            self._committing = True
        if not pending.lead:
            self._await_turn(pending, deadline)
        if not pending.done:
            self._lead(pending, deadline)
        if pending.error is not None:
            raise pending.error

    def _await_turn(self, pending: _Pending, deadline: Deadline) -> None:
        """Wait until a commit took ``pending`` (done) or it is its turn to commit (lead)."""
        try:
            self.guard.wait_lock(pending.signal, deadline, "image log commit (this process)")
        except StorageTimeout:
            with self._queue_lock:
                if pending.done:  # committed just now: answered after all
                    return
                if pending in self._queue:
                    self._queue.remove(pending)
                    if pending.lead:
                        self._hand_on()
                # Otherwise a commit holds it: it may still land, and a retry of the same
                # request id is then a no-op. The client hears it failed, which it may have.
            raise

    def _lead(self, pending: _Pending, deadline: Deadline) -> None:
        """Commit what is queued (``pending`` among it), then hand the turn on."""
        try:
            self.guard.wait_lock(self._lock, deadline, "image log lock (this process)")
        except StorageTimeout:
            with self._queue_lock:
                self._queue.remove(pending)  # nobody takes the queue while this thread leads
                self._hand_on()
            raise
        try:
            self._commit_queued(deadline)
        finally:
            self._lock.release()
            with self._queue_lock:
                self._hand_on()

    def _hand_on(self) -> None:
        # Caller holds the queue lock: the oldest record queued commits next, if any.
        if self._queue:
            head = self._queue[0]
            head.lead = True
            head.wake()
        else:
            self._committing = False

    def _commit_queued(self, deadline: Deadline) -> None:
        # Caller holds self._lock.
        batch: list[_Pending] = []
        try:
            with self._writer(deadline) as conn:
                # The group is what is queued once the write lock is ours: the records
                # that arrived while a sibling worker committed (it holds the file lock
                # for its fsync) commit in this group instead of waiting for the next.
                batch = self._take_queue()
                if not self._commit_in_one(conn, batch):
                    with _begun(conn):
                        self._commit_in_transaction(conn, batch)
        except Exception as exc:
            # Failed before it took the queue (the lock not had in time, the database not
            # opened): what is queued fails with it, as it would have in the group.
            batch = batch or self._take_queue()
            for pending in batch:
                pending.error = pending.error or exc
        finally:
            with self._queue_lock:
                for pending in batch:
                    pending.done = True
                    pending.wake()
        if len(batch) > 1:
            log.debug("image log: %d records in one commit", len(batch))

    def _commit_in_one(self, conn: sqlite3.Connection, batch: list[_Pending]) -> bool:
        """Commit ``batch`` in one statement (see _GROUP_VIEW); False, and nothing written,
        if it needs _commit_in_transaction: an image file, more rows than one statement
        takes, or what the trigger refuses."""
        if not batch or len(batch) > CHUNK_ROWS or any(p.path is not None for p in batch):
            return False
        try:
            conn.execute(
                f"INSERT INTO {_GROUP_VIEW} VALUES {_placeholders(_REQUEST_WIDTH + 1, len(batch))}",
                [value for pending in batch for value in pending.group_row],
            )
        except sqlite3.IntegrityError as exc:
            if str(exc) != _FALLBACK:
                raise
            return False
        return True

    def _commit_in_transaction(self, conn: sqlite3.Connection, batch: list[_Pending]) -> None:
        # One bad record (a reused request id, its file unwritable) must not fail its
        # neighbours: each step leaves out the records that failed before it, and a record
        # fails before anything of it is written.
        self._prepare_files(conn, batch)
        self._insert_requests(conn, [p for p in batch if p.error is None])
        self._insert_images(conn, [p for p in batch if p.error is None])

    def _take_queue(self) -> list[_Pending]:
        with self._queue_lock:
            batch, self._queue = self._queue, []
        return batch

    def _prepare_files(self, conn: sqlite3.Connection, batch: list[_Pending]) -> None:
        """Make sure each image kept as a file is there, and whether it needs its row."""
        for pending in batch:
            if pending.path is None:
                continue
            try:
                pending.file_row = self._prepare_file(conn, pending)
            except OSError as exc:
                pending.error = StorageError(f"image file write failed: {exc}")

    def _prepare_file(self, conn: sqlite3.Connection, pending: _Pending) -> bool:
        entry, path = pending.entry, pending.path
        assert path is not None
        existing = conn.execute(
            "SELECT data IS NOT NULL FROM images WHERE sha256 = ?", (entry.sha256,)
        ).fetchone()
        if existing and existing[0]:
            # Its row holds it already (a log with a higher bound wrote it): the file just
            # written is not needed, and would be an orphan no row names.
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return False
        # Retention may have removed the file since it was written; it deletes files
        # only while holding the write lock, which we hold now.
        if entry.image is not None and not path.exists():
            self._write_file(path, entry.image)
        return existing is None

    def _insert_requests(self, conn: sqlite3.Connection, batch: list[_Pending]) -> None:
        """The batch's request rows, a few statements for all (each statement is a release
        of the GIL, after which the committing thread may wait for it while every other
        record waits for the commit). A record whose id names another image already fails
        with DuplicateRequestId; the same id with the same image is a retry, a no-op."""
        inserted = 0
        for chunk in _chunks(batch):
            inserted += conn.execute(
                f"INSERT INTO requests ({_REQUEST_COLUMNS}) VALUES "
                f"{_placeholders(_REQUEST_WIDTH, len(chunk))} "
                "ON CONFLICT (request_id) DO NOTHING",
                [value for pending in chunk for value in pending.row],
            ).rowcount
        if inserted == len(batch):
            return
        for pending in batch:
            entry = pending.entry
            (existing,) = conn.execute(
                "SELECT sha256 FROM requests WHERE request_id = ?", (entry.request_id,)
            ).fetchone()
            if existing != entry.sha256:
                pending.error = DuplicateRequestId(entry.request_id)

    def _insert_images(self, conn: sqlite3.Connection, batch: list[_Pending]) -> None:
        """The rows of the batch's images not stored yet: the bytes of a small one, the
        path of a file. An image's time is its first record's."""
        rows: dict[str, tuple] = {}
        inline: dict[str, _Pending] = {}
        for pending in batch:
            entry = pending.entry
            data: bytes | None = None
            rel: str | None = NO_FILE
            if pending.inline:
                inline.setdefault(entry.sha256, pending)
                data = entry.image
            elif pending.file_row:
                rel = pending.rel
            else:
                continue
            rows.setdefault(
                entry.sha256,
                (entry.sha256, rel, entry.byte_size, entry.input_format, pending.stamp, data),
            )
        inserted = 0
        for chunk in _chunks(list(rows.values())):
            inserted += conn.execute(
                "INSERT INTO images (sha256, path, byte_size, input_format, created_at, data) "
                f"VALUES {_placeholders(6, len(chunk))} ON CONFLICT (sha256) DO NOTHING",
                [value for row in chunk for value in row],
            ).rowcount
        if inserted < len(rows) and inline:
            self._move_lost_files(conn, inline)

    def _move_lost_files(self, conn: sqlite3.Connection, inline: dict[str, _Pending]) -> None:
        """Small images stored already, as files (by a log with a lower bound, or before
        the data column): the file stays the copy while it is there; one lost since moves
        into the row."""
        shas = list(inline)
        files = conn.execute(
            f"SELECT sha256, path FROM images WHERE path <> ? AND sha256 IN "
            f"({', '.join('?' * len(shas))})",
            [NO_FILE, *shas],
        ).fetchall()
        for sha256, rel in files:
            if not _present(self.data_dir / rel):
                conn.execute(
                    "UPDATE images SET data = ?, path = ? WHERE sha256 = ?",
                    (inline[sha256].entry.image, NO_FILE, sha256),
                )

    def label(
        self,
        request_id: str,
        label: int,
        at: datetime | None = None,
        max_labels: int = 0,
        hold: bool = False,
    ) -> bool:
        with self.guard.call("image log label") as deadline, self._write(deadline) as conn:
            # Counted and inserted in one write transaction: concurrent labels of one
            # record cannot both pass the cap.
            found = conn.execute("SELECT 1 FROM requests WHERE request_id = ?", (request_id,))
            if found.fetchone() is None:
                return False
            if max_labels:
                (count,) = conn.execute(
                    "SELECT count(*) FROM feedback WHERE request_id = ?", (request_id,)
                ).fetchone()
                if count >= max_labels:
                    raise TooManyLabels(request_id)
            conn.execute(
                "INSERT INTO feedback (request_id, label, labelled_at, review) VALUES (?, ?, ?, ?)",
                (request_id, label, _ts(at or utc_now()), "pending" if hold else None),
            )
            return True

    def held(self, review: str = "pending", limit: int = 100) -> list[HeldLabel]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT f.id, f.request_id, f.label, f.labelled_at, r.digit, r.confidence, "
                "f.review FROM feedback f JOIN requests r ON r.request_id = f.request_id "
                "WHERE f.review = ? ORDER BY f.id LIMIT ?",
                (review, limit),
            ).fetchall()
        return [HeldLabel(i, rid, lab, _dt(at), d, c, rv) for i, rid, lab, at, d, c, rv in rows]

    def review(self, label_id: int, accept: bool, at: datetime | None = None) -> bool:
        with self.guard.call("image log review") as deadline, self._write(deadline) as conn:
            return (
                conn.execute(
                    "UPDATE feedback SET review = ?, reviewed_at = ? "
                    "WHERE id = ? AND review IS NOT NULL",
                    ("accepted" if accept else "rejected", _ts(at or utc_now()), label_id),
                ).rowcount
                == 1
            )

    def shared_secret(self, name: str, candidate: bytes) -> bytes:
        with self.guard.call("image log secret") as deadline, self._write(deadline) as conn:
            conn.execute(
                "INSERT INTO secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                (name, candidate),
            )
            (value,) = conn.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()
        return bytes(value)

    def get(self, request_id: str) -> StoredRecord | None:
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {_RECORD_COLUMNS} FROM requests r WHERE r.request_id = ?", (request_id,)
            ).fetchone()
        return _stored(row) if row else None

    def history(self, request_id: str) -> list[Feedback]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT label, labelled_at, review FROM feedback WHERE request_id = ? ORDER BY id",
                (request_id,),
            ).fetchall()
        return [Feedback(label, _dt(at), review) for label, at, review in rows]

    def records(self) -> Iterator[StoredRecord]:
        with self._read() as conn:
            cursor = conn.execute(f"SELECT {_RECORD_COLUMNS} FROM requests r ORDER BY r.seq")
            while rows := cursor.fetchmany(1000):
                yield from map(_stored, rows)

    def image(self, sha256: str) -> bytes | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT path, data FROM images WHERE sha256 = ?", (sha256,)
            ).fetchone()
        if row is None:
            return None
        rel, data = row
        if data is not None:
            return bytes(data)
        try:
            return (self.data_dir / rel).read_bytes()
        except OSError as exc:
            raise StorageError(f"image {sha256} is indexed but unreadable: {exc}") from exc

    def labelled(self) -> Iterator[LabelledImage]:
        with self._read() as conn:
            # In batches: the images held in rows come with them, and a log may hold many.
            cursor = conn.execute(
                "SELECT r.request_id, f.label, f.labelled_at, r.sha256, i.path, i.data "
                "FROM requests r JOIN images i ON i.sha256 = r.sha256 "
                "JOIN feedback f ON f.id = (SELECT max(id) FROM feedback "
                "WHERE request_id = r.request_id AND coalesce(review, 'accepted') = 'accepted') "
                "WHERE r.image_stored = 1 ORDER BY r.seq"
            )
            while rows := cursor.fetchmany(1000):
                for request_id, label, labelled_at, sha256, rel, held in rows:
                    data = self._labelled_bytes(request_id, sha256, rel, held)
                    if data is not None:
                        yield LabelledImage(request_id, label, _dt(labelled_at), sha256, data)

    def _labelled_bytes(
        self, request_id: str, sha256: str, rel: str, held: bytes | None
    ) -> bytes | None:
        """The image's bytes from its row or its file; None (and a warning) if unreadable or
        not the image its hash names."""
        if held is not None:
            data = bytes(held)
        else:
            try:
                data = (self.data_dir / rel).read_bytes()
            except OSError as exc:
                log.warning("labelled image %s of %s unreadable: %s", sha256, request_id, exc)
                return None
        if sha256_hex(data) != sha256:
            log.warning("labelled image %s of %s is corrupt; skipped", sha256, request_id)
            return None
        return data

    def count(self) -> int:
        with self._read() as conn:
            return conn.execute("SELECT count(*) FROM requests").fetchone()[0]

    def image_count(self) -> int:
        with self._read() as conn:
            return conn.execute("SELECT count(*) FROM images").fetchone()[0]

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
                    f"SELECT seq FROM requests WHERE created_at < ? {spare} ORDER BY seq LIMIT ?",
                    (_ts(cutoff), RETENTION_BATCH),
                ).fetchall()
            )
        if policy.max_count:
            gone += self._delete_while(
                lambda conn: conn.execute(
                    "SELECT seq FROM requests WHERE seq IN (SELECT seq FROM requests "
                    f"WHERE 1 {spare} ORDER BY created_at DESC, seq DESC LIMIT -1 OFFSET ?) "
                    "ORDER BY seq LIMIT ?",
                    (policy.max_count, RETENTION_BATCH),
                ).fetchall()
            )
        if policy.max_image_bytes:
            gone += self._delete_while(self._over_quota)
        if gone:
            log.info("image log retention: %d record(s) deleted", gone)
        return gone

    def _over_quota(self, conn: sqlite3.Connection) -> list[tuple[int]]:
        """The oldest unlabelled records with a stored image whose deletion brings the
        images back under the quota (approximately: an image a newer record shares is not
        freed, and the next round takes more)."""
        quota = self.retention.max_image_bytes
        (total,) = conn.execute("SELECT coalesce(sum(byte_size), 0) FROM images").fetchone()
        if total <= quota:
            return []
        rows = conn.execute(
            f"SELECT seq, sha256, byte_size FROM requests WHERE image_stored = 1 AND {_UNLABELLED} "
            "ORDER BY created_at, seq LIMIT ?",
            (RETENTION_BATCH,),
        ).fetchall()
        return enough_to_free(rows, total - quota)

    def _delete_while(self, select) -> int:
        """Delete the records ``select`` names, a batch per transaction, until it names none;
        images no stored record uses any more go with them."""
        gone = 0
        while True:
            with self._write() as conn:
                seqs = [row[0] for row in select(conn)]
                if not seqs:
                    return gone
                marks = ",".join("?" * len(seqs))
                shas = {
                    sha
                    for (sha,) in conn.execute(
                        f"DELETE FROM requests WHERE seq IN ({marks}) RETURNING sha256", seqs
                    ).fetchall()
                }
                # Files go while we hold the write lock, so no writer can be about to reuse one.
                for sha in sorted(shas):
                    row = conn.execute(
                        "DELETE FROM images WHERE sha256 = ? AND NOT EXISTS "
                        "(SELECT 1 FROM requests WHERE sha256 = ? AND image_stored = 1) "
                        "RETURNING path",
                        (sha, sha),
                    ).fetchone()
                    if row and row[0] != NO_FILE:
                        with contextlib.suppress(FileNotFoundError):
                            (self.data_dir / row[0]).unlink()
                gone += len(seqs)

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            stager, self._stager = self._stager, None
        if stager is not None:
            stager.shutdown(wait=True)
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
                os.close(self._lock_fd)
