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
EXAMPLE_RECORD_ID = "0c6d1f4e9b2a4e0c8d7f3a5b6c1e2d90"
EXAMPLE_FEEDBACK_TOKEN = "kY3x0QeQ9d1mF0lO8sVq2Hn7rTzB4aWc6uJ5pGi1XyE"
MAX_RECORD_ID = 64
MAX_FEEDBACK_TOKEN = 128


def _example(value: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": [value]})


# ---------------------------------------------------------------- requests


class Base64Image(BaseModel):
    """An image as JSON (`POST /read`)."""

    model_config = _example({"image": SEVEN_PNG_BASE64})

    image: str = Field(
        description="The encoded image file as base64 (standard or URL-safe alphabet, padded "
        "or not); whitespace and a `data:image/…;base64,` prefix are allowed, so a canvas "
        "`toDataURL()` works."
    )


class RecognizeJson(Base64Image):
    """An image for `POST /recognize` as JSON, with its options."""

    model_config = _example({"image": SEVEN_PNG_BASE64})

    draft: bool = Field(
        default=False,
        description="A drawing still in progress (live prediction): answered, not stored in "
        "the image log, so the answer has no `record_id` or `feedback_token`. Also accepted "
        "as the query parameter `?draft=true` with any encoding.",
    )
    return_input: bool = Field(
        default=False,
        description="Also answer `model_input`, the 28×28 image the network received. Costs "
        "one more pre-processing pass. Also accepted as `?return_input=true`.",
    )


class ImageUpload(BaseModel):
    """An image for `POST /recognize` as a multipart form."""

    image: bytes = Field(description="The image file (PNG, JPEG, GIF, BMP or WebP).")


class ImageFile(RootModel[bytes]):
    """The image file itself (PNG, JPEG, GIF, BMP or WebP) as the request body."""


# The true number of a /read answer (serving.read.MAX_DIGITS digits at most).
NumberLabel = Annotated[StrictStr, Field(pattern=r"^[0-9]{1,12}$")]


class Feedback(BaseModel):
    """For `POST /feedback`: the digit an earlier image really shows. Only the client that
    got the answer can send it: it needs that answer's `record_id` and `feedback_token`."""

    # Strict: "3", 3.0 and true are not labels, 12 is not a record id.
    model_config = ConfigDict(
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "record_id": EXAMPLE_RECORD_ID,
                    "feedback_token": EXAMPLE_FEEDBACK_TOKEN,
                    "label": 7,
                }
            ]
        },
    )

    record_id: StrictStr = Field(
        min_length=1,
        max_length=MAX_RECORD_ID,
        description="The `record_id` of an earlier `POST /recognize` answer.",
    )
    feedback_token: StrictStr = Field(
        min_length=1,
        max_length=MAX_FEEDBACK_TOKEN,
        description="The `feedback_token` of that same answer.",
    )
    label: Annotated[StrictInt, Field(ge=0, le=9)] | NumberLabel = Field(
        description="The digit the image really shows: an integer 0-9 for a `/recognize` "
        'answer; for a `POST /read` answer the whole number as a string of digits ("2026"), '
        "as many as the answer read."
    )


# ---------------------------------------------------------------- answers


class ModelVersion(BaseModel):
    """The registered MLflow model version that answered."""

    name: str = Field(examples=["digits"])
    version: str = Field(examples=["3"])
    family: str | None = Field(
        default=None,
        description="The model family (how the version turns an image into a digit)",
        examples=["cnn_bn"],
    )


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
            "model": {"name": "digits", "version": "3", "family": "cnn_bn"},
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
        description="Also in the `X-Request-ID` header: your `X-Request-ID` if you sent a "
        "sane one, else a new one. A correlation id for logs; it names no record."
    )
    record_id: str | None = Field(
        default=None,
        description="The id this answer is logged under, chosen by the service; absent when "
        "the answer was not logged. Send it to `POST /feedback`.",
    )
    feedback_token: str | None = Field(
        default=None,
        description="The credential for labelling this answer with `POST /feedback`; only "
        "this response carries it. Absent when the answer was not logged.",
    )
    # Answered only when false (dumped with exclude_defaults).
    logged: bool = Field(
        default=True,
        description="Present, and false, only when this request was not stored: a `draft`, "
        "or the image log could not store it and the service is configured to answer anyway.",
    )
    draft: bool = Field(
        default=False, description="Present, and true, when the request was a `draft`."
    )
    model_input: str | None = Field(
        default=None,
        description="Only when `return_input` was asked: the 28×28 image the network "
        "received, after the model's own pre-processing, as a base64 PNG (white ink on black, "
        "as MNIST digits are).",
    )


class ReadDigit(BaseModel):
    """One digit of a number, in its place from the left."""

    digit: Digit
    confidence: Probability = Field(description="The probability of `digit`.")
    box: list[int] = Field(
        min_length=4,
        max_length=4,
        description="`[x, y, w, h]` in pixels of the image as sent (after its EXIF "
        "orientation): left, top, width, height.",
    )
    # Answered only when true (dumped with exclude_defaults).
    touching: bool = Field(
        default=False,
        description="Present, and true, when the digit was cut out of ink it shares with a "
        "neighbour (touching digits), rather than separated by paper.",
    )


class Reading(BaseModel):
    """A number read from an image: its digits left to right."""

    model_config = _example(
        {
            "number": "2026",
            "digits": [
                {"digit": 2, "confidence": 0.998, "box": [12, 20, 41, 58]},
                {"digit": 0, "confidence": 0.997, "box": [66, 18, 44, 60]},
                {"digit": 2, "confidence": 0.991, "box": [121, 22, 40, 57]},
                {"digit": 6, "confidence": 0.989, "box": [172, 15, 39, 62]},
            ],
            "low_confidence": False,
            "model": {"name": "digits", "version": "3", "family": "cnn_bn"},
            "request_id": EXAMPLE_REQUEST_ID,
            "record_id": EXAMPLE_RECORD_ID + "-n4",
            "feedback_token": EXAMPLE_FEEDBACK_TOKEN,
        }
    )

    number: str = Field(
        pattern=r"^[0-9]+$",
        description='The digits read, left to right, as a string ("0042" keeps its zeros).',
    )
    digits: list[ReadDigit] = Field(min_length=1, max_length=12)
    low_confidence: bool = Field(
        description="Some digit's `confidence` is below the service's `LOW_CONFIDENCE_THRESHOLD`, "
        "or the model's rejector took one of the marks for no digit (its reading is kept)."
    )
    model: ModelVersion
    request_id: str = Field(description="As for `POST /recognize`.")
    record_id: str | None = Field(
        default=None,
        description="The id to label the whole number by with `POST /feedback`; absent when "
        "the answer was not logged.",
    )
    feedback_token: str | None = Field(
        default=None, description="The credential for labelling this answer."
    )
    logged: bool = Field(
        default=True,
        description="Present, and false, only when the answer could not be stored.",
    )


class FeedbackReceipt(BaseModel):
    """The label was stored with that record; labelling again replaces it (up to the
    service's `FEEDBACK_MAX_LABELS` labels per record)."""

    record_id: str
    label: Digit | str = Field(description="As sent: a digit, or a /read answer's number.")
    labelled_at: Timestamp
    held_for_review: bool = Field(
        description="The label contradicts a confident prediction: it is kept, but used for "
        "training only once a reviewer accepts it."
    )


class HeldLabel(BaseModel):
    """A label held for review, with the prediction it contradicts."""

    id: int
    record_id: str
    label: Digit
    labelled_at: Timestamp
    digit: Digit = Field(description="What the model answered.")
    confidence: Probability
    review: Literal["pending", "accepted", "rejected"]


class HeldLabels(BaseModel):
    labels: list[HeldLabel]


class ReviewDecision(BaseModel):
    """For `POST /admin/reviews/{id}`."""

    model_config = ConfigDict(strict=True, json_schema_extra={"examples": [{"accept": True}]})

    accept: bool = Field(description="true: the label may be used for training; false: never.")


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, machine-readable; each response lists its values.")
    message: str = Field(description="For people; wording may change.")


class Error(BaseModel):
    """Every error the service answers, whatever the status."""

    error: ErrorDetail


class MultipleDigitsDetail(ErrorDetail):
    count: int = Field(ge=2, description="How many digits the image holds.")
    boxes: list[list[int]] = Field(
        description="Each digit's `[x, y, w, h]`, left to right, in pixels of the image as sent."
    )


class MultipleDigitsError(BaseModel):
    """`POST /recognize` was sent several digits side by side (send them to `POST /read`)."""

    error: MultipleDigitsDetail


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
    error: str | None = Field(
        description="Why nothing changed, as a code: `no_version`, `registry_unreachable`, or "
        "the code of the load failure; the details are in `GET /admin/status`."
    )
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
    RecognizeJson,
    ImageUpload,
    ImageFile,
    Feedback,
    Recognition,
    Reading,
    MultipleDigitsError,
    FeedbackReceipt,
    HeldLabels,
    ReviewDecision,
    Error,
    Health,
    Ready,
    NotReady,
    ReloadResult,
    AdminStatus,
    Text,
    OpenApiDocument,
)
