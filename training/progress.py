"""Training that says how long it takes: an estimate timed on this machine once the first
batches have run, then one line per epoch with the time left, then what comes next.

The estimate is the pace of a few early batches times the batches still to go. The first
batch is left out of the pace: it includes building TensorFlow's graph (seconds, once).
From the end of the first epoch on, the time left is the measured epochs' mean (validation
and augmentation included) times the epochs still to go.

:func:`callback` is Keras's own progress logger (a subclass, so ``fit`` adds no second
one): at a terminal the progress bar within each epoch stays, in a log there is one line per
epoch. Keras is imported when a callback is made, not with this module.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

# Batches timed for the estimate, after the first.
PACE_BATCHES = 20


def duration(seconds: float) -> str:
    """``seconds`` as people say it: "40 s", "2 min 30 s", "1 h 5 min"."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        minutes, rest = divmod(s, 60)
        return f"{minutes} min {rest} s" if rest and minutes < 10 else f"{round(s / 60)} min"
    hours, rest = divmod(round(s / 60), 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


def metrics_text(logs: dict[str, Any] | None) -> str:
    """Keras's epoch logs as ``accuracy 0.9512, val_accuracy 0.9801``: accuracy first."""
    items = sorted((logs or {}).items(), key=lambda kv: ("accuracy" not in kv[0], kv[0]))
    return ", ".join(f"{name} {float(value):.4f}" for name, value in items)


class Pace:
    """The clock arithmetic of :func:`callback`, apart from Keras (tested on its own)."""

    def __init__(self, epochs: int, steps: int, clock=time.perf_counter) -> None:
        self.epochs, self.steps, self.clock = epochs, steps, clock
        self.started = clock()
        self.epoch_started = self.started
        self.epoch_seconds: list[float] = []
        self._pace_from: float | None = None

    def batch_done(self, epoch: int, batch: int) -> tuple[float, float] | None:
        """Call after each training batch; returns (estimated seconds for the whole training,
        seconds a batch) once, when the first epoch's batches 2 .. PACE_BATCHES+1 are timed."""
        if epoch != 0:
            return None
        timed = min(PACE_BATCHES, self.steps - 1)
        if batch == 0:
            self._pace_from = self.clock()
        elif self._pace_from is not None and timed > 0 and batch == timed:
            now = self.clock()
            per_batch = (now - self._pace_from) / timed
            remaining = self.epochs * self.steps - (batch + 1)
            return (now - self.started) + per_batch * remaining, per_batch
        return None

    def epoch_begin(self) -> None:
        self.epoch_started = self.clock()

    def epoch_end(self) -> tuple[float, float]:
        """(this epoch's seconds, seconds left for the epochs still to go)."""
        took = self.clock() - self.epoch_started
        self.epoch_seconds.append(took)
        mean = sum(self.epoch_seconds) / len(self.epoch_seconds)
        return took, mean * (self.epochs - len(self.epoch_seconds))

    def elapsed(self) -> float:
        return self.clock() - self.started


def callback(name: str = "", out: TextIO | None = None) -> Any:
    """A Keras callback reporting ``name``'s training (e.g. "member1"; "" for the network),
    to ``out`` (default stdout)."""
    from keras.callbacks import ProgbarLogger

    class _Progress(ProgbarLogger):
        def __init__(self) -> None:
            super().__init__()
            self.pace: Pace | None = None
            self.estimate: float | None = None
            self.epoch = 0

        def _say(self, text: str) -> None:
            stream = out or sys.stdout
            print(f"{name}: {text}" if name else text, file=stream, flush=True)

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            self.pace = Pace(self.epochs, self.target or 0)

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            if self.pace is not None:
                self.pace.epoch_begin()
            if self.verbose == 1:  # the bar, at a terminal
                super().on_epoch_begin(epoch, logs)

        def on_train_batch_end(self, batch, logs=None):
            if self.verbose == 1:
                super().on_train_batch_end(batch, logs)
            if self.pace is None:
                return
            timed = self.pace.batch_done(self.epoch, batch)
            if timed is not None:
                self.estimate, per_batch = timed
                self._say(
                    f"training {self.epochs} epoch{'s' if self.epochs > 1 else ''} of "
                    f"{self.target} batches: about {duration(self.estimate)} on this machine "
                    f"(timed on its batches 2-{batch + 1}: {per_batch * 1000:.0f} ms a batch)"
                )

        def on_epoch_end(self, epoch, logs=None):
            if self.verbose == 1:
                super().on_epoch_end(epoch, logs)
            if self.pace is None:
                return
            took, left = self.pace.epoch_end()
            tail = f"about {duration(left)} left" if left > 0 else "done"
            self._say(
                f"epoch {epoch + 1}/{self.epochs} in {duration(took)} "
                f"({metrics_text(logs)}); {tail}"
            )

        def on_train_end(self, logs=None):
            if self.pace is None:
                return
            estimated = f" (estimated {duration(self.estimate)})" if self.estimate else ""
            self._say(f"trained in {duration(self.pace.elapsed())}{estimated}")

    return _Progress()
