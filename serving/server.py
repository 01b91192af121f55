"""The production server: gunicorn running :func:`serving.create_app` in each worker."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from serving.config import Settings


class DigitServer(BaseApplication):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        options: dict[str, Any] = {
            "bind": f"{s.host}:{s.port}",
            "workers": s.workers,
            "worker_class": "gthread",
            "threads": s.threads,
            "timeout": s.timeout,
            # TensorFlow is not fork-safe: each worker imports and loads it after the fork.
            "preload_app": False,
            "accesslog": "-",
            "errorlog": "-",
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self):
        from serving.app import create_app  # runs in the worker, after the fork

        return create_app(self.settings)


def main() -> None:
    settings = Settings()
    print(f"serving {settings.model_uri} on http://{settings.host}:{settings.port}", flush=True)
    DigitServer(settings).run()
