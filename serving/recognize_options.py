"""The two opt-in options of ``POST /recognize``: ``draft`` and ``return_input``.

``draft``: a drawing still in progress (the page predicts live while the user draws). It
is answered like any request but not stored in the image log, so it has no ``record_id``
and no ``feedback_token``, and it is counted apart in the metrics: half-drawn digits are
not training data, and they would outnumber the finished ones many times over.

``return_input``: the answer carries the 28×28 image the network received, as a base64
PNG, so a person can see why an image was read as it was. The pixels are the loaded
model's own pre-processing output (never re-done here or in the page); it costs one more
pre-processing pass of the image, which is why it is off unless asked for.

Both are read from the query string (every encoding of the body) or, for a JSON body, also
from fields of the same names.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from pyfunc.preprocess import DecodedImage, Limits, decode_images, decoded_image
from pyfunc.preprocess import pre_process as pyfunc_pre_process
from serving.bodies import json_body
from serving.errors import ApiError

NAMES = ("draft", "return_input")
_TRUE, _FALSE = ("true", "1"), ("false", "0")


@dataclass(frozen=True)
class Options:
    draft: bool = False
    return_input: bool = False


def parse(request: Any) -> Options:
    """The request's options; 400 ``invalid_option`` for a value that is not a boolean."""
    values = {name: _from_query(request.args.get(name), name) for name in NAMES}
    if request.mimetype == "application/json":
        body = json_body()  # parsed once already by serving.payload; cached bytes
        if isinstance(body, dict):
            for name in NAMES:
                if name in body:
                    if not isinstance(body[name], bool):
                        raise ApiError(400, "invalid_option", f"'{name}' must be true or false")
                    values[name] = values[name] or body[name]
    return Options(**values)


def _from_query(value: str | None, name: str) -> bool:
    if value is None:
        return False
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ApiError(400, "invalid_option", f"the query parameter '{name}' must be true or false")


def model_input_png(model: Any, image: bytes | np.ndarray, limits: Limits) -> str:
    """The 28×28 the network receives for ``image`` (the bytes, or :func:`decode`'s array),
    as a base64 PNG (white ink on black, as MNIST), from the served model's own
    ``pre_process``."""
    batch = pre_process_of(model)([image], limits=limits)
    pixels = np.clip(np.rint(batch[0, :, :, 0] * 255), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode(image: bytes, limits: Limits) -> DecodedImage:
    """``image`` decoded once for the whole request, by pyfunc's shared decoding under the
    request's ``limits`` (signature, decoder bombs, pixel budget: the same checks and errors
    as the model's own decoding): its grey pixels in [0, 1], reduced to working size, with
    the alpha as a second channel when it has one.

    Both the single-digit check (pyfunc.segment) and a model that :func:`shares_decoding`
    take this array as they take the bytes: it carries its decoding (and, once the check
    has made it, its ink map), and as a plain array it is read back unchanged
    (pyfunc.preprocess's array path), so what they compute from it is bit for bit what they
    computed from the bytes, without decoding them two more times."""
    return decoded_image(decode_images([image], limits)[0])


def shares_decoding(model: Any) -> bool:
    """Whether the served model's pre-processing decodes with pyfunc's shared decoding, so
    :func:`decode`'s array is as good an input as the bytes: the MNIST families (and the
    micro-batcher around them), and a remote predictor, which pre-processes here with
    pyfunc's ``pre_process``. A family with a ``pre_process`` of its own gets the bytes."""
    inner = getattr(model, "model", model)
    return bool(getattr(inner, "shared_pre_process", False)) or pre_process_of(model) is (
        pyfunc_pre_process
    )


def pre_process_of(model: Any) -> Any:
    """The served model's own ``pre_process``."""
    # The pyfunc itself, or the micro-batcher around it (.model); a remote predictor
    # normalises here with pyfunc's pre_process before it sends the pixels, so that is its.
    inner = getattr(model, "model", model)
    return getattr(inner, "pre_process", None) or pyfunc_pre_process
