"""The signature every registered digit model is logged with: what MLflow checks at the
door (``mlflow models serve``, ``load_model(...).predict``) and what callers get back."""

from __future__ import annotations

from mlflow.models import ModelSignature
from mlflow.types.schema import AnyType, Array, ColSpec, Schema

from pyfunc.model import IMAGE_COLUMN

SIGNATURE = ModelSignature(
    # AnyType: the column holds encoded bytes, base64 strings or decoded arrays.
    inputs=Schema([ColSpec(AnyType(), IMAGE_COLUMN)]),
    outputs=Schema(
        [
            ColSpec("long", "digit"),
            ColSpec("double", "confidence"),
            ColSpec(Array("double"), "probabilities"),
            ColSpec("boolean", "no_digit"),
            ColSpec("double", "not_digit_score"),
        ]
    ),
)
