"""Where one /recognize request's time goes in this service, measured under load.

    python -m bench.stages [--payloads png28,distinct28] [--concurrency 8] [--duration 10]
                           [--service-env "WORKERS=2"] [--out bench/results/stages]

Starts ``python -m serving`` with ``SERVER_TIMING=true`` (serving/server_timing.py: each
answer carries the duration of each stage inside the worker), sends ``--duration`` seconds
of requests from ``--concurrency`` keep-alive connections (a thread each), and prints the
mean, p50 and p95 of every stage, and its share of the in-app total. Then, in this
process, it splits the ``model`` stage (decode, normalisation, forward pass) by timing the
same model's own halves on the same images.

What the header cannot see: nginx, gunicorn's parsing and the socket writes happen outside
the app; the ``outside the app`` row is the client's mean latency minus the app's mean
(queueing included, so it grows with concurrency). Compare with the ``ceiling`` row of
``make bench`` (bench/ceiling.py): the stack answering a constant.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.payloads import PROJECT_ROOT, Payload

HEADER = "server-timing"


def parse_header(value: str, param: str = "dur") -> dict[str, float]:
    """``"route;dur=0.2;cpu=0.1, body;dur=0.03"`` → ``{"route": 0.2, "body": 0.03}`` (ms;
    ``param="cpu"``: the request thread's CPU time instead)."""
    out: dict[str, float] = {}
    for part in value.split(","):
        name, _, params = part.strip().partition(";")
        for item in params.split(";"):
            key, _, number = item.strip().partition("=")
            if key == param and name:
                out[name.strip()] = out.get(name.strip(), 0.0) + float(number)
    return out


@dataclass
class Collected:
    stages: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0  # 5xx answers and requests with no answer
    refused: int = 0  # 4xx answers (a training digit refused with a 422): not errors
    missing_header: int = 0

    def add(
        self, timing: dict[str, float], latency_ms: float, cpu: dict[str, float] | None = None
    ) -> None:
        for name, ms in timing.items():
            self.stages.setdefault(name, []).append(ms)
        for name, ms in (cpu or {}).items():
            self.cpu.setdefault(name, []).append(ms)
        self.latencies_ms.append(latency_ms)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def summarise(collected: Collected) -> list[dict[str, Any]]:
    """One row per stage in the order the header lists them, then the total (``app``)
    and what happened outside the app (client latency minus the app's time)."""
    total = statistics.fmean(collected.stages.get("app", [0.0])) or float("nan")
    rows = []
    for name, values in collected.stages.items():
        if name == "app":
            continue
        mean = statistics.fmean(values)
        rows.append(_row(name, values, mean / total, collected.cpu.get(name)))
    if "app" in collected.stages:
        rows.append(_row("app", collected.stages["app"], 1.0, collected.cpu.get("app")))
    if collected.latencies_ms and "app" in collected.stages:
        outside = statistics.fmean(collected.latencies_ms) - total
        rows.append({"stage": "outside the app", "mean_ms": round(outside, 3)})
        rows.append(_row("client latency", collected.latencies_ms, None))
    return rows


def _row(
    name: str, values: list[float], share: float | None, cpu: list[float] | None = None
) -> dict[str, Any]:
    return {
        "stage": name,
        "mean_ms": round(statistics.fmean(values), 3),
        "p50_ms": round(_percentile(values, 0.5), 3),
        "p95_ms": round(_percentile(values, 0.95), 3),
        "share": None if share is None else round(share, 3),
        "cpu_mean_ms": round(statistics.fmean(cpu), 3) if cpu else None,
        "n": len(values),
    }


def load(
    port: int, path: str, content_type: str, bodies: list[bytes], concurrency: int, seconds: float
) -> Collected:
    """``concurrency`` keep-alive connections sending ``bodies`` in turn for ``seconds``."""
    collected = Collected()
    lock = threading.Lock()
    counter = itertools.count()
    stop_at = time.monotonic() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        local = Collected()
        while time.monotonic() < stop_at:
            body = bodies[next(counter) % len(bodies)]
            started = time.perf_counter()
            try:
                conn.request("POST", path, body, {"Content-Type": content_type})
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException):
                local.errors += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            latency = 1000 * (time.perf_counter() - started)
            if resp.status != 200:
                # Only 200s carry the stages of a full answer; a refusal is counted apart.
                if 400 <= resp.status < 500:
                    local.refused += 1
                else:
                    local.errors += 1
                continue
            value = resp.getheader(HEADER)
            if value is None:
                local.missing_header += 1
                continue
            local.add(parse_header(value), latency, parse_header(value, "cpu"))
        conn.close()
        with lock:
            for name, values in local.stages.items():
                collected.stages.setdefault(name, []).extend(values)
            for name, values in local.cpu.items():
                collected.cpu.setdefault(name, []).extend(values)
            collected.latencies_ms.extend(local.latencies_ms)
            collected.errors += local.errors
            collected.refused += local.refused
            collected.missing_header += local.missing_header

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Dicts keep insertion order: the first request's header order, which is the stages'.
    return collected


def model_split(payload: Payload, model_uri: str, threads: int, repeat: int = 300) -> list[dict]:
    """The ``model`` stage split in this process: decode, normalisation, forward pass, each
    the median over ``repeat`` single-image calls of the model's own functions."""
    import mlflow.pyfunc

    from pyfunc import preprocess
    from pyfunc.contract import THREADS_CONFIG

    loaded = mlflow.pyfunc.load_model(model_uri, model_config={THREADS_CONFIG: threads})
    model = loaded.unwrap_python_model()
    images = list(payload.images[:repeat]) or [payload.image]
    timings: dict[str, list[float]] = {"decode": [], "normalise": [], "forward": []}
    for i in range(repeat):
        image = images[i % len(images)]
        t0 = time.perf_counter()
        decoded = preprocess.decode_images([image])
        t1 = time.perf_counter()
        batch = model.pre_process([image])
        t2 = time.perf_counter()
        model.probabilities(batch)
        t3 = time.perf_counter()
        timings["decode"].append(t1 - t0)
        # pre_process decodes too: its normalisation is the rest.
        timings["normalise"].append(max((t2 - t1) - (t1 - t0), 0.0))
        timings["forward"].append(t3 - t2)
        del decoded
    return [
        {"stage": f"model: {name}", "median_ms": round(1000 * statistics.median(v), 3)}
        for name, v in timings.items()
    ]


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        f"Measured {meta['started']} with `python -m bench.stages {' '.join(meta['argv'])}`: "
        f"c={meta['concurrency']}, {meta['duration_s']:g} s per payload, load average "
        f"{meta['loadavg_before']:.1f} before (the machine was shared).",
        "",
    ]
    for name, run in results["payloads"].items():
        lines += [
            f"### {name}: {run['responses']} answers, {run['rps']:.0f} req/s, "
            f"{run['errors']} errors, {run.get('refused', 0)} refused",
            "",
            "| stage | mean ms | p50 ms | p95 ms | share of app | thread CPU ms (mean) |",
            "|---|--:|--:|--:|--:|--:|",
        ]
        for row in run["stages"]:
            cells = [_ms(row.get(key)) for key in ("mean_ms", "p50_ms", "p95_ms")]
            share = row.get("share")
            cells.append("" if share is None else f"{100 * share:.0f} %")
            cells.append(_ms(row.get("cpu_mean_ms")))
            lines.append(f"| {row['stage']} | " + " | ".join(cells) + " |")
        for row in run.get("model_split", []):
            lines.append(
                f"| {row['stage']} (in process, median) | {row['median_ms']:.3f} | | | | |"
            )
        lines.append("")
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    import os

    import locations
    from bench import run, servers
    from bench.payloads import build_payloads, request_for

    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__)
    parser.add_argument("--payloads", default="png28,distinct28")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--service-env", default=os.environ.get("BENCH_SERVICE_ENV", ""))
    parser.add_argument("--model-uri", default=os.environ.get("MODEL_URI") or run.DEFAULT_MODEL_URI)
    parser.add_argument("--no-model-split", action="store_true")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results" / "stages")
    args = parser.parse_args(argv)
    payloads = build_payloads()
    work = Path(tempfile.mkdtemp(prefix="digits-stages-"))
    port = servers.free_port()
    extra = {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "MODEL_URI": args.model_uri,
        "DATA_DIR": str(work / "service-data"),
        **run.parse_env(args.service_env),
        "SERVER_TIMING": "true",
    }
    results: dict[str, Any] = {
        "meta": {
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "argv": sys.argv[1:] if argv is None else argv,
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "loadavg_before": round(os.getloadavg()[0], 2),
            "service_env": extra,
        },
        "payloads": {},
    }
    running = run.start_service("service", "this service", port, extra, work)
    try:
        for name in args.payloads.split(","):
            payload = payloads[name]
            bodies = [request_for("service", payload, image).body for image in payload.images]
            req = request_for("service", payload)
            load(port, req.path, req.content_type, bodies[:200], 2, 2.0)  # warm-up
            started = time.monotonic()
            collected = load(
                port, req.path, req.content_type, bodies, args.concurrency, args.duration
            )
            wall = time.monotonic() - started
            results["payloads"][name] = {
                "responses": len(collected.latencies_ms),
                "rps": len(collected.latencies_ms) / wall,
                "errors": collected.errors,
                "refused": collected.refused,
                "missing_header": collected.missing_header,
                "stages": summarise(collected),
            }
            print(f"{name}: {len(collected.latencies_ms)} answers", flush=True)
    finally:
        servers.stop(running)
        shutil.rmtree(work, ignore_errors=True)
    if not args.no_model_split:
        env = run.base_env(locations.tracking_uri())
        os.environ["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]
        for name in results["payloads"]:
            results["payloads"][name]["model_split"] = model_split(
                payloads[name], args.model_uri, threads=1
            )
    results["meta"]["loadavg_after"] = round(os.getloadavg()[0], 2)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "stages.json").write_text(json.dumps(results, indent=1) + "\n")
    text = markdown(results)
    (args.out / "stages.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
