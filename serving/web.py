"""The web page at ``/``: draw a digit or upload a photo, see what the model makes of it.

The page is static HTML + plain JavaScript (``static/app.js``) talking to the same JSON API
as every other client; the service serves its own assets, so it works with no CDN.
"""

from __future__ import annotations

from flask import Blueprint, Flask, current_app, render_template

bp = Blueprint("web", __name__)


def _routes(path: str, method: str) -> bool:
    return any(
        rule.rule == path and method in (rule.methods or ())
        for rule in current_app.url_map.iter_rules()
    )


@bp.get("/")
def index():
    # The page tells a missing /feedback endpoint from an unknown request id (both 404).
    return render_template("index.html", feedback_enabled=_routes("/feedback", "POST"))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
