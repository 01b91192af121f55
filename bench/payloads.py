"""The two request images, built at run time from MNIST (never stored in the repository).

Each server takes its own encoding of the same image: this service a raw ``image/*`` body,
``mlflow models serve`` a ``dataframe_split`` JSON document with base64 (the pyfunc decodes
it), the naive reference ``{"image": "<base64>"}``.

``distinct28`` sends a different digit with every request, as real users do: this service
keeps each new image as a file (fsynced) in its image log, which a repeated image, stored
once, never exercises.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training import variants
from training.data import load_mnist

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The seed's example image: MNIST test image #9 (a 9).
SEED_INDEX = 9
PHOTO_SIZE = (640, 480)
# Distinct images for ``distinct28``: more than one server's whole run sends (≈ 45,000 here).
DISTINCT_COUNT = 50_000


@dataclass(frozen=True)
class Payload:
    name: str
    description: str
    image: bytes
    content_type: str
    digit: int  # the true digit, to check each server's answer once before measuring
    # More images, when every request must send a different one (``image`` is the first).
    others: tuple[bytes, ...] = ()

    @property
    def images(self) -> tuple[bytes, ...]:
        return (self.image, *self.others)

    def describe(self) -> dict[str, object]:
        return {
            "description": self.description,
            "content_type": self.content_type,
            "bytes": len(self.image),
            "sha256": hashlib.sha256(self.image).hexdigest(),
            "true_digit": self.digit,
            "distinct_images": len(self.images),
        }


def mnist_path() -> str | None:
    """``MNIST_PATH``, else the shared copy beside the project (as the Makefile does)."""
    if os.environ.get("MNIST_PATH"):
        return os.environ["MNIST_PATH"]
    shared = PROJECT_ROOT.parent / "shared" / "data" / "mnist.npz"
    return str(shared) if shared.is_file() else None


def build_payloads() -> dict[str, Payload]:
    data = load_mnist(mnist_path())
    digit: np.ndarray = data.x_test[SEED_INDEX]
    label = int(data.y_test[SEED_INDEX])
    return {
        "png28": Payload(
            "png28",
            f"MNIST test #{SEED_INDEX} as a 28×28 greyscale PNG (the seed's image)",
            variants.png_bytes(digit),
            "image/png",
            label,
        ),
        "photo640": Payload(
            "photo640",
            "the same digit drawn dark on light paper, 640×480 RGB JPEG (q85), noise, "
            "uneven light (training.variants.big_photo_jpeg)",
            variants.big_photo_jpeg(digit, size=PHOTO_SIZE),
            "image/jpeg",
            label,
        ),
        "distinct28": Payload(
            "distinct28",
            f"a different 28×28 greyscale PNG with every request: the first {DISTINCT_COUNT:,} "
            "MNIST training digits, in turn (so this service stores a new image each time)",
            variants.png_bytes(data.x_train[0]),
            "image/png",
            int(data.y_train[0]),
            tuple(variants.png_bytes(x) for x in data.x_train[1:DISTINCT_COUNT]),
        ),
    }


@dataclass(frozen=True)
class Request:
    """One server's HTTP request for one payload: what the load generator sends."""

    path: str
    content_type: str
    body: bytes


def request_for(api: str, payload: Payload, image: bytes | None = None) -> Request:
    """The request that sends ``image`` (default: the payload's first) to this kind of server."""
    image = payload.image if image is None else image
    if api == "service":
        return Request("/recognize", payload.content_type, image)
    if api == "ceiling":  # the same body to the constant route (bench.ceiling)
        return Request("/bench/ceiling", payload.content_type, image)
    text = base64.b64encode(image).decode("ascii")
    if api == "mlflow":
        doc = {"dataframe_split": {"columns": ["image"], "data": [[text]]}}
        return Request("/invocations", "application/json", json.dumps(doc).encode())
    if api == "naive":
        return Request("/predict", "application/json", json.dumps({"image": text}).encode())
    if api == "v2":  # MLServer's V2 inference protocol, one base64 string (bench.peers)
        tensor = {"name": "image", "shape": [1], "datatype": "BYTES", "data": [text]}
        v2 = {"inputs": [{**tensor, "parameters": {"content_type": "str"}}]}
        return Request("/v2/models/digits/infer", "application/json", json.dumps(v2).encode())
    if api == "bentoml":  # a batchable API takes a list (bench.peers)
        return Request("/predict", "application/json", json.dumps({"images": [text]}).encode())
    raise ValueError(f"unknown api {api!r}")


def answered_digit(api: str, body: dict) -> int | None:
    """The digit in a server's JSON answer (each server shapes it differently)."""
    if api == "v2":
        digits = [o for o in body.get("outputs", []) if o.get("name") == "digit"]
        return digits[0]["data"][0] if digits else None
    if api == "bentoml" and isinstance(body, list):
        return body[0].get("digit") if body else None
    if api == "mlflow":
        predictions = body.get("predictions") or [{}]
        return predictions[0].get("digit")
    return body.get("digit")
