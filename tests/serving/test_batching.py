"""Micro-batching: concurrent callers share forward passes, each gets its own answer."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from pyfunc.errors import NoDigit
from serving import registry as model_registry
from serving.batching import BatchingModel
from serving.config import Settings
from tests import tiny_model
from tests.support import in_threads
from training.variants import png_bytes


@pytest.fixture(scope="module")
def digit_model(registry):
    settings = Settings(mlflow_tracking_uri=registry.tracking_uri, batching=False)
    return model_registry.load(model_registry.ModelRef("digits", "1"), settings).model


def test_every_caller_gets_its_own_answer(digit_model, mnist):
    images = [png_bytes(mnist.x_test[i]) for i in range(48)]
    expected = [digit_model.classify([img])[0] for img in images]
    sizes: list[int] = []
    batcher = BatchingModel(digit_model, max_size=64, max_wait_us=5000, on_batch=sizes.append)
    batcher._shared = True  # as under load: the first pass waits for company too
    try:
        answers = in_threads(len(images), lambda i: batcher.classify([images[i]])[0])
    finally:
        batcher.close()
    for got, want in zip(answers, expected, strict=True):
        assert got.digit == want.digit
        assert np.allclose(got.probabilities, want.probabilities, atol=1e-5)
    assert sum(sizes) == len(images)  # every request went through exactly one batch
    assert max(sizes) > 1, sizes  # and some of them really were shared


def test_batch_size_is_capped(digit_model, mnist):
    images = [png_bytes(mnist.x_test[i]) for i in range(20)]
    sizes: list[int] = []
    batcher = BatchingModel(digit_model, max_size=4, max_wait_us=20_000, on_batch=sizes.append)
    batcher._shared = True  # as under load: the first pass waits for company too
    try:
        in_threads(len(images), lambda i: batcher.classify([images[i]]))
    finally:
        batcher.close()
    assert sum(sizes) == 20 and max(sizes) <= 4


def test_bad_image_fails_only_its_own_request(digit_model, mnist):
    from pyfunc.errors import ImageError

    batcher = BatchingModel(digit_model, max_size=8)
    try:
        with pytest.raises(ImageError):
            batcher.classify([b"not an image"])
        assert batcher.classify([png_bytes(mnist.x_test[0])])[0].digit == 7
    finally:
        batcher.close()


def test_after_close_callers_are_still_answered(digit_model, mnist):
    batcher = BatchingModel(digit_model)
    batcher.close()
    assert batcher.classify([png_bytes(mnist.x_test[1])])[0].digit == 2


def test_a_lone_request_runs_in_its_own_thread(digit_model, mnist):
    # Opportunistic mode: nothing running, nothing queued -> no hand-off to the batcher.
    ran_in: list[str] = []
    forward = digit_model.probabilities

    class Spy:
        limits = digit_model.limits
        answer = digit_model.answer
        judge = digit_model.judge
        shared_pre_process = True

        def probabilities(self, batch):
            ran_in.append(threading.current_thread().name)
            return forward(batch)

    sizes: list[int] = []
    batcher = BatchingModel(Spy(), max_wait_us=0, on_batch=sizes.append)
    try:
        answer = batcher.classify([png_bytes(mnist.x_test[0])])[0]
    finally:
        batcher.close()
    assert answer.digit == 7
    assert ran_in == [threading.current_thread().name] and sizes == [1]


def test_a_lone_request_does_not_wait_for_company(digit_model, mnist):
    # max_wait_us pays when others are about; a lone caller (c=1) is answered at once.
    sizes: list[int] = []
    batcher = BatchingModel(digit_model, max_wait_us=2_000_000, on_batch=sizes.append)
    try:
        for i in range(3):
            start = time.monotonic()
            batcher.classify([png_bytes(mnist.x_test[i])])
            assert time.monotonic() - start < 1.0
    finally:
        batcher.close()
    assert sizes == [1, 1, 1]


def test_requests_arriving_during_a_pass_share_the_next(digit_model, mnist):
    images = [png_bytes(mnist.x_test[i]) for i in range(32)]
    expected: list = [digit_model.classify([img])[0].digit for img in images]
    # A blank image among them: normalised with the batch, it fails only its own request.
    images[7], expected[7] = png_bytes(np.zeros((28, 28), np.uint8)), "NoDigit"
    sizes: list[int] = []
    forward = digit_model.probabilities
    first_pass_started, release_first = threading.Event(), threading.Event()
    ran_in: list[str] = []

    judged: list[int] = []

    class SlowFirstPass:
        limits = digit_model.limits
        answer = digit_model.answer
        shared_pre_process = True

        def judge(self, batch, probs):
            judged.append(len(batch))
            return digit_model.judge(batch, probs)

        def probabilities(self, batch):
            ran_in.append(threading.current_thread().name)
            if not first_pass_started.is_set():
                first_pass_started.set()
                release_first.wait(10)  # everyone else arrives while this pass runs
            return forward(batch)

    batcher = BatchingModel(SlowFirstPass(), max_size=64, max_wait_us=0, on_batch=sizes.append)
    answers: list = [None] * len(images)
    callers: set[str] = set()

    def ask(i: int) -> None:
        callers.add(threading.current_thread().name)
        try:
            answers[i] = batcher.classify([images[i]])[0].digit
        except NoDigit:
            answers[i] = "NoDigit"

    try:
        lone = threading.Thread(target=ask, args=(0,))
        lone.start()
        assert first_pass_started.wait(10)
        others = [threading.Thread(target=ask, args=(i,)) for i in range(1, len(images))]
        for t in others:
            t.start()
        deadline = time.monotonic() + 10
        while len(batcher._pending) < len(others) and time.monotonic() < deadline:
            time.sleep(0.001)
        assert len(batcher._pending) == len(others)  # all queued behind the running pass
        release_first.set()
        for t in [lone, *others]:
            t.join(timeout=60)
    finally:
        batcher.close()
    assert answers == expected
    assert sizes == [1, len(images) - 2]  # the lone pass, then all the rest in one
    assert judged == sizes  # the rejector's verdicts once per pass, not once per caller
    # Both passes ran in callers' threads: no hand-off to a batcher thread and back.
    assert set(ran_in) <= callers and len(ran_in) == 2, ran_in


def test_a_family_with_its_own_pre_processing_is_batched_on_its_own_input(mnist):
    # 14×14 pooled digits: the shared MNIST split (decode here, normalise in the pass) would
    # feed it 28×28; its own pre_process runs in each caller's thread instead.
    model = tiny_model.fit_pooled(mnist.x_train, mnist.y_train)
    images = [png_bytes(mnist.x_test[i]) for i in range(24)]
    images[5] = png_bytes(np.zeros((28, 28), np.uint8))  # no digit: only its caller fails
    expected: list = [None] * len(images)
    for i, image in enumerate(images):
        try:
            expected[i] = model.classify([image])[0]
        except NoDigit:
            expected[i] = "NoDigit"
    sizes: list[int] = []
    batcher = BatchingModel(model, max_size=64, max_wait_us=20_000, on_batch=sizes.append)
    batcher._shared = True  # as under load: the first pass waits for company too

    def ask(i: int):
        try:
            return batcher.classify([images[i]])[0]
        except NoDigit:
            return "NoDigit"

    try:
        answers = in_threads(len(images), ask)
    finally:
        batcher.close()
    assert answers[5] == "NoDigit"
    for got, want in zip(answers, expected, strict=True):
        if want != "NoDigit":
            assert got.digit == want.digit
            assert np.allclose(got.probabilities, want.probabilities, atol=1e-6)
    assert sum(sizes) == len(images) - 1 and max(sizes) > 1, sizes
