"""The ceiling row of ``make bench``: this service's own HTTP stack answering a constant.

``python -m serving`` with ``CEILING_ROUTE=true`` (and the bench's other settings for the
service) answers ``POST /bench/ceiling`` with a fixed JSON document: the same nginx front,
gunicorn workers, Flask app and request hooks (request id, metrics, access log, headers),
but no decoding, no model and no image log. Its req/s and CPU per request are what the
stack itself costs on this machine; the service's row minus this one is the work.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench import servers

NAME = "ceiling"
PATH = "/bench/ceiling"


def make_spec(args: argparse.Namespace, env: dict[str, str], work: Path) -> servers.ServerSpec:
    from bench import run  # run registers this module's server: imported when used

    service = run.make_spec("service", args, env, work)
    service.env["CEILING_ROUTE"] = "true"
    config = dict(service.config)
    config["env"] = {**dict(config.get("env") or {}), "CEILING_ROUTE": "true"}  # type: ignore[call-overload]
    return servers.ServerSpec(
        name=NAME,
        label="ceiling: this service's stack answering a constant JSON (no model, no runtime "
        "threads)",
        api=NAME,
        argv=service.argv,
        env=service.env,
        ready_path=service.ready_path,
        port=service.port,
        cwd=service.cwd,
        config=config,
        worker_ready_pattern=service.worker_ready_pattern,
        workers=service.workers,
    )
