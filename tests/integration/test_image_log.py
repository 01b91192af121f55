"""The image log over real HTTP: gunicorn with several workers, both backends.

Concurrent load loses and duplicates nothing and stores every image byte for byte; a
server stopped mid-load has stored every request it answered; labels go back into
training through the export and a real `mlflow run`.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from mlflow import MlflowClient

from imagelog import ImageLog, open_image_log
from imagelog.base import sha256_hex
from serving.config import Settings
from tests.support import (
    TRAINING_TIMEOUT_S,
    Registry,
    Server,
    postgres_schema,
    run_checked,
    run_server,
)
from training.data import load_feedback
from training.export_feedback import export_configured
from training.variants import png_bytes

pytestmark = pytest.mark.integration

WORKERS = "3"
DISTINCT = 50  # fewer distinct images than requests: de-duplication is exercised


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def backend(request, tmp_path_factory) -> Iterator[dict[str, str]]:
    """Environment for servers (and the export) writing one fresh image log."""
    data_dir = tmp_path_factory.mktemp(f"image-log-{request.param}")
    if request.param == "sqlite":
        yield {"IMAGE_LOG_BACKEND": "sqlite", "DATA_DIR": str(data_dir)}
        return
    url = request.getfixturevalue("pg_url")
    with postgres_schema(url) as schema:
        yield {
            "IMAGE_LOG_BACKEND": "postgres",
            "DATABASE_URL": url,
            "DATABASE_SCHEMA": schema,
            "DATA_DIR": str(data_dir),
        }


def settings(backend: dict[str, str]) -> Settings:
    return Settings(**{k.lower(): v for k, v in backend.items()})


def reader(backend: dict[str, str]) -> ImageLog:
    return open_image_log(settings(backend))


@pytest.fixture(scope="module")
def pngs(mnist) -> list[tuple[bytes, int]]:
    return [(png_bytes(mnist.x_test[i]), int(mnist.y_test[i])) for i in range(DISTINCT)]


def server_env(registry: Registry, backend: dict[str, str]) -> dict[str, str]:
    # Hundreds of labels from one client, all exported: no feedback rate limit and no
    # review holds here (both are tested in tests/serving/).
    return {**registry.env, **backend, "FEEDBACK_RATE_LIMIT": "", "REVIEW_CONFIDENCE": "2"}


@pytest.fixture(scope="module")
def server(registry: Registry, backend, tmp_path_factory) -> Iterator[Server]:
    """One server per backend for the tests below (starting one takes a while); the last
    test of the module stops it with SIGTERM."""
    log_dir = tmp_path_factory.mktemp("image-log-server")
    with run_server(server_env(registry, backend), {"WORKERS": WORKERS}, log_dir) as server:
        yield server


def recognize(session: requests.Session, url: str, png: bytes) -> requests.Response:
    return session.post(
        f"{url}/recognize", data=png, headers={"Content-Type": "image/png"}, timeout=60
    )


def test_concurrent_load_stores_every_request_exactly_once(backend, server: Server, pngs):
    clients, per_client = 8, 200
    sent: dict[str, str] = {}  # request id → sha256 of the bytes sent
    failures: list[str] = []
    lock = threading.Lock()
    with reader(backend) as log:
        before = {r.request_id for r in log.records()}

    def client(c: int) -> None:
        with requests.Session() as session:
            for i in range(per_client):
                png = pngs[(c * per_client + i) % DISTINCT][0]
                response = recognize(session, server.url, png)
                with lock:
                    if response.status_code == 200:
                        sent[response.json()["record_id"]] = sha256_hex(png)
                    else:
                        failures.append(f"{response.status_code} {response.text[:200]}")

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started

    assert failures == []
    assert len(sent) == clients * per_client
    with reader(backend) as log:
        records = [r for r in log.records() if r.request_id not in before]
        assert log.count() == len(before) + clients * per_client
        assert {r.request_id: r.sha256 for r in records} == sent
        assert log.image_count() == DISTINCT
        for sha in set(sent.values()):
            assert sha256_hex(log.image(sha)) == sha
    print(
        f"\n{backend['IMAGE_LOG_BACKEND']}: {len(sent)} requests answered and stored in "
        f"{elapsed:.1f} s = {len(sent) / elapsed:.0f}/s ({WORKERS} workers, {clients} clients)",
        file=sys.stderr,
    )


def test_feedback_goes_back_into_training(
    registry: Registry, backend, server: Server, pngs, mnist_path: Path, tmp_path: Path
):
    labelled = pngs[:12]
    with requests.Session() as session:
        answers = [recognize(session, server.url, png).json() for png, _ in labelled]
        ids = [answer["record_id"] for answer in answers]
        for answer, (_, digit) in zip(answers, labelled, strict=True):
            wrong = (digit + 1) % 10
            for label in (wrong, digit):  # a correction replaces the first label
                response = session.post(
                    f"{server.url}/feedback",
                    json={
                        "record_id": answer["record_id"],
                        "feedback_token": answer["feedback_token"],
                        "label": label,
                    },
                    timeout=30,
                )
                assert response.status_code == 200, response.text
        forged = session.post(
            f"{server.url}/feedback",
            json={"record_id": ids[0], "feedback_token": "x" * 43, "label": 1},
            timeout=30,
        )
        assert forged.status_code == 403

    # The command itself is tested in tests/training; here, what it reads from this log.
    exported = export_configured(tmp_path / "feedback.npz", settings(backend))
    x, y = load_feedback(exported.path)
    assert x.shape == (len(labelled), 28, 28)
    assert y.tolist() == [digit for _, digit in labelled]
    with np.load(exported.path) as npz:
        assert npz["request_ids"].tolist() == ids

    # The run exports the log itself (no feedback_path), configured like the server. The
    # reference family and no rejector: what is tested is what goes in, not what comes out.
    run_checked(
        registry.mlflow_run(
            "train",
            family="keras_example",
            include_feedback="true",
            limit=2000,
            epochs=1,
            data_path=mnist_path,
            model_name=f"digits-feedback-{backend['IMAGE_LOG_BACKEND']}",
            augment="false",
            rejector="false",
        ),
        env=server_env(registry, backend),
        timeout=TRAINING_TIMEOUT_S,
    )
    client = MlflowClient(tracking_uri=registry.tracking_uri)
    experiment = client.get_experiment_by_name("digits")
    (run,) = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"params.model_name = 'digits-feedback-{backend['IMAGE_LOG_BACKEND']}'",
    )
    assert run.data.params["include_feedback"] == "true"
    assert run.data.params["feedback_images"] == str(len(labelled))
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert {tag.key: tag.value for tag in inputs["feedback"].tags}["mlflow.data.context"] == (
        "training"
    )
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "feedback")]
    assert artifacts == ["feedback/feedback.npz"]


def test_every_answer_survives_a_sigterm_mid_load(
    registry: Registry, backend, server: Server, pngs, tmp_path: Path
):
    answered: dict[str, int] = {}  # request id → the true digit of what was sent
    lock = threading.Lock()
    stop_sending = threading.Event()

    def client(c: int) -> None:
        with requests.Session() as session:
            i = c
            while not stop_sending.is_set():
                png, digit = pngs[i % DISTINCT]
                try:
                    response = recognize(session, server.url, png)
                except requests.RequestException:
                    return  # the server is gone
                i += 1
                if response.status_code == 200:
                    with lock:
                        body = response.json()
                        answered[body["record_id"]] = (body["feedback_token"], digit)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while len(answered) < 150 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(server.proc.pid, signal.SIGTERM)  # master and workers, as `kill` would
    server.proc.wait(timeout=60)
    stop_sending.set()
    for t in threads:
        t.join(timeout=60)

    assert len(answered) >= 150
    with reader(backend) as log:
        assert set(answered) <= {r.request_id for r in log.records()}
    with (
        run_server(server_env(registry, backend), {"WORKERS": WORKERS}, tmp_path) as again,
        requests.Session() as session,
    ):
        for record_id, (token, digit) in answered.items():
            response = session.post(
                f"{again.url}/feedback",
                json={"record_id": record_id, "feedback_token": token, "label": digit},
                timeout=30,
            )
            assert response.status_code == 200, response.text
