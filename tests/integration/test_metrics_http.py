"""Metrics and access logs of the real server: gunicorn, two workers, multiprocess metrics."""

from __future__ import annotations

import base64
import io
import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.support import access_lines, run_server, wait_for_every_worker

N_RECOGNIZE = 24
N_BAD = 3


@pytest.fixture(scope="module")
def server(registry, tmp_path_factory):
    """Own server (not the shared live_server) so the counts below are exactly ours."""
    log_dir = tmp_path_factory.mktemp("metrics-server")
    prom_dir = log_dir / "prometheus"
    prom_dir.mkdir()
    # A previous run's leftovers: the master must wipe them, or they would be summed in.
    (prom_dir / "counter_999999.db").write_bytes(b"\0" * 64)
    # Per-worker readiness is seen on gunicorn alone (tests.support.wait_for_every_worker).
    extra = {
        "WORKERS": "2",
        "THREADS": "2",
        "FRONT": "none",
        "PROMETHEUS_MULTIPROC_DIR": str(prom_dir),
    }
    with run_server(registry.env, extra, log_dir=log_dir) as running:
        yield running.url, running.log_path, prom_dir


def scrape(url: str, request_id: str) -> dict[tuple[str, tuple], float]:
    response = requests.get(f"{url}/metrics", headers={"X-Request-ID": request_id}, timeout=30)
    assert response.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def digits_counts(samples) -> dict[str, float]:
    return {
        dict(labels)["digit"]: v
        for (name, labels), v in samples.items()
        if name == "digits_predictions_total"
    }


def _png(digit) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(digit).save(buf, format="PNG")
    return buf.getvalue()


def test_counts_are_exact_across_workers_and_logs_are_json(server, mnist):
    url, log_path, prom_dir = server
    wait_for_every_worker(url, log_path, 2)
    assert not (prom_dir / "counter_999999.db").exists()
    images = [base64.b64encode(_png(d)).decode() for d in mnist.x_test[:N_RECOGNIZE]]

    def recognize(i: int) -> requests.Response:
        return requests.post(
            f"{url}/recognize",
            json={"image": images[i]},
            headers={"X-Request-ID": f"metrics-it-{i}"},
            timeout=60,
        )

    # Concurrent, so that both workers answer some.
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(recognize, range(N_RECOGNIZE)))
    assert all(r.status_code == 200 for r in answers)
    expected_digits = Counter(str(r.json()["digit"]) for r in answers)
    for i in range(N_BAD):
        bad = requests.post(
            f"{url}/recognize",
            data=b"{nope",
            headers={"Content-Type": "application/json", "X-Request-ID": f"metrics-bad-{i}"},
            timeout=30,
        )
        assert bad.status_code == 400

    # Scrape until two different workers have answered; every scrape must agree.
    scrapes: dict[str, dict] = {}
    scrape_pids: set[int] = set()
    for batch in range(15):
        ids = [f"scrape-{batch}-{k}" for k in range(4)]
        with ThreadPoolExecutor(4) as pool:
            scrapes.update(zip(ids, pool.map(lambda rid: scrape(url, rid), ids), strict=True))
        by_id = {line["request_id"]: line["pid"] for line in access_lines(log_path)}
        scrape_pids = {by_id[rid] for rid in scrapes if rid in by_id}
        if len(scrape_pids) >= 2:
            break
    assert len(scrape_pids) >= 2, "every scrape was answered by the same worker"

    for samples in scrapes.values():
        key = ("digits_http_requests_total", (("route", "/recognize"), ("status", "200")))
        assert samples[key] == N_RECOGNIZE
        key = ("digits_http_requests_total", (("route", "/recognize"), ("status", "400")))
        assert samples[key] == N_BAD
        key = ("digits_http_request_duration_seconds_count", (("route", "/recognize"),))
        assert samples[key] == N_RECOGNIZE + N_BAD
        assert samples[("digits_prediction_confidence_count", ())] == N_RECOGNIZE
        counts = {d: v for d, v in digits_counts(samples).items() if v}
        assert counts == expected_digits
        assert samples[("digits_model_info", (("name", "digits"), ("version", "1")))] == 1

    lines = access_lines(log_path)
    by_id = {line["request_id"]: line for line in lines}
    for i, answer in enumerate(answers):
        line = by_id[f"metrics-it-{i}"]
        assert line["status"] == 200
        assert line["route"] == "/recognize"
        assert line["digit"] == answer.json()["digit"]
        assert line["model_version"] == "1"
        assert line["latency_ms"] > 0
    assert by_id["metrics-bad-0"]["error"] == "malformed_json"
    assert len({line["pid"] for line in lines}) >= 2
    text = log_path.read_text()
    assert "iVBORw0KGgo" not in text  # base64 of the PNG signature
    assert not any(b64[:40] in text for b64 in images)
    assert "POST /recognize HTTP" not in text  # gunicorn's plain access log is off


def test_a_dead_workers_counts_stay_and_its_model_info_goes(server):
    url, log_path, prom_dir = server
    before = scrape(url, "before-kill")
    victim = next(ln["pid"] for ln in access_lines(log_path) if ln["request_id"] == "before-kill")
    os.kill(victim, signal.SIGKILL)
    # gunicorn's child_exit hook marks it dead (drops its live gauge file), then respawns.
    deadline = time.monotonic() + 30
    while (prom_dir / f"gauge_livemax_{victim}.db").exists():
        assert time.monotonic() < deadline, "the dead worker's live gauge file is still there"
        time.sleep(0.2)
    after = scrape(url, "after-kill")
    key = ("digits_http_requests_total", (("route", "/recognize"), ("status", "200")))
    assert after.get(key, 0) == before.get(key, 0)
    assert digits_counts(after) == digits_counts(before)
    assert after[("digits_model_info", (("name", "digits"), ("version", "1")))] == 1
