"""Two configurations of this service compared under the same load, turn by turn.

    python -m bench.ab --a "FRONT=none" --b "FRONT=nginx" [--b "FRONT=nginx THREADS=4" …]
                       [--rounds 5] [--duration 5] [--concurrency 1,32] [--payload png28]
                       [--a-checkout PATH] [--b-checkout PATH]   # another commit's code,
                                                                 # e.g. a git worktree
                       [--api ceiling]   # the stack alone: POST /bench/ceiling (bench.ceiling)

`make bench` measures one configuration after another; on a machine whose other load drifts
(this one's load average went from 2 to 24 within minutes) the second run can get half the
CPU of the first, and the difference says nothing about the configurations. Here both
servers run at once (an idle one costs nothing) and short wrk runs alternate between them,
A B B A A B …, so that both see the same background. Each pair gives a ratio B/A of
throughput, of p99 and of answers per CPU-second of the server's process tree (what a
configuration costs, whatever share of a busy machine it got); the medians are printed (and
written to bench/results/ab.json). With several ``--b``, each round runs A and every B, in
an order that rotates from round to round, and each B is compared with A's run of the same
round.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import loadgen, servers
from bench.payloads import build_payloads, request_for
from bench.run import parse_env, start_service
from locations import PROJECT_ROOT

CEILING_ENV = "CEILING_ROUTE=true"


def start(
    env_text: str, work: Path, name: str, model_uri: str, checkout: Path | None = None
) -> servers.RunningServer:
    port = servers.free_port()
    extra = {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "MODEL_URI": model_uri,
        "DATA_DIR": str(work / f"data-{name}"),
        **parse_env(env_text),
    }
    if checkout is None:
        return start_service(name, env_text or "default", port, extra, work)
    return start_service(name, f"{env_text or 'default'} ({checkout})", port, extra, work, checkout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    parser.add_argument("--a", default="FRONT=none", help="env of configuration A")
    parser.add_argument(
        "--b",
        action="append",
        help='env of configuration B (repeat for more; default: "FRONT=nginx")',
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--payload", default="png28", choices=("png28", "photo640", "distinct28"))
    parser.add_argument(
        "--api",
        default="service",
        choices=("service", "ceiling"),
        help="ceiling: every configuration with CEILING_ROUTE=true, loaded on /bench/ceiling "
        "(what the HTTP stack costs without the model and the image log)",
    )
    parser.add_argument("--model-uri", default="models:/digits/Production")
    parser.add_argument(
        "--a-checkout",
        type=Path,
        help="run A from this checkout instead (e.g. `git worktree add /tmp/old HEAD~1`)",
    )
    parser.add_argument("--b-checkout", type=Path, help="run every B from this checkout")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results" / "ab")
    args = parser.parse_args(argv)
    configs = {"a": args.a, **{f"b{i + 1}": env for i, env in enumerate(args.b or ["FRONT=nginx"])}}
    if args.api == "ceiling":
        configs = {name: f"{env} {CEILING_ENV}".strip() for name, env in configs.items()}
    payload = build_payloads()[args.payload]
    request = request_for(args.api, payload)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        body = work / "body"
        body.write_bytes(request.body)
        running: dict[str, servers.RunningServer] = {}
        for name, env in configs.items():
            checkout = args.a_checkout if name == "a" else args.b_checkout
            running[name] = start(env, work, name, args.model_uri, checkout)
            stack.callback(servers.stop, running[name])
        names = list(configs)

        def wrk(server: servers.RunningServer, concurrency: int, seconds: float):
            return loadgen.run("wrk", server.spec.url + request.path, request.content_type,
                               body, concurrency, seconds, work)  # fmt: skip

        for concurrency in (int(c) for c in args.concurrency.split(",")):
            cell: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
            for server in running.values():  # warm-up, not counted
                wrk(server, concurrency, 2)
            for turn in range(args.rounds):
                # A B1 B2, then B2 B1 A, then B1 B2 A …: nobody always first or last.
                order = names[turn % len(names) :] + names[: turn % len(names)]
                if turn % 2:
                    order.reverse()
                for name in order:
                    sampler = servers.TreeSampler(running[name].proc.pid).start()
                    result = wrk(running[name], concurrency, args.duration)
                    usage = sampler.stop()
                    cell[name].append({**result.as_dict(), "server_cpu_s": round(usage.cpu_s, 3)})
            # Answers per CPU-second of the server's process tree (nginx included): what the
            # configuration costs, whatever share of the CPU it was given.
            per_cpu = {
                name: [r["rps"] * r["duration_s"] / max(r["server_cpu_s"], 1e-9) for r in runs]
                for name, runs in cell.items()
            }
            a_runs = cell["a"]
            summary: dict[str, Any] = {
                "a_rps": [x["rps"] for x in a_runs],
                "a_p99_ms": [x["p99_ms"] for x in a_runs],
                "a_per_cpu_s": per_cpu["a"],
                "errors": sum(r["errors"] for runs in cell.values() for r in runs),
            }
            line = (
                f"c={concurrency:<3} A [{configs['a']}] {statistics.median(summary['a_rps']):7.1f} "
                f"req/s p99 {statistics.median(summary['a_p99_ms']):6.1f} ms, "
                f"{statistics.median(per_cpu['a']):.0f} answers per server CPU-second"
            )
            print(line, flush=True)
            for name in names[1:]:
                b_runs = cell[name]
                ratios = {
                    "rps": [y["rps"] / x["rps"] for x, y in zip(a_runs, b_runs, strict=True)],
                    "p99": [y["p99_ms"] / x["p99_ms"] for x, y in zip(a_runs, b_runs, strict=True)],
                    "per_cpu": [y / x for x, y in zip(per_cpu["a"], per_cpu[name], strict=True)],
                }
                key = "b" if len(names) == 2 else name
                summary |= {
                    f"{key}_env": configs[name],
                    f"{key}_rps": [y["rps"] for y in b_runs],
                    f"{key}_p99_ms": [y["p99_ms"] for y in b_runs],
                    f"{key}_per_cpu_s": per_cpu[name],
                    f"median_rps_ratio_{key}_over_a": statistics.median(ratios["rps"]),
                    f"median_per_cpu_ratio_{key}_over_a": statistics.median(ratios["per_cpu"]),
                    f"median_p99_ratio_{key}_over_a": statistics.median(ratios["p99"]),
                }
                print(
                    f"      {name.upper()} [{configs[name]}] "
                    f"{statistics.median(summary[f'{key}_rps']):7.1f} req/s p99 "
                    f"{statistics.median(summary[f'{key}_p99_ms']):6.1f} ms | /A throughput "
                    f"{statistics.median(ratios['rps']):.3f}, p99 "
                    f"{statistics.median(ratios['p99']):.3f}, answers per server CPU-second "
                    f"{statistics.median(per_cpu[name]):.0f} "
                    f"({statistics.median(ratios['per_cpu']):.3f}) "
                    f"(medians of {args.rounds} pairs)",
                    flush=True,
                )
            results[f"c={concurrency}"] = summary
    record = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m bench.ab " + " ".join(argv if argv is not None else sys.argv[1:]),
        "a": args.a,
        "a_checkout": str(args.a_checkout) if args.a_checkout else None,
        "b_checkout": str(args.b_checkout) if args.b_checkout else None,
        "b": [env for name, env in configs.items() if name != "a"],
        "payload": args.payload,
        "api": args.api,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
