"""Two instances of `python -m serving` on one machine, as the same user, share nothing by
accident: each has its own private runtime directory with its own gunicorn control socket
(gunicorn's default is one fixed path per user), its own metrics, and leaves nothing behind;
and /metrics can be served on an internal listener only."""

from __future__ import annotations

import contextlib
import stat
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests import tiny_model
from tests.support import Registry, free_port, run_server, wait_for_every_worker


def _requests_counted(text: str, route: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "digits_http_requests_total" and s.labels.get("route") == route
    )


def test_two_instances_share_nothing_and_clean_up(tmp_path: Path, tiny_onnx):
    reg = Registry.create(tmp_path / "registry")
    tiny_model.register(reg.tracking_uri, tiny_onnx)
    home, scratch = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    scratch.mkdir()
    env = {k: v for k, v in reg.env.items() if k != "XDG_RUNTIME_DIR"}
    env.update(HOME=str(home), TMPDIR=str(scratch))
    metrics_port = free_port()
    first_extra = {"WORKERS": "1", "METRICS_PORT": str(metrics_port)}
    second_extra = {"WORKERS": "1"}
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(run_server(env, first_extra, tmp_path))
        second = stack.enter_context(run_server(env, second_extra, tmp_path))
        wait_for_every_worker(first.url, first.log_path, 1)
        wait_for_every_worker(second.url, second.log_path, 1)

        runtimes = sorted(scratch.glob("digits-runtime-*"))
        assert len(runtimes) == 2
        sockets = [r / "gunicorn.ctl" for r in runtimes]
        assert all(stat.S_ISSOCK(s.stat().st_mode) for s in sockets), sockets
        assert all(stat.S_IMODE(r.stat().st_mode) == 0o700 for r in runtimes)
        assert not (home / ".gunicorn").exists(), "the per-user default control socket"

        # /metrics: on the first instance's internal listener only; each its own counts.
        assert requests.get(f"{first.url}/metrics", timeout=10).status_code == 404
        for _ in range(3):
            requests.get(f"{first.url}/health", timeout=10)
        internal = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert internal.status_code == 200
        assert _requests_counted(internal.text, "/health") >= 3
        public_second = requests.get(f"{second.url}/metrics", timeout=10)
        assert public_second.status_code == 200
        assert _requests_counted(public_second.text, "/health") == 0

        # The public answers carry the security headers through the whole stack.
        page = requests.get(f"{first.url}/", timeout=10)
        assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
        assert page.headers["X-Content-Type-Options"] == "nosniff"
    # Both stopped: their runtime and metrics directories are gone.
    assert list(scratch.glob("digits-*")) == [], list(scratch.iterdir())
