"""Two configurations of this service compared under the same load, turn by turn.

    python -m bench.ab --a "FRONT=none" --b "FRONT=nginx" [--rounds 5] [--duration 5]
                       [--concurrency 1,32] [--payload png28]

`make bench` measures one configuration after another; on a machine whose other load drifts
(this one's load average went from 2 to 24 within minutes) the second run can get half the
CPU of the first, and the difference says nothing about the configurations. Here both
servers run at once (an idle one costs nothing) and short wrk runs alternate between them,
A B B A A B …, so that both see the same background. Each pair gives a ratio B/A of
throughput, of p99 and of answers per CPU-second of the server's process tree (what a
configuration costs, whatever share of a busy machine it got); the medians are printed (and
written to bench/results/ab.json).
"""

from __future__ import annotations

import argparse
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


def start(env_text: str, work: Path, name: str, model_uri: str) -> servers.RunningServer:
    port = servers.free_port()
    extra = {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "MODEL_URI": model_uri,
        "DATA_DIR": str(work / f"data-{name}"),
        **parse_env(env_text),
    }
    return start_service(name, env_text or "default", port, extra, work)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    parser.add_argument("--a", default="FRONT=none", help="env of configuration A")
    parser.add_argument("--b", default="FRONT=nginx", help="env of configuration B")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--payload", default="png28", choices=("png28", "photo640", "distinct28"))
    parser.add_argument("--model-uri", default="models:/digits/Production")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results" / "ab")
    args = parser.parse_args(argv)
    payload = build_payloads()[args.payload]
    request = request_for("service", payload)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        work = Path(tmp)
        body = work / "body"
        body.write_bytes(request.body)
        a = start(args.a, work, "a", args.model_uri)
        try:
            b = start(args.b, work, "b", args.model_uri)
            try:
                for concurrency in (int(c) for c in args.concurrency.split(",")):
                    cell: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
                    for server in (a, b):  # warm-up, not counted
                        loadgen.run("wrk", server.spec.url + request.path, request.content_type,
                                    body, concurrency, 2, work)  # fmt: skip
                    for turn in range(args.rounds):
                        order = (("a", a), ("b", b)) if turn % 2 == 0 else (("b", b), ("a", a))
                        for name, server in order:
                            sampler = servers.TreeSampler(server.proc.pid).start()
                            result = loadgen.run(
                                "wrk",
                                server.spec.url + request.path,
                                request.content_type,
                                body,
                                concurrency,
                                args.duration,
                                work,
                            )
                            usage = sampler.stop()
                            cell[name].append(
                                {**result.as_dict(), "server_cpu_s": round(usage.cpu_s, 3)}
                            )
                    rps = [y["rps"] / x["rps"] for x, y in zip(cell["a"], cell["b"], strict=True)]
                    p99 = [
                        y["p99_ms"] / x["p99_ms"] for x, y in zip(cell["a"], cell["b"], strict=True)
                    ]
                    # Answers per CPU-second of the server's process tree (nginx included):
                    # what the configuration costs, whatever share of the CPU it was given.
                    per_cpu = {
                        name: [r["rps"] * r["duration_s"] / r["server_cpu_s"] for r in cell[name]]
                        for name in ("a", "b")
                    }
                    summary = {
                        "a_rps": [x["rps"] for x in cell["a"]],
                        "b_rps": [y["rps"] for y in cell["b"]],
                        "a_p99_ms": [x["p99_ms"] for x in cell["a"]],
                        "b_p99_ms": [y["p99_ms"] for y in cell["b"]],
                        "errors": sum(r["errors"] for r in cell["a"] + cell["b"]),
                        "a_per_cpu_s": per_cpu["a"],
                        "b_per_cpu_s": per_cpu["b"],
                        "median_rps_ratio_b_over_a": statistics.median(rps),
                        "median_per_cpu_ratio_b_over_a": statistics.median(
                            y / x for x, y in zip(per_cpu["a"], per_cpu["b"], strict=True)
                        ),
                        "median_p99_ratio_b_over_a": statistics.median(p99),
                    }
                    results[f"c={concurrency}"] = summary
                    med = {k: statistics.median(v) for k, v in summary.items() if k[1] == "_"}
                    print(
                        f"c={concurrency:<3} A [{args.a}] {med['a_rps']:7.1f} req/s p99 "
                        f"{med['a_p99_ms']:6.1f} ms | B [{args.b}] {med['b_rps']:7.1f} req/s "
                        f"p99 {med['b_p99_ms']:6.1f} ms | B/A throughput "
                        f"{summary['median_rps_ratio_b_over_a']:.3f}, p99 "
                        f"{summary['median_p99_ratio_b_over_a']:.3f}, answers per server "
                        f"CPU-second {med['a_per_cpu_s']:.0f} vs {med['b_per_cpu_s']:.0f} "
                        f"({summary['median_per_cpu_ratio_b_over_a']:.3f}) "
                        f"(medians of {args.rounds} pairs), errors {summary['errors']}",
                        flush=True,
                    )
            finally:
                servers.stop(b)
        finally:
            servers.stop(a)
    record = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m bench.ab " + " ".join(argv if argv is not None else sys.argv[1:]),
        "a": args.a,
        "b": args.b,
        "payload": args.payload,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
