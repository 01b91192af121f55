"""The model a worker serves, loaded at start and retried with backoff until present."""

from __future__ import annotations

import logging
import threading
import time

import mlflow
from flask import Flask, current_app
from mlflow import MlflowClient

from serving import registry
from serving.config import Settings
from serving.errors import ApiError

log = logging.getLogger(__name__)
EXTENSION = "digits_model_store"


class ModelStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.current: registry.LoadedModel | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()

    def try_load(self) -> bool:
        """Resolve and load the configured model; on failure keep what we have."""
        try:
            client = MlflowClient(
                tracking_uri=self.settings.mlflow_tracking_uri,
                registry_uri=self.settings.mlflow_tracking_uri,
            )
            ref = registry.resolve(client, self.settings.model_uri)
            if self.current is not None and self.current.ref == ref:
                return True
            loaded = registry.load(ref)
        except Exception as exc:  # registry down, no version, broken artifacts …
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("model %s not loaded: %s", self.settings.model_uri, self.last_error)
            return False
        with self._lock:
            self.current, self.last_error = loaded, None
        log.info("serving %s version %s", ref.name, ref.version)
        return True

    def retry_in_background(self) -> None:
        """Keep trying with exponential backoff, so a later promotion makes us ready."""

        def loop() -> None:
            delay = 1.0
            while not self.try_load():
                time.sleep(delay)
                delay = min(delay * 2, self.settings.model_retry_max_seconds)

        threading.Thread(target=loop, name="model-loader", daemon=True).start()

    def require(self) -> registry.LoadedModel:
        loaded = self.current
        if loaded is None:
            raise ApiError(
                503, "model_unavailable", f"no model loaded yet for {self.settings.model_uri}"
            )
        return loaded


def init_app(app: Flask, settings: Settings) -> None:
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    store = ModelStore(settings)
    if not store.try_load():
        store.retry_in_background()
    app.extensions[EXTENSION] = store


def model_store() -> ModelStore:
    return current_app.extensions[EXTENSION]
