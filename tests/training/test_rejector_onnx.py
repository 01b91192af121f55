"""training.rejector_onnx: the rejector inside the network's ONNX graph scores as the numpy
rejector does, and a version carrying that graph is served with one ONNX Runtime call a pass."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

from pyfunc.errors import NoDigit
from pyfunc.model import ONNX_ARTIFACT
from pyfunc.preprocess import pre_process
from pyfunc.reject import REJECT_ARTIFACT, SCORED_ARTIFACT, Rejector
from tests.support import loaded_digit_model
from training.rejector_onnx import scored_graph, write_scored_graph


def _rejector(seed: int = 0, threshold: float = 0.5) -> Rejector:
    """Random weights of the fitted rejector's shapes (training.rejector.build_net)."""
    rng = np.random.default_rng(seed)

    def arr(scale: float, *shape: int) -> np.ndarray:
        return rng.normal(0, scale, shape).astype(np.float32)

    return Rejector(
        ((arr(0.3, 3, 3, 1, 16), arr(0.1, 16)), (arr(0.1, 3, 3, 16, 32), arr(0.1, 32))),
        ((arr(0.05, 5 * 5 * 32 + 10, 32), arr(0.1, 32)), (arr(0.3, 32, 1), arr(0.1, 1))),
        threshold,
    )


def _images(mnist, n: int = 300) -> np.ndarray:
    """Normalised digits, then blocks, noise and bars (what a rejector refuses)."""
    rng = np.random.default_rng(1)
    odd = rng.random((60, 28, 28, 1), dtype=np.float32) * (rng.random((60, 1, 1, 1)) > 0.5)
    odd[:20, 4:24, 4:24] = 1.0
    odd[20:30, :, 10:18] = 1.0
    return np.concatenate([pre_process(mnist.x_test[:n]), odd]).astype(np.float32)


def _no_numpy(*args, **kwargs):
    raise AssertionError("the numpy rejector ran")


@pytest.fixture(scope="module")
def versions(tiny_onnx, tmp_path_factory, mnist):
    """The tiny network with a rejector, loaded as a version without the scored graph (as
    logged before it) and as one with it; the threshold at the median score, so that both
    verdicts are common."""
    root = tmp_path_factory.mktemp("scored")
    plain = {ONNX_ARTIFACT: str(tiny_onnx)}
    probe = _rejector()
    numpy_model = loaded_digit_model(
        {**plain, REJECT_ARTIFACT: str(probe.save(root / "probe.npz"))}
    )
    batch = _images(mnist)
    rejector = probe.with_threshold(
        float(np.median(probe.scores(batch, numpy_model.probabilities(batch))))
    )
    artifacts = {**plain, REJECT_ARTIFACT: str(rejector.save(root / "rejector.npz"))}
    before = loaded_digit_model(artifacts)
    scored = write_scored_graph(tiny_onnx, rejector, root / "scored.onnx")
    after = loaded_digit_model({**artifacts, SCORED_ARTIFACT: str(scored)})
    return before, after, batch


def test_the_graph_scores_as_the_numpy_rejector(versions):
    before, after, batch = versions
    assert before._scored is None and after._scored is not None
    probs = after.probabilities(batch)
    np.testing.assert_array_equal(probs, before.probabilities(batch))
    got = after.not_digit_scores(batch, probs)
    want = before.not_digit_scores(batch, probs)
    assert np.abs(got - want).max() < 1e-5
    assert 0.1 < (want > before.rejector.threshold).mean() < 0.9
    assert ((got > after.rejector.threshold) == (want > before.rejector.threshold)).all()


def test_a_pass_makes_one_runtime_call_and_no_numpy_rejector_work(versions, monkeypatch):
    before, after, batch = versions
    want = before.judge(batch, before.probabilities(batch))
    monkeypatch.setattr(Rejector, "scores", _no_numpy)
    got = after.judge(batch, after.probabilities(batch))
    assert [type(j) for j in got] == [type(j) for j in want]
    refusals = [(i, str(j)) for i, j in enumerate(want) if isinstance(j, NoDigit)]
    assert [(i, str(j)) for i, j in enumerate(got) if isinstance(j, NoDigit)] == refusals
    assert [getattr(j, "digit", None) for j in got] == [getattr(j, "digit", None) for j in want]
    assert [j.not_digit_score for j in got] == pytest.approx(
        [j.not_digit_score for j in want], abs=1e-5
    )


def test_probabilities_from_elsewhere_are_scored_by_the_numpy_rejector(versions):
    before, after, batch = versions
    probs = after.probabilities(batch)
    other = probs.copy()  # the same numbers, not the array the pass returned
    np.testing.assert_array_equal(
        after.not_digit_scores(batch, other), before.not_digit_scores(batch, other)
    )
    # The pass's scores are taken once: asked again, the numpy rejector answers.
    after.not_digit_scores(batch, probs)
    np.testing.assert_array_equal(
        after.not_digit_scores(batch, probs), before.not_digit_scores(batch, probs)
    )


def test_threads_each_get_their_own_passs_scores(versions, monkeypatch):
    before, after, batch = versions
    want = before.not_digit_scores(batch, before.probabilities(batch))
    monkeypatch.setattr(Rejector, "scores", _no_numpy)
    got: dict[int, np.ndarray] = {}
    failed: list[BaseException] = []
    start = threading.Barrier(4)

    def run(i: int) -> None:
        rows = batch[i * 90 : (i + 1) * 90]
        start.wait()
        try:
            for _ in range(20):
                probs = after.probabilities(rows)
                got[i] = after.not_digit_scores(rows, probs)
        except BaseException as exc:  # reported below, in the test's thread
            failed.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failed
    np.testing.assert_allclose(np.concatenate([got[i] for i in range(4)]), want, atol=1e-5)


def test_predict_keeps_its_columns_and_verdicts(versions, mnist):
    import io

    from PIL import Image

    before, after, _ = versions

    def png(arr: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        return buf.getvalue()

    block = np.zeros((28, 28), np.uint8)
    block[4:24, 4:24] = 255
    frame = pd.DataFrame({"image": [png(d) for d in mnist.x_test[:40]] + [png(block)]})
    want, got = before.predict(None, frame), after.predict(None, frame)
    assert list(got.columns) == list(want.columns)
    for column in ("digit", "no_digit", "error", "error_message", "probabilities"):
        assert got[column].tolist() == want[column].tolist()
    np.testing.assert_allclose(got["not_digit_score"], want["not_digit_score"], atol=1e-5)


def test_without_convolutions_and_in_batches_of_one(tiny_onnx, mnist):
    import onnx
    import onnxruntime as ort

    w = np.random.default_rng(2).normal(0, 0.1, (28 * 28 + 10, 1)).astype(np.float32)
    ink = Rejector((), ((w, np.array([0.3], np.float32)),), 0.5)
    graph = scored_graph(onnx.load(str(tiny_onnx)), ink)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    batch = _images(mnist, 20)
    for row in batch[:, None]:
        probs, score = session.run(None, {name: row})
        assert score.shape == (1, 1)
        np.testing.assert_allclose(score[:, 0], ink.scores(row, probs), atol=1e-6)


def test_a_network_below_opset_11_is_refused(tiny_onnx):
    import onnx

    network = onnx.load(str(tiny_onnx))
    network.opset_import[0].version = 10
    with pytest.raises(ValueError, match="opset"):
        scored_graph(network, _rejector())


def test_a_swapped_rejector_is_scored_by_itself(versions, monkeypatch):
    """An evaluation may give a loaded model another rejector (training.rejection): the
    graph's scores are those of the rejector it was built with, so they are not used."""
    _, after, batch = versions
    graph_rejector = after.rejector
    try:
        after.rejector = _rejector(seed=5)
        probs = after.probabilities(batch)
        np.testing.assert_array_equal(
            after.not_digit_scores(batch, probs), after.rejector.scores(batch, probs)
        )
        # Another threshold, the same weights: the graph's scores still serve.
        after.rejector = graph_rejector.with_threshold(0.9)
        monkeypatch.setattr(Rejector, "scores", _no_numpy)
        after.not_digit_scores(batch, after.probabilities(batch))
    finally:
        after.rejector = graph_rejector


def test_logging_a_network_with_a_rejector_adds_the_graph(tiny_onnx, tmp_path):
    import shutil

    from pyfunc.model import DigitModel
    from pyfunc.sklearn_family import SklearnDigitModel
    from training.register import with_scored_graph

    onnx_path = shutil.copy(tiny_onnx, tmp_path / "net.onnx")
    artifacts = {
        ONNX_ARTIFACT: str(onnx_path),
        REJECT_ARTIFACT: str(_rejector().save(tmp_path / "r.npz")),
    }
    logged = with_scored_graph(DigitModel(), artifacts)
    assert logged[SCORED_ARTIFACT] == str(tmp_path / "net_scored.onnx")
    assert (tmp_path / "net_scored.onnx").is_file()
    assert with_scored_graph(DigitModel(), {ONNX_ARTIFACT: str(onnx_path)}) == {
        ONNX_ARTIFACT: str(onnx_path)
    }
    assert SCORED_ARTIFACT not in with_scored_graph(SklearnDigitModel(), artifacts)
