"""Dynamic micro-batching: the forward passes of concurrent requests run as one batch.

Decoding (and the size limits) stays in the request threads, so a bad upload is refused
at once; normalisation and the network call are queued. One thread per worker takes
whatever is waiting, up to ``max_size`` images, waiting at most ``max_wait_us`` for more
once the first arrived (0: purely opportunistic — requests that queued up during the
previous pass share the next one). Normalisation runs once for the whole batch: its
already-MNIST check costs about as much for 32 images as for one, and was the largest
share of a worker's Python time under load. Each request waits on its own future, so
every caller gets its own rows, or its own error (an image without a digit fails only
its request).

That split (decoding here, normalisation in the pass) is the shared MNIST pre-processing's
(``shared_pre_process`` of pyfunc.contract). A family with its own pre-processing is
pre-processed by its own ``pre_process`` in the request thread, and only its network calls
are batched.

Opportunistic mode also skips the queue when there is nothing to share: a request that
finds no pass running and none queued runs its own pass in its own thread, as a batch of
one: handing it to the batcher thread and back cost ≈ 0.5 ms in process here.
Passes never overlap within a worker (one lock), so queued requests wait for the running
pass and then go together.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pyfunc.contract import DigitPyfunc, Prediction
from pyfunc.errors import ImageError
from pyfunc.preprocess import Decoded, Limits, decode_images, normalise_decoded, stack

log = logging.getLogger(__name__)


@dataclass
class _Job:
    # Decoded images to normalise in the pass, or (a family's own pre-processing) the batch.
    images: list[Decoded]
    batch: np.ndarray | None = None
    future: Future = field(default_factory=Future)

    @property
    def size(self) -> int:
        return len(self.images) if self.batch is None else len(self.batch)


class BatchingModel:
    """Same ``classify`` as the model's (pyfunc.contract), with the network calls batched."""

    def __init__(
        self,
        model: DigitPyfunc,
        max_size: int = 32,
        max_wait_us: int = 0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.model = model
        self.max_size = max_size
        self.max_wait = max_wait_us / 1e6
        self._on_batch = on_batch
        self._closed = False
        # Held while a forward pass runs, by the batcher thread or an inline caller.
        self._pass = threading.Lock()
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name="micro-batcher", daemon=True)
        self._thread.start()

    def classify(self, images: Sequence[Any], limits: Limits | None = None) -> list[Prediction]:
        limits = limits or self.model.limits
        if getattr(self.model, "shared_pre_process", False):
            job = _Job(decode_images(list(images), limits))
        else:  # the family's own pre-processing, whole, here
            job = _Job([], self.model.pre_process(images, limits))
        if self._closed:  # a straggler after a model swap: answer it directly
            batch = self._batch_of(job)
            return self.model.answer(batch, self.model.probabilities(batch))
        if self.max_wait == 0 and self._jobs.empty() and self._pass.acquire(blocking=False):
            try:
                batch = self._batch_of(job)
                probs = self.model.probabilities(batch)
            finally:
                self._pass.release()
            self._report(1)
            return self.model.answer(batch, probs)
        self._jobs.put(job)
        # The rejector's verdict (DigitModel.answer) is the caller's, outside the pass.
        return self.model.answer(*job.future.result())

    def close(self) -> None:
        """Stop after the queued work; later callers are answered without batching."""
        self._closed = True
        self._jobs.put(None)

    def _collect(self, first: _Job) -> list[_Job]:
        jobs, size = [first], first.size
        deadline = time.monotonic() + self.max_wait
        while size < self.max_size:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    job = self._jobs.get(timeout=remaining)
                except queue.Empty:
                    break
            if job is None:  # closing: finish this batch, then stop
                self._jobs.put(None)
                break
            jobs.append(job)
            size += job.size
        return jobs

    def _serve(self) -> None:
        while (first := self._jobs.get()) is not None:
            with self._pass:  # an inline pass may be running: those queued meanwhile join
                jobs = self._collect(first)
                try:
                    jobs, batch = self._normalise(jobs)
                    if not jobs:  # every image refused: nothing to run
                        continue
                    probs = self.model.probabilities(batch)
                except Exception as exc:  # the callers see it, the batcher lives on
                    for job in jobs:
                        if not job.future.done():
                            job.future.set_exception(exc)
                    continue
            start = 0
            for job in jobs:
                end = start + job.size
                job.future.set_result((batch[start:end], probs[start:end]))
                start = end
            self._report(len(jobs))

    @staticmethod
    def _batch_of(job: _Job) -> np.ndarray:
        return stack(normalise_decoded(job.images)) if job.batch is None else job.batch

    @staticmethod
    def _normalise(jobs: list[_Job]) -> tuple[list[_Job], np.ndarray]:
        """One normalisation for every queued image; a job with an image that has no digit
        gets its error now and leaves the batch. Jobs that came pre-processed are kept."""
        results = normalise_decoded([image for job in jobs for image in job.images])
        kept, batches, start = [], [], 0
        for job in jobs:
            if job.batch is not None:
                batches.append(job.batch)
                kept.append(job)
                continue
            mine = results[start : start + len(job.images)]
            start += len(job.images)
            try:
                batches.append(stack(mine))
            except ImageError as exc:
                job.future.set_exception(exc)
                continue
            kept.append(job)
        return kept, np.concatenate(batches) if batches else np.zeros((0, 28, 28, 1), np.float32)

    def _report(self, size: int) -> None:
        if self._on_batch is not None:
            self._on_batch(size)
