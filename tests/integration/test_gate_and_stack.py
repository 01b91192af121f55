"""Gated promotion through the real `mlflow run . -e promote`, and the scaled stack: an
MLflow tracking server on PostgreSQL with proxied artifacts and two serving replicas behind
nginx, reached only through it."""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
import warnings

import mlflow
import psutil
import pytest
import requests
from mlflow import MlflowClient

from deploy.create_database import drop_database
from tests.support import (
    PROJECT_ROOT,
    TRAINING_TIMEOUT_S,
    Registry,
    access_lines,
    add_version,
    base_env,
    free_port,
    run_checked,
    run_group,
    set_production,
    stop,
)


def _stage(uri: str, version: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return (
            MlflowClient(tracking_uri=uri, registry_uri=uri)
            .get_model_version("digits", version)
            .current_stage
        )


def test_gate_refuses_a_worse_candidate_and_accepts_a_better_one(
    tmp_path, model_dir, small_mnist_path
):
    reg = Registry.create(tmp_path / "reg")
    # A tenth of MNIST: the models are far apart, and the gate's statistics are tested in
    # tests/training/test_promote_gate.py; here it is the `mlflow run` path.
    gate = {"data_path": small_mnist_path, "wild_limit": 20}
    # v1: a weak model, trained for real on 300 images; the first promotion has no champion.
    # The reference family, named: what follows was written and timed with it, whatever
    # the default family is. No rejector: the gate scores digits, whatever a version's
    # rejector says (training.evidence), and fitting one took 66 of this training's 87 s.
    run_checked(
        reg.mlflow_run(
            "train",
            family="keras_example",
            limit=300,
            epochs=1,
            augment="false",
            rejector="false",
            data_path=small_mnist_path,
        ),
        env=reg.env,
        timeout=TRAINING_TIMEOUT_S,
    )
    run_checked(reg.mlflow_run("promote", **gate), env=reg.env, timeout=TRAINING_TIMEOUT_S)
    assert _stage(reg.tracking_uri, "1") == "Production"
    # v2: the session's better model: accepted, v1 archived (not deleted).
    better = add_version(reg.tracking_uri, str(model_dir))
    run_checked(
        reg.mlflow_run("promote", version=better, **gate), env=reg.env, timeout=TRAINING_TIMEOUT_S
    )
    assert _stage(reg.tracking_uri, better) == "Production"
    assert _stage(reg.tracking_uri, "1") == "Archived"
    client = MlflowClient(tracking_uri=reg.tracking_uri, registry_uri=reg.tracking_uri)
    promoted = client.get_model_version("digits", better)
    assert promoted.tags["gate.decision"] == "promoted"
    assert float(promoted.tags["gate.candidate_score"]) > float(
        promoted.tags["gate.champion_score"]
    )
    assert "Promotion gate" in promoted.description and "mnist_test" in promoted.description
    # v3: a copy of the weak v1: refused, Production unchanged.
    mlflow.set_tracking_uri(reg.tracking_uri)
    mlflow.set_registry_uri(reg.tracking_uri)
    weak_dir = mlflow.artifacts.download_artifacts("models:/digits/1", dst_path=str(tmp_path / "w"))
    worse = add_version(reg.tracking_uri, weak_dir)
    refused = run_group(
        reg.mlflow_run("promote", version=worse, **gate), env=reg.env, timeout=TRAINING_TIMEOUT_S
    )
    assert refused.returncode != 0
    assert "not promoted" in refused.stderr
    assert _stage(reg.tracking_uri, better) == "Production"
    assert client.get_model_version("digits", worse).tags["gate.decision"] == "refused"
    # Rolling back to v1 is the same command, forced.
    run_checked(
        reg.mlflow_run("promote", version="1", force="true"),
        env=reg.env,
        timeout=TRAINING_TIMEOUT_S,
    )
    assert _stage(reg.tracking_uri, "1") == "Production"
    assert _stage(reg.tracking_uri, better) == "Archived"
    assert str(client.get_model_version_by_alias("digits", "production").version) == "1"


def _tcp_listening(root_pid: int) -> set[int]:
    ports = set()
    root = psutil.Process(root_pid)
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    ports.add(conn.laddr.port)
    return ports


@pytest.fixture
def postgres_url():
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/mlflow_test_{uuid.uuid4().hex[:10]}"
    yield url
    drop_database(url)


def test_stack_on_postgres_two_replicas_follow_a_promotion(tmp_path, mnist_path, postgres_url):
    mlflow_port, balancer = free_port(), free_port()
    env = base_env(
        STACK_DB_URL=postgres_url,
        STACK_ARTIFACTS=str(tmp_path / "artifacts"),
        STACK_MLFLOW_PORT=str(mlflow_port),
        STACK_PORT=str(balancer),
        # The stack's own first training, as small as it serves: no prepared copies, no
        # rejector (what is tested is where it is logged and who serves it).
        STACK_TRAIN_ARGS=(
            "-P family=keras_example -P limit=3000 -P epochs=1 -P augment=false"
            f" -P rejector=false -P data_path={mnist_path}"
        ),
        MODEL_POLL_INTERVAL="1",
        WORKERS="1",
        DATA_DIR=str(tmp_path / "data"),
    )
    log_path = tmp_path / "stack.log"
    with open(log_path, "wb") as log:
        stack = subprocess.Popen(
            ["bash", "deploy/stack.sh"],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{balancer}"

    def versions() -> set[str | None]:
        """The versions answering /ready through the balancer: round robin over two
        replicas, so six asks reach both."""
        found = set()
        for _ in range(6):
            try:
                body = requests.get(f"{url}/ready", timeout=5).json()
                found.add((body.get("model") or {}).get("version"))
            except (requests.RequestException, ValueError):
                found.add(None)
        return found

    try:
        deadline = time.monotonic() + TRAINING_TIMEOUT_S
        while versions() != {"1"}:
            assert stack.poll() is None, log_path.read_text()[-5000:]
            assert time.monotonic() < deadline, log_path.read_text()[-5000:]
            time.sleep(1)
        # The balancer spreads requests over both replicas (one worker each: two pids).
        ids = [f"spread-{uuid.uuid4().hex[:12]}" for _ in range(8)]
        for request_id in ids:
            response = requests.post(
                f"{url}/recognize",
                data=(PROJECT_ROOT / "examples" / "seven.png").read_bytes(),
                headers={"Content-Type": "image/png", "X-Request-ID": request_id},
                timeout=30,
            )
            assert response.status_code == 200, response.text
        served = {line["pid"] for line in access_lines(log_path) if line["request_id"] in ids}
        assert len(served) == 2, served
        # The replicas are reached only through it: the stack listens on TCP on the
        # balancer's and the tracking server's ports, nowhere else.
        assert _tcp_listening(stack.pid) == {balancer, mlflow_port}

        registry = f"http://127.0.0.1:{mlflow_port}"
        client = MlflowClient(tracking_uri=registry, registry_uri=registry)
        v1 = client.get_model_version("digits", "1")
        assert v1.source  # trained by `mlflow run` against the server, artifacts proxied
        v2 = client.create_model_version(
            "digits", v1.source, run_id=v1.run_id, model_id=v1.source.rsplit("/", 1)[-1]
        ).version
        v2 = str(v2)
        promoted_at = time.monotonic()
        set_production(registry, v2)
        while versions() != {v2}:
            assert time.monotonic() - promoted_at < 120, versions()
            time.sleep(0.2)
        print(
            f"\nstack: both replicas serve v{v2} {time.monotonic() - promoted_at:.1f} s after "
            "the promotion (poll interval 1 s)"
        )
    finally:
        stop(stack)
