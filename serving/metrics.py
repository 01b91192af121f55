"""Prometheus metrics at ``/metrics``, summed over every gunicorn worker.

Each worker is its own process, so in-memory counters would show one worker's share per
scrape. prometheus_client's multiprocess mode makes every worker write its values to files
in ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` sum the files. The library decides the mode
*when it is first imported*, and ``python -m serving`` imports this package in the gunicorn
master before :func:`prepare_multiprocess_dir` runs: hence no module-level
``import prometheus_client`` here, and the metric objects are built on first use.
Without the variable (Flask test client, one process) the default registry is used.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, g, request

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    from serving import registry

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# A request that matched no route (404, 405): one label value, not one per probed path.
UNMATCHED_ROUTE = "<unmatched>"
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class _Metrics:
    multiprocess: bool
    requests: Counter
    latency: Histogram
    predictions: Counter
    confidence: Histogram
    model_info: Gauge
    model_family: Gauge
    batch_size: Histogram
    image_log_failures: Counter
    drafts: Counter
    read_digits: Counter
    # digits_predictions' child of each digit, looked up once rather than on every answer.
    digit_counters: tuple[Any, ...]


_lock = threading.Lock()
_metrics: _Metrics | None = None
# The (name, version) and (name, version, family) this process last reported as served,
# to zero them on a swap.
_served: tuple[str, str] | None = None
_served_family: tuple[str, str, str] | None = None


def _build() -> _Metrics:
    from prometheus_client import Counter, Gauge, Histogram, values

    # What counts is how values are stored, not whether the variable is set now: set after
    # the import it would make /metrics read files nobody writes.
    multiprocess = values.ValueClass is not values.MutexValue
    if os.environ.get(MULTIPROC_ENV) and not multiprocess:
        log.warning(
            "%s is set but prometheus_client was imported before it was; "
            "/metrics reports this process only",
            MULTIPROC_ENV,
        )
    predictions = Counter(
        "digits_predictions", "Answers of /recognize by predicted digit", ["digit"]
    )
    # Every digit shows up from the start, at 0.
    digit_counters = tuple(predictions.labels(str(digit)) for digit in range(10))
    return _Metrics(
        multiprocess=multiprocess,
        requests=Counter(
            "digits_http_requests", "HTTP requests by route and status", ["route", "status"]
        ),
        latency=Histogram(
            "digits_http_request_duration_seconds",
            "Time from request start to response, by route",
            ["route"],
        ),
        predictions=predictions,
        confidence=Histogram(
            "digits_prediction_confidence",
            "Probability of the predicted digit",
            buckets=CONFIDENCE_BUCKETS,
        ),
        # Info metrics are not supported in multiprocess mode; a gauge at 1 is the idiom.
        # livemax: a version is 1 while some live worker serves it; dead workers drop out.
        model_info=Gauge(
            "digits_model_info",
            "The served model version (1 = served by at least one worker)",
            ["name", "version"],
            multiprocess_mode="livemax",
        ),
        # Its own gauge rather than a label on digits_model_info, whose series (and the
        # queries on them) stay as they were.
        model_family=Gauge(
            "digits_model_family_info",
            "The family of the served model version (1 = served by at least one worker)",
            ["name", "version", "family"],
            multiprocess_mode="livemax",
        ),
        batch_size=Histogram("digits_batch_size", "Images per model call", buckets=BATCH_BUCKETS),
        image_log_failures=Counter(
            "digits_image_log_failures", "Recognized images that could not be logged"
        ),
        # Live predictions of drawings in progress: apart from digits_predictions.
        drafts=Counter("digits_draft_predictions", "Answers of /recognize to draft=true"),
        # The digits of the numbers /read answers: apart from digits_predictions too, whose
        # rate is the rate of /recognize answers that dashboards and alerts read.
        read_digits=Counter(
            "digits_read_digits", "Digits of the numbers /read answered, by digit", ["digit"]
        ),
        digit_counters=digit_counters,
    )


def metrics() -> _Metrics:
    """This process's metric objects, created on first use."""
    global _metrics
    if _metrics is None:
        with _lock:
            if _metrics is None:
                _metrics = _build()
    return _metrics


def observe_prediction(digit: int, confidence: float) -> None:
    """One answer of ``/recognize``."""
    m = metrics()
    counters = m.digit_counters
    (counters[digit] if 0 <= digit < len(counters) else m.predictions.labels(str(digit))).inc()
    m.confidence.observe(confidence)


def observe_read_digit(digit: int) -> None:
    """One digit of a number ``/read`` answered."""
    metrics().read_digits.labels(str(digit)).inc()


def set_model_info(name: str, version: str, family: str | None = None) -> None:
    """Report the version (and its family) this worker serves now; call on every load or
    swap."""
    global _served, _served_family
    m = metrics()
    with _lock:
        if _served is not None and _served != (name, str(version)):
            # Zero rather than remove: in multiprocess mode the old value stays in the file.
            m.model_info.labels(*_served).set(0)
        _served = (name, str(version))
        m.model_info.labels(*_served).set(1)
        if family is None:
            return
        if _served_family is not None and _served_family != (*_served, family):
            m.model_family.labels(*_served_family).set(0)
        _served_family = (*_served, family)
        m.model_family.labels(*_served_family).set(1)


def observe_batch_size(n: int) -> None:
    metrics().batch_size.observe(n)


def count_draft() -> None:
    metrics().drafts.inc()


def count_image_log_failure() -> None:
    metrics().image_log_failures.inc()


def _registry() -> CollectorRegistry:
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

    if not metrics().multiprocess:
        return REGISTRY
    # A fresh registry per scrape: the collector reads every worker's files each time.
    collected = CollectorRegistry()
    multiprocess.MultiProcessCollector(collected)
    return collected


def route_label() -> str:
    """The matched URL rule (``/recognize``), never the raw path: bounded cardinality."""
    rule = request.url_rule
    return rule.rule if rule is not None else UNMATCHED_ROUTE


def model_swapped(loaded: registry.LoadedModel) -> None:
    """The model store's ``on_swap``: report the version this worker serves now."""
    set_model_info(loaded.ref.name, loaded.ref.version, loaded.family)


def init_app(app: Flask) -> None:
    metrics()  # create the series now rather than on the first request
    # (route, status) -> its request counter and latency histogram: labels() validates and
    # locks on every call; the pairs are as many as the routes times the statuses they gave.
    children: dict[tuple[str, int], tuple[Any, Any]] = {}

    @app.before_request
    def _start_timer() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _count(response: Response) -> Response:
        route = route_label()
        key = (route, response.status_code)
        pair = children.get(key)
        if pair is None:
            m = metrics()
            pair = children[key] = (m.requests.labels(route, str(key[1])), m.latency.labels(route))
        pair[0].inc()
        started = g.get("metrics_started")
        if started is not None:
            pair[1].observe(time.perf_counter() - started)
        return response

    settings = app.config.get("SETTINGS")
    if settings is not None and settings.metrics_port is not None:
        return  # served by the internal listener (serve_internally) only

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(_registry()), headers={"Content-Type": CONTENT_TYPE_LATEST})


# --- the gunicorn master (serving/server.py) -------------------------------------------


def prepare_multiprocess_dir() -> tuple[Path, bool]:
    """Give the workers a clean ``PROMETHEUS_MULTIPROC_DIR`` before they fork.

    Uses the directory the environment names, emptied of old values (counts from a previous
    run would otherwise be added in), or a new temporary one. Returns it and whether it is
    ours to delete on exit.
    """
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
        return path, False
    path = Path(tempfile.mkdtemp(prefix="digits-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    return path, True


def serve_internally(host: str, port: int):
    """``/metrics`` (any path, in fact) on ``host:port``, summed over every worker's files:
    a listener for the scraper on an internal address, run by the gunicorn master in a
    thread (prometheus_client's own server, as its multiprocess docs show). Returns the
    server, to shut down on exit.

    Called after :func:`prepare_multiprocess_dir` has set the variable, so the import here
    sees it. The forked workers inherit the listening socket but never accept on it."""
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    collected = CollectorRegistry()
    multiprocess.MultiProcessCollector(collected)
    server, _thread = start_http_server(port, addr=host, registry=collected)
    log.info("metrics on http://%s:%d/metrics", host, port)
    return server


def mark_worker_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (``digits_model_info``); its counters stay summed."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)


def remove_multiprocess_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
