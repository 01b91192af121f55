"""The notebook path, as people type it: ``mlflow.pyfunc.load_model(uri).predict(x_test)``
on a version from a real registry (the tiny model), with bare arrays and mixed batches."""

from __future__ import annotations

import base64
import io

import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pyfunc.contract import OUTPUT_COLUMNS


def _png(digit: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(digit).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def loaded(registry):
    """``mlflow.pyfunc.load_model("models:/digits@production")`` against the test registry,
    MLflow's process-wide URIs put back afterwards."""
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(registry.tracking_uri)
    mlflow.set_registry_uri(registry.tracking_uri)
    try:
        return mlflow.pyfunc.load_model("models:/digits@production")
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])


def test_a_bare_uint8_array_is_answered(loaded, mnist):
    x, y = mnist.x_test[:300], mnist.y_test[:300]
    assert x.shape == (300, 28, 28) and x.dtype == np.uint8
    answer = loaded.predict(x)
    assert list(answer.columns) == list(OUTPUT_COLUMNS)
    assert len(answer) == 300 and answer["error"].isna().all()
    assert np.mean(answer["digit"].to_numpy() == y) > 0.8
    # The same as the forms accepted before: the image column, as a dict or a DataFrame.
    wrapped = loaded.predict({"image": x})
    assert list(wrapped["digit"]) == list(answer["digit"])
    one = loaded.predict(x[0])  # one bare (28, 28) image: one row
    assert len(one) == 1 and one["digit"][0] == answer["digit"][0]


def test_one_image_without_a_digit_fails_only_its_row(loaded, mnist):
    x = mnist.x_test[:6].copy()
    clean = loaded.predict(x)
    x[2] = 0  # blank
    answer = loaded.predict(x)
    assert list(answer["error"]) == [None, None, "no_digit", None, None, None]
    assert bool(answer["no_digit"][2]) and answer["digit"][2] is None
    assert "no digit" in answer["error_message"][2]
    others = [0, 1, 3, 4, 5]
    assert list(answer["digit"][others]) == list(clean["digit"][others])


def test_a_mixed_table_of_encodings_answers_row_by_row(loaded, mnist):
    pngs = [_png(d) for d in mnist.x_test[:3]]
    rows = [
        pngs[0],
        b"\x89PNG\r\n\x1a\n broken",  # a PNG signature, then junk
        base64.b64encode(pngs[1]).decode(),
        _png(np.full((28, 28), 255, np.uint8)),  # uniform: no digit
        "not base64 at all!",
        pngs[2],
    ]
    answer = loaded.predict(pd.DataFrame({"image": rows}))
    errors = list(answer["error"])
    assert errors[0] is None and errors[2] is None and errors[5] is None
    assert errors[1] == "invalid_image" and errors[3] == "no_digit"
    assert errors[4] is not None
    expected = loaded.predict(mnist.x_test[:3])["digit"]
    assert [answer["digit"][i] for i in (0, 2, 5)] == list(expected)
