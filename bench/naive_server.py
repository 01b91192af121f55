"""The naive reference: Flask plus Keras ``model.predict`` per request, the seed's approach.

It serves the same registered model's weights (the ``.keras`` file inside the pyfunc's
artifacts), but none of the service's machinery: Flask's own threaded development server
(werkzeug, one process), PIL decode → L → resize to 28×28 → /255, then ``model.predict``
on a batch of one for every request. ``GET /`` answers once the model is loaded.

    python -m bench.naive_server --port 5002 [--model-uri models:/digits/Production]
"""

from __future__ import annotations

import argparse
import base64
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
from flask import Flask, jsonify, request
from PIL import Image


def keras_file(model_uri: str) -> Path:
    """The ``.keras`` weights under the registered pyfunc's ``artifacts/`` directory."""
    import mlflow

    root = Path(mlflow.artifacts.download_artifacts(model_uri))
    found = sorted((root / "artifacts").rglob("*.keras"))
    if not found:
        raise FileNotFoundError(f"no .keras file under {root / 'artifacts'}")
    return found[0]


def create_app(model: Any) -> Flask:
    app = Flask(__name__)

    @app.get("/")
    def index():
        return jsonify(status="ok")

    @app.post("/predict")
    def predict():
        data = base64.b64decode(request.get_json(force=True)["image"])
        img = Image.open(io.BytesIO(data)).convert("L").resize((28, 28))
        x = np.asarray(img, dtype=np.float32).reshape(1, 28, 28, 1) / 255.0
        probs = model.predict(x, verbose=0)[0]
        digit = int(np.argmax(probs))
        return jsonify(digit=digit, confidence=float(probs[digit]))

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5002)
    parser.add_argument(
        "--model-uri", default=os.environ.get("MODEL_URI", "models:/digits/Production")
    )
    args = parser.parse_args(argv)

    import keras

    model = keras.models.load_model(keras_file(args.model_uri), compile=False)
    app = create_app(model)
    print(f"naive reference serving {args.model_uri} on http://{args.host}:{args.port}", flush=True)
    # Flask's built-in server, threaded (its default): how the seed ran its app.
    app.run(host=args.host, port=args.port, threaded=True)


if __name__ == "__main__":
    main()
