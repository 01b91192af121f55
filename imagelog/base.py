"""What the image log keeps and the interface both backends implement."""

from __future__ import annotations

import abc
import hashlib
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


class DuplicateRequestId(Exception):
    """A request id already names a record of a different image."""


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


@dataclass(frozen=True)
class Retention:
    """0 means unlimited; labelled records are kept when ``keep_labelled``."""

    max_age_days: float = 0
    max_count: int = 0
    keep_labelled: bool = True

    @property
    def active(self) -> bool:
        return self.max_age_days > 0 or self.max_count > 0

    def cutoff(self, now: datetime) -> datetime | None:
        return now - timedelta(days=self.max_age_days) if self.max_age_days > 0 else None


class StagedImage(abc.ABC):
    """An image write started by :meth:`ImageLog.stage_image`."""

    @abc.abstractmethod
    def wait(self) -> None:
        """Block until the bytes are durable; :class:`StorageError` if they could not be."""

    @abc.abstractmethod
    def discard(self) -> None:
        """The request failed: remove the bytes unless a record already refers to them."""


class ImageLog(abc.ABC):
    """A durable, de-duplicating log of predictions, their images and feedback labels.

    Every method raises :class:`StorageError` when the storage fails; implementations are
    safe to use from several threads, processes and (for PostgreSQL) machines at once.
    """

    def __init__(self, store_images: bool = True, retention: Retention | None = None) -> None:
        self.store_images = store_images
        self.retention = retention or Retention()

    def stage_image(self, sha256: str, extension: str, image: bytes) -> StagedImage | None:
        """Start storing an image's bytes in the background, before its record is ready.

        The service calls this while the model works, so the answer does not wait for the
        file write; :meth:`record` then only commits the row. None: nothing to stage.
        """
        return None

    @abc.abstractmethod
    def record(self, entry: Record) -> None:
        """Write ``entry`` durably before returning.

        Recording the same request id again with the same image is a no-op (a retry);
        with another image it raises :class:`DuplicateRequestId`.
        """

    @abc.abstractmethod
    def label(self, request_id: str, label: int, at: datetime | None = None) -> bool:
        """Add a label to the record's history; False if there is no such record."""

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
        """Records with a label and a stored image, with their current (latest) label."""

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
        """Raise :class:`StorageError` if a record could not be stored right now."""

    def sweep(self, older_than: timedelta = timedelta(hours=1)) -> int:
        """Remove leftovers of requests that never committed (a killed worker's half-written
        or staged files) older than ``older_than``; returns how many."""
        return 0

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> ImageLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
