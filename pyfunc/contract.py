"""The digit-model contract: what every model family implements, and what is shared.

A *family* is one way of turning an image into ten probabilities (the Keras example CNN, a
scikit-learn classifier on pixels, ...). Every family is an MLflow pyfunc subclassing
:class:`DigitPyfunc`, so the service, ``mlflow models serve`` and a notebook's
``mlflow.pyfunc.load_model(uri).predict(x)`` treat all of them alike:

- a family implements :meth:`DigitPyfunc.pre_process` (decoding and the size limits are the
  shared functions of :mod:`pyfunc.preprocess`; the family adds its own normalisation, if it
  has one, described by its :class:`InputSpec`), :meth:`DigitPyfunc.probabilities` (``(N, 10)``)
  and :meth:`DigitPyfunc.load_context`;
- the base implements the rest once: :meth:`~DigitPyfunc.classify` (the service's call),
  :meth:`~DigitPyfunc.judge` and :meth:`~DigitPyfunc.answer` (the optional rejector's
  verdicts) and :meth:`~DigitPyfunc.predict` (the same output columns for every family, one row
  per image, a bad image an ``error`` in its own row).

The service checks :func:`is_digit_model`, never a concrete class, so a new family is served
by registering and promoting it: no change to ``serving/``.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext

from pyfunc.errors import ImageError, NoDigit
from pyfunc.preprocess import Limits

__all__ = [
    "DEFAULT_FAMILY",
    "ERROR_COLUMNS",
    "FAMILY_METADATA",
    "IMAGE_COLUMN",
    "INPUT_SPEC_METADATA",
    "OUTPUT_COLUMNS",
    "THREADS_CONFIG",
    "DigitContract",
    "DigitPyfunc",
    "InputSpec",
    "Prediction",
    "family_of",
    "images_of",
    "input_spec_of",
    "is_digit_model",
    "predictions",
    "settle",
]

IMAGE_COLUMN = "image"
# The ``model_config`` key (``mlflow.pyfunc.load_model(uri, model_config=...)``) for the
# threads the runtime may use per model (absent or 0: the runtime's default).
THREADS_CONFIG = "inference_threads"
# Keys of the MLmodel ``metadata`` a family is logged with (see DigitPyfunc.metadata).
FAMILY_METADATA = "family"
INPUT_SPEC_METADATA = "input_spec"
# The family of objects that name none: versions registered before families existed were
# all the Keras example network.
DEFAULT_FAMILY = "keras_example"

# predict's columns, in order, for every family.
OUTPUT_COLUMNS = (
    "digit",
    "confidence",
    "probabilities",
    "no_digit",
    "not_digit_score",
    "error",
    "error_message",
)
# A row's error: the stable code of pyfunc.errors (no_digit, invalid_image, ...) and the
# message; both None for a row that was answered.
ERROR_COLUMNS = ("error", "error_message")


@dataclass(frozen=True)
class InputSpec:
    """What a family's network takes in: ``(N, height, width, channels)`` float32 from
    :meth:`DigitPyfunc.pre_process`, normalised as ``normalisation`` names ("mnist": the ink
    map in [0, 1], the digit fitted into 20×20 and centred by mass, as MNIST was made)."""

    height: int = 28
    width: int = 28
    channels: int = 1
    normalisation: str = "mnist"

    def describe(self) -> str:
        return f"{self.height}x{self.width}x{self.channels} {self.normalisation}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> InputSpec:
        """Back from :meth:`as_dict` (an MLmodel's metadata); keys it does not know ignored."""
        known = {k: v for k, v in (values or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)


MNIST_SPEC = InputSpec()


@dataclass(frozen=True)
class Prediction:
    digit: int
    confidence: float
    probabilities: list[float]
    # P(no digit) from the model's rejector (pyfunc.reject); None without one.
    not_digit_score: float | None = None


class DigitPyfunc(PythonModel, metaclass=ABCMeta):
    """The base of every digit-model family: images in (encoded bytes, base64 text or
    arrays, alone or in a DataFrame's ``image`` column), digit + probabilities out.

    Subclasses implement :meth:`pre_process`, :meth:`probabilities` and :meth:`load_context`;
    they set ``family`` (a class default, or ``family=`` in the constructor) and, when the
    network does not take MNIST-normalised 28×28×1, ``input_spec``."""

    family: str = "unnamed"  # each family names itself
    input_spec: InputSpec = MNIST_SPEC
    # The optional no-digit rejector (pyfunc.reject.Rejector), set by load_context. It scores
    # the pre-processed batch, so only families with the MNIST input spec can carry one.
    rejector: Any = None
    # True when pre_process is exactly pyfunc.preprocess.pre_process under the limits given
    # (shared decoding and MNIST normalisation, nothing of the family's own): the service's
    # micro-batcher may then decode in the request thread and normalise the queued images
    # in one vectorised pass. False: it calls the family's own pre_process per request.
    shared_pre_process: bool = False
    # BLAS's threads while this model computes in numpy or scipy (the rejector, a family's
    # own linear algebra): see :meth:`hold_blas_to`. None: BLAS's own default.
    _blas: Any = None
    _blas_threads: int = 0

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        family: str | None = None,
        input_spec: InputSpec | None = None,
    ) -> None:
        self.limits = limits or Limits()
        if family is not None:
            self.family = family
        if input_spec is not None:
            self.input_spec = input_spec
        self.rejector = None

    # ------------------------------------------------------------------ for families

    def hold_blas_to(self, threads: int) -> None:
        """Run this model's BLAS calls on ``threads`` threads (0: BLAS's default), as its
        runtime is held to the ``inference_threads`` of its ``model_config``.

        OpenBLAS starts one thread per core and its threads spin between calls: on 2 cores,
        with the service's workers each calling the rejector's small matrix products, they
        spun against each other and the request threads, and a request cost 4x the CPU
        (docs/performance-history.md). The limit is taken per call, not process-wide, so loading a
        model changes nothing else in the process (about 25 us per call)."""
        self._blas_threads = threads
        if threads:
            from threadpoolctl import ThreadpoolController

            self._blas = ThreadpoolController()

    def blas_limit(self) -> AbstractContextManager[Any]:
        """A context in which BLAS runs on the model's threads (see :meth:`hold_blas_to`)."""
        blas = getattr(self, "_blas", None)  # absent on objects pickled before it
        if blas is None:
            return nullcontext()
        return blas.limit(limits=self._blas_threads, user_api="blas")

    @abstractmethod
    def load_context(self, context: PythonModelContext) -> None:
        """Read the artifacts (weights, rejector) into memory; warm up if it helps."""

    @abstractmethod
    def pre_process(self, model_input: Any, limits: Limits | None = None) -> np.ndarray:
        """Any accepted input → the network's batch, ``(N, *input_spec)`` float32.

        Decode with the shared :mod:`pyfunc.preprocess` functions under ``limits`` (default
        ``self.limits``), raising :class:`~pyfunc.errors.ImageError` for a bad image."""

    @abstractmethod
    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities for a pre-processed batch, ``(N, 10)``, rows summing to 1."""

    def pre_process_rows(
        self, model_input: Any, limits: Limits | None = None
    ) -> list[np.ndarray | ImageError]:
        """Per image: its pre-processed array (one row of :meth:`pre_process`'s batch) or the
        :class:`ImageError` it gets, so one bad image spoils no other. The whole batch goes
        through :meth:`pre_process` once; only when that fails is each image done alone."""
        try:
            return list(self.pre_process(model_input, limits))
        except ImageError:
            images = images_of(model_input)
            if isinstance(images, np.ndarray) and images.dtype != object and images.ndim == 2:
                raise  # one bare (H, W) image: its error is the answer
        results: list[np.ndarray | ImageError] = []
        for image in images:
            try:
                results.append(self.pre_process([image], limits)[0])
            except ImageError as exc:
                results.append(exc)
        return results

    def metadata(self) -> dict[str, Any]:
        """What the family is logged with as MLmodel ``metadata`` (``save_model(metadata=...)``)."""
        return {
            FAMILY_METADATA: family_of(self),
            INPUT_SPEC_METADATA: input_spec_of(self).as_dict(),
        }

    # ------------------------------------------------------------------ shared

    def classify(self, model_input: Any, limits: Limits | None = None) -> list[Prediction]:
        """One :class:`Prediction` per input image; raises the first bad image's error."""
        batch = self.pre_process(model_input, limits)
        return self.answer(batch, self.probabilities(batch))

    def judge(self, batch: np.ndarray, probs: np.ndarray) -> list[Prediction | NoDigit]:
        """Per image of a pre-processed batch and its probabilities: the prediction, or the
        :class:`NoDigit` the rejector refuses it with. Row by row the same whatever else is
        in the batch, so the service's micro-batcher judges a whole pass at once."""
        rejector = getattr(self, "rejector", None)  # absent on objects pickled before it
        if rejector is None:
            return list(predictions(probs))
        scores = self.not_digit_scores(batch, probs)
        refusals = rejector.refusals_for(scores)
        return [
            refusal or p for p, refusal in zip(predictions(probs, scores), refusals, strict=True)
        ]

    def not_digit_scores(self, batch: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """The rejector's P(no digit) per image, ``(N,)``, for :meth:`judge` (a model with a
        rejector). A family whose runtime scored the batch with its probabilities returns
        those scores instead (pyfunc.model)."""
        with self.blas_limit():
            return self.rejector.scores(batch, probs)

    def answer(self, batch: np.ndarray, probs: np.ndarray) -> list[Prediction]:
        """:meth:`judge`, raising the first refusal (naming the image in a batch)."""
        return settle(self.judge(batch, probs))

    def predict(
        self,
        context: PythonModelContext | None,
        # Unannotated on purpose: MLflow would otherwise derive a signature from the hint.
        model_input,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """One row per image with :data:`OUTPUT_COLUMNS`. A refused image keeps its digit
        and scores and gets ``error`` "no_digit"; an image that cannot be read at all (no
        ink, undecodable, too large) gets its error and nulls: the others are answered."""
        rows = self.pre_process_rows(model_input)
        good = [(i, r) for i, r in enumerate(rows) if not isinstance(r, ImageError)]
        out = [_error_row(r) if isinstance(r, ImageError) else {} for r in rows]
        if good:
            batch = np.stack([r for _, r in good]).astype(np.float32, copy=False)
            probs = self.probabilities(batch)
            judged = self.judge(batch, probs)
            for (i, _), p, j in zip(good, predictions(probs), judged, strict=True):
                refused = isinstance(j, NoDigit)
                out[i] = {
                    "digit": p.digit,
                    "confidence": p.confidence,
                    "probabilities": p.probabilities,
                    "no_digit": refused,
                    "not_digit_score": getattr(j, "not_digit_score", None),
                    "error": NoDigit.code if refused else None,
                    "error_message": str(j) if refused else None,
                }
        return pd.DataFrame({c: _column([r[c] for r in out], c) for c in OUTPUT_COLUMNS})


# Column types when every row has a value; a column with a null in it stays ``object`` so
# that the null is None (JSON null), not pandas' NaN.
_DTYPES = {
    "digit": "int64",
    "confidence": "float64",
    "no_digit": "bool",
    "not_digit_score": "float64",
}


def _column(values: list[Any], name: str) -> pd.Series:
    dtype = _DTYPES.get(name)
    if dtype is None or any(v is None for v in values):
        return pd.Series(values, dtype=object)
    return pd.Series(values, dtype=dtype)


def _error_row(error: ImageError) -> dict[str, Any]:
    return {
        "digit": None,
        "confidence": None,
        "probabilities": None,
        "no_digit": isinstance(error, NoDigit),
        "not_digit_score": getattr(error, "not_digit_score", None),
        "error": error.code,
        "error_message": str(error),
    }


@runtime_checkable
class DigitContract(Protocol):
    """What the service calls on a model: the structural side of :class:`DigitPyfunc`."""

    family: str
    input_spec: InputSpec
    limits: Limits

    def pre_process(self, model_input: Any, limits: Limits | None = None) -> np.ndarray: ...

    def probabilities(self, batch: np.ndarray) -> np.ndarray: ...

    def classify(self, model_input: Any, limits: Limits | None = None) -> list[Prediction]: ...

    def judge(self, batch: np.ndarray, probs: np.ndarray) -> list[Prediction | NoDigit]: ...

    def answer(self, batch: np.ndarray, probs: np.ndarray) -> list[Prediction]: ...


def is_digit_model(obj: object) -> bool:
    """True for any object honouring the contract: a :class:`DigitPyfunc` (any family,
    pickled before or after families existed) or anything with the same methods."""
    return isinstance(obj, DigitPyfunc | DigitContract)


def family_of(model: object) -> str:
    """The model's family name (objects pickled before families existed: the Keras example)."""
    return str(getattr(model, "family", None) or DEFAULT_FAMILY)


def input_spec_of(model: object) -> InputSpec:
    spec = getattr(model, "input_spec", None)
    return spec if isinstance(spec, InputSpec) else MNIST_SPEC


def predictions(probs: np.ndarray, not_digit_scores: np.ndarray | None = None) -> list[Prediction]:
    """Probability rows (and the rejector's scores, when there are) → answers. Built from
    ``tolist()``: the same Python floats as ``float(p[d])``, without numpy's per-item cost."""
    rows = np.asarray(probs).tolist()
    digits = np.asarray(probs).argmax(axis=1).tolist()
    scores = [None] * len(rows) if not_digit_scores is None else not_digit_scores.tolist()
    return [Prediction(d, row[d], row, s) for d, row, s in zip(digits, rows, scores, strict=True)]


def settle(judged: Sequence[Prediction | NoDigit]) -> list[Prediction]:
    """:meth:`DigitPyfunc.judge`'s verdicts as an answer: the predictions, or the first
    refusal raised (naming the image when there are several)."""
    for i, item in enumerate(judged):
        if isinstance(item, NoDigit):
            raise item if len(judged) == 1 else NoDigit(f"image {i}: {item}")
    return list(judged)  # type: ignore[arg-type]  # no refusal left in it


def images_of(model_input: Any) -> Sequence[Any] | np.ndarray:
    """The images inside whatever MLflow handed us (DataFrame, dict, array, list)."""
    if isinstance(model_input, pd.DataFrame):
        if IMAGE_COLUMN not in model_input.columns:
            raise ImageError(f"expected a column named {IMAGE_COLUMN!r}")
        model_input = model_input[IMAGE_COLUMN].tolist()
    elif isinstance(model_input, dict):
        if IMAGE_COLUMN not in model_input:
            raise ImageError(f"expected a key named {IMAGE_COLUMN!r}")
        model_input = model_input[IMAGE_COLUMN]
    if isinstance(model_input, list):
        # MLflow's schema enforcement turns array columns into nested lists.
        return [np.asarray(item) if isinstance(item, list) else item for item in model_input]
    return model_input
