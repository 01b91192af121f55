"""The no-digit rule: the numpy rejector, its artifact, and its verdicts through DigitModel."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pyfunc.errors import NoDigit
from pyfunc.model import ONNX_ARTIFACT, DigitModel
from pyfunc.reject import REJECT_ARTIFACT, Refused, Rejector, load, ranked
from tests.support import loaded_digit_model


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _ink_rejector(threshold: float = 0.5) -> Rejector:
    """No convolution, one logistic unit on the mean ink: much ink reads as "no digit"
    (a filled block), a pen stroke's little does not."""
    w = np.zeros((28 * 28 + 10, 1), dtype=np.float32)
    w[: 28 * 28] = 40.0 / (28 * 28)
    return Rejector((), ((w, np.array([-12.0], dtype=np.float32)),), threshold)


@pytest.fixture(scope="module")
def block_png() -> bytes:
    block = np.zeros((28, 28), dtype=np.uint8)
    block[4:24, 4:24] = 255
    return _png(block)


@pytest.fixture(scope="module")
def model(tiny_onnx, tmp_path_factory) -> DigitModel:
    """The tiny real ONNX model with the ink rejector as its artifact, loaded as MLflow
    loads a version."""
    root = tmp_path_factory.mktemp("reject")
    rejector_path = _ink_rejector().save(root / "rejector.npz")
    return loaded_digit_model({ONNX_ARTIFACT: str(tiny_onnx), REJECT_ARTIFACT: str(rejector_path)})


@pytest.mark.integration  # TensorFlow, through Keras
def test_numpy_forward_is_the_keras_network():
    import keras

    from training.rejector import build_net, to_rejector

    net = build_net(seed=3)
    rng = np.random.default_rng(0)
    for layer in net.layers:  # non-zero biases too, so their layout is checked
        weights = layer.get_weights()
        if weights:
            layer.set_weights([rng.normal(0, 0.2, w.shape).astype(np.float32) for w in weights])
    batch = rng.random((16, 28, 28, 1), dtype=np.float32)
    probs = rng.dirichlet(np.ones(10), 16).astype(np.float32)
    want = keras.ops.convert_to_numpy(net([batch, ranked(probs)], training=False))[:, 0]
    got = to_rejector(net, 0.5).scores(batch, probs)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_ranked_is_sorted_and_forgets_which_digit():
    probs = np.array([[0.1, 0.7, 0.2] + [0.0] * 7, [0.7, 0.2, 0.1] + [0.0] * 7])
    r = ranked(probs)
    assert (r[0] == r[1]).all() and r[0, 0] == pytest.approx(0.7)


def test_artifact_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    rejector = Rejector(
        ((rng.normal(size=(3, 3, 1, 4)).astype(np.float32), np.zeros(4, np.float32)),),
        (
            (rng.normal(size=(13 * 13 * 4 + 10, 8)).astype(np.float32), np.ones(8, np.float32)),
            (rng.normal(size=(8, 1)).astype(np.float32), np.zeros(1, np.float32)),
        ),
        0.73,
    )
    loaded = load(rejector.save(tmp_path / "r.npz"))
    batch = rng.random((5, 28, 28, 1), dtype=np.float32)
    probs = rng.dirichlet(np.ones(10), 5)
    assert loaded.threshold == 0.73
    np.testing.assert_array_equal(loaded.scores(batch, probs), rejector.scores(batch, probs))
    assert load(None) is None


def test_an_artifact_of_another_format_is_refused(tmp_path):
    path = _ink_rejector().save(tmp_path / "r.npz")
    with np.load(path) as z:
        arrays = dict(z)
    arrays["format"] = np.int64(1)
    np.savez(tmp_path / "old.npz", **arrays)
    with pytest.raises(ValueError, match="format"):
        load(tmp_path / "old.npz")


def test_refusals_follow_the_threshold():
    scores = np.array([0.2, 0.5, 0.51, 0.99])
    refusals = _ink_rejector(0.5).refusals_for(scores)
    assert [r is not None for r in refusals] == [False, False, True, True]
    refused = refusals[3]
    assert isinstance(refused, NoDigit) and refused.code == "no_digit" and refused.status == 422
    assert refused.not_digit_score == pytest.approx(0.99)
    # Not the pre-processing's words for an empty picture: this image had marks.
    assert "blank" not in str(refused) and "no handwritten digit recognised" in str(refused)


def test_a_digit_is_answered_with_its_score(model, mnist):
    prediction = model.classify([_png(mnist.x_test[0])])[0]
    assert prediction.not_digit_score is not None and prediction.not_digit_score < 0.5


def test_what_the_rejector_refuses_is_no_digit(model, block_png):
    with pytest.raises(Refused) as info:
        model.classify([block_png])
    assert info.value.code == "no_digit"


def test_in_a_batch_the_refused_image_is_named(model, mnist, block_png):
    with pytest.raises(NoDigit, match=r"^image 1: no handwritten digit"):
        model.classify([_png(mnist.x_test[0]), block_png])


def test_predict_gives_every_row_its_verdict(model, mnist, block_png):
    frame = model.predict(None, pd.DataFrame({"image": [_png(mnist.x_test[0]), block_png]}))
    assert frame["no_digit"].tolist() == [False, True]
    assert frame["not_digit_score"][0] < 0.5 < frame["not_digit_score"][1]
    assert frame["digit"].between(0, 9).all()


def test_without_a_rejector_nothing_is_refused(model, block_png):
    plain = DigitModel()
    plain._forward = model._forward  # the same real network, no rejector artifact
    prediction = plain.classify([block_png])[0]
    assert prediction.not_digit_score is None
    frame = plain.predict(None, pd.DataFrame({"image": [block_png]}))
    assert frame["no_digit"].tolist() == [False]


def test_the_rejector_runs_blas_on_the_runtimes_threads_during_a_call_only(
    tiny_onnx, tmp_path, mnist
):
    """With ``inference_threads`` in its model_config, the rejector's products run on that
    many BLAS threads (OpenBLAS's own default, one spinning thread per core, cost a
    request several times its CPU in the service), and the process keeps its setting."""
    from types import SimpleNamespace

    from threadpoolctl import threadpool_info, threadpool_limits

    from pyfunc.contract import THREADS_CONFIG

    def blas_threads() -> set[int]:
        return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}

    artifacts = {
        ONNX_ARTIFACT: str(tiny_onnx),
        REJECT_ARTIFACT: str(_ink_rejector().save(tmp_path / "rejector.npz")),
    }
    model = DigitModel()
    model.load_context(SimpleNamespace(artifacts=artifacts, model_config={THREADS_CONFIG: 1}))  # type: ignore[arg-type]
    rejector, seen = model.rejector, []

    class Watched:  # the rejector is a frozen dataclass: watched from outside
        def scores(self, batch: np.ndarray, probs: np.ndarray) -> np.ndarray:
            seen.append(blas_threads())
            return rejector.scores(batch, probs)

        def refusals_for(self, scores: np.ndarray) -> list:
            return rejector.refusals_for(scores)

    model.rejector = Watched()
    with threadpool_limits(limits=2, user_api="blas"):  # the process's own setting
        model.classify([_png(mnist.x_test[0])])
        assert seen == [{1}]
        assert blas_threads() == {2}
