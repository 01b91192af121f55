"""The production server: gunicorn running :func:`serving.create_app` in each worker."""

from __future__ import annotations

import gc
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from serving import metrics
from serving import runtime as runtime_dirs
from serving.config import RELOAD_FILE_ENV, Settings
from serving.front import (
    GUNICORN_KEEPALIVE_SECONDS,
    MISSING_NGINX,
    Front,
    FrontConfig,
    find_nginx,
)
from serving.worker import LoadBoard


class DigitServer(BaseApplication):
    """gunicorn with this service's worker; with ``front``, behind it on ``socket``."""

    def __init__(
        self,
        settings: Settings,
        front: Front | None = None,
        socket: Path | None = None,
        runtime: Path | None = None,
    ) -> None:
        self.settings = settings
        self.front = front
        # This instance's private directory (sockets, reload file): nothing shared by accident
        # with another instance on the machine.
        self.runtime = runtime
        self._metrics_server = None
        # Only a front on this machine can reach a unix socket, so its forwarding headers
        # are believed there (and only there).
        self.socket = socket or settings.unix_socket
        # Here in the master, before any worker forks and imports prometheus_client.
        self.metrics_dir, self._owns_metrics_dir = metrics.prepare_multiprocess_dir()
        # Shared with the workers it forks (serving/worker.py); room for a reload's overlap.
        self.load_board = LoadBoard(2 * settings.workers + 2)
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        options: dict[str, Any] = {
            "bind": f"unix:{self.socket}" if self.socket else f"{s.host}:{s.port}",
            "workers": s.workers,
            # gthread that hands a new connection to a worker with a free thread.
            "worker_class": "serving.worker.BalancedThreadWorker",
            "threads": s.threads,
            "timeout": s.timeout,
            # Behind a front, its kept connections must outlive its own idle limit.
            **({"keepalive": GUNICORN_KEEPALIVE_SECONDS} if self.socket else {}),
            # TensorFlow is not fork-safe: each worker imports and loads it after the fork.
            "preload_app": False,
            # serving/logs.py writes one JSON line per request instead.
            "accesslog": None,
            "errorlog": "-",
            # gunicorn's control socket is one fixed path per user by default
            # ($HOME/.gunicorn/gunicorn.ctl): a second instance would take it from the first.
            **(
                {"control_socket": str(self.runtime / "gunicorn.ctl")}
                if self.runtime
                else {"control_socket_disable": True}
            ),
            "when_ready": self._when_ready,
            "child_exit": self._child_exit,
            "on_exit": self._on_exit,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def _when_ready(self, server) -> None:
        # gunicorn's socket is bound; its workers are not forked yet.
        if self.settings.metrics_port is not None:
            self._metrics_server = metrics.serve_internally(
                self.settings.metrics_host, self.settings.metrics_port
            )
        if self.front is None:
            return
        self.front.start()
        # nginx gone means nobody can reach the service: stop, so that a supervisor notices.
        self.front.watch(lambda code: os.kill(os.getpid(), signal.SIGTERM))
        server.log.info("front: nginx on http://%s -> %s", self.front.config.listen, self.socket)

    def _child_exit(self, server, worker) -> None:
        metrics.mark_worker_dead(worker.pid)
        self.load_board.leave(worker.pid)  # a worker that died could not leave itself

    def _on_exit(self, server) -> None:
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        if self.front is not None:
            self.front.stop()
        if self._owns_metrics_dir:
            metrics.remove_multiprocess_dir(self.metrics_dir)

    def load(self):
        from serving.app import create_app  # runs in the worker, after the fork

        app = create_app(self.settings)
        if self.socket is not None:
            from werkzeug.middleware.proxy_fix import ProxyFix

            # The front sets X-Forwarded-For to the client's address (never appends to what
            # the client sent), so the last one is the truth: the access log's remote_addr.
            app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1)
        settle_heap()
        return app


def settle_heap() -> None:
    """Exempt everything loaded so far (MLflow, pandas, the model …) from the cyclic GC.

    Each full collection otherwise walks those millions of objects: 130-150 ms in which the
    worker answers nobody, every few seconds under load, which was most of the p99 at
    concurrency 32 (153 -> 44-49 ms with make bench). Requests' own garbage is collected
    as before."""
    gc.collect()
    gc.freeze()


def main() -> None:
    # Process-wide set-up belongs here, in the entry point, not in create_app; the workers
    # gunicorn forks inherit all of it.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # MLflow's REST client retries for minutes by default; the model store has its own
    # backoff and must not hold a worker's start (or a poll) that long when the registry is
    # down. MLflow reads these from the environment only: it has no per-client setting.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    settings = Settings()
    nginx = find_nginx() if settings.front == "nginx" else None
    if settings.front == "nginx" and nginx is None:
        print(MISSING_NGINX, file=sys.stderr)
        sys.exit(2)
    # Its lock descriptor stays open for the master's life and its workers' (inherited).
    runtime, _lock = runtime_dirs.private_directory("digits-runtime-")
    # Every temporary file of the instance (model downloads, MLflow's own) goes in here: a
    # worker killed mid-download leaves its files to the master's clean-up below.
    scratch = runtime / "tmp"
    scratch.mkdir()
    os.environ["TMPDIR"] = tempfile.tempdir = str(scratch)
    # Workers inherit this: a touch of the file makes each of them check the registry now.
    os.environ.setdefault(RELOAD_FILE_ENV, str(runtime / "reload"))
    front = socket = None
    if nginx is not None:
        socket = runtime / "gunicorn.sock"
        front_dir = runtime / "front"
        front_dir.mkdir(mode=0o700)
        config = FrontConfig(
            listen_host=settings.host,
            listen_port=settings.port,
            upstreams=(f"unix:{socket}",),
            max_body_bytes=settings.max_body_bytes,
            # gunicorn kills a worker after TIMEOUT: its answer cannot come later than that.
            upstream_timeout=settings.timeout + 5,
            directory=front_dir,
        )
        front = Front(config, nginx)
    where = (
        f"unix:{settings.unix_socket}"
        if socket is None and settings.unix_socket
        else f"http://{settings.host}:{settings.port}"
    )
    print(f"serving {settings.model_uri} on {where}", flush=True)
    master = os.getpid()
    try:
        DigitServer(settings, front, socket, runtime).run()
    finally:
        # gunicorn's forked workers leave through here too (SystemExit): only the master
        # owns the directory.
        if os.getpid() == master:
            shutil.rmtree(runtime, ignore_errors=True)
