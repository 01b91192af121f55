"""The load generator against a real HTTP server: one body, or a different body per request."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from bench import loadgen

pytestmark = [
    pytest.mark.integration,  # runs wrk
    pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed"),
]


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the servers under test
    received: ClassVar[list[bytes]]  # each test's server gets its own (see the fixture)
    lock: ClassVar[threading.Lock]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            self.received.append(body)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # wrk drops its connections when its time is up


@pytest.fixture
def server() -> Iterator[tuple[str, list[bytes]]]:
    received: list[bytes] = []
    handler = type("Handler", (_Recorder,), {"received": received, "lock": threading.Lock()})
    httpd = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", received
    httpd.shutdown()
    httpd.server_close()


def test_one_body_is_sent_every_time(server, tmp_path: Path):
    url, received = server
    body = tmp_path / "one.body"
    body.write_bytes(b"\x89PNG same image")
    result = loadgen.run("wrk", url, "image/png", body, 2, 1, tmp_path)
    assert result.responses > 10 and result.errors == 0
    assert set(received) == {b"\x89PNG same image"}
    assert result.next_body is None  # one body: no place in a sequence


def test_bundled_bodies_are_sent_in_turn_without_repeats_from_the_start_given(
    server, tmp_path: Path
):
    url, received = server
    bodies = [f"image {i:06d} ".encode() * (1 + i % 7) for i in range(200_000)]
    bundle = loadgen.write_bodies(tmp_path / "many.body", bodies)
    first = loadgen.run("wrk", url, "image/png", bundle, 4, 1, tmp_path)
    sent_first = list(received)
    assert 10 < first.responses < len(bodies)  # a second's worth: no wrap-around
    assert len(set(sent_first)) == len(sent_first)  # no body twice
    # From the first on, and none at or past where the next run is to start, however the
    # two wrk threads shared the requests (one may run far ahead on a loaded machine).
    assert first.next_body is not None and first.next_body >= len(sent_first)
    assert set(sent_first) <= set(bodies[: first.next_body])

    start = first.next_body  # as bench.run does between runs
    received.clear()
    second = loadgen.run("wrk", url, "image/png", bundle, 4, 1, tmp_path, start)
    assert received and not set(received) & set(sent_first)
    assert min(bodies.index(b) for b in set(received)) >= start
    assert second.next_body is not None and second.next_body >= start + len(received)
    assert max(bodies.index(b) for b in set(received)) < second.next_body


def test_hey_refuses_bundled_bodies(tmp_path: Path):
    bundle = loadgen.write_bodies(tmp_path / "many.body", [b"a", b"b"])
    with pytest.raises(ValueError, match="needs wrk"):
        loadgen.run("hey", "http://127.0.0.1:9/", "image/png", bundle, 1, 1, tmp_path)


class _Judge(BaseHTTPRequestHandler):
    """Answers by the body: ``ok`` 200, ``refuse`` 422 (as this service refuses a training
    digit it does not take for a digit), ``fail`` 503, ``drop`` no answer at all."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed ACK
    statuses: ClassVar[dict[bytes, int]] = {b"ok": 200, b"refuse": 422, b"fail": 503}

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if body == b"drop":
            self.close_connection = True  # closed without a status line: wrk's read error
            return
        self.send_response(self.statuses[body])
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def judge() -> Iterator[str]:
    httpd = _Server(("127.0.0.1", 0), _Judge)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def test_refusals_are_answers_and_only_5xx_and_transport_failures_are_errors(
    judge: str, tmp_path: Path
):
    # 6 bodies in turn: 3 answered 200, 1 refused (422), 1 failed (503), 1 dropped.
    bundle = loadgen.write_bodies(
        tmp_path / "mix.body", [b"ok", b"refuse", b"ok", b"fail", b"ok", b"drop"]
    )
    result = loadgen.run("wrk", judge, "image/png", bundle, 1, 1, tmp_path)
    ok = result.responses - result.non_2xx
    assert ok > 30 and result.refused > 10 and result.server_errors > 10
    assert result.transport_errors > 5
    # Each in its share of the cycle (± one cycle at the end of the run).
    assert abs(result.refused - ok / 3) <= 2 and abs(result.server_errors - ok / 3) <= 2
    # wrk's own count of status >= 400 is the two together.
    assert result.non_2xx == result.refused + result.server_errors
    assert result.errors == result.server_errors + result.transport_errors
    assert result.answered == ok + result.refused
    assert result.rps == pytest.approx(result.answered / result.duration_s)
    saved = result.as_dict()
    assert saved["errors"] == result.errors and saved["refused"] == result.refused
    assert result.error_detail["4xx"] == result.refused
    assert result.error_detail["5xx"] == result.server_errors


def test_a_server_that_refuses_everything_has_no_errors(judge: str, tmp_path: Path):
    body = tmp_path / "refuse.body"
    body.write_bytes(b"refuse")
    result = loadgen.run("wrk", judge, "image/png", body, 2, 1, tmp_path)
    assert result.refused == result.responses > 10
    assert result.errors == 0 and result.server_errors == 0
