"""Training progress: the estimate from the first batches' pace, one line per epoch with the
time left, and the same through a real Keras fit (integration: it needs TensorFlow)."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest

from training.progress import PACE_BATCHES, Pace, callback, duration, metrics_text


class Clock:
    """Seconds set by the test: the arithmetic is checked, not this machine's speed."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (41.4, "41 s"), (150, "2 min 30 s"), (600, "10 min"), (3900, "1 h 5 min")],
)
def test_durations_read_as_people_say_them(seconds: float, text: str):
    assert duration(seconds) == text


def test_metrics_put_accuracy_first():
    text = metrics_text({"loss": 0.5, "val_accuracy": 0.98, "accuracy": 0.95})
    assert text == "accuracy 0.9500, val_accuracy 0.9800, loss 0.5000"


def test_the_estimate_is_the_early_pace_times_the_batches_to_go():
    clock = Clock()
    pace = Pace(epochs=2, steps=100, clock=clock)
    clock.now = 5.0  # the first batch: graph building, left out of the pace
    assert pace.batch_done(0, 0) is None
    for batch in range(1, PACE_BATCHES + 1):
        clock.now += 0.5
        result = pace.batch_done(0, batch)
        if batch < PACE_BATCHES:
            assert result is None
    assert result is not None
    estimate, per_batch = result
    assert per_batch == pytest.approx(0.5)
    # 15 s spent, then 200 - 21 batches at 0.5 s.
    assert estimate == pytest.approx(15.0 + 179 * 0.5)
    # Once only, and only in the first epoch.
    assert pace.batch_done(0, PACE_BATCHES + 1) is None
    assert pace.batch_done(1, PACE_BATCHES) is None


def test_time_left_is_the_mean_epoch_times_the_epochs_to_go():
    clock = Clock()
    pace = Pace(epochs=3, steps=10, clock=clock)
    pace.epoch_begin()
    clock.now = 80.0
    assert pace.epoch_end() == (80.0, 160.0)
    pace.epoch_begin()
    clock.now = 180.0
    assert pace.epoch_end() == (100.0, 90.0)
    pace.epoch_begin()
    clock.now = 270.0
    assert pace.epoch_end() == (90.0, 0.0)


def test_a_one_batch_epoch_gives_no_estimate_and_no_error():
    pace = Pace(epochs=1, steps=1, clock=Clock())
    assert pace.batch_done(0, 0) is None


@pytest.mark.integration
def test_a_keras_fit_prints_the_estimate_and_one_line_per_epoch(capsys):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    x = np.random.default_rng(0).random((64 * 30, 4), dtype=np.float32)
    y = (x[:, 0] > 0.5).astype("int64")
    out = io.StringIO()
    history = model.fit(
        x,
        y,
        batch_size=64,
        epochs=3,
        validation_split=0.1,
        callbacks=[callback(out=out)],
        verbose=2,
    )
    lines = out.getvalue().splitlines()
    assert re.fullmatch(
        r"training 3 epochs of 27 batches: about \d+ s on this machine "
        rf"\(timed on its batches 2-{PACE_BATCHES + 1}: \d+ ms a batch\)",
        lines[0],
    ), lines
    for epoch, line in enumerate(lines[1:4], start=1):
        assert line.startswith(f"epoch {epoch}/3 in "), lines
        assert "accuracy" in line and "val_accuracy" in line
    assert lines[1].endswith(" left") and lines[3].endswith("; done")
    assert lines[4].startswith("trained in ") and "(estimated " in lines[4]
    assert len(lines) == 5
    assert len(history.history["loss"]) == 3
    # It stands in for Keras's own logger: no second line per epoch from Keras.
    assert "step" not in capsys.readouterr().out
