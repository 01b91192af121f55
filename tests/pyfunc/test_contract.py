"""The digit-model contract: what a family implements, what the base does for every family."""

from __future__ import annotations

import pickle
import re
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pyfunc import contract
from pyfunc.contract import DigitPyfunc, InputSpec, family_of, input_spec_of, is_digit_model
from pyfunc.errors import ImageError, NoDigit
from pyfunc.model import DigitModel
from pyfunc.preprocess import Limits, pre_process
from pyfunc.signature import SIGNATURE
from tests import tiny_model


class InkShare(DigitPyfunc):
    """A family small enough to reason about: the share of ink decides between 0 and 1."""

    family = "ink_share"

    def load_context(self, context: Any) -> None:
        pass

    def pre_process(self, model_input: Any, limits: Limits | None = None) -> np.ndarray:
        return pre_process(contract.images_of(model_input), limits=limits or self.limits)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        share = np.clip(batch.reshape(len(batch), -1).mean(axis=1) * 5, 0, 1)
        probs = np.zeros((len(batch), 10))
        probs[:, 1], probs[:, 0] = share, 1 - share
        return probs


def test_input_spec_describes_itself_and_survives_the_mlmodel_metadata():
    spec = InputSpec()
    assert (spec.height, spec.width, spec.channels, spec.normalisation) == (28, 28, 1, "mnist")
    assert spec.describe() == "28x28x1 mnist"
    other = InputSpec(14, 14, 1, "mnist-pooled-2x2")
    assert InputSpec.from_dict(other.as_dict()) == other
    assert InputSpec.from_dict({**other.as_dict(), "added_later": 1}) == other
    assert InputSpec.from_dict(None) == spec


def test_a_family_must_implement_the_abstract_methods():
    class Incomplete(DigitPyfunc):
        def pre_process(self, model_input: Any, limits: Limits | None = None) -> np.ndarray:
            return np.zeros((0, 28, 28, 1))

    with pytest.raises(TypeError, match="probabilities"):
        Incomplete()  # type: ignore[abstract]


def test_families_name_themselves_and_are_digit_models():
    assert family_of(DigitModel()) == "keras_example"
    assert family_of(DigitModel(family="cnn_bn")) == "cnn_bn"
    assert family_of(InkShare()) == "ink_share"
    assert family_of(InkShare(family="renamed")) == "renamed"
    assert input_spec_of(InkShare()) == InputSpec()
    for model in (DigitModel(), InkShare()):
        assert is_digit_model(model)
    assert not is_digit_model(object())
    assert not is_digit_model(pd.DataFrame())


def test_a_digit_model_pickled_before_families_existed_still_names_its_family():
    # What such a pickle restores: the attributes DigitModel had then, no family, no spec.
    old = object.__new__(DigitModel)
    old.__dict__.update(limits=Limits(), _forward=None, runtime=None, rejector=None)
    restored = pickle.loads(pickle.dumps(old))
    assert "family" not in vars(restored) and "input_spec" not in vars(restored)
    assert is_digit_model(restored)
    assert family_of(restored) == "keras_example"
    assert input_spec_of(restored) == InputSpec()
    assert restored.metadata() == {
        "family": "keras_example",
        "input_spec": {"height": 28, "width": 28, "channels": 1, "normalisation": "mnist"},
    }


def test_predict_has_the_signature_columns_for_every_family(mnist):
    assert SIGNATURE.inputs is None  # see pyfunc/signature.py: bare arrays must get through
    assert tuple(SIGNATURE.outputs.input_names()) == contract.OUTPUT_COLUMNS
    answer = InkShare().predict(None, mnist.x_test[:5])
    assert tuple(answer.columns) == contract.OUTPUT_COLUMNS
    assert answer["digit"].dtype == np.int64 and answer["confidence"].dtype == np.float64
    assert answer["error"].isna().all() and not answer["no_digit"].any()


def test_one_bad_image_gets_its_own_error_and_the_others_are_answered(mnist):
    model = InkShare()
    good = [mnist.x_test[i] for i in range(3)]
    expected = model.predict(None, np.stack(good))
    batch = [good[0], b"not an image", np.zeros((28, 28), np.uint8), good[1], good[2]]
    answer = model.predict(None, pd.DataFrame({"image": batch}))
    assert list(answer["error"]) == [None, "unsupported_format", "no_digit", None, None]
    assert list(answer["no_digit"]) == [False, False, True, False, False]
    assert answer["digit"][1] is None and answer["probabilities"][2] is None
    assert "format" in answer["error_message"][1]
    assert answer["error_message"][0] is None
    kept = answer.iloc[[0, 3, 4]]
    assert list(kept["digit"]) == list(expected["digit"])
    assert np.allclose(list(kept["probabilities"]), list(expected["probabilities"]))


def test_pre_process_rows_keeps_the_order_and_a_lone_image_raises(mnist):
    model = InkShare()
    rows = model.pre_process_rows([mnist.x_test[0], b"junk", mnist.x_test[1]])
    assert isinstance(rows[1], ImageError)
    assert np.array_equal(rows[2], model.pre_process([mnist.x_test[1]])[0])
    with pytest.raises(ImageError):
        model.pre_process_rows(np.zeros((28, 28), np.uint8))  # one bare blank image


def test_classify_still_raises_the_first_bad_image(mnist):
    with pytest.raises(ImageError, match="image 1"):
        InkShare().classify([mnist.x_test[0], b"junk"])


def test_the_second_test_family_runs_its_own_input_spec(mnist):
    model = tiny_model.fit_pooled(mnist.x_train, mnist.y_train)
    assert is_digit_model(model) and not model.shared_pre_process
    batch = model.pre_process(mnist.x_test[:300])
    assert batch.shape == (300, 14, 14, 1)
    predicted = model.predict(None, mnist.x_test[:300])
    assert np.mean(predicted["digit"].to_numpy() == mnist.y_test[:300]) > 0.8


class _ScoreIsInk:
    """A stand-in rejector: the not-a-digit score is the image's mean ink, refused above 0.1."""

    threshold = 0.1

    def scores(self, batch: np.ndarray, probs: np.ndarray) -> np.ndarray:
        return batch.reshape(len(batch), -1).mean(axis=1).astype(np.float64)

    def refusals_for(self, scores: np.ndarray) -> list:
        from pyfunc.reject import Refused

        return [Refused(float(s), self.threshold) if s > self.threshold else None for s in scores]


def test_judge_answers_as_predictions_and_settle_raises_the_first_refusal(mnist):
    model = InkShare()
    batch = model.pre_process(list(mnist.x_test[:6]))
    probs = model.probabilities(batch)
    # Without a rejector: exactly the predictions of the probabilities (same floats).
    assert model.judge(batch, probs) == contract.predictions(probs)
    model.rejector = _ScoreIsInk()
    scores = model.rejector.scores(batch, probs)
    judged = model.judge(batch, probs)
    for item, p, s in zip(judged, contract.predictions(probs), scores, strict=True):
        if s > 0.1:
            assert isinstance(item, NoDigit) and item.not_digit_score == float(s)
        else:
            assert item == contract.Prediction(p.digit, p.confidence, p.probabilities, float(s))
    refused = [i for i, s in enumerate(scores) if s > 0.1]
    answered = [i for i, s in enumerate(scores) if s <= 0.1]
    assert refused and answered, scores  # the images below give both
    assert contract.settle([judged[i] for i in answered]) == [judged[i] for i in answered]
    with pytest.raises(NoDigit) as lone:
        contract.settle([judged[refused[0]]])
    assert lone.value is judged[refused[0]]
    with pytest.raises(NoDigit, match="^image 1: " + re.escape(str(judged[refused[0]]))):
        contract.settle([judged[answered[0]], judged[refused[0]]])
    with pytest.raises(NoDigit, match=r"^image 0: "):
        model.answer(batch[refused[:1] + answered[:1]], probs[refused[:1] + answered[:1]])
