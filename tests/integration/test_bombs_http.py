"""Decoder bombs over real HTTP: 16 sent at once are all refused (413), and a normal client
sending digits meanwhile gets every answer."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from bench import bombs
from tests import tiny_model
from tests.support import PROJECT_ROOT, Registry, start_server

ROUNDS = 3  # each of the 16 bomb clients sends this many, one after the other
SEVEN = (PROJECT_ROOT / "examples" / "seven.png").read_bytes()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_onnx):
    """`python -m serving` (its production default) with the in-process tests' tiny model,
    seconds to make: these tests are about decoding, not the model."""
    reg = Registry.create(tmp_path_factory.mktemp("bombs-registry"))
    tiny_model.register(reg.tracking_uri, tiny_onnx)
    with start_server(reg.env, {}, log_dir=tmp_path_factory.mktemp("bombs-logs")) as url:
        yield url


@pytest.fixture(scope="module")
def bomb_bodies() -> list[tuple[str, bytes]]:
    return [
        ("image/jpeg", bombs.jpeg_scan_bomb(1000)),  # 10000×4000, 1,000 scans
        ("image/webp", bombs.webp_canvas_bomb()),  # 1×1 frames on a 10000×4000 canvas
        ("image/png", bombs.png_canvas()),  # 10000×4000 RGBA
        ("image/bmp", bombs.bmp_rle_rows()),  # RLE rows padded by a Python loop
    ]


def test_sixteen_bombs_at_once_are_refused_and_normal_clients_get_answers(server, bomb_bodies):
    done = threading.Event()
    normal: list[tuple[int, object]] = []

    def normal_client() -> None:
        # Keeps asking while the bombs fly, and once more after (at least twice in all).
        while not done.is_set() or len(normal) < 2:
            response = requests.post(
                f"{server}/recognize",
                data=SEVEN,
                headers={"Content-Type": "image/png"},
                timeout=30,
            )
            normal.append((response.status_code, response.json().get("digit")))

    def bomb_client(i: int) -> list[tuple[int, str]]:
        content_type, body = bomb_bodies[i % len(bomb_bodies)]
        answers = []
        for _ in range(ROUNDS):
            response = requests.post(
                f"{server}/recognize",
                data=body,
                headers={"Content-Type": content_type},
                timeout=30,
            )
            answers.append((response.status_code, response.json()["error"]["code"]))
        return answers

    prober = threading.Thread(target=normal_client)
    prober.start()
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = [a for batch in pool.map(bomb_client, range(16)) for a in batch]
    done.set()
    prober.join(timeout=60)

    assert not prober.is_alive()
    assert answers == [(413, "image_too_large")] * (16 * ROUNDS)
    assert len(normal) >= 2 and all(status == 200 for status, _ in normal), normal
