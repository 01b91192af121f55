"""The web page at ``/``: draw a digit or upload a photo, see what the model makes of it.

The page is static HTML + plain JavaScript (``static/app.js``) talking to the same JSON API
as every other client; the service serves its own assets, so it works with no CDN.
"""

from __future__ import annotations

from flask import Blueprint, Flask, render_template

bp = Blueprint("web", __name__)


@bp.get("/")
def index():
    return render_template("index.html")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
