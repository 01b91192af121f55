"""The service's Flask app served by granian (a Rust HTTP server, WSGI interface) instead of
gunicorn: an experiment that measures what the HTTP stack costs (docs/performance-history.md).

    pip install --target DIR granian        # not a dependency of the project
    PYTHONPATH=DIR:. python -m bench.granian_app    # HOST, PORT, WORKERS, THREADS … as for
                                                     # python -m serving

granian listens on HOST:PORT itself (FRONT and UNIX_SOCKET are ignored: no nginx), with
WORKERS processes of THREADS Python threads each (granian's ``blocking_threads``) and one
runtime thread. What the gunicorn master does for its workers (serving/server.py) is done
the same way, so that a request does the same work: logging, MLflow's retry limits, the
private runtime directory (TMPDIR, the reload file), an empty ``PROMETHEUS_MULTIPROC_DIR``
before any worker exists, and in each worker (forked) ``create_app(Settings())`` followed
by ``gc.freeze()``. Not done: the metrics port, a dead worker's gauges, gunicorn's accept
balancing (serving/worker.py; granian has its own), ``TIMEOUT`` (granian kills no stuck
worker), ``ProxyFix`` (no front). Measured in docs/performance-history.md ("granian in gunicorn's
place").
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

from flask import Flask

from serving import metrics
from serving import runtime as runtime_dirs
from serving.config import RELOAD_FILE_ENV, Settings
from serving.server import settle_heap

log = logging.getLogger(__name__)


def worker_app() -> Flask:
    """granian's factory: runs in each worker after the fork, as DigitServer.load does."""
    from serving.app import create_app

    app = create_app(Settings())
    settle_heap()
    return app


def main() -> None:
    import quiet

    quiet.install()
    from granian.constants import HTTPModes, Interfaces
    from granian.server import Server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    settings = Settings()
    runtime, _lock = runtime_dirs.private_directory("digits-runtime-")
    scratch = runtime / "tmp"
    scratch.mkdir()
    os.environ["TMPDIR"] = tempfile.tempdir = str(scratch)
    os.environ.setdefault(RELOAD_FILE_ENV, str(runtime / "reload"))
    metrics_dir, owns_metrics_dir = metrics.prepare_multiprocess_dir()
    print(f"serving {settings.model_uri} on http://{settings.host}:{settings.port}", flush=True)
    master = os.getpid()
    try:
        Server(
            "bench.granian_app:worker_app",
            address=settings.host,
            port=settings.port,
            interface=Interfaces.WSGI,
            workers=settings.workers,
            blocking_threads=settings.threads,
            runtime_threads=1,
            http=HTTPModes.http1,
            websockets=False,
            factory=True,
        ).serve()
    finally:
        if os.getpid() == master:
            if owns_metrics_dir:
                metrics.remove_multiprocess_dir(metrics_dir)
            shutil.rmtree(runtime, ignore_errors=True)


if __name__ == "__main__":
    main()
