"""The opt-in Server-Timing header (serving/server_timing.py), the bench's constant route
(CEILING_ROUTE) and bench.stages' parsing of the header, on the in-process app."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.stages import Collected, load, parse_header, summarise
from serving import create_app
from serving.server_timing import HEADER

STAGES = ["route", "body", "log_stage", "decode", "segment", "model", "image_log", "metrics"]


def _client(registry, **settings):
    app = create_app({"mlflow_tracking_uri": registry.tracking_uri, "workers": 1, **settings})
    app.config.update(TESTING=True)
    return app.test_client()


def test_server_timing_lists_each_stage_when_on(registry, seed_png: bytes) -> None:
    client = _client(registry, server_timing=True)
    resp = client.post("/recognize", data=seed_png, content_type="image/png")
    assert resp.status_code == 200, resp.get_json()
    stages = parse_header(resp.headers[HEADER])
    for stage in [*STAGES, "feedback_token", "json", "hooks", "access_log", "app"]:
        assert stage in stages, (stage, resp.headers[HEADER])
        assert stages[stage] >= 0.0
    # The stages tile the app's time: they add up to the total.
    parts = sum(ms for name, ms in stages.items() if name != "app")
    assert parts == pytest.approx(stages["app"], rel=0.02, abs=0.01)
    cpu = parse_header(resp.headers[HEADER], "cpu")
    assert set(cpu) == set(stages)
    assert all(ms >= 0.0 for ms in cpu.values())
    assert sum(ms for name, ms in cpu.items() if name != "app") == pytest.approx(
        cpu["app"], rel=0.02, abs=0.01
    )


def test_server_timing_absent_by_default(client, seed_png: bytes) -> None:
    resp = client.post("/recognize", data=seed_png, content_type="image/png")
    assert resp.status_code == 200
    assert HEADER not in resp.headers


def test_errors_carry_the_header_too(registry) -> None:
    client = _client(registry, server_timing=True)
    resp = client.post("/recognize", data=b"not an image", content_type="image/png")
    assert resp.status_code in (400, 415)
    assert "app" in parse_header(resp.headers[HEADER])


def test_ceiling_route_answers_a_constant_only_when_on(registry, client, seed_png) -> None:
    assert client.post("/bench/ceiling", data=seed_png).status_code == 404
    on = _client(registry, ceiling_route=True)
    resp = on.post("/bench/ceiling", data=seed_png, content_type="image/png")
    assert resp.status_code == 200
    assert resp.get_json() == {"digit": 0, "constant": True}


def test_parse_header_adds_repeated_stages() -> None:
    assert parse_header("a;dur=1.5, b;dur=0.25, a;dur=0.5") == {"a": 2.0, "b": 0.25}
    assert parse_header("a;dur=1.5;cpu=0.5, b;dur=0.25", "cpu") == {"a": 0.5}
    assert parse_header("") == {}


def test_summarise_shares_and_outside_time() -> None:
    collected = Collected()
    collected.add({"route": 1.0, "model": 3.0, "app": 4.0}, 10.0, {"model": 2.0})
    collected.add({"route": 1.0, "model": 3.0, "app": 4.0}, 6.0, {"model": 1.0})
    rows = {row["stage"]: row for row in summarise(collected)}
    assert rows["model"]["share"] == pytest.approx(0.75)
    assert rows["route"]["mean_ms"] == pytest.approx(1.0)
    assert rows["model"]["cpu_mean_ms"] == pytest.approx(1.5)
    assert rows["route"]["cpu_mean_ms"] is None
    assert rows["outside the app"]["mean_ms"] == pytest.approx(4.0)
    assert list(rows)[:3] == ["route", "model", "app"]


class _Judge(BaseHTTPRequestHandler):
    """200 with the header for ``ok``, 422 for ``refuse``, 503 for ``fail``."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = {b"ok": 200, b"refuse": 422, b"fail": 503}[body]
        self.send_response(status)
        self.send_header(HEADER, "model;dur=1.0, app;dur=2.0")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


def test_load_counts_refusals_apart_from_errors() -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        got = load(httpd.server_address[1], "/", "image/png", [b"ok", b"refuse", b"fail"], 1, 0.5)
    finally:
        httpd.shutdown()
        httpd.server_close()
    ok = len(got.latencies_ms)
    assert ok > 5 and abs(got.refused - ok) <= 1 and abs(got.errors - ok) <= 1
    assert got.stages["model"] == [1.0] * ok  # only the 200s' stages
