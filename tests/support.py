"""Helpers for tests that drive real processes: `mlflow run`, `python -m serving`."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = str(Path(sys.executable).parent)


def base_env(**extra: str) -> dict[str, str]:
    """The test process's environment with this interpreter's bin first on PATH, since
    `mlflow run --env-manager local` runs the first `python` it finds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.pop("DIGITS_CONFIG", None)
    env.update(extra)
    return env


@dataclass
class Registry:
    """A throw-away sqlite tracking store + registry with its own artifact directory."""

    root: Path
    tracking_uri: str
    env: dict[str, str]

    @classmethod
    def create(cls, root: Path) -> Registry:
        from mlflow import MlflowClient

        uri = blank_tracking_database(root / "mlflow.db")
        MlflowClient(tracking_uri=uri).create_experiment(
            "digits", artifact_location=(root / "mlruns").as_uri()
        )
        return cls(root, uri, base_env(MLFLOW_TRACKING_URI=uri))

    def mlflow_run(self, entry: str, **params: object) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "mlflow",
            "run",
            str(PROJECT_ROOT),
            "-e",
            entry,
            "--env-manager",
            "local",
            "--experiment-name",
            "digits",
        ]
        for key, value in params.items():
            argv += ["-P", f"{key}={value}"]
        return argv


BLANK_DB = "blank.db"


def blank_tracking_database(path: Path) -> str:
    """An empty MLflow tracking database at ``path`` (a copy of :func:`_blank_database`'s),
    as its sqlite URI: what a fresh ``sqlite:///`` URI gives, without running MLflow's
    migrations again (seconds each time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(_blank_database().name) / BLANK_DB, path)
    return f"sqlite:///{path}"


@functools.cache
def _blank_database() -> tempfile.TemporaryDirectory:
    """A directory holding an empty tracking database with MLflow's schema, made once per
    test process: making the schema runs MLflow's migrations (seconds), copying the file
    takes milliseconds. The cache holds the directory until the process exits."""
    from mlflow import MlflowClient

    # In memory where there is a tmpfs: sqlite syncs each migration to disk, about three
    # quarters of their time on a busy disk.
    ram = "/dev/shm"
    directory = tempfile.TemporaryDirectory(
        prefix="mlflow-blank-", dir=ram if os.path.isdir(ram) else None
    )
    MlflowClient(tracking_uri=f"sqlite:///{Path(directory.name) / BLANK_DB}").search_experiments()
    return directory


# How long an `mlflow run` (train, promote, evaluate) or a stack's first training may take
# before a test calls it hung: a guard against a hang, not a measure of speed. A run takes
# two to three times as long on a loaded machine as on a quiet one (the session registry's
# training: 314 s at a load average of 6 on 2 cores); 600 s failed CI on a loaded machine.
TRAINING_TIMEOUT_S = 1800.0


def run_group(argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """``subprocess.run(argv)`` in a process group of its own, captured as text; on a
    timeout the whole group is killed, not only ``argv``'s process: `mlflow run` runs its
    entry point as a child, which a plain ``subprocess.run`` timeout left training on as an
    orphan (minutes of both cores, under every later test)."""
    proc = subprocess.Popen(
        argv,
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise AssertionError(
            f"{' '.join(argv)} still running after {timeout:.0f} s: killed\n--- stdout\n"
            f"{stdout[-4000:]}\n--- stderr\n{stderr[-6000:]}"
        ) from None
    finally:
        # Whatever the entry point left behind (its process pools) goes with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def run_checked(argv: list[str], env: dict[str, str], timeout: float) -> str:
    proc = run_group(argv, env, timeout)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
            f"\n--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc.stdout + proc.stderr


def access_lines(log_path: Path) -> list[dict]:
    """The service's JSON access-log lines (serving/logs.py) in a server's log file."""
    lines = []
    for text in log_path.read_text().splitlines():
        if text.startswith("{"):
            with contextlib.suppress(ValueError):
                lines.append(json.loads(text))
    return [line for line in lines if line.get("msg") == "request"]


# The line a worker logs when it has loaded its first model (serving/model_store.py).
WORKER_STARTED = r"now serving \S+ version \S+ \(family \S+, was None\)"


def wait_for_every_worker(url: str, log_path: Path, workers: int, deadline_s: float = 180) -> None:
    """Until ``workers`` different gunicorn workers have each answered /ready with 200.

    /ready answers once one worker is up while the others may still be loading their model
    (and accept no connection meanwhile). Which worker answered a probe is the ``pid`` field
    of its access-log line, found by the probe's request id; probes go four at a time on
    new connections, so that a worker busy with one leaves the next to another.

    Only for a server started with ``FRONT=none``: behind nginx the probes reach gunicorn
    over nginx's kept-alive upstream connections, which one worker may hold all of."""
    deadline = time.monotonic() + deadline_s
    probes: set[str] = set()

    def probe(request_id: str) -> None:
        with contextlib.suppress(requests.RequestException):
            requests.get(f"{url}/ready", timeout=30, headers={"X-Request-ID": request_id})

    with ThreadPoolExecutor(4) as pool:
        while True:
            batch = [f"ready-probe-{uuid.uuid4().hex[:12]}" for _ in range(4)]
            probes.update(batch)
            list(pool.map(probe, batch))
            pids = {
                line["pid"]
                for line in access_lines(log_path)
                if line.get("request_id") in probes and line.get("status") == 200
            }
            if len(pids) >= workers:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(pids)} of {workers} workers answered /ready")
            time.sleep(0.2)


def server_log(log_dir: Path, url: str) -> Path:
    """Where :func:`run_server` writes the log of the server at ``url``."""
    return log_dir / f"server-{urlsplit(url).port}.log"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, status: int, deadline_s: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode} before {url} answered")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code == status:
                return
        time.sleep(0.25)
    raise AssertionError(f"{url} did not answer {status} within {deadline_s} s")


@contextlib.contextmanager
def start_server(
    env: dict[str, str], extra_env: dict[str, str], log_dir: Path, wait_ready: bool = True
) -> Iterator[str]:
    """Run `python -m serving` on a free port; yields its base URL, logs to log_dir."""
    with run_server(env, extra_env, log_dir, wait_ready) as server:
        yield server.url


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log_path: Path


@contextlib.contextmanager
def run_server(
    env: dict[str, str], extra_env: dict[str, str], log_dir: Path, wait_ready: bool = True
) -> Iterator[Server]:
    """Like :func:`start_server`, with the process at hand (to signal it mid-test)."""
    port = free_port()
    server_env = {**env, "HOST": "127.0.0.1", "PORT": str(port), **extra_env}
    url = f"http://127.0.0.1:{port}"
    log_path = server_log(log_dir, url)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "serving"],
            env=server_env,
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        try:
            wait_for(f"{url}/ready" if wait_ready else f"{url}/health", 200, 180, proc)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- server log\n{log_path.read_text()[-6000:]}") from None
        yield Server(url, proc, log_path)
    finally:
        stop(proc)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


TEST_DATABASE_URL_ENV = "DIGITS_TEST_DATABASE_URL"


def database_url_for_tests() -> str:
    """The PostgreSQL the tests use (trust auth on this machine; see README)."""
    return os.environ.get(TEST_DATABASE_URL_ENV) or "postgresql://postgres@127.0.0.1:5432/test"


@contextlib.contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """A schema name no one else uses; the code under test creates it, this drops it."""
    import uuid

    import psycopg

    name = f"test_imagelog_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def add_version(uri: str, source: str, run_id: str | None = None) -> str:
    """Register ``source`` as a new version of `digits` (creating the model if needed)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    if not client.search_registered_models("name = 'digits'"):
        client.create_registered_model("digits")
    return str(client.create_model_version("digits", source=source, run_id=run_id).version)


def set_production(uri: str, version: str) -> None:
    """What a person does in the registry UI: stage and alias, no gate."""
    from mlflow import MlflowClient

    from training.promote import make_production

    make_production(MlflowClient(tracking_uri=uri, registry_uri=uri), "digits", version)


@contextlib.contextmanager
def start_scorer(
    env: dict[str, str], log_dir: Path, model_uri: str = "models:/digits/Production"
) -> Iterator[tuple[str, subprocess.Popen]]:
    """`mlflow models serve` of a registered model; yields its base URL and process."""
    port = free_port()
    log_path = log_dir / f"scorer-{port}.log"
    argv = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-w",
        "1",
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_for(f"{url}/ping", 200, 180, proc)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log_path.read_text()[-5000:]}") from None
        yield url, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGCONT)  # in case a test paused it
        stop(proc)


def loaded_digit_model(artifacts: dict[str, str]):
    """A ``pyfunc.model.DigitModel`` loaded from ``artifacts`` (name -> path) the way MLflow
    loads a logged version: through ``load_context`` with a context holding them."""
    from types import SimpleNamespace

    from pyfunc.model import DigitModel

    model = DigitModel()
    model.load_context(SimpleNamespace(artifacts=artifacts, model_config={}))  # type: ignore[arg-type]
    return model


def in_threads(n: int, work, timeout: float = 60.0) -> list:
    """``work(i)`` for i in range(n), each in its own thread, all released at once; their
    results in order (None for a thread still running after ``timeout``)."""
    results: list = [None] * n
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    return results
