"""The web page at ``/``: draw a digit or upload a photo, see what the model makes of it.

The page is static HTML + plain JavaScript (``static/app.js``) talking to the same JSON API
as every other client; the service serves its own assets, so it works with no CDN.
"""

from __future__ import annotations

from flask import Blueprint, Flask, current_app, render_template

bp = Blueprint("web", __name__)
READ_PATH = "/read"


@bp.get("/")
def index():
    # The page offers "Read a number" only where this service answers POST /read.
    reads = any(
        rule.rule == READ_PATH and "POST" in (rule.methods or ())
        for rule in current_app.url_map.iter_rules()
    )
    return render_template("index.html", read_url=READ_PATH if reads else "")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
