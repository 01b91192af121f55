"""The Flask application factory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask

from serving import (
    admin,
    bodies,
    errors,
    feedback,
    headers,
    image_log,
    limits,
    logs,
    metrics,
    model_store,
    openapi,
    read,
    request_id,
    review,
    server_timing,
    views,
    web,
)
from serving.config import Settings, load_settings


class _App(Flask):
    """Flask, asking once per function whether it is a coroutine function.

    Flask asks it of every hook, view and error handler on every request (eleven times per
    request here, each an ``inspect`` call): the answer never changes for a function."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._synced: dict[Callable[..., Any], Callable[..., Any]] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        try:
            return self._synced[func]
        except KeyError:
            synced = self._synced[func] = super().ensure_sync(func)
            return synced
        except TypeError:  # not hashable: asked every time, as Flask does
            return super().ensure_sync(func)


def create_app(config: Settings | dict[str, Any] | None = None) -> Flask:
    """Build the service; ``config`` overrides the file and environment settings.

    Touches nothing process-wide (logging set-up, environment, MLflow's default URIs):
    that is the entry point's business (serving/server.py)."""
    settings = config if isinstance(config, Settings) else load_settings(config)
    app = _App(__name__)
    app.config["SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # Flask's DefaultJSONProvider has sort_keys; the JSONProvider app.json is typed as has not.
    app.json.sort_keys = False  # type: ignore[attr-defined]
    errors.init_app(app)
    bodies.init_app(app)
    # CSP, frame, nosniff … on every response, the errors' included.
    headers.init_app(app)
    # First, so their after_request hooks run last and see the final response.
    logs.init_app(app)
    # Right after the access log: its hook then runs just before the access log's.
    server_timing.init_app(app, settings.server_timing)
    metrics.init_app(app)
    request_id.init_app(app)
    # Wired here rather than by module-level hooks: metrics hear of every model swap (the
    # first load included) and of every batch the model store's batcher runs.
    model_store.init_app(
        app, settings, on_swap=metrics.model_swapped, on_batch=metrics.observe_batch_size
    )
    image_log.init_app(app, settings)
    app.register_blueprint(views.bp)
    if settings.ceiling_route:
        app.add_url_rule("/bench/ceiling", view_func=views.ceiling, methods=["POST"])
    read.init_app(app)  # POST /read, and /recognize's 422 multiple_digits
    app.register_blueprint(feedback.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(review.bp)
    limits.init_app(app, settings)  # after the views it limits
    web.init_app(app)
    openapi.init_app(app)
    return app
