"""The model a worker serves, following the registry.

Each worker polls the registry for the version behind ``MODEL_URI``. A new version is
loaded and warmed up off the request path, then swapped in with one reference
assignment: a request reads ``store.current`` once, so requests in flight finish on the
model they started with. A version that fails to load leaves the old one serving.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import Flask, current_app
from mlflow import MlflowClient

from serving import registry
from serving.config import RELOAD_FILE_ENV, Settings
from serving.errors import ApiError

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
        self.registry_state = "unknown"
        self.registry_error: str | None = None
        self.checked_at: str | None = None
        self.last_failure: dict[str, str] | None = None
        self._failed: set[registry.ModelRef] = set()
        self._check_lock = threading.Lock()
        self._reload_file = os.environ.get(RELOAD_FILE_ENV)
        self._reload_seen = self._reload_stamp()

    # -- checking the registry -------------------------------------------------------------
    def check(self, force: bool = False) -> CheckResult:
        """Resolve ``MODEL_URI`` now; load and swap if it names another version.

        ``force`` retries a version that failed before (its artifacts may be fixed)."""
        with self._check_lock:
            try:
                ref = registry.resolve(self._client(), self.settings.model_uri)
            except registry.NoModel as exc:
                self._registry_ok()
                return self._no_version(str(exc))
            except Exception as exc:  # registry down or misconfigured: keep serving
                self.registry_state, self.registry_error = "unreachable", _describe(exc)
                self.checked_at = _now()
                log.warning("registry unreachable: %s", self.registry_error)
                return CheckResult(False, self._version(), self.registry_error)
            self._registry_ok()
            if self.current is not None and self.current.ref == ref:
                return CheckResult(False, ref.version)
            if ref in self._failed and not force:
                return CheckResult(False, self._version(), self.last_failure["error"])
            return self._swap_to(ref)

    def _swap_to(self, ref: registry.ModelRef) -> CheckResult:
        started = time.perf_counter()
        try:
            loaded = registry.load(ref, self.settings, on_batch=self._on_batch)
        except Exception as exc:  # broken artifacts, failed warm-up …
            self._failed.add(ref)
            self.last_failure = {"version": ref.version, "error": _describe(exc), "at": _now()}
            log.error(
                "version %s of %s failed to load, keeping %s: %s",
                ref.version,
                ref.name,
                self._version(),
                self.last_failure["error"],
            )
            return CheckResult(False, self._version(), self.last_failure["error"])
        previous, old = self._version(), self.current
        self.current = loaded  # the swap: one reference assignment
        if old is not None and hasattr(old.model, "close"):
            # Let requests that started on the old version finish before its batcher stops.
            threading.Timer(self.settings.timeout, old.model.close).start()
        self._failed.discard(ref)
        if self._on_swap is not None:
            self._on_swap(loaded)
        log.info(
            "now serving %s version %s (was %s), loaded in %.1f s",
            ref.name,
            ref.version,
            previous,
            time.perf_counter() - started,
        )
        return CheckResult(True, ref.version)

    def _no_version(self, message: str) -> CheckResult:
        # Nothing behind the URI (yet, or any more): keep whatever is loaded.
        self.registry_error = message
        return CheckResult(False, self._version(), message)

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
        threading.Thread(target=self._follow, name="model-poller", daemon=True).start()

    def _follow(self) -> None:
        interval = self.settings.model_poll_interval
        backoff = 1.0
        next_check = time.monotonic() + (interval if self.current else backoff)
        while True:  # a daemon thread: it ends with the worker
            time.sleep(_TICK_SECONDS)
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
            raise ApiError(
                503,
                "model_unavailable",
                f"no model loaded yet for {self.settings.model_uri}"
                + (f": {self.registry_error}" if self.registry_error else ""),
            )
        return loaded

    def status(self) -> dict:
        return {
            "model_uri": self.settings.model_uri,
            "registry": {
                "state": self.registry_state,
                "checked_at": self.checked_at,
                "error": self.registry_error,
                "poll_interval_seconds": self.settings.model_poll_interval,
            },
            "last_load_failure": self.last_failure,
        }


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def init_app(
    app: Flask,
    settings: Settings,
    on_swap: Callable[[registry.LoadedModel], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> ModelStore:
    """Load the model now if the registry has one, then follow it in the background."""
    store = ModelStore(settings, on_swap=on_swap, on_batch=on_batch)
    store.start()
    app.extensions[EXTENSION] = store
    return store


def model_store() -> ModelStore:
    return current_app.extensions[EXTENSION]
