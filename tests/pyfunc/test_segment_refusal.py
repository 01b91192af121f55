"""pyfunc.segment.read_number with a model that has a rejector: one refused mark among
digits keeps the number (flagged), marks that are all refused are no number."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pyfunc import segment
from pyfunc.errors import NoDigit
from pyfunc.model import ONNX_ARTIFACT, DigitModel
from pyfunc.reject import REJECT_ARTIFACT, Rejector
from tests.support import loaded_digit_model


@pytest.fixture(scope="module")
def model(tiny_onnx, tmp_path_factory) -> DigitModel:
    """The tests' tiny real model with a real rejector that refuses much ink (a filled
    block) and passes a pen stroke's little, loaded as MLflow loads a version."""
    w = np.zeros((28 * 28 + 10, 1), dtype=np.float32)
    w[: 28 * 28] = 40.0 / (28 * 28)
    rejector = Rejector((), ((w, np.array([-12.0], dtype=np.float32)),), 0.5)
    path = rejector.save(tmp_path_factory.mktemp("refusal") / "rejector.npz")
    return loaded_digit_model({ONNX_ARTIFACT: str(tiny_onnx), REJECT_ARTIFACT: str(path)})


def _png(marks: list[str]) -> bytes:
    """Dark marks on white, 100 px tall, left to right: "0" a ring, "#" a filled block."""
    img = Image.new("L", (120 * len(marks) + 40, 160), 255)
    draw = ImageDraw.Draw(img)
    for i, mark in enumerate(marks):
        x = 40 + 120 * i
        if mark == "#":
            draw.rectangle([x, 30, x + 70, 130], fill=0)
        else:
            draw.ellipse([x, 30, x + 70, 130], outline=0, width=8)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_a_refused_mark_among_digits_is_kept_and_flagged(model):
    read = segment.read_number(model, _png(["0", "#", "0"]))
    assert len(read) == 3
    assert [d.refused for d, _ in read] == [False, True, False]
    # The refused mark keeps the network's reading; the others are judged as usual.
    assert read[1][1].not_digit_score is None
    assert read[0][1].not_digit_score is not None and read[0][1].not_digit_score < 0.5


def test_marks_that_are_all_refused_are_no_number(model):
    with pytest.raises(NoDigit, match="none of the 2 marks"):
        segment.read_number(model, _png(["#", "#"]))
    with pytest.raises(NoDigit):
        segment.read_number(model, _png(["#"]))


def test_a_model_without_a_rejector_refuses_nothing(tiny_onnx):
    plain = loaded_digit_model({ONNX_ARTIFACT: str(tiny_onnx)})
    read = segment.read_number(plain, _png(["0", "#", "0"]))
    assert len(read) == 3 and not any(d.refused for d, _ in read)
