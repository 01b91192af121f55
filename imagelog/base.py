"""What the image log keeps and the interface both backends implement."""

from __future__ import annotations

import abc
import contextlib
import hashlib
import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# File extensions for the formats the service accepts (pyfunc.preprocess.ALLOWED_FORMATS).
EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "GIF": "gif", "BMP": "bmp", "WEBP": "webp"}


def extension_for(input_format: str | None) -> str:
    """File extension for an image of ``input_format`` ("bin" when it is not one we accept)."""
    return EXTENSIONS.get(input_format or "", "bin")


class StorageError(Exception):
    """The log could not be written or read (disk full, database down, …)."""


class StorageTimeout(StorageError):
    """A wait on the storage (a lock, a connection, a statement) ran past its deadline."""


class DuplicateRequestId(Exception):
    """A request id already names a record of a different image."""


class TooManyLabels(Exception):
    """The record already has as many labels as its history may hold."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Record:
    """One answered /recognize request. ``image`` is None when images are not kept."""

    request_id: str
    created_at: datetime
    sha256: str
    byte_size: int
    input_format: str | None
    width: int | None
    height: int | None
    digit: int
    confidence: float
    probabilities: list[float]
    model_name: str
    model_version: str
    image: bytes | None = None
    # Bytes the upload carried after the image's end (a phone's appended data): counted,
    # never stored. ``byte_size`` and ``sha256`` are the image's own bytes.
    trailing_bytes: int = 0

    @property
    def extension(self) -> str:
        return extension_for(self.input_format)


@dataclass(frozen=True)
class StoredRecord:
    """A record as read back; ``label`` is the latest feedback, if any."""

    request_id: str
    created_at: datetime
    sha256: str
    byte_size: int
    input_format: str | None
    width: int | None
    height: int | None
    digit: int
    confidence: float
    probabilities: list[float]
    model_name: str
    model_version: str
    image_stored: bool
    label: int | None
    trailing_bytes: int = 0


@dataclass(frozen=True)
class LabelledImage:
    request_id: str
    label: int
    labelled_at: datetime
    sha256: str
    image: bytes


@dataclass(frozen=True)
class Feedback:
    label: int
    labelled_at: datetime
    # None: not held. A label held for review ("pending") is not exported for training
    # until a reviewer accepts it ("accepted"); "rejected" ones never are.
    review: str | None = None


REVIEW_STATES = ("pending", "accepted", "rejected")


@dataclass(frozen=True)
class HeldLabel:
    """A label held for review, with the prediction it contradicts."""

    id: int
    request_id: str
    label: int
    labelled_at: datetime
    digit: int
    confidence: float
    review: str


@dataclass(frozen=True)
class Retention:
    """0 means unlimited; labelled records are kept when ``keep_labelled``.

    ``max_image_bytes`` caps the bytes of stored images: over it, the oldest unlabelled
    records go first (labelled ones are never evicted for space)."""

    max_age_days: float = 0
    max_count: int = 0
    keep_labelled: bool = True
    max_image_bytes: int = 0

    @property
    def active(self) -> bool:
        return self.max_age_days > 0 or self.max_count > 0 or self.max_image_bytes > 0

    def cutoff(self, now: datetime) -> datetime | None:
        return now - timedelta(days=self.max_age_days) if self.max_age_days > 0 else None


# A call inside the store for longer than this means the store is hung (see Guard): a
# healthy one answers in milliseconds, a disk's worst fsync in well under a second.
STALL_SECONDS = 1.0
# /ready's probe waits at most this long (the probe is cached, so this is rare).
PROBE_TIMEOUT = 2.0
# Rows deleted per transaction by retention, so writers never queue behind one huge DELETE.
RETENTION_BATCH = 500
# SQLite keeps an image of at most this many bytes in its row rather than a file (the
# default of ImageLogConfig.image_inline_max_bytes): an MNIST digit as a 28×28 PNG is
# 120-400 bytes (3.2 KiB at most: RGBA noise), /read's crops and the web page's drawings a
# few KiB (examples/canvas-four.png 9.6 KiB), phone photos hundreds of KiB. SQLite reads
# and writes blobs this small faster than files; large ones would be written twice (WAL,
# then checkpoint) and grow the WAL between checkpoints.
INLINE_MAX_BYTES = 16 * 1024


class Deadline:
    """When a storage call must have finished; every wait inside it is bounded by this."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds left (possibly <= 0)."""
        return self.at - time.monotonic()

    def remaining(self, waiting_for: str) -> float:
        """Seconds left; :class:`StorageTimeout` naming ``waiting_for`` if none are."""
        left = self.left()
        if left <= 0:
            raise StorageTimeout(f"{waiting_for}: no answer within {self.seconds:g} s")
        return left


class Guard:
    """Keeps a hung store from holding every request thread of a worker.

    Request-path calls enter through :meth:`call`, which gives each a :class:`Deadline`.
    Three rules on top of the deadline, so a hung store holds one thread, not all of them:

    - at most ``max_inflight`` calls are inside at once (a worker keeps threads for
      /health and for requests that need no storage);
    - once a call has been inside for longer than ``stall_seconds`` the store counts as
      hung: calls waiting for a slot or a lock, and new calls, fail at once instead of
      each waiting its full deadline;
    - after a call ran out of time, calls go one at a time (the others fail at once) until
      one succeeds: a circuit breaker, half open.

    A healthy store answers in milliseconds, so none of them bites then.
    """

    def __init__(self, timeout: float, max_inflight: int, stall_seconds: float) -> None:
        self.timeout = timeout
        self.max_inflight = max(1, max_inflight)
        self.stall_seconds = min(stall_seconds, timeout)
        self._cond = threading.Condition()
        self._inflight: dict[int, float] = {}
        self._tokens = itertools.count()
        self._timed_out = False  # the last call that finished ran out of time
        self._waiting = 0  # calls waiting for a slot: only they need a notify

    def stalled_for(self) -> float:
        """How long the oldest call has been inside beyond ``stall_seconds`` (0: not hung)."""
        with self._cond:
            oldest = min(self._inflight.values(), default=None)
        if oldest is None:
            return 0.0
        return max(0.0, time.monotonic() - oldest - self.stall_seconds)

    def _refuse_if_stalled(self, what: str) -> None:
        if self.stalled_for() > 0:
            raise StorageTimeout(
                f"{what}: the store is not answering (a call has waited more than "
                f"{self.stall_seconds:g} s)"
            )

    @contextlib.contextmanager
    def call(self, what: str, timeout: float | None = None) -> Iterator[Deadline]:
        deadline = Deadline(min(timeout, self.timeout) if timeout else self.timeout)
        with self._cond:
            while True:
                self._refuse_if_stalled(what)
                if self._timed_out and self._inflight:
                    raise StorageTimeout(
                        f"{what}: the store is not answering (the last call timed out; "
                        "another is trying it now)"
                    )
                if len(self._inflight) < self.max_inflight:
                    break
                # Woken when a slot frees; the short slice re-checks for a stall.
                self._waiting += 1
                try:
                    self._cond.wait(min(0.05, deadline.remaining(what)))
                finally:
                    self._waiting -= 1
            token = next(self._tokens)
            self._inflight[token] = time.monotonic()
        outcome: bool | None = None  # True: answered, False: ran out of time
        try:
            yield deadline
            outcome = True
        except StorageTimeout:
            outcome = False
            raise
        finally:
            with self._cond:
                del self._inflight[token]
                if outcome is not None:
                    self._timed_out = not outcome
                if self._waiting:
                    self._cond.notify()

    def wait_lock(self, lock: threading.Lock, deadline: Deadline, what: str) -> None:
        """Acquire a process-local lock before ``deadline``, giving up early if the store
        is hung (whoever holds the lock is then stuck in the store)."""
        while not lock.acquire(timeout=min(0.05, deadline.remaining(what))):
            self._refuse_if_stalled(what)


def enough_to_free(rows: list[tuple], excess: int) -> list[tuple[int]]:
    """The first of ``rows`` (seq, sha256, byte_size) whose images add up to ``excess``."""
    chosen, freed, seen = [], 0, set()
    for seq, sha, size in rows:
        chosen.append((seq,))
        if sha not in seen:
            seen.add(sha)
            freed += size
        if freed >= excess:
            break
    return chosen


class ImageLog(abc.ABC):
    """A durable, de-duplicating log of predictions, their images and feedback labels.

    Every method raises :class:`StorageError` when the storage fails; implementations are
    safe to use from several threads, processes and (for PostgreSQL) machines at once.
    """

    def __init__(
        self,
        store_images: bool = True,
        retention: Retention | None = None,
        timeout: float = 10.0,
        max_inflight: int = 8,
        stall_seconds: float = STALL_SECONDS,
    ) -> None:
        self.store_images = store_images
        self.retention = retention or Retention()
        self.timeout = timeout
        self.guard = Guard(timeout, max_inflight, stall_seconds)

    @abc.abstractmethod
    def record(self, entry: Record) -> None:
        """Write ``entry`` durably before returning.

        Recording the same request id again with the same image is a no-op (a retry);
        with another image it raises :class:`DuplicateRequestId`.
        """

    @abc.abstractmethod
    def label(
        self,
        request_id: str,
        label: int,
        at: datetime | None = None,
        max_labels: int = 0,
        hold: bool = False,
    ) -> bool:
        """Add a label to the record's history; False if there is no such record.

        ``max_labels`` (0: no cap): :class:`TooManyLabels` if the record has that many
        already. ``hold``: the label waits for review (see :meth:`review`) before
        :meth:`labelled` exports it."""

    @abc.abstractmethod
    def held(self, review: str = "pending", limit: int = 100) -> list[HeldLabel]:
        """Labels held for review in state ``review``, oldest first."""

    @abc.abstractmethod
    def review(self, label_id: int, accept: bool, at: datetime | None = None) -> bool:
        """Accept or reject a held label; False if no held label has that id."""

    @abc.abstractmethod
    def shared_secret(self, name: str, candidate: bytes) -> bytes:
        """The secret stored under ``name``; ``candidate`` is stored first if none is, so
        every process and replica using this log reads the same one."""

    @abc.abstractmethod
    def get(self, request_id: str) -> StoredRecord | None: ...

    @abc.abstractmethod
    def history(self, request_id: str) -> list[Feedback]:
        """Every label given to the record, oldest first."""

    @abc.abstractmethod
    def records(self) -> Iterator[StoredRecord]:
        """Every record, oldest first."""

    @abc.abstractmethod
    def image(self, sha256: str) -> bytes | None:
        """The stored bytes of an image, or None if not kept."""

    @abc.abstractmethod
    def labelled(self) -> Iterator[LabelledImage]:
        """Records with a label and a stored image, with their current (latest) label;
        labels held for review count only once accepted."""

    @abc.abstractmethod
    def count(self) -> int: ...

    @abc.abstractmethod
    def image_count(self) -> int:
        """Distinct images stored (after de-duplication)."""

    @abc.abstractmethod
    def apply_retention(self, now: datetime | None = None) -> int:
        """Delete what the retention policy no longer keeps; returns records deleted."""

    @abc.abstractmethod
    def check(self) -> None:
        """Raise :class:`StorageError` if a record could not be stored right now: a real
        write (of a small file and a transaction), not a look at permissions."""

    @abc.abstractmethod
    def image_bytes(self) -> int:
        """Bytes of the stored images (what ``Retention.max_image_bytes`` caps)."""

    def sweep(self, older_than: timedelta = timedelta(hours=1)) -> int:
        """Remove leftovers of requests that never committed (a killed worker's image files
        whose row never committed, half-written files) older than ``older_than``; returns
        how many."""
        return 0

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> ImageLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
