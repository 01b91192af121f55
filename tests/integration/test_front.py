"""The front of the production default: nginx before gunicorn (serving/front.py), started,
stopped and cleaned up by `python -m serving`, holding slow and idle clients off gunicorn."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
import requests
from mlflow import MlflowClient

from bench.hostile import (
    Outcome,
    Target,
    idle_sockets,
    slow_bodies,
    slow_connections,
    slow_heads,
)
from serving.front import (
    Front,
    FrontConfig,
    find_nginx,
    loaded_generation,
    private_directory,
    render,
)
from serving.headers import HEADERS
from tests import tiny_model
from tests.support import (
    PROJECT_ROOT,
    Registry,
    access_lines,
    add_version,
    free_port,
    run_server,
    stop,
)

SEVEN = (PROJECT_ROOT / "examples" / "seven.png").read_bytes()
MAX_BODY = 1024 * 1024


@pytest.fixture(scope="module")
def tiny_registry(tmp_path_factory: pytest.TempPathFactory, tiny_onnx) -> Registry:
    """The in-process tests' tiny model (seconds to make): these tests are about the HTTP
    front, not the model."""
    reg = Registry.create(tmp_path_factory.mktemp("front-registry"))
    tiny_model.register(reg.tracking_uri, tiny_onnx)
    return reg


@pytest.fixture(scope="module")
def served(tiny_registry: Registry, tmp_path_factory: pytest.TempPathFactory):
    with run_server(
        tiny_registry.env,
        {"MAX_BODY_BYTES": str(MAX_BODY)},
        log_dir=tmp_path_factory.mktemp("front-logs"),
    ) as server:
        yield server


def _recognize(url: str, timeout: float = 5.0, **headers: str) -> requests.Response:
    return requests.post(
        f"{url}/recognize",
        data=SEVEN,
        headers={"Content-Type": "image/png", **headers},
        timeout=timeout,
    )


def _nginx_master(server_pid: int) -> psutil.Process:
    for child in psutil.Process(server_pid).children():
        if child.name() == "nginx":
            return child
    raise AssertionError("no nginx child of the server")


def test_slow_and_idle_clients_do_not_starve_the_service(served):
    """256 slowloris heads, 256 slow uploads and 64 idle reconnecting sockets at once (with
    gunicorn alone, 16 of either were a full outage): a normal client is still answered at
    once."""
    port = int(served.url.rsplit(":", 1)[1])
    outcome, stop = Outcome(), threading.Event()
    groups = [slow_heads(256), slow_bodies(256), idle_sockets(64)]
    attack = threading.Thread(
        target=slow_connections,
        args=(Target("127.0.0.1", port), stop, outcome, groups),
        kwargs={"ramp": 1.0},
    )
    attack.start()
    try:
        time.sleep(1.5)  # all connected, the slow ones past their first bytes
        latencies = []
        for _ in range(20):
            started = time.monotonic()
            response = _recognize(served.url)
            latencies.append(time.monotonic() - started)
            assert response.status_code == 200, response.text
        assert max(latencies) < 1.0, latencies
    finally:
        stop.set()
        attack.join(timeout=15)
    # The attack was real: its connections were open, none was answered as a request.
    assert outcome.counts["open"] >= 500, outcome.counts
    assert not any(what.startswith(("2", "5")) for what in outcome.counts), outcome.counts


def test_the_front_answers_its_own_refusals_in_json(served):
    over = requests.post(
        f"{served.url}/recognize",
        data=b"\x89PNG" + bytes(MAX_BODY),
        headers={"Content-Type": "image/png"},
        timeout=10,
    )
    chunked = requests.post(
        f"{served.url}/recognize",
        data=iter([bytes(64 * 1024)] * 20),  # a generator: sent chunked, 1.25 MiB
        headers={"Content-Type": "image/png"},
        timeout=10,
    )
    long_uri = requests.get(f"{served.url}/{'a' * 9000}", timeout=10)
    long_header = requests.get(f"{served.url}/health", headers={"X-Big": "a" * 9000}, timeout=10)
    for response, status, code in [
        (over, 413, "request_entity_too_large"),
        (chunked, 413, "request_entity_too_large"),
        (long_uri, 414, "request_uri_too_large"),
        (long_header, 400, "request_header_fields_too_large"),
    ]:
        assert response.status_code == status, response.text
        _assert_front_json(response, code)


def _assert_front_json(response: requests.Response, code: str) -> None:
    """nginx's own answer: the service's JSON error and its security headers."""
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == code
    assert "nginx" not in response.text
    for name, value in HEADERS.items():
        assert response.headers.get(name) == value, name


def test_the_front_answers_a_missing_or_silent_service_in_json(tmp_path):
    # No gunicorn behind the socket: 502. One that takes the request and never answers:
    # 504 after the upstream timeout (1 s here).
    nginx = find_nginx()
    assert nginx
    silent_path = tmp_path / "silent.sock"
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(str(silent_path))
    silent.listen(16)
    try:
        for upstream, status, code in [
            (f"unix:{tmp_path / 'nobody.sock'}", 502, "upstream_unavailable"),
            (f"unix:{silent_path}", 504, "upstream_timeout"),
        ]:
            port = free_port()
            config = FrontConfig("127.0.0.1", port, (upstream,), MAX_BODY, 1, private_directory())
            front = Front(config, nginx)
            front.start()
            try:
                response = _recognize(f"http://127.0.0.1:{port}", timeout=10)
            finally:
                front.stop()
            assert response.status_code == status, response.text
            _assert_front_json(response, code)
    finally:
        silent.close()


def test_a_reload_returns_once_the_new_config_is_in_effect(tmp_path):
    """SIGHUP returns before nginx runs the new config; reload() waits for the workers that
    answer the new generation on the private control socket, so a replica left out is left
    out for the very next request."""
    nginx = find_nginx()
    assert nginx
    upstreams = (f"unix:{tmp_path / 'a.sock'}", f"unix:{tmp_path / 'b.sock'}")
    config = FrontConfig("127.0.0.1", free_port(), upstreams, MAX_BODY, 1, private_directory())
    front = Front(config, nginx)
    front.start()
    try:
        assert config.control_socket is not None
        assert loaded_generation(config.control_socket) == 0
        for down in ({upstreams[1]}, set(), {upstreams[0]}):
            assert front.reload(replace(front.config, down=frozenset(down)))
            assert loaded_generation(config.control_socket) == front.config.generation
        assert front.config.generation == 3
        assert f"server {upstreams[0]} max_fails=1 fail_timeout=5s down;" in render(front.config)
    finally:
        front.stop()


def test_a_directory_too_deep_for_the_control_socket_still_starts_and_reloads(tmp_path):
    """A unix socket's path has 107 bytes at most: deeper, nginx would refuse the whole config
    (seen under pytest's long temporary paths), so the front goes without its control socket
    and a reload waits for the old workers' exit alone."""
    nginx = find_nginx()
    assert nginx
    deep = tmp_path / ("d" * (120 - len(str(tmp_path))))
    deep.mkdir()
    upstreams = (f"unix:{tmp_path / 'a.sock'}", f"unix:{tmp_path / 'b.sock'}")
    config = FrontConfig("127.0.0.1", free_port(), upstreams, MAX_BODY, 1, deep)
    assert config.control_socket is None
    front = Front(config, nginx)
    front.start()
    try:
        assert front.reload(replace(front.config, down=frozenset({upstreams[1]})))
    finally:
        front.stop()


def test_trace_is_refused_with_the_routes_allow_header(served):
    # nginx refuses TRACE itself; RFC 9110 (and schemathesis) want the route's Allow header.
    for path, allow in [("/recognize", "OPTIONS, POST"), ("/ready?x=1", "GET, HEAD, OPTIONS")]:
        response = requests.request("TRACE", f"{served.url}{path}", timeout=10)
        assert response.status_code == 405
        assert response.headers["Allow"] == allow
        assert response.json()["error"]["code"] == "method_not_allowed"


def test_the_access_log_has_the_clients_address_and_believes_no_forged_one(served):
    request_id = f"front-{uuid.uuid4().hex[:12]}"
    response = _recognize(
        served.url, **{"X-Request-ID": request_id, "X-Forwarded-For": "203.0.113.9"}
    )
    assert response.status_code == 200
    deadline = time.monotonic() + 5
    while not (
        lines := [x for x in access_lines(served.log_path) if x["request_id"] == request_id]
    ):
        assert time.monotonic() < deadline, "no access-log line for the request"
        time.sleep(0.1)
    assert lines[0]["remote_addr"] == "127.0.0.1"


def test_metrics_come_through_the_front(served):
    response = requests.get(f"{served.url}/metrics", timeout=10)
    assert response.status_code == 200
    assert "digits_http_requests_total" in response.text


def test_stopping_the_service_stops_nginx_and_removes_its_files(tiny_registry, tmp_path):
    with run_server(tiny_registry.env, {}, log_dir=tmp_path) as server:
        nginx = _nginx_master(server.proc.pid)
        directory = Path(nginx.cmdline()[nginx.cmdline().index("-p") + 1])
        assert directory.is_dir()
        # Private: only this user may enter the directory holding gunicorn's socket.
        assert directory.parent.stat().st_mode & 0o077 == 0
    psutil.wait_procs([nginx], timeout=10)
    assert not nginx.is_running()
    assert not directory.parent.exists()  # the whole runtime directory is gone


def test_nginx_goes_with_a_master_killed_outright(tiny_registry, tmp_path):
    with run_server(tiny_registry.env, {}, log_dir=tmp_path) as server:
        nginx = _nginx_master(server.proc.pid)
        os.kill(server.proc.pid, signal.SIGKILL)
        gone, _ = psutil.wait_procs([nginx], timeout=10)
        assert gone, "nginx outlived its master"


def test_the_generated_config_is_valid_nginx(tmp_path):
    nginx = find_nginx()
    assert nginx, "nginx is installed by make setup and .ci/run"
    config = FrontConfig(
        "127.0.0.1", 8000, ("unix:/tmp/a.sock", "unix:/tmp/b.sock"), MAX_BODY, 65, tmp_path
    )
    (tmp_path / "nginx.conf").write_text(render(config))
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    text = render(config)
    assert f"client_max_body_size {MAX_BODY};" in text
    assert "max_fails=1" in text and "proxy_next_upstream error http_502 http_503" in text


def test_the_balancer_leaves_out_a_replica_whose_ready_fails(tmp_path, tiny_onnx):
    """make stack's balancer (python -m serving.front) over two real replicas, one of them
    not ready (its model version does not exist yet): the replica is left out, so it sees no
    request, until its /ready answers 200 and it gets its share again."""
    reg = Registry.create(tmp_path / "registry")
    tiny_model.register(reg.tracking_uri, tiny_onnx)
    procs: list[subprocess.Popen] = []
    logs = {name: tmp_path / f"{name}.log" for name in ("ready", "later", "front")}
    sockets = {name: tmp_path / f"{name}.sock" for name in ("ready", "later")}
    try:
        for name, model_uri in [("ready", "models:/digits/1"), ("later", "models:/digits/2")]:
            env = {
                **reg.env,
                "FRONT": "none",
                "UNIX_SOCKET": str(sockets[name]),
                "WORKERS": "1",
                "MODEL_URI": model_uri,
                "MODEL_POLL_INTERVAL": "1",
                "DATA_DIR": str(tmp_path / f"data-{name}"),
            }
            with open(logs[name], "wb") as log:
                procs.append(
                    subprocess.Popen([sys.executable, "-m", "serving"], env=env, cwd=PROJECT_ROOT,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                )  # fmt: skip
        port = free_port()
        with open(logs["front"], "wb") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "serving.front", "--port", str(port),
                     "--upstream", f"unix:{sockets['ready']}",
                     "--upstream", f"unix:{sockets['later']}", "--ready-interval", "0.5"],
                    env=reg.env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )  # fmt: skip
        url = f"http://127.0.0.1:{port}"

        def front_said(text: str) -> None:
            deadline = time.monotonic() + 180
            while text not in logs["front"].read_text():
                assert all(p.poll() is None for p in procs), logs["front"].read_text()
                assert time.monotonic() < deadline, logs["front"].read_text()[-3000:]
                time.sleep(0.2)

        def recognized_by(name: str, ids: list[str]) -> int:
            return sum(1 for x in access_lines(logs[name]) if x.get("request_id") in ids)

        front_said(f"left out (/ready not 200): unix:{sockets['later']}")
        ids = [f"lb-{uuid.uuid4().hex[:12]}" for _ in range(10)]
        for request_id in ids:
            assert _recognize(url, timeout=30, **{"X-Request-ID": request_id}).status_code == 200
        time.sleep(0.5)  # access lines are written after the answer
        assert recognized_by("ready", ids) == 10
        assert recognized_by("later", ids) == 0

        v1 = MlflowClient(reg.tracking_uri, reg.tracking_uri).get_model_version("digits", "1")
        assert add_version(reg.tracking_uri, v1.source, v1.run_id) == "2"  # what "later" awaits
        front_said("left out (/ready not 200): none")
        ids = [f"lb-{uuid.uuid4().hex[:12]}" for _ in range(10)]
        for request_id in ids:
            assert _recognize(url, timeout=30, **{"X-Request-ID": request_id}).status_code == 200
        time.sleep(0.5)
        assert recognized_by("later", ids) >= 3, "round robin again"
    finally:
        for proc in reversed(procs):
            stop(proc)
