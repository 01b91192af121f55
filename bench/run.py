"""`make bench`: this service, the peers a team would deploy instead (bench.peers), the
ceiling (bench.ceiling), `mlflow models serve` and a naive reference under real load.

    python -m bench.run [--duration 8] [--concurrency 1,8,32,64] [--servers service,mlflow]
                        [--payloads png28,photo640,distinct28] [--loadgen wrk|hey]
                        [--out bench/results]
    python -m bench.run --smoke      # 1 s cells at concurrency 1 and 8: checks the harness

``service-1w`` (one worker), ``service-nostore`` (``STORE_IMAGES=false``) and
``service-nolog`` (``IMAGE_LOG=off``) are this service in another configuration, each a row
of its own. All serve the same registered model
(``MODEL_URI``, default ``models:/digits/Production`` in ``MLFLOW_TRACKING_URI``). One server
runs at a time; each is warmed up per payload, then measured at every concurrency. Extra
environment for this service comes from ``BENCH_SERVICE_ENV`` (or ``--service-env``), e.g.
``BENCH_SERVICE_ENV="WORKERS=2 THREADS=16 BATCHING=true"``, so configurations can be
compared; the settings it actually ran with are recorded in bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import locations
from bench import ceiling, loadgen, peers, report, servers
from bench.payloads import (
    PROJECT_ROOT,
    Payload,
    answered_digit,
    build_payloads,
    mnist_path,
    request_for,
)

# This service's configurations beside its defaults, each a server of its own in the
# report: how cost grows with workers on two cores (1 against the default 2), what keeping
# the images costs (STORE_IMAGES=false: the records, the sha256 of each image, are still
# written durably before each answer), and what the whole image log costs (IMAGE_LOG=off:
# nothing opened or written per request, as the peers, which log nothing).
SERVICE_VARIANTS: dict[str, dict[str, str]] = {
    "service": {},
    "service-1w": {"WORKERS": "1"},
    "service-nostore": {"STORE_IMAGES": "false"},
    "service-nolog": {"IMAGE_LOG": "off"},
}
SERVER_NAMES = (*SERVICE_VARIANTS, "mlflow", "naive", ceiling.NAME, *peers.PEER_NAMES)
DEFAULT_CONCURRENCY = (1, 8, 32, 64)
DEFAULT_MODEL_URI = "models:/digits/Production"
# Keys of the service's settings that may hold secrets: never written to bench.json.
_SECRET_HINTS = ("token", "password", "secret")
# Logged by serving.model_store once per worker when its model is loaded.
_WORKER_READY = r"now serving \S+ version \S+ \((?:family \S+, )?was None\)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per cell (8)")
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="warm-up seconds per server and payload (3)"
    )
    parser.add_argument(
        "--concurrency",
        type=_int_list,
        default=list(DEFAULT_CONCURRENCY),
        help="comma-separated (1,8,32,64)",
    )
    parser.add_argument("--servers", type=_names(SERVER_NAMES), default=list(SERVER_NAMES))
    parser.add_argument(
        "--payloads", type=_names(("png28", "photo640", "distinct28")), default=None
    )
    parser.add_argument("--loadgen", choices=loadgen.TOOLS, default="wrk")
    parser.add_argument("--out", type=Path, default=None, help="bench/results (smoke: …/smoke)")
    parser.add_argument(
        "--service-env",
        default=os.environ.get("BENCH_SERVICE_ENV", ""),
        help='extra env for this service, e.g. "WORKERS=2 THREADS=16" ($BENCH_SERVICE_ENV)',
    )
    parser.add_argument(
        "--mlflow-workers",
        type=int,
        default=None,
        help="--workers for `mlflow models serve` (default: its own default, 1)",
    )
    parser.add_argument("--model-uri", default=os.environ.get("MODEL_URI") or DEFAULT_MODEL_URI)
    parser.add_argument("--keep", action="store_true", help="keep the work dir (server logs)")
    parser.add_argument(
        "--smoke", action="store_true", help="1 s cells at concurrency 1 and 8, 1 s warm-ups"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.warmup, args.concurrency = 1.0, 1.0, [1, 8]
    if args.out is None:
        # A smoke run never overwrites the figures that are committed.
        args.out = PROJECT_ROOT / "bench" / "results" / ("smoke" if args.smoke else "")
    return args


def _int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected positive integers, e.g. 1,8,32,64")
    return values


def _names(allowed: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = sorted(set(names) - set(allowed))
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}")
        return names

    return parse


def parse_env(text: str) -> dict[str, str]:
    """``"WORKERS=2 THREADS=16"`` → ``{"WORKERS": "2", "THREADS": "16"}``."""
    env = {}
    for item in shlex.split(text):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"BENCH_SERVICE_ENV: expected KEY=VALUE, got {item!r}")
        env[key] = value
    return env


def base_env(tracking_uri: str) -> dict[str, str]:
    env = dict(os.environ)
    # Our interpreter's bin/ first: `mlflow models serve` execs the `uvicorn` it finds.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # BLAS (the rejector's numpy, a family's scipy) on one thread in every server, as ONNX
    # Runtime is: OpenBLAS's default of one spinning thread per core cost this service's
    # requests several times their CPU on 2 cores (docs/performance-history.md). The pyfunc holds
    # BLAS to its inference_threads itself, but a model's own copy of older code does not.
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    # The service's master empties a metrics directory named here: never someone else's.
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def start_service(
    name: str,
    label: str,
    port: int,
    extra: dict[str, str],
    work: Path,
    checkout: Path = PROJECT_ROOT,
) -> servers.RunningServer:
    """`python -m serving` on ``port`` with ``extra`` over the bench's environment, started
    in ``work`` and waited for until every worker serves (make attack, bench.ab). Another
    ``checkout`` (an older commit in a `git worktree`) runs its own code with this
    interpreter: what a change did, under the same load at the same time."""
    env = {**base_env(locations.tracking_uri()), **extra}
    if checkout != PROJECT_ROOT:
        env["PYTHONPATH"] = str(checkout) + os.pathsep + env["PYTHONPATH"]
    spec = servers.ServerSpec(
        name=name,
        label=label,
        api="service",
        argv=[sys.executable, "-m", "serving"],
        env=env,
        ready_path="/ready",
        port=port,
        cwd=checkout,
        worker_ready_pattern=_WORKER_READY,
        workers=int(extra.get("WORKERS", 2)),
    )
    return servers.start(spec, work)


def service_settings(env: dict[str, str]) -> dict[str, Any]:
    """The settings `python -m serving` resolves in ``env`` (file + environment), as run."""
    code = "from serving.config import Settings; print(Settings().model_dump_json())"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    settings = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in settings:
        if any(hint in key for hint in _SECRET_HINTS) and settings[key]:
            settings[key] = "<redacted>"
    if settings.get("database_url"):
        settings["database_url"] = "<set>"
    return settings


def service_label(settings: dict[str, Any]) -> str:
    """What ran, from the settings it resolved: workers, threads, the image log, and the
    runtime's threads (stated for every server, bench.peers' labels too)."""
    threads = settings.get("inference_threads")
    runtime = "ORT default threads" if threads == 0 else f"ORT {threads} thread(s)"
    if not settings.get("image_log", True):
        log = "image log off"
    elif settings.get("store_images", True):
        log = "image log on"
    else:
        log = "image log without images"
    return (
        f"this service (python -m serving), {settings.get('workers')} worker(s) × "
        f"{settings.get('threads')} threads, {log}, {runtime}"
    )


def logged_threads(model_uri: str, tracking_uri: str) -> int | None:
    """The runtime's thread count the registered model was logged with (its MLmodel's
    ``model_config``; 0: the runtime's default): what `mlflow models serve` runs it at.
    None when unreadable."""
    import mlflow
    from mlflow.models import get_model_info

    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        flavor = get_model_info(model_uri).flavors.get("python_function", {})
        value = (flavor.get("config") or {}).get("inference_threads")
    except Exception:  # the label only: the server's own start says what is wrong
        return None
    finally:
        mlflow.set_tracking_uri(before)
    return int(value) if value is not None else None


def make_spec(
    name: str, args: argparse.Namespace, env: dict[str, str], work: Path
) -> servers.ServerSpec:
    if name == ceiling.NAME:
        return ceiling.make_spec(args, env, work)
    port = servers.free_port()
    if name in peers.PEER_NAMES:
        # The runtime's threads as this service's workers have them (INFERENCE_THREADS).
        threads = int(parse_env(args.service_env).get("INFERENCE_THREADS", "1"))
        return peers.make_spec(name, port, args.model_uri, env, work, threads)
    if name in SERVICE_VARIANTS:
        extra = {
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "MODEL_URI": args.model_uri,
            # The production image log, on the same disk, but not in the project's data/.
            "DATA_DIR": str(work / f"{name}-data"),
            **parse_env(args.service_env),
            # The variant's own setting wins over BENCH_SERVICE_ENV: it is what its row is.
            **SERVICE_VARIANTS[name],
        }
        env = {**env, **extra}
        settings = service_settings(env)
        return servers.ServerSpec(
            name=name,
            label=service_label(settings),
            api="service",
            argv=[sys.executable, "-m", "serving"],
            env=env,
            ready_path="/ready",
            port=port,
            cwd=PROJECT_ROOT,
            config={"env": extra, "settings": settings},
            worker_ready_pattern=_WORKER_READY,
            workers=int(settings.get("workers", 1)),
        )
    if name == "mlflow":
        argv = [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            args.model_uri,
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ]
        if args.mlflow_workers:
            argv += ["-w", str(args.mlflow_workers)]
        logged = logged_threads(args.model_uri, env["MLFLOW_TRACKING_URI"])
        runtime = {None: "ORT threads as logged", 0: "ORT default threads"}.get(
            logged, f"ORT {logged} thread(s)"
        )
        return servers.ServerSpec(
            name="mlflow",
            label=f"mlflow models serve, {args.mlflow_workers or 1} worker(s), {runtime}",
            api="mlflow",
            argv=argv,
            env=env,
            ready_path="/ping",
            port=port,
            cwd=PROJECT_ROOT,
            config={"workers": args.mlflow_workers or 1, "inference_threads": logged},
            workers=args.mlflow_workers or 1,
        )
    if name == "naive":
        return servers.ServerSpec(
            name="naive",
            label="naive Flask + keras predict, TensorFlow default threads",
            api="naive",
            argv=[
                *(sys.executable, "-m", "bench.naive_server"),
                *("--port", str(port), "--model-uri", args.model_uri),
            ],
            env=env,
            ready_path="/",
            port=port,
            cwd=PROJECT_ROOT,
            config={"server": "flask built-in (werkzeug), threaded, 1 process"},
        )
    raise ValueError(name)


def warm_up(
    args: argparse.Namespace, url: str, content_type: str, body: Path, work: Path, start: int = 0
) -> tuple[int, int]:
    """A few hundred requests (at most 3 rounds) before anything is measured; returns how
    many were answered and where the next run starts in a payload of distinct images."""
    done = 0
    for _ in range(3):
        res = loadgen.run(args.loadgen, url, content_type, body, 8, args.warmup, work, start)
        done += res.responses
        start = next_start(res, start)
        if done >= 300:
            break
    return done, start


def error_split(cell: dict[str, Any]) -> str:
    """What a cell's errors were, for its printed line: a 5xx from the server and a request
    that got no answer at all point at different causes (a store's 503, a dropped
    connection), and the line is often all that is kept of a run."""
    if not cell["errors"]:
        return ""
    return f" (5xx {cell['server_errors']}, no answer {cell['transport_errors']})"


def next_start(result: loadgen.LoadResult, start: int) -> int:
    """Where the run after ``result`` (which started at body ``start``) starts: past every
    body it sent, so that no image is sent twice until all have been."""
    if result.next_body is not None:
        return result.next_body
    # One body (or hey): the index does not matter; counted as wrk would have.
    return start + result.responses + result.transport_errors


def measure_server(
    name: str,
    args: argparse.Namespace,
    env: dict[str, str],
    payloads: dict[str, Payload],
    work: Path,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    spec = make_spec(name, args, env, work)
    print(f"== {spec.label}: starting on port {spec.port}", flush=True)
    running = servers.start(spec, work)
    record: dict[str, Any] = {
        "label": spec.label,
        "command": shlex.join(spec.argv),
        "config": spec.config,
        "workers": spec.workers,
        "ready_s": round(running.ready_s, 3),
        "all_workers_ready_s": (
            round(running.all_workers_ready_s, 3) if running.all_workers_ready_s else None
        ),
        "answers": {},
    }
    print(f"   ready after {running.ready_s:.2f} s", flush=True)
    cells: list[dict[str, Any]] = []
    peaks: dict[int, dict[str, Any]] = {}
    where = "start"
    try:
        if name in SERVICE_VARIANTS:
            status, body = servers.http_get(spec.url + "/ready", timeout=5)
            record["model_version"] = json.loads(body).get("model", {}).get("version")
        idle = servers.TreeSampler(running.proc.pid).start().stop()
        record["idle"] = idle.as_dict()
        for payload in payloads.values():
            where = payload.name
            req = request_for(spec.api, payload)
            body_file = _body_file(spec.api, payload, work)
            url = spec.url + req.path
            # One request first: the server must answer it, and the answer is recorded.
            status, answer = servers.http_post(url, req.body, req.content_type)
            record["answers"][payload.name] = {
                "status": status,
                "digit": answered_digit(spec.api, answer) if status == 200 else None,
                "true_digit": payload.digit,
            }
            if status != 200:
                print(f"   !! {payload.name}: status {status}: {answer}", flush=True)
            # Where the next run starts in a payload of distinct images: none is sent twice
            # (to this server) until all have been.
            warm, sent = warm_up(args, url, req.content_type, body_file, work, 1)
            print(f"   {payload.name}: warmed up with {warm} requests", flush=True)
            for concurrency in args.concurrency:
                where = f"{payload.name} c={concurrency}"
                cell = measure_cell(
                    args, running, url, req.content_type, body_file, concurrency, sent
                )
                sent = (
                    cell["next_body"]
                    if cell["next_body"] is not None
                    else sent + cell["responses"] + cell["transport_errors"]
                )
                if len(payload.images) > 1:
                    cell["repeated_images"] = sent > len(payload.images)
                cell.update(server=name, payload=payload.name)
                cells.append(cell)
                for proc in cell["processes"]:
                    seen = peaks.setdefault(proc["pid"], dict(proc))
                    seen["peak_rss_mb"] = max(seen["peak_rss_mb"], proc["peak_rss_mb"])
                print(
                    f"   {payload.name} c={concurrency:<3} {cell['rps']:8.1f} req/s  "
                    f"p50 {cell['p50_ms']:7.2f}  p95 {cell['p95_ms']:7.2f}  "
                    f"p99 {cell['p99_ms']:7.2f} ms  err {cell['errors']}{error_split(cell)}  "
                    f"refused {cell['refused']}  "
                    f"cpu {cell['server_cpu_pct']:.0f}% "
                    f"({cell['cpu_ms_per_request'] or float('nan'):.2f} ms/req)  "
                    f"rss {cell['peak_rss_mb_total']:.0f} MB  "
                    f"(others {cell['other_cpu_pct']:.0f}%)",
                    flush=True,
                )
                time.sleep(1.0)  # let queues drain and the sampler's view settle
    except Exception:
        print(servers.log_tail(running.log_path), file=sys.stderr)
        if running.proc.poll() is None:
            raise
        # The server died (the naive reference has, once, inside Keras): keep what was
        # measured, say so, and go on with the next server.
        record["died"] = f"exited with code {running.proc.returncode} during {where}"
        print(f"   !! {name} {record['died']}", flush=True)
    finally:
        servers.stop(running)
    record["peak_rss_mb_per_process"] = sorted(peaks.values(), key=lambda p: p["role"] != "main")
    record["peak_rss_mb_per_worker"] = [
        p["peak_rss_mb"] for p in peaks.values() if p["role"] == "worker"
    ]
    return record, cells


def _body_file(api: str, payload: Payload, work: Path) -> Path:
    """The file the load generator sends: one body, or all of a payload's distinct images."""
    path = work / f"{api}-{payload.name}.body"
    bodies = [request_for(api, payload, image).body for image in payload.images]
    if len(bodies) == 1:
        path.write_bytes(bodies[0])
        return path
    return loadgen.write_bodies(path, bodies)


def measure_cell(
    args: argparse.Namespace,
    running: servers.RunningServer,
    url: str,
    content_type: str,
    body_file: Path,
    concurrency: int,
    start: int = 0,
) -> dict[str, Any]:
    load_before = os.getloadavg()
    busy_before = servers.cpu_busy_seconds()
    sampler = servers.TreeSampler(running.proc.pid).start()
    result = loadgen.run(
        args.loadgen,
        url,
        content_type,
        body_file,
        concurrency,
        args.duration,
        body_file.parent,
        start,
    )
    usage = sampler.stop()
    busy = servers.cpu_busy_seconds() - busy_before
    # Whatever else ran on the machine meanwhile (other engineers' test suites …).
    other = 100.0 * (busy - usage.cpu_s - result.loadgen_cpu_s) / usage.wall_s
    cell = result.as_dict()
    cell.update(
        concurrency=concurrency,
        server_cpu_pct=round(usage.cpu_pct, 1),
        server_cpu_s=round(usage.cpu_s, 3),
        loadgen_cpu_pct=round(100.0 * result.loadgen_cpu_s / usage.wall_s, 1),
        machine_busy_pct=round(100.0 * busy / usage.wall_s, 1),
        other_cpu_pct=round(max(other, 0.0), 1),
        peak_rss_mb_total=round(usage.peak_rss_total / servers.MB, 1),
        processes=usage.as_dict()["processes"],
        loadavg_1m=[round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        # The server's CPU per answered request (ms): what a request costs, whatever the load.
        cpu_ms_per_request=(
            round(1000 * usage.cpu_s / result.responses, 3) if result.responses else None
        ),
    )
    for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms"):
        cell[key] = round(cell[key], 3)
    return cell


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not loadgen.available(args.loadgen):
        raise SystemExit(f"{args.loadgen} not found: apt-get install -y {args.loadgen}")
    tracking_uri = locations.tracking_uri()
    env = base_env(tracking_uri)
    if mnist_path():
        env["MNIST_PATH"] = mnist_path() or ""
    all_payloads = build_payloads()
    payloads = {k: all_payloads[k] for k in (args.payloads or all_payloads)}
    work = Path(tempfile.mkdtemp(prefix="digits-bench-"))
    started = datetime.now(UTC)
    loadavg_before = os.getloadavg()
    results: dict[str, Any] = {
        "meta": {
            "started": started.isoformat(timespec="seconds"),
            "argv": sys.argv[1:] if argv is None else argv,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "concurrency": args.concurrency,
            "smoke": args.smoke,
            "model_uri": args.model_uri,
            "tracking_uri": tracking_uri,
            "loadgen": {"tool": args.loadgen, "version": loadgen.version(args.loadgen)},
            "service_env": args.service_env,
            "host": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "loadavg_before": [round(v, 2) for v in loadavg_before],
            },
        },
        "payloads": {name: p.describe() for name, p in payloads.items()},
        "servers": {},
        "cells": [],
    }
    print(f"bench: work dir {work}; load average {loadavg_before[0]:.2f}", flush=True)
    # Each peer's venv (bench/.venvs), created before anything is measured.
    for kind in sorted({peers.venv_kind(n) for n in args.servers if n in peers.PEER_NAMES}):
        peers.ensure_venv(kind, log=work / f"venv-{kind}.log")
    try:
        for name in args.servers:
            record, cells = measure_server(name, args, env, payloads, work)
            results["servers"][name] = record
            results["cells"] += cells
    finally:
        if args.keep:
            print(f"bench: server logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    meta = results["meta"]
    meta["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    meta["host"]["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
    others = [c["other_cpu_pct"] for c in results["cells"]]
    meta["host"]["other_cpu_pct_mean"] = round(sum(others) / len(others), 1) if others else 0.0
    meta["model_version"] = next(
        (
            results["servers"][n].get("model_version")
            for n in SERVICE_VARIANTS
            if n in results["servers"]
        ),
        None,
    )
    for path in report.write(results, args.out):
        shown = path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path
        print(f"bench: wrote {shown}")
    print("targets (issue 22):")
    for target in results["targets"]:
        mark = {True: "met", False: "MISSED", None: "not measured"}[target["met"]]
        print(f"  {mark:>12}  {target['target']}: {target['value']}")
    print("also asked (no threshold):")
    for item in results["also"]:
        mark = "measured" if item["measured"] else "not measured"
        print(f"  {mark:>12}  {item['target']}: {item['value']}")
    print("checks:")
    for target in results["checks"]:
        mark = {True: "met", False: "MISSED", None: "not measured"}[target["met"]]
        print(f"  {mark:>12}  {target['target']}: {target['value']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
