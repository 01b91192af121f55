"""The model a worker serves, following the registry.

Each worker polls the registry for the version behind ``MODEL_URI``. A new version is
loaded and warmed up off the request path, then swapped in with one reference
assignment: a request reads ``store.current`` once, so requests in flight finish on the
model they started with. A version that fails to load leaves the old one serving.

Each version loaded is kept on the machine (serving/last_good.py). A worker that has no
model and cannot load the one behind ``MODEL_URI`` (its artifacts gone, the registry down)
serves that kept version instead: an older model answers better than none. The service is
then *degraded*: ``/ready`` answers 200 with ``"status": "degraded"`` and a reason code, so
a load balancer keeps sending traffic while the operator is told. A version that failed is
tried again every ``MODEL_RETRY_MAX_SECONDS`` while degraded (its artifacts may be back).

What the public ``/ready`` says is fixed wording (:func:`public_status`); the exceptions'
own text, which may hold SQL or file paths, goes to the log and to ``/admin/status``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from flask import Flask, current_app
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pyfunc.loading import NotADigitModel
from serving import registry
from serving.config import RELOAD_FILE_ENV, Settings
from serving.errors import ApiError
from serving.last_good import LastGood

log = logging.getLogger(__name__)
EXTENSION = "digits_model_store"
_TICK_SECONDS = 0.25


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class CheckResult:
    changed: bool
    version: str | None
    error: str | None = None


class ModelStore:
    """``on_swap(loaded)`` is called each time another version starts serving (the first
    load included); ``on_batch(n)`` hears the size of each batched forward pass."""

    def __init__(
        self,
        settings: Settings,
        on_swap: Callable[[registry.LoadedModel], None] | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.settings = settings
        self._on_swap = on_swap
        self._on_batch = on_batch
        self.current: registry.LoadedModel | None = None
        # Where the current model came from: "registry", or "last_good" (the copy kept here).
        self.served_from: str | None = None
        # The version MODEL_URI named at the last check that reached the registry.
        self.wanted: registry.ModelRef | None = None
        self.no_version = False  # that check found nothing behind the URI
        self.registry_state = "unknown"
        self.registry_error: str | None = None  # details: log and /admin/status only
        self.checked_at: str | None = None
        # {"version", "code", "error" (details), "at"}
        self.last_failure: dict[str, str] | None = None
        self._failed: dict[registry.ModelRef, float] = {}  # when each last failed (monotonic)
        self._last_good = (
            LastGood(settings.state_path, settings.mlflow_tracking_uri, _model_name(settings))
            if settings.predictor == "local"
            else None
        )
        self._check_lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: Poller | None = None
        # Old versions waiting for their in-flight requests before their batcher stops.
        self._retiring: list[threading.Timer] = []
        self._reload_file = os.environ.get(RELOAD_FILE_ENV)
        self._reload_seen = self._reload_stamp()

    # -- checking the registry -------------------------------------------------------------
    def check(self, force: bool = False) -> CheckResult:
        """Resolve ``MODEL_URI`` now; load and swap if it names another version.

        ``force`` retries a version that failed before (its artifacts may be fixed). With no
        model loaded and none loadable from the registry, the version kept on this machine
        is loaded instead."""
        with self._check_lock:
            result = self._check(force)
            if self.current is None and not self.no_version:
                self._fall_back()
            return result

    def _check(self, force: bool) -> CheckResult:
        try:
            ref = registry.resolve(self._client(), self.settings.model_uri)
        except registry.NoModel as exc:
            self._registry_ok()
            self.wanted, self.no_version = None, True
            return self._no_version(str(exc))
        except Exception as exc:  # registry down or misconfigured: keep serving
            self.registry_state, self.registry_error = "unreachable", _describe(exc)
            self.checked_at = _now()
            log.warning("registry unreachable: %s", self.registry_error)
            return CheckResult(False, self._version(), REGISTRY_UNREACHABLE)
        self._registry_ok()
        self.wanted, self.no_version = ref, False
        if self.current is not None and self.current.ref == ref:
            return CheckResult(False, ref.version)
        if ref in self._failed and not (force or self._retry_due(ref)):
            failure = self.last_failure or {}  # set by the failure _failed records
            return CheckResult(False, self._version(), failure.get("code"))
        return self._swap_to(ref)

    def _retry_due(self, ref: registry.ModelRef) -> bool:
        waited = time.monotonic() - self._failed[ref]
        return waited >= self.settings.model_retry_max_seconds

    def _swap_to(self, ref: registry.ModelRef) -> CheckResult:
        started = time.perf_counter()
        try:
            loaded = registry.load(
                ref, self.settings, on_batch=self._on_batch, keep=self._keeper(ref)
            )
        except Exception as exc:  # broken artifacts, failed warm-up …
            self._failed[ref] = time.monotonic()
            self.last_failure = {
                "version": ref.version,
                "code": _failure_code(exc),
                "error": _describe(exc),
                "at": _now(),
            }
            log.error(
                "version %s of %s failed to load, keeping %s: %s",
                ref.version,
                ref.name,
                self._version(),
                self.last_failure["error"],
            )
            return CheckResult(False, self._version(), self.last_failure["code"])
        self._serve(loaded, "registry", started)
        self._failed.pop(ref, None)
        return CheckResult(True, ref.version)

    def _keeper(self, ref: registry.ModelRef) -> Callable[[Path], None] | None:
        """Copies the loaded version's directory into the last-good store; a failure to
        keep it (disk full …) is logged, never a failure to load."""
        if self._last_good is None:
            return None
        last_good = self._last_good

        def keep(path: Path) -> None:
            try:
                last_good.remember(ref.version, path)
            except Exception as exc:
                log.warning("could not keep version %s as the last good one: %s", ref.version, exc)

        return keep

    def _fall_back(self) -> None:
        """Serve the version kept on this machine, if there is one and it loads."""
        kept = self._last_good.recall() if self._last_good else None
        if kept is None:
            return
        started = time.perf_counter()
        ref = registry.ModelRef(kept.name, kept.version)
        try:
            loaded = registry.load_directory(ref, kept.path, self.settings, self._on_batch)
        except Exception as exc:
            log.error(
                "the last good version %s kept at %s failed to load: %s",
                ref.version,
                kept.path,
                _describe(exc),
            )
            return
        log.warning(
            "MODEL_URI's version cannot be loaded: serving the last good version %s (kept %s)",
            ref.version,
            kept.saved_at,
        )
        self._serve(loaded, "last_good", started)

    def _serve(self, loaded: registry.LoadedModel, source: str, started: float) -> None:
        ref = loaded.ref
        previous, old = self._version(), self.current
        self.current, self.served_from = loaded, source  # the swap: one reference assignment
        if old is not None and hasattr(old.model, "close"):
            # Let requests that started on the old version finish before its batcher stops.
            timer = threading.Timer(self.settings.timeout, old.model.close)
            timer.daemon = True
            self._retiring = [t for t in self._retiring if t.is_alive()] + [timer]
            timer.start()
        if self._on_swap is not None:
            self._on_swap(loaded)
        log.info(
            "now serving %s version %s (family %s, was %s), loaded in %.1f s from %s",
            ref.name,
            ref.version,
            loaded.family,
            previous,
            time.perf_counter() - started,
            "the registry" if source == "registry" else "the copy kept on this machine",
        )

    def _no_version(self, message: str) -> CheckResult:
        # Nothing behind the URI (yet, or any more): keep whatever is loaded.
        self.registry_error = message
        return CheckResult(False, self._version(), "no_version")

    def _registry_ok(self) -> None:
        self.registry_state, self.registry_error, self.checked_at = "ok", None, _now()

    def _client(self) -> MlflowClient:
        return registry.client_for(self.settings)

    def _version(self) -> str | None:
        return self.current.ref.version if self.current else None

    # -- background polling ---------------------------------------------------------------
    def start(self) -> None:
        """First check now (the worker starts ready if it can), then follow in the background."""
        self.check()
        self._poller = Poller(self)
        self._poller.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop following the registry and close the batchers (the current version's and
        those retiring). A worker's end stops the poller anyway (a daemon thread); an app
        that is built and dropped in a running process (the tests build hundreds) calls
        this, or its poller stays behind for good. Requests still answered after it are
        answered without batching (serving/batching.py)."""
        self._stop.set()
        if self._poller is not None and self._poller is not threading.current_thread():
            # The poller ends within a tick, or after the check it is in (a load can take
            # seconds): it stops at its next tick either way, so the wait is bounded.
            self._poller.join(timeout)
        for timer in self._retiring:
            timer.cancel()
        # Closed now rather than when their timers would have fired.
        retiring, self._retiring = [t.function for t in self._retiring], []
        for close_old in retiring:
            close_old()
        loaded = self.current
        if loaded is not None and hasattr(loaded.model, "close"):
            loaded.model.close()

    @property
    def following(self) -> bool:
        """Whether the poller still runs."""
        return self._poller is not None and self._poller.is_alive()

    def _follow(self) -> None:
        interval = self.settings.model_poll_interval
        backoff = 1.0
        next_check = time.monotonic() + (interval if self.current else backoff)
        # Until close(); a daemon thread otherwise, ending with the worker.
        while not self._stop.wait(_TICK_SECONDS):
            stamp = self._reload_stamp()
            forced = stamp != self._reload_seen
            due = time.monotonic() >= next_check and (interval > 0 or self.current is None)
            if not (forced or due):
                continue
            self._reload_seen = stamp
            self.check(force=forced)
            if self.current is None:  # not ready: retry with backoff, whatever the interval
                backoff = min(backoff * 2, self.settings.model_retry_max_seconds)
                next_check = time.monotonic() + backoff
            else:
                next_check = time.monotonic() + interval

    def request_reload_everywhere(self) -> None:
        """Ask sibling workers (same gunicorn master) to check the registry now."""
        if self._reload_file:
            with open(self._reload_file, "a") as f:
                f.write(f"{os.getpid()} {time.time()}\n")

    def _reload_stamp(self) -> float:
        try:
            return os.stat(self._reload_file).st_mtime_ns if self._reload_file else 0
        except OSError:
            return 0

    # -- what the views use ----------------------------------------------------------------
    def require(self) -> registry.LoadedModel:
        loaded = self.current
        if loaded is None:
            raise ApiError(503, "model_unavailable", self.unavailable_reason())
        return loaded

    def unavailable_reason(self) -> str:
        """Why no model is served, in the public wording."""
        reason = self._public_registry_error() or (
            PUBLIC_FAILURES[self.last_failure["code"]] if self.last_failure else "loading"
        )
        return f"no model loaded yet for {self.settings.model_uri}: {reason}"

    def degraded(self) -> dict[str, str] | None:
        """Why the model served is not the one ``MODEL_URI`` names now (or may not be):
        ``{"code", "message"}``, public wording; None when it is."""
        loaded = self.current
        if loaded is None:
            return None
        served = f"version {loaded.ref.version} of {loaded.ref.name}"
        if self.served_from == "last_good":
            served += ", the last good version kept on this machine"
        if self.registry_state == "unreachable":
            code = REGISTRY_UNREACHABLE
            message = f"the registry cannot be reached; serving {served}"
        elif self.no_version:
            code = "no_version"
            message = f"no version is behind {self.settings.model_uri} now; serving {served}"
        elif self.served_from == "last_good" or (
            self.wanted is not None and self.wanted != loaded.ref
        ):
            failure = self.last_failure or {}
            wanted = self.wanted or loaded.ref
            code = "load_failed"
            message = (
                f"version {wanted.version} of {wanted.name} could not be loaded from the "
                "registry ("
                + PUBLIC_FAILURES.get(failure.get("code", ""), "not loaded yet")
                + f"); serving {served}"
            )
        else:
            return None
        return {"code": code, "message": message}

    def status(self) -> dict:
        """For anyone (``/ready``): states, versions, times and fixed wording, no details."""
        failure = self.last_failure
        return {
            "model_uri": self.settings.model_uri,
            "registry": {
                "state": self.registry_state,
                "checked_at": self.checked_at,
                "error": self._public_registry_error(),
                "poll_interval_seconds": self.settings.model_poll_interval,
            },
            "last_load_failure": failure
            and {
                "version": failure["version"],
                "code": failure["code"],
                "error": PUBLIC_FAILURES[failure["code"]],
                "at": failure["at"],
            },
            "degraded": self.degraded(),
        }

    def admin_status(self) -> dict:
        """For operators (``/admin/status``): :meth:`status` with the errors' own text and
        where the model came from."""
        kept = self._last_good.recall() if self._last_good else None
        loaded = self.current
        return {
            **self.status(),
            "model": loaded
            and {"name": loaded.ref.name, "version": loaded.ref.version, "family": loaded.family},
            "served_from": self.served_from,
            "wanted_version": self.wanted and self.wanted.version,
            "registry_error_detail": self.registry_error,
            "last_load_failure_detail": self.last_failure,
            "last_good": kept
            and {"version": kept.version, "saved_at": kept.saved_at, "path": str(kept.path)},
        }

    def _public_registry_error(self) -> str | None:
        if self.registry_state == "unreachable":
            return "the registry could not be reached"
        if self.no_version:
            return f"no version is behind {self.settings.model_uri}"
        return None


class Poller(threading.Thread):
    """The thread that follows the registry for one store (:meth:`ModelStore.start`)."""

    def __init__(self, store: ModelStore) -> None:
        super().__init__(target=store._follow, name="model-poller", daemon=True)
        self.store = store


def following() -> list[ModelStore]:
    """The stores whose poller runs in this process: those an app built and dropped without
    :func:`close` (the tests' fixtures close what each test left)."""
    return [t.store for t in threading.enumerate() if isinstance(t, Poller)]


REGISTRY_UNREACHABLE = "registry_unreachable"
# A load failure's public wording by code (the exception's own text is for operators).
PUBLIC_FAILURES = {
    "artifacts_unavailable": "its files could not be found or read",
    "not_a_digit_model": "it is not a digit model",
    "load_failed": "it failed to load or warm up",
}


def _failure_code(exc: BaseException) -> str:
    if isinstance(exc, NotADigitModel):
        return "not_a_digit_model"
    if isinstance(exc, OSError) or (
        isinstance(exc, MlflowException) and exc.error_code == "RESOURCE_DOES_NOT_EXIST"
    ):
        return "artifacts_unavailable"
    return "load_failed"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def _model_name(settings: Settings) -> str:
    match = registry.MODELS_URI.match(settings.model_uri)
    return match["name"] if match else settings.model_uri


def init_app(
    app: Flask,
    settings: Settings,
    on_swap: Callable[[registry.LoadedModel], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> ModelStore:
    """Load the model now if the registry has one, then follow it in the background until
    :func:`close` (the app's end)."""
    store = ModelStore(settings, on_swap=on_swap, on_batch=on_batch)
    store.start()
    app.extensions[EXTENSION] = store
    return store


def close(app: Flask) -> None:
    """The app's end: its store stops following the registry and its batcher stops."""
    store = app.extensions.get(EXTENSION)
    if store is not None:
        store.close()


def model_store() -> ModelStore:
    return current_app.extensions[EXTENSION]
