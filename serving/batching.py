"""Dynamic micro-batching: the forward passes of concurrent requests run as one batch.

Decoding (and the size limits) stays in the request threads, so a bad upload is refused
at once; normalisation and the network call are queued. Whoever runs a pass takes whatever
is waiting, up to ``max_size`` images, waiting at most ``max_wait_us`` for more once it
started collecting, when other requests are about (0: purely opportunistic — requests that
queued up during the previous pass share the next one). Normalisation runs once for the
whole batch: its already-MNIST check costs about as much for 32 images as for one, and was
the largest share of a worker's Python time under load. Every caller gets its own rows, or
its own error (an image without a digit fails only its request).

That split (decoding here, normalisation in the pass) is the shared MNIST pre-processing's
(``shared_pre_process`` of pyfunc.contract). A family with its own pre-processing is
pre-processed by its own ``pre_process`` in the request thread, and only its network calls
are batched.

There is no batcher thread: the passes run in the request threads themselves (a
"combining" queue). A request queues its job; if no pass is running it runs one itself,
with whatever is queued; otherwise it waits, and the thread that ends a pass wakes the
waiters, one of which runs the next pass for all that queued meanwhile. Passes never
overlap within a worker. A separate batcher thread cost every queued request two thread
hand-offs (to the batcher, and back), and under load nearly every request was queued while
batches held one or two images (c=32 with the tiny model, 2026-11-30: 1.17 images per
pass): the batcher thread woke once per request, the hand-offs were most of what batching
cost there. Now a lone request runs its own pass without any hand-off, and a queued one
costs one wake-up (its answer is ready, or it is its turn to run the pass).

That wake-up is a plain lock of the job's own, held from the moment it queues and released
once, after the pass and outside the batcher's lock. Waiting on a ``threading.Condition``
built on the batcher's lock (as before 2026-12-01) cost every waiter a Python-level waiter
lock, and a woken waiter then had to take the batcher's lock back while the runner still
held it, waking the rest one by one: 22 % of a worker's GIL-holding samples were in that
``notify`` under load. The rejector's verdicts (``judge``) are the pass's too: one call for
the batch (its convolutions, its BLAS limit) instead of one per caller.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pyfunc.contract import DigitPyfunc, Prediction, settle
from pyfunc.errors import ImageError, NoDigit
from pyfunc.preprocess import Decoded, Limits, decode_images, normalise_decoded, stack

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Job:
    # Decoded images to normalise in the pass, or (a family's own pre-processing) the batch.
    images: list[Decoded]
    batch: np.ndarray | None = None
    # Set by the pass that took it: its verdicts (DigitPyfunc.judge), or its error.
    judged: list[Prediction | NoDigit] | None = None
    error: BaseException | None = None
    done: bool = False
    # Held while its caller waits (queued behind a running pass); released once, by the
    # thread that ends a pass: when its answer is ready, or when it is its turn to run one.
    gate: Any = None
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = len(self.images) if self.batch is None else len(self.batch)


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
        # Guards the queue and the runner's role below; never held during a pass or a wake-up.
        self._lock = threading.Lock()
        self._pending: deque[_Job] = deque()
        self._pending_size = 0  # images in _pending
        # A pass is running (or collecting, or handed to a waiter that has not woken yet).
        # While it is False the queue is empty.
        self._running = False
        # The runner waiting for more jobs (max_wait_us > 0): arrivals wake it.
        self._arrived = threading.Condition(self._lock)
        self._collecting = False
        # The last pass was shared: other requests are about, so waiting for them pays.
        self._shared = False

    def classify(self, images: Sequence[Any], limits: Limits | None = None) -> list[Prediction]:
        limits = limits or self.model.limits
        if getattr(self.model, "shared_pre_process", False):
            job = _Job(decode_images(list(images), limits))
        else:  # the family's own pre-processing, whole, here
            job = _Job([], self.model.pre_process(images, limits))
        if self._closed:  # a straggler after a model swap: answer it directly
            batch = self._batch_of(job)
            return self.model.answer(batch, self.model.probabilities(batch))
        with self._lock:
            self._pending.append(job)
            self._pending_size += job.size
            if self._collecting:
                self._arrived.notify()
            if self._running:
                gate = job.gate = threading.Lock()
                gate.acquire()
            else:
                self._running = True
                gate = None
        if gate is not None:
            gate.acquire()  # its answer, or the runner's role
        if not job.done:
            # The runner's role: this job heads the queue, so the pass takes it.
            self._run_pass()
        if job.error is not None:
            raise job.error
        assert job.judged is not None
        return settle(job.judged)

    def close(self) -> None:
        """Later callers are answered without batching; those queued are still answered."""
        self._closed = True

    def _run_pass(self) -> None:
        """One pass over what is queued, by the holder of the runner's role (lock not held).
        Afterwards the role goes to the oldest job still queued, or is given up, and the
        pass's callers are woken."""
        with self._lock:
            jobs = self._take()
        try:
            self._answer(jobs)
        finally:
            for job in jobs:
                if job.judged is None and job.error is None:  # the pass was interrupted
                    job.error = RuntimeError("the forward pass did not finish")
                job.done = True
            with self._lock:
                head = self._pending[0] if self._pending else None
                self._running = head is not None
            if head is not None:  # the next pass first: it has callers waiting on it
                head.gate.release()
            for job in jobs:
                if job.gate is not None:
                    job.gate.release()

    def _take(self) -> list[_Job]:
        """The queued jobs of the next pass, first in first (lock held). It waits for more
        (``max_wait_us``) only when others are about: more than this job queued, or the last
        pass shared. A lone request (c=1) never waits."""
        if self.max_wait > 0 and (self._shared or len(self._pending) > 1):
            deadline = time.monotonic() + self.max_wait
            self._collecting = True
            try:
                while self._pending_size < self.max_size:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._arrived.wait(remaining)
            finally:
                self._collecting = False
        jobs: list[_Job] = []
        size = 0
        while self._pending and (not jobs or size < self.max_size):
            job = self._pending.popleft()
            self._pending_size -= job.size
            jobs.append(job)
            size += job.size
        self._shared = len(jobs) > 1
        return jobs

    def _answer(self, jobs: list[_Job]) -> None:
        """Runs the pass of ``jobs`` (lock not held): each gets its verdicts or its error."""
        try:
            kept, batch = self._normalise(jobs)
            if not kept:  # every image refused: nothing to run
                return
            probs = self.model.probabilities(batch)
            # The rejector's verdicts for the whole batch at once: row by row the same.
            judged = self.model.judge(batch, probs)
        except Exception as exc:  # every caller of this pass sees it
            for job in jobs:
                if job.error is None:
                    job.error = exc
            return
        start = 0
        for job in kept:
            end = start + job.size
            job.judged = judged[start:end]
            start = end
        self._report(len(kept))

    @staticmethod
    def _batch_of(job: _Job) -> np.ndarray:
        return stack(normalise_decoded(job.images)) if job.batch is None else job.batch

    @staticmethod
    def _normalise(jobs: list[_Job]) -> tuple[list[_Job], np.ndarray]:
        """One normalisation for every queued image; a job with an image that has no digit
        gets its error now and leaves the batch. Jobs that came pre-processed are kept."""
        if len(jobs) == 1 and jobs[0].batch is not None:
            return jobs, jobs[0].batch
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
                job.error = exc
                continue
            kept.append(job)
        return kept, np.concatenate(batches) if batches else np.zeros((0, 28, 28, 1), np.float32)

    def _report(self, size: int) -> None:
        if self._on_batch is not None:
            self._on_batch(size)
