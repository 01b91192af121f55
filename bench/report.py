"""bench.json, bench.md (the table + the issue's targets, met or missed) and bench.png."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# The targets (#6, section 1).
THROUGHPUT_RATIO = 3.0  # ours vs `mlflow models serve` at concurrency 32
P50_C1_MS = 2.0  # 28×28 PNG, concurrency 1
P99_C32_MS = 50.0
READY_S = 6.0
TARGET_CONCURRENCY = 32
SEED_PAYLOAD = "png28"

ORDER = ("service", "ceiling", "mlserver-tuned", "mlserver", "bentoml", "mlflow", "naive")
COLOURS = {
    "service": "#1f77b4",
    "mlflow": "#d62728",
    "naive": "#7f7f7f",
    # bench.ceiling and bench.peers
    "ceiling": "#000000",
    "mlserver": "#ff7f0e",
    "mlserver-tuned": "#2ca02c",
    "bentoml": "#9467bd",
}


def _cell(results: dict, server: str, payload: str, concurrency: int) -> dict | None:
    for cell in results["cells"]:
        if (cell["server"], cell["payload"], cell["concurrency"]) == (server, payload, concurrency):
            return cell
    return None


def _target(name: str, value: str, met: bool | None) -> dict[str, Any]:
    return {"target": name, "value": value, "met": met}


def evaluate_targets(results: dict) -> list[dict[str, Any]]:
    """Each target of the issue, with the figure it was judged on; ``met`` is None when
    this run did not measure it (a subset of servers, payloads or concurrencies)."""
    out: list[dict[str, Any]] = []
    payloads = list(results["payloads"])
    c = TARGET_CONCURRENCY
    for payload in payloads:
        ours, ref = _cell(results, "service", payload, c), _cell(results, "mlflow", payload, c)
        name = f"c={c} throughput ≥ {THROUGHPUT_RATIO:g}× `mlflow models serve` ({payload})"
        if ours and ref and ref["rps"] > 0:
            ratio = ours["rps"] / ref["rps"]
            value = f"{ratio:.2f}× ({ours['rps']:.0f} vs {ref['rps']:.0f} req/s)"
            out.append(_target(name, value, ratio >= THROUGHPUT_RATIO))
        else:
            out.append(_target(name, "not measured", None))
    cell = _cell(results, "service", SEED_PAYLOAD, 1)
    name = f"p50 ≤ {P50_C1_MS:g} ms at c=1 ({SEED_PAYLOAD})"
    if cell:
        out.append(_target(name, f"{cell['p50_ms']:.2f} ms", cell["p50_ms"] <= P50_C1_MS))
    else:
        out.append(_target(name, "not measured", None))
    for payload in payloads:
        cell = _cell(results, "service", payload, c)
        name = f"p99 ≤ {P99_C32_MS:g} ms at c={c} ({payload})"
        if cell:
            out.append(_target(name, f"{cell['p99_ms']:.1f} ms", cell["p99_ms"] <= P99_C32_MS))
        else:
            out.append(_target(name, "not measured", None))
    service = results["servers"].get("service")
    name = f"ready ≤ {READY_S:g} s after start"
    if service:
        ready = service["ready_s"]
        value = f"{ready:.2f} s to the first /ready 200"
        if service.get("all_workers_ready_s") is not None:
            loaded = service["all_workers_ready_s"]
            value += f"; all {service['workers']} workers loaded at {loaded:.2f} s"
        out.append(_target(name, value, ready <= READY_S))
        workers = service.get("peak_rss_mb_per_worker") or []
        value = ", ".join(f"{mb:.0f}" for mb in workers) + " MB" if workers else "none seen"
        out.append(_target("peak RSS per worker reported", value, bool(workers)))
        errors = sum(cell["errors"] for cell in results["cells"] if cell["server"] == "service")
        out.append(_target("no errors (this service, all cells)", str(errors), errors == 0))
    else:
        out.append(_target(name, "not measured", None))
    return out


def _fmt(value: float | None, digits: int = 1) -> str:
    return (
        "–"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.{digits}f}"
    )


def markdown(results: dict) -> str:
    meta, servers = results["meta"], results["servers"]
    lines = [
        "# Benchmark: this service vs `mlflow models serve` vs naive Flask + Keras",
        "",
        f"Run {meta['started']} on {meta['host']['cpus']} CPUs; {meta['loadgen']['version']} "
        f"({meta['loadgen']['tool']}), {meta['duration_s']:g} s per cell after a warm-up; "
        f"load average {meta['host']['loadavg_before'][0]:.2f} before, "
        f"{meta['host']['loadavg_after'][0]:.2f} after (1 min). Model "
        f"`{meta['model_uri']}` (version {meta.get('model_version') or '?'}).",
        "",
        "| server | payload | conc. | req/s | p50 ms | p95 ms | p99 ms | errors | CPU % "
        "| CPU ms/req | peak RSS MB | others % |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for cell in _ordered(results["cells"], list(results["payloads"])):
        lines.append(
            f"| {cell['server']} | {cell['payload']} | {cell['concurrency']} "
            f"| {cell['rps']:.0f} | {_fmt(cell['p50_ms'], 2)} | {_fmt(cell['p95_ms'], 2)} "
            f"| {_fmt(cell['p99_ms'], 2)} | {cell['errors']} | {cell['server_cpu_pct']:.0f} "
            f"| {_fmt(cell.get('cpu_ms_per_request'), 2)} "
            f"| {cell['peak_rss_mb_total']:.0f} | {cell['other_cpu_pct']:.0f} |"
        )
    lines += [
        "",
        "CPU % is the server's process tree (CPU seconds / wall seconds, 100 % = one core); "
        "CPU ms/req is its CPU seconds over the requests it answered; "
        "peak RSS is the whole tree's (master + workers); errors = non-2xx + transport errors; "
        "others % is the CPU everything else on the machine used meanwhile (machine-wide busy "
        "CPU minus the server and the load generator): high values mean a noisy cell.",
        "",
        "| server | what ran | ready s | peak RSS MB per process |",
        "|---|---|--:|---|",
    ]
    for name in _ordered_names(servers):
        s = servers[name]
        per = ", ".join(f"{p['role']} {p['peak_rss_mb']:.0f}" for p in s["peak_rss_mb_per_process"])
        label = f"{s['label']} (**{s['died']}**)" if s.get("died") else s["label"]
        lines.append(f"| {name} | {label} | {s['ready_s']:.2f} | {per} |")
    lines += ["", "## Targets (issue #6)", ""]
    for t in results["targets"]:
        mark = {True: "met", False: "**missed**", None: "not measured"}[t["met"]]
        lines.append(f"- {t['target']}: {t['value']} — {mark}")
    lines += [
        "",
        "Machine load during the run: other processes used on average "
        f"{meta['host']['other_cpu_pct_mean']:.0f} % of a core per cell.",
        "",
    ]
    return "\n".join(lines)


def _ordered_names(names: Iterable[str]) -> list[str]:
    names = list(names)
    return [n for n in ORDER if n in names] + [n for n in names if n not in ORDER]


def _ordered(cells: list[dict], payloads: list[str]) -> list[dict]:
    """Server by server (ours first), payloads in run order, concurrency ascending."""
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(
        cells,
        key=lambda c: (rank.get(c["server"], 99), payloads.index(c["payload"]), c["concurrency"]),
    )


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    payloads = list(results["payloads"])
    fig, axes = plt.subplots(2, len(payloads), figsize=(6 * len(payloads), 8.5), squeeze=False)
    concurrencies = sorted({c["concurrency"] for c in results["cells"]})
    for col, payload in enumerate(payloads):
        for row, (key, ylabel) in enumerate(
            [("rps", "throughput, req/s (log)"), ("p99_ms", "p99 latency, ms (log)")]
        ):
            ax = axes[row][col]
            for name in _ordered_names(results["servers"]):
                cells = sorted(
                    (
                        c
                        for c in results["cells"]
                        if c["server"] == name and c["payload"] == payload
                    ),
                    key=lambda c: c["concurrency"],
                )
                if not cells:
                    continue
                xs = [c["concurrency"] for c in cells]
                ys = [max(c[key], 1e-3) for c in cells]
                ax.plot(
                    xs,
                    ys,
                    marker="o",
                    color=COLOURS.get(name),
                    label=results["servers"][name]["label"],
                )
                for x, y in zip(xs, ys, strict=True):
                    ax.annotate(
                        f"{y:.0f}" if y >= 10 else f"{y:.1f}",
                        (x, y),
                        textcoords="offset points",
                        # mlflow's labels below its points: its line often runs close to ours.
                        xytext=(0, -12 if name == "mlflow" else 6),
                        ha="center",
                        fontsize=8,
                        color=COLOURS.get(name),
                    )
            if key == "p99_ms":
                ax.axhline(P99_C32_MS, color="black", linestyle=":", linewidth=1)
                ax.annotate(
                    f"target p99 ≤ {P99_C32_MS:g} ms at c={TARGET_CONCURRENCY}",
                    (concurrencies[0], P99_C32_MS),
                    textcoords="offset points",
                    xytext=(2, 3),
                    fontsize=8,
                )
            ax.set_xscale("log", base=2)
            ax.margins(x=0.08, y=0.12)  # room for the value labels above the points
            ax.set_yscale("log")
            # Plain numbers at 1-2-5 steps: "200", not "2×10²".
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_xticks(concurrencies, [str(c) for c in concurrencies])
            ax.set_xlabel("concurrent connections")
            ax.set_ylabel(ylabel)
            desc = results["payloads"][payload]["description"].split(" (")[0]
            ax.set_title(f"{payload}: {desc}", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8, loc="best")
    meta = results["meta"]
    fig.suptitle(
        f"Digit recognition servers, {meta['started'][:16]} — {meta['loadgen']['tool']}, "
        f"{meta['duration_s']:g} s per point, {meta['host']['cpus']} CPUs, "
        f"load avg before {meta['host']['loadavg_before'][0]:.1f}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(results: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    results["targets"] = evaluate_targets(results)
    paths = [out / "bench.json", out / "bench.md", out / "bench.png"]
    paths[0].write_text(json.dumps(_finite(results), indent=1, default=str) + "\n")
    paths[1].write_text(markdown(results))
    plot(results, paths[2])
    return paths


def _finite(value: Any) -> Any:
    """NaN (a percentile hey did not print) becomes null: bench.json stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
