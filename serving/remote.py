"""Predictor mode: prediction off-loaded to an MLflow scoring server.

The adapter keeps validation, decoding, normalisation, logging and the response contract;
only the network's forward pass runs remotely, on `mlflow models serve` of the same
registered model. What crosses the wire is the normalised 28×28 digit (784 bytes of
pixels as JSON), which the remote pyfunc passes through its own pre_process unchanged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import requests

from pyfunc.errors import NoDigit
from pyfunc.model import IMAGE_COLUMN, Prediction
from pyfunc.preprocess import Limits, pre_process
from pyfunc.reject import Refused
from serving.config import Settings
from serving.errors import ApiError

log = logging.getLogger(__name__)
_RETRY_STATUSES = {502, 503}


class RemotePredictor:
    def __init__(self, settings: Settings) -> None:
        self.url = settings.remote_predictor_url
        self.timeout = settings.remote_timeout_seconds
        self.retries = settings.remote_retries
        self._local = threading.local()  # one keep-alive session per thread

    def classify(self, images: Sequence[Any], limits: Limits | None = None) -> list[Prediction]:
        batch = pre_process(images, limits=limits or Limits())
        pixels = np.rint(batch[..., 0] * 255).astype(np.uint8)
        payload = {
            "dataframe_split": {
                "columns": [IMAGE_COLUMN],
                "data": [[digit.tolist()] for digit in pixels],
            }
        }
        rows = self._post(payload)["predictions"]
        for i, r in enumerate(rows):
            if r.get("no_digit"):  # the model's rejector refused it (pyfunc.reject)
                score = r.get("not_digit_score")  # null: its pre-processing found no digit
                refused = NoDigit(r["error_message"]) if score is None else Refused(float(score))
                raise refused if len(rows) == 1 else NoDigit(f"image {i}: {refused}")
        return [
            Prediction(
                int(r["digit"]),
                float(r["confidence"]),
                [float(p) for p in r["probabilities"]],
                r.get("not_digit_score"),
            )
            for r in rows
        ]

    def warm_up(self) -> None:
        """Fail now, not on a user's request, when the scorer is absent."""
        digit = np.zeros((28, 28), dtype=np.uint8)
        digit[4:24, 12:16] = 255  # a plain "1"
        self.classify([digit])

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def _post(self, payload: dict) -> dict:
        for attempt in range(self.retries + 1):
            try:
                response = self._session().post(self.url, json=payload, timeout=self.timeout)
            except requests.Timeout:
                # A slow scorer stays slow: retrying would only multiply the wait.
                raise ApiError(
                    504,
                    "predictor_timeout",
                    f"the prediction service did not answer within {self.timeout} s",
                ) from None
            except requests.ConnectionError as exc:
                failure = f"cannot reach the prediction service: {type(exc).__name__}"
            else:
                if response.ok:
                    return response.json()
                failure = f"the prediction service answered {response.status_code}"
                if response.status_code not in _RETRY_STATUSES:
                    break
            if attempt < self.retries:
                time.sleep(0.05 * 2**attempt)
        log.warning("remote predictor %s failed: %s", self.url, failure)
        raise ApiError(502, "predictor_unavailable", failure)
