"""/metrics in-process (Flask test client, default registry); the multiprocess side is in
tests/integration/test_metrics_http.py."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving import metrics
from tests.support import PROJECT_ROOT, base_env


def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` from one GET /metrics."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for s in family.samples
    }


def value(samples, metric: str, /, **labels: str) -> float:
    return samples.get((metric, tuple(sorted(labels.items()))), 0.0)


def delta(before, after, metric: str, /, **labels: str) -> float:
    return value(after, metric, **labels) - value(before, metric, **labels)


def series(samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (sample, labels), v in samples.items() if sample == name}


def test_metrics_names_every_series(client):
    client.get("/health")  # request series exist once a request has been counted
    samples = scrape(client)
    names = {name for name, _ in samples}
    for expected in (
        "digits_http_requests_total",
        "digits_http_request_duration_seconds_bucket",
        "digits_predictions_total",
        "digits_prediction_confidence_bucket",
        "digits_model_info",
        "digits_batch_size_bucket",
        "digits_image_log_failures_total",
    ):
        assert expected in names, expected
    # Every digit is there from the start, even before it is ever predicted.
    digits = {dict(labels)["digit"] for labels in series(samples, "digits_predictions_total")}
    assert digits == {str(d) for d in range(10)}
    assert series(samples, "digits_model_info")[(("name", "digits"), ("version", "1"))] == 1


def test_recognize_counts_request_latency_prediction_and_confidence(client, seed_png: bytes):
    before = scrape(client)
    body = {"image": base64.b64encode(seed_png).decode()}
    for _ in range(3):
        assert client.post("/recognize", json=body).get_json()["digit"] == 9
    after = scrape(client)
    requests = "digits_http_requests_total"
    assert delta(before, after, requests, route="/recognize", status="200") == 3
    latency = "digits_http_request_duration_seconds"
    assert delta(before, after, f"{latency}_count", route="/recognize") == 3
    assert delta(before, after, f"{latency}_sum", route="/recognize") > 0
    assert delta(before, after, "digits_predictions_total", digit="9") == 3
    assert delta(before, after, "digits_predictions_total", digit="4") == 0
    assert delta(before, after, "digits_prediction_confidence_count") == 3
    # The seed nine is recognised with confidence above 0.5.
    assert delta(before, after, "digits_prediction_confidence_bucket", le="0.5") == 0


def test_errors_are_counted_by_rule_and_status_never_by_raw_path(client):
    before = scrape(client)
    assert client.get("/no/such/page-12345").status_code == 404
    bad = client.post("/recognize", data=b"{not json", content_type="application/json")
    assert bad.status_code == 400
    after = scrape(client)
    requests = "digits_http_requests_total"
    assert delta(before, after, requests, route=metrics.UNMATCHED_ROUTE, status="404") == 1
    assert delta(before, after, requests, route="/recognize", status="400") == 1
    assert not any("page-12345" in str(labels) for _, labels in after)


def test_model_swap_leaves_only_the_served_version_at_one(client):
    served = metrics._served
    try:
        metrics.set_model_info("digits", "41")
        metrics.set_model_info("digits", "42")
        info = series(scrape(client), "digits_model_info")
        assert info[(("name", "digits"), ("version", "41"))] == 0
        assert [labels for labels, v in info.items() if v] == [
            (("name", "digits"), ("version", "42"))
        ]
    finally:
        if served is not None:
            metrics.set_model_info(*served)


def test_batch_size_and_image_log_failures_helpers(client):
    before = scrape(client)
    metrics.observe_batch_size(3)
    metrics.count_image_log_failure()
    after = scrape(client)
    assert delta(before, after, "digits_batch_size_count") == 1
    assert delta(before, after, "digits_batch_size_bucket", le="4.0") == 1
    assert delta(before, after, "digits_batch_size_bucket", le="2.0") == 0
    assert delta(before, after, "digits_image_log_failures_total") == 1


def test_gunicorn_master_does_not_import_prometheus_client():
    # Multiprocess mode is fixed when prometheus_client is imported; the workers inherit the
    # master's modules, so the master must not import it before PROMETHEUS_MULTIPROC_DIR.
    code = "import sys, serving, serving.server; print('prometheus_client' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=base_env(),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    assert out.strip().splitlines()[-1] == "False"


def test_multiprocess_dir_is_created_or_wiped(tmp_path, monkeypatch: pytest.MonkeyPatch):
    # setenv first, so that monkeypatch restores "unset" whatever prepare_* exports.
    monkeypatch.setenv(metrics.MULTIPROC_ENV, "placeholder")
    monkeypatch.delenv(metrics.MULTIPROC_ENV)
    created, owned = metrics.prepare_multiprocess_dir()
    try:
        assert owned and created.is_dir()
        assert os.environ[metrics.MULTIPROC_ENV] == str(created)
    finally:
        metrics.remove_multiprocess_dir(created)
    assert not created.exists()

    given = tmp_path / "prom"
    given.mkdir()
    (given / "counter_12345.db").write_bytes(b"stale")
    (given / "keep.txt").write_text("not ours")
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(given))
    path, owned = metrics.prepare_multiprocess_dir()
    assert (path, owned) == (given, False)
    assert sorted(p.name for p in given.iterdir()) == ["keep.txt"]


def test_public_metrics_are_off_when_an_internal_listener_is_set(registry):
    from serving import create_app

    app = create_app({"mlflow_tracking_uri": registry.tracking_uri, "metrics_port": 9109})
    client = app.test_client()
    assert client.get("/metrics").status_code == 404
    assert client.get("/health").status_code == 200
