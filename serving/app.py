"""The Flask application factory."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask

from serving import (
    admin,
    errors,
    feedback,
    image_log,
    logs,
    metrics,
    model_store,
    openapi,
    request_id,
    views,
    web,
)
from serving.config import Settings, load_settings


def create_app(config: Settings | dict[str, Any] | None = None) -> Flask:
    """Build the service; ``config`` overrides the file and environment settings."""
    settings = config if isinstance(config, Settings) else load_settings(config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = Flask(__name__)
    app.config["SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    errors.init_app(app)
    # First, so their after_request hooks run last and see the final response.
    logs.init_app(app)
    metrics.init_app(app)
    request_id.init_app(app)
    model_store.init_app(app, settings)
    image_log.init_app(app, settings)
    app.register_blueprint(views.bp)
    app.register_blueprint(feedback.bp)
    app.register_blueprint(admin.bp)
    web.init_app(app)
    openapi.init_app(app)
    return app
