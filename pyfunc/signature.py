"""The signature every registered digit model is logged with: what callers get back, and
(by declaring no input schema) what MLflow lets through to the model.

No input schema, on purpose. With one, MLflow's schema enforcement
(``mlflow.models.utils._enforce_schema``, run by ``PyFuncModel.predict`` before the model's
own ``predict``) turns any list or numpy array into ``pandas.DataFrame(input)`` first, and
pandas refuses a 3-D array with "Must pass 2-d input": a notebook's bare ``(N, 28, 28)``
MNIST array could never reach the model. The model checks its input itself (a DataFrame or
dict with an ``image`` column, or images: encoded bytes, base64 text or arrays) and answers
an unreadable image with an ``error`` in its own row; the input example logged beside the
signature shows the request's form.
"""

from __future__ import annotations

from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, Schema

SIGNATURE = ModelSignature(
    inputs=None,
    outputs=Schema(
        [
            ColSpec("long", "digit", required=False),
            ColSpec("double", "confidence", required=False),
            ColSpec(Array("double"), "probabilities", required=False),
            ColSpec("boolean", "no_digit"),
            ColSpec("double", "not_digit_score", required=False),
            # pyfunc.errors' code (no_digit, invalid_image, image_too_large, ...), or null.
            ColSpec("string", "error", required=False),
            ColSpec("string", "error_message", required=False),
        ]
    ),
)
