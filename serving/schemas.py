"""The HTTP API's request and response bodies: the one source of its schema.

The views build their answers from these models and ``/feedback`` validates its body
with one; ``serving/openapi.py`` generates the document's component schemas from them.
Descriptions are written for the API's users: they appear in ``/docs``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, RootModel, StrictInt, StrictStr

MAX_REQUEST_ID = 128  # as serving.request_id accepts from clients

Digit = Annotated[int, Field(ge=0, le=9)]
Probability = Annotated[float, Field(ge=0, le=1)]
# Microseconds always written, so that two labels of one request sort as text too.
Timestamp = Annotated[
    datetime,
    PlainSerializer(lambda at: at.isoformat(timespec="microseconds"), return_type=str),
]

# MNIST test image #0, a 7, as a 28×28 PNG: a real example, so that trying it (the docs,
# schemathesis' examples phase) reaches the model.
SEVEN_PNG_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAABwAAAAcCAAAAABXZoBIAAAAwUlEQVR42mNgGDaAEUKFpD77sfTFHeyS9xQYGB"
    "g+X4UKPuk6w8DAwMDAAuGm6l/TMnSweCzLwPDntSTDozPIOhkYGBgYBA3PmDIw/Lh1XShnGi5nBP+9KIRLTuzl"
    "/2AokwlDMlv0/U1cGq1//rPD6fHWf7tZcclxnv1hhVNj3b9tOOW8f3+wxCUnfPffMlxyzKf/3VbGJan2758vLj"
    "n5B/+KGXF78Z8JLjnbT+iSSGFrw8Nw9wuKJAsy56LzO+ITGABpETyQcCy90wAAAABJRU5ErkJggg=="
)
EXAMPLE_REQUEST_ID = "5b0e6c8f2a9d4a53b1a2f3c4d5e6f708"


def _example(value: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": [value]})


# ---------------------------------------------------------------- requests


class Base64Image(BaseModel):
    """An image for `POST /recognize` as JSON."""

    model_config = _example({"image": SEVEN_PNG_BASE64})

    image: str = Field(
        description="The encoded image file as base64 (standard or URL-safe alphabet, padded "
        "or not); whitespace and a `data:image/…;base64,` prefix are allowed, so a canvas "
        "`toDataURL()` works."
    )


class ImageUpload(BaseModel):
    """An image for `POST /recognize` as a multipart form."""

    image: bytes = Field(description="The image file (PNG, JPEG, GIF, BMP or WebP).")


class ImageFile(RootModel[bytes]):
    """The image file itself (PNG, JPEG, GIF, BMP or WebP) as the request body."""


class Feedback(BaseModel):
    """For `POST /feedback`: the digit an earlier image really shows."""

    # Strict: "3", 3.0 and true are not labels, 12 is not a request id.
    model_config = ConfigDict(
        strict=True,
        json_schema_extra={"examples": [{"request_id": EXAMPLE_REQUEST_ID, "label": 7}]},
    )

    request_id: StrictStr = Field(
        min_length=1,
        max_length=MAX_REQUEST_ID,
        description="The `request_id` of an earlier `POST /recognize` answer.",
    )
    label: Annotated[StrictInt, Field(ge=0, le=9)] = Field(
        description="The digit the image really shows."
    )


# ---------------------------------------------------------------- answers


class ModelVersion(BaseModel):
    """The registered MLflow model version that answered."""

    name: str = Field(examples=["digits"])
    version: str = Field(examples=["3"])


class Recognition(BaseModel):
    """What the model sees in the image."""

    model_config = _example(
        {
            "digit": 9,
            "confidence": 0.9931,
            "probabilities": [
                0.0,
                0.0001,
                0.0,
                0.0012,
                0.0009,
                0.0004,
                0.0,
                0.0031,
                0.0012,
                0.9931,
            ],
            "low_confidence": False,
            "model": {"name": "digits", "version": "3"},
            "request_id": EXAMPLE_REQUEST_ID,
        }
    )

    digit: Digit
    confidence: Probability = Field(
        description="The probability of `digit`, i.e. the largest of `probabilities`."
    )
    probabilities: list[Probability] = Field(
        min_length=10,
        max_length=10,
        description="Softmax output for the digits 0–9, in that order; sums to 1.",
    )
    low_confidence: bool = Field(
        description="`confidence` is below the service's `LOW_CONFIDENCE_THRESHOLD`."
    )
    model: ModelVersion
    request_id: str = Field(
        description="Also in the `X-Request-ID` header; quote it in `POST /feedback`."
    )
    # Answered only when false (dumped with exclude_defaults).
    logged: bool = Field(
        default=True,
        description="Present, and false, only when the image log could not store this "
        "request and the service is configured to answer anyway.",
    )


class FeedbackReceipt(BaseModel):
    """The label was stored with that request; labelling again replaces it."""

    request_id: str
    label: Digit
    labelled_at: Timestamp


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, machine-readable; each response lists its values.")
    message: str = Field(description="For people; wording may change.")


class Error(BaseModel):
    """Every error the service answers, whatever the status."""

    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"]


class StorageStatus(BaseModel):
    """Whether the image log can store a request now; with `LOG_FAILURE_POLICY=refuse` (the
    default) the service is not ready without it."""

    state: Literal["ok", "unavailable"]
    error: str | None


class RegistryStatus(BaseModel):
    """The last check of the registry for `MODEL_URI`."""

    state: str
    checked_at: str | None
    error: str | None
    poll_interval_seconds: float


class LoadFailure(BaseModel):
    """The last version that could not be loaded, and why (the details are in the log and
    `GET /admin/status`)."""

    version: str
    code: Literal["artifacts_unavailable", "not_a_digit_model", "load_failed"]
    error: str
    at: str


class Degraded(BaseModel):
    """Why the model served is not (or may not be) the one `MODEL_URI` names: an older model
    answers rather than none, and the operator is told here."""

    code: Literal["load_failed", "registry_unreachable", "no_version"] = Field(
        description="`load_failed`: the version behind `MODEL_URI` could not be loaded, an "
        "earlier one (possibly the last good version kept on this machine) is served; "
        "`registry_unreachable`: the registry cannot be asked; `no_version`: nothing is "
        "behind `MODEL_URI` now."
    )
    message: str


class ServiceStatus(BaseModel):
    """The model store's status, shared by the readiness answers."""

    status: str
    model_uri: str = Field(examples=["models:/digits/Production"])
    registry: RegistryStatus
    last_load_failure: LoadFailure | None


class Ready(ServiceStatus):
    """`degraded` (still 200: a load balancer should keep sending traffic) when the model
    served is not the one `MODEL_URI` names; `degraded` says why."""

    status: Literal["ready", "degraded"]
    model: ModelVersion
    storage: StorageStatus
    degraded: Degraded | None = None


class NotReady(ServiceStatus):
    status: Literal["unavailable"]
    error: ErrorDetail
    storage: StorageStatus


class ReloadResult(BaseModel):
    """Checked; `changed` says whether a new version is served."""

    changed: bool
    model: ModelVersion | None
    error: str | None
    model_uri: str
    registry: RegistryStatus
    last_load_failure: LoadFailure | None
    degraded: Degraded | None = None


class AdminStatus(BaseModel):
    """A worker's state for operators: the public status plus the details (the errors' own
    text, where the served model came from, the last good version kept on the machine)."""

    model_config = ConfigDict(extra="allow")

    pid: int
    model: ModelVersion | None
    model_uri: str
    registry: RegistryStatus
    last_load_failure: LoadFailure | None
    degraded: Degraded | None = None
    served_from: Literal["registry", "last_good"] | None
    wanted_version: str | None
    registry_error_detail: str | None
    last_load_failure_detail: dict[str, str] | None
    last_good: dict[str, str] | None
    storage_error_detail: str | None


class Text(RootModel[str]):
    """A text document: HTML, CSS, JavaScript or the Prometheus exposition format."""


class OpenApiDocument(RootModel[dict[str, Any]]):
    """An OpenAPI 3.1 document."""


# The models the OpenAPI document describes (the ones they use come along as $defs).
DOCUMENTED: tuple[type[BaseModel], ...] = (
    Base64Image,
    ImageUpload,
    ImageFile,
    Feedback,
    Recognition,
    FeedbackReceipt,
    Error,
    Health,
    Ready,
    NotReady,
    ReloadResult,
    AdminStatus,
    Text,
    OpenApiDocument,
)
