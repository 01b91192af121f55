"""The image log inside the Flask app: record each answer before it is sent.

Failure policy (``LOG_FAILURE_POLICY``): with ``refuse`` (the default) an answer that
could not be logged is not given: the client gets 503 ``storage_unavailable`` and may
retry, so no answered request is ever missing from the log. With ``answer`` the client
gets the prediction with ``"logged": false`` and a warning is logged.

A store that hangs counts as failed: every call has a deadline
(``STORAGE_TIMEOUT_SECONDS``) and fails at once while another is stuck (see
:class:`imagelog.base.Guard`), so request threads are never all held by the store.
Nothing is written before the model has decoded the image: bodies it refuses leave
no trace on disk. What trails the image in the upload is counted, not stored.

``IMAGE_LOG=off`` switches the log off entirely: nothing is opened or written, every
answer is unlogged (``"logged": false``, no ``record_id`` or feedback token), and what
needs the log (``/feedback``, the review endpoints) answers 409 ``image_log_off``.
"""

from __future__ import annotations

import io
import logging
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, Response, current_app, g, request
from PIL import Image

from imagelog import open_image_log
from imagelog.base import (
    DuplicateRequestId,
    ImageLog,
    Record,
    StorageError,
    sha256_hex,
    utc_now,
)
from pyfunc.container import image_end
from pyfunc.model import Prediction
from pyfunc.preprocess import sniff_format
from serving import metrics, request_id
from serving.config import Settings
from serving.errors import ApiError

log = logging.getLogger(__name__)
EXTENSION = "digits_image_log"
# Retention runs when a worker starts and after every this many of its writes.
RETENTION_EVERY = 500
# ... and after this share of the image quota was written by the worker, so a client
# sending large images cannot overshoot the quota by much between two runs.
RETENTION_QUOTA_SHARE = 20
# /ready's write probe is reused for this long: probes stay cheap however often they come.
PROBE_CACHE_SECONDS = 1.5
_LOGGED_PATHS = ("/recognize", "/read", "/feedback")


_PNG_SIZE = struct.Struct(">4sII")  # IHDR's type, width and height, after its length


def describe(image: bytes) -> tuple[str | None, int | None, int | None]:
    """Format, width and height from the header alone; no pixel is decoded."""
    fmt = sniff_format(image)
    if fmt == "PNG" and len(image) >= 24:
        # Every upload is described once it has decoded, and most are PNGs: their size is
        # where Pillow reads it, in the first chunk (IHDR), without its ~17 µs of parsing.
        kind, width, height = _PNG_SIZE.unpack_from(image, 12)
        if kind == b"IHDR":
            return fmt, width, height
    try:
        with Image.open(io.BytesIO(image)) as img:
            return fmt or img.format, img.width, img.height
    except Exception:  # the model decoded it, so this is unexpected; the size is optional
        return fmt, None, None


@dataclass
class Upload:
    """A body received by /recognize. Once the model has decoded it, :meth:`describe`
    fills in the rest: ``image`` is the picture's own bytes, ``trailing`` counts those the
    body carried after its end."""

    body: bytes
    image: bytes = b""
    sha256: str = ""
    input_format: str | None = None
    width: int | None = None
    height: int | None = None
    trailing: int = 0

    def describe(self) -> None:
        # Not before decoding: a body the model refuses costs no parsing here either.
        if self.sha256:
            return
        self.image, self.trailing = own_bytes(self.body)
        self.input_format, self.width, self.height = describe(self.image)
        self.sha256 = sha256_hex(self.image)


def own_bytes(body: bytes) -> tuple[bytes, int]:
    """The image in ``body`` without what follows its end, and how many bytes that was."""
    end = image_end(body)
    if end is None or end >= len(body):
        return body, 0
    return body[:end], len(body) - end


def image_log_off() -> ApiError:
    """409 ``image_log_off``: what needs the log, asked of a service running without one."""
    return ApiError(
        409,
        "image_log_off",
        "this service runs without its image log (IMAGE_LOG=off): its answers have no "
        "record to label or review",
    )


class Recorder:
    """Turns answers into records and applies the failure policy and retention.

    Without an image log (``IMAGE_LOG=off``) it records nothing and says so: :attr:`enabled`
    is false, :meth:`record` answers "not logged" at once, and :attr:`image_log` raises
    :func:`image_log_off` (409) for whatever needs the log itself."""

    def __init__(self, image_log: ImageLog | None, settings: Settings) -> None:
        self._image_log = image_log
        self.policy = settings.log_failure_policy
        self._writes = 0
        self._bytes_since_retention = 0
        quota = image_log.retention.max_image_bytes if image_log is not None else 0
        self._retention_bytes = quota // RETENTION_QUOTA_SHARE if quota else 0
        self._counter_lock = threading.Lock()
        self._retention_running = threading.Lock()
        self._probe_lock = threading.Lock()
        self._probed: tuple[float, str | None] = (float("-inf"), None)

    @property
    def enabled(self) -> bool:
        return self._image_log is not None

    @property
    def image_log(self) -> ImageLog:
        """The log; :func:`image_log_off` (409) when the service runs without one."""
        if self._image_log is None:
            raise image_log_off()
        return self._image_log

    def stage(self, body: bytes) -> Upload:
        """Take a body for :meth:`record` (or :meth:`discard` if the request fails).

        Writes nothing: the model has not decoded the image yet, and bodies it refuses
        (junk behind a PNG signature, say) must not cost any disk."""
        return Upload(body)

    def storage_problem(self) -> str | None:
        """Why a record could not be stored right now, or None if it could: a real write
        probe, reused for PROBE_CACHE_SECONDS (one thread probes, the others use its
        answer). Without a log there is nothing to store, so nothing can fail."""
        if self._image_log is None:
            return None
        at, problem = self._probed
        if time.monotonic() - at < PROBE_CACHE_SECONDS:
            return problem
        with self._probe_lock:
            at, problem = self._probed
            if time.monotonic() - at < PROBE_CACHE_SECONDS:
                return problem
            try:
                self.image_log.check()
                problem = None
            except StorageError as exc:
                problem = str(exc)
            self._probed = (time.monotonic(), problem)
        return problem

    @property
    def refuses_unlogged(self) -> bool:
        return self.enabled and self.policy == "refuse"

    def discard(self, upload: Upload) -> None:
        """The request failed: nothing to undo, since nothing is written before :meth:`record`."""

    def record(
        self,
        upload: Upload,
        prediction: Prediction,
        model_name: str,
        version: str,
        record_id: str | None = None,
    ) -> bool:
        """Log one answer durably; False if it was not logged and the policy says answer.

        ``record_id``: the key, when the request logs several records (/read: one a digit).
        Without a log (``IMAGE_LOG=off``): False at once, nothing described or written."""
        if self._image_log is None:
            return False
        upload.describe()
        entry = Record(
            # The record's key is the server's id, never the client's X-Request-ID.
            request_id=record_id or request_id.record_id(),
            created_at=utc_now(),
            sha256=upload.sha256,
            byte_size=len(upload.image),
            trailing_bytes=upload.trailing,
            input_format=upload.input_format,
            width=upload.width,
            height=upload.height,
            digit=prediction.digit,
            confidence=prediction.confidence,
            probabilities=list(prediction.probabilities),
            model_name=model_name,
            model_version=version,
            image=upload.image,
        )
        try:
            self._image_log.record(entry)
        except DuplicateRequestId:
            raise ApiError(
                409,
                "duplicate_request_id",
                f"X-Request-ID {entry.request_id} already names a request with another image; "
                "send a new id (or none)",
            ) from None
        except StorageError as exc:
            metrics.count_image_log_failure()
            if self.policy == "answer":
                log.warning("request %s answered but NOT logged: %s", entry.request_id, exc)
                return False
            log.error("request %s refused: it could not be logged: %s", entry.request_id, exc)
            raise ApiError(
                503,
                "storage_unavailable",
                "the request could not be stored, so it is not answered; try again later",
            ) from exc
        self._count_write(len(upload.image))
        return True

    def _count_write(self, size: int) -> None:
        with self._counter_lock:
            self._writes += 1
            self._bytes_since_retention += size
            due = self._writes % RETENTION_EVERY == 0 or (
                self._retention_bytes and self._bytes_since_retention >= self._retention_bytes
            )
            if due:
                self._bytes_since_retention = 0
        if due:
            self.retain_in_background()

    def retain_in_background(self, sweep: bool = False) -> None:
        """Apply retention (and, with ``sweep``, remove leftovers of requests that never
        committed) off the request path."""
        log_ = self._image_log
        if log_ is None or not (sweep or log_.retention.active):
            return
        if not self._retention_running.acquire(blocking=False):
            return  # one at a time per worker

        def run() -> None:
            try:
                if sweep:
                    log_.sweep()
                log_.apply_retention()
            except StorageError as exc:
                log.warning("image log maintenance failed (retried later): %s", exc)
            finally:
                self._retention_running.release()

        self._spawn(run)

    @staticmethod
    def _spawn(work: Callable[[], None]) -> None:
        # Off the request path: a large DELETE must not delay anyone's answer.
        threading.Thread(target=work, name="imagelog-retention", daemon=True).start()


def init_app(app: Flask, settings: Settings) -> None:
    # Up to one connection per thread, but few enough for replicas × workers to stay well
    # inside PostgreSQL's default 100 connections.
    # ... and one thread fewer than the worker's inside the store at once, so a hung store
    # leaves a thread for /health and for requests that need no storage.
    opened = (
        open_image_log(
            settings, pool_size=min(settings.threads, 8), max_inflight=max(1, settings.threads - 1)
        )
        if settings.image_log
        else None
    )
    recorder_ = Recorder(opened, settings)
    app.extensions[EXTENSION] = recorder_
    recorder_.retain_in_background(sweep=True)

    @app.after_request
    def count_rejected(response: Response) -> Response:
        # A request that was not answered leaves no record; one line each says why.
        if response.status_code >= 400 and request.path in _LOGGED_PATHS:
            body = response.get_json(silent=True) or {}
            code = (body.get("error") or {}).get("code") if isinstance(body, dict) else None
            log.warning(
                "rejected %s request_id=%s status=%d code=%s",
                request.path,
                g.get("request_id"),
                response.status_code,
                code,
            )
        return response


def recorder() -> Recorder:
    return current_app.extensions[EXTENSION]


def image_log() -> ImageLog:
    return recorder().image_log


def close(app: Flask) -> None:
    """Release the app's storage (connections, pool threads); for tests and shutdown."""
    found = app.extensions.pop(EXTENSION, None)
    if found is not None and found.enabled:
        found.image_log.close()
