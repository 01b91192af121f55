"""Micro-batching in the real server: different digits at once, each answer its own."""

from __future__ import annotations

import re
import threading

import numpy as np
import requests

from tests.support import start_server
from training.variants import png_bytes

N = 32


def _post(url: str, image: bytes) -> dict:
    response = requests.post(
        f"{url}/recognize", data=image, headers={"Content-Type": "image/png"}, timeout=60
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_concurrent_different_digits_each_get_their_own_answer(
    registry, live_server, mnist, tmp_path
):
    images = [png_bytes(mnist.x_test[i]) for i in range(N)]
    # Reference answers, one at a time, from the session's (unbatched) server.
    expected = [_post(live_server, image) for image in images]
    extra = {"BATCHING": "true", "BATCH_MAX_WAIT_US": "2000", "THREADS": "16", "WORKERS": "1"}
    with start_server(registry.env, extra, log_dir=tmp_path) as url:
        answers: list = [None] * N
        barrier = threading.Barrier(N)

        def run(i: int) -> None:
            barrier.wait()
            answers[i] = _post(url, images[i])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(N)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        metrics = requests.get(f"{url}/metrics", timeout=10).text
    for got, want in zip(answers, expected, strict=True):
        assert got["digit"] == want["digit"]
        assert np.allclose(got["probabilities"], want["probabilities"], atol=1e-5)
    count = float(re.search(r"^digits_batch_size_count (\S+)$", metrics, re.M).group(1))
    total = float(re.search(r"^digits_batch_size_sum (\S+)$", metrics, re.M).group(1))
    assert total == N  # every request went through the batcher exactly once ...
    assert count < N  # ... and they shared model calls
