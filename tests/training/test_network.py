"""The CNNs (the Keras example, the batch-normalised one) and their training options: label
smoothing, a moving average of the weights, ensembles."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import onnxruntime as ort
import pytest

from training import families
from training.network import BUILDERS, SmoothedSparseCrossentropy, build_cnn, build_cnn_bn, ensemble
from training.register import export_onnx
from training.train import parse_args

pytestmark = pytest.mark.integration  # TensorFlow: builds, trains and exports networks

PROBS = np.array([[0.7, 0.1, 0.05, 0.05, 0.02, 0.02, 0.02, 0.02, 0.01, 0.01]] * 2, np.float32)
PROBS[1] = PROBS[1][::-1]
LABELS = np.array([0, 3])


def by_hand(smoothing: float) -> float:
    """Mean cross-entropy against (1 - s) * one-hot + s / 10, as Szegedy et al. define it."""
    targets = np.full(PROBS.shape, smoothing / 10)
    targets[np.arange(len(LABELS)), LABELS] += 1 - smoothing
    return float(np.mean(-(targets * np.log(PROBS)).sum(axis=1)))


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_smoothed_loss_is_cross_entropy_against_smoothed_targets(smoothing: float) -> None:
    loss = SmoothedSparseCrossentropy(smoothing)(LABELS, PROBS)
    assert float(loss) == pytest.approx(by_hand(smoothing), rel=1e-5)


def test_unsmoothed_equals_keras_sparse_loss() -> None:
    ours = SmoothedSparseCrossentropy(0.0)(LABELS[:, None], PROBS)
    keras_own = keras.losses.SparseCategoricalCrossentropy()(LABELS, PROBS)
    assert float(ours) == pytest.approx(float(keras_own), rel=1e-5)


def test_a_smoothed_model_saves_and_loads_with_its_loss(tmp_path: Path) -> None:
    path = tmp_path / "cnn.keras"
    build_cnn(label_smoothing=0.2).save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.loss, SmoothedSparseCrossentropy)
    assert loaded.loss.label_smoothing == 0.2


def test_default_model_trains_on_the_plain_sparse_loss() -> None:
    assert build_cnn().loss == "sparse_categorical_crossentropy"


def test_ema_ends_fit_with_the_averaged_weights() -> None:
    """With the moving average on, the weights after fit are the average, not the last
    step's; without it they are the last step's."""
    rng = np.random.default_rng(0)
    x = rng.random((64, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 64)

    def last_step_and_final(ema_momentum: float) -> tuple[np.ndarray, np.ndarray]:
        model = build_cnn(ema_momentum=ema_momentum)
        seen: list[np.ndarray] = []
        record = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: seen.append(model.layers[-1].kernel.numpy())
        )
        model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[record])
        return seen[-1], model.layers[-1].kernel.numpy()

    last, final = last_step_and_final(0.0)
    assert np.array_equal(last, final)
    last, final = last_step_and_final(0.9)
    assert not np.allclose(last, final)


def test_an_ensemble_averages_its_members_probabilities(tmp_path: Path) -> None:
    members = [build_cnn(name=f"mnist_cnn_{i}") for i in range(3)]
    model = ensemble(members)
    x = np.random.default_rng(1).random((6, 28, 28, 1), dtype=np.float32)
    expected = np.mean([m.predict(x, verbose=0) for m in members], axis=0)
    assert not np.allclose(expected, members[0].predict(x, verbose=0))  # they do differ
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-6)
    # What the pyfunc serves: the ONNX export and the saved Keras file, one graph each.
    session = ort.InferenceSession(str(export_onnx(model, tmp_path / "x3.onnx")))
    served = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(served, expected, atol=1e-5)
    model.save(tmp_path / "x3.keras")
    reloaded = keras.models.load_model(tmp_path / "x3.keras", compile=False)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), expected, atol=1e-6)


def test_an_ensemble_of_one_is_that_network() -> None:
    network = build_cnn()
    assert ensemble([network]) is network


@pytest.mark.parametrize("members", ["0", "-1", "two"])
def test_members_must_be_a_whole_number_of_at_least_one(members: str) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--members", members])


def test_every_keras_family_has_a_network() -> None:
    keras_families = {
        name for name, f in families.FAMILIES.items() if f.module == "training.families.keras"
    }
    assert keras_families == set(BUILDERS)


def test_the_batch_normalised_cnn_is_small_and_normalised() -> None:
    model = build_cnn_bn()
    assert 250_000 < model.count_params() < 400_000  # the issue's ~0.3 M
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 7  # one per convolution
    assert model.output_shape == (None, 10)


def test_the_served_onnx_export_of_the_bn_cnn_uses_its_moving_statistics(tmp_path: Path) -> None:
    """After training, inference uses the moving mean and variance, not the batch's: the
    ONNX export (what serves) must agree with Keras' inference on single images too."""
    rng = np.random.default_rng(2)
    x = rng.random((256, 28, 28, 1), dtype=np.float32)
    model = build_cnn_bn(learning_rate=1e-2)
    model.fit(x, rng.integers(0, 10, 256), batch_size=32, epochs=2, verbose=0)
    session = ort.InferenceSession(str(export_onnx(model, tmp_path / "bn.onnx")))
    name = session.get_inputs()[0].name
    expected = model.predict(x[:8], verbose=0)
    np.testing.assert_allclose(session.run(None, {name: x[:8]})[0], expected, atol=1e-4)
    one = session.run(None, {name: x[:1]})[0]  # a batch of one, as a single request sends
    np.testing.assert_allclose(one, expected[:1], atol=1e-4)


def test_the_bn_cnn_reads_digits_in_inference_mode_after_a_short_run(mnist) -> None:
    """Inference uses the moving statistics: they must have caught up after one short epoch
    (with Keras' default momentum 0.99 they had not, and the network read ~11 %)."""
    from pyfunc.preprocess import pre_process

    x, y = pre_process(mnist.x_train[:4000]), mnist.y_train[:4000]
    keras.utils.set_random_seed(3)
    model = build_cnn_bn()
    model.fit(x[:3500], y[:3500], batch_size=64, epochs=1, verbose=0)
    inference = np.mean(model.predict(x[3500:], verbose=0).argmax(axis=1) == y[3500:])
    assert inference > 0.85, inference
