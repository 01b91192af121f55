"""bench.json, bench.md (the table + the issue's targets, met or missed) and bench.png."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# The targets of issue 22 (section 4): this service, image log on, at concurrency 32,
# against the best peer a team would deploy instead, measured in the same run (the
# machine's load then falls on both).
TARGET_CONCURRENCY = 32
THROUGHPUT_RATIO = 2.0
THROUGHPUT_PAYLOADS = ("png28", "distinct28")  # the seed image and distinct images
P99_C32_MS = 50.0
P99_PAYLOADS = ("png28", "distinct28", "photo640")
P50_C1_MS = 1.5
SEED_PAYLOAD = "png28"
# The peers the targets are judged against: the best of them per payload (highest req/s).
PEERS = ("mlserver-tuned", "mlserver", "bentoml", "mlflow")
# Kept from the first benchmark (issue 6): still printed, as checks, not issue 22's targets.
READY_S = 6.0
SERVICE = "service"

ORDER = (
    "service",
    "service-1w",
    "service-nostore",
    "service-nolog",
    "ceiling",
    "mlserver-tuned",
    "mlserver",
    "bentoml",
    "mlflow",
    "naive",
)
COLOURS = {
    "service": "#1f77b4",
    "service-1w": "#17becf",
    "service-nostore": "#8c564b",
    "service-nolog": "#e377c2",
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


def _num(value: Any) -> float | None:
    """A figure, or None when it was not measured (None, or NaN: a percentile hey did not
    print)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _target(name: str, value: str, met: bool | None) -> dict[str, Any]:
    return {"target": name, "value": value, "met": met}


def best_peer(results: dict, payload: str, concurrency: int = TARGET_CONCURRENCY) -> dict | None:
    """The peer cell with the highest req/s for ``payload`` at ``concurrency``, or None."""
    cells = [_cell(results, name, payload, concurrency) for name in PEERS]
    measured = [c for c in cells if c is not None]
    return max(measured, key=lambda c: c["rps"]) if measured else None


def evaluate_targets(results: dict) -> list[dict[str, Any]]:
    """Each target of issue 22, with the figure it was judged on; ``met`` is None when this
    run did not measure it (a subset of servers, payloads or concurrencies)."""
    out: list[dict[str, Any]] = []
    c = TARGET_CONCURRENCY
    for payload in THROUGHPUT_PAYLOADS:
        ours, peer = _cell(results, SERVICE, payload, c), best_peer(results, payload, c)
        name = f"c={c} throughput ≥ {THROUGHPUT_RATIO:g}× the best peer's ({payload})"
        if ours and peer and peer["rps"] > 0:
            ratio = ours["rps"] / peer["rps"]
            value = f"{ratio:.2f}× ({ours['rps']:.0f} vs {peer['server']} {peer['rps']:.0f} req/s)"
            out.append(_target(name, value, ratio >= THROUGHPUT_RATIO))
        else:
            out.append(_target(name, "not measured", None))
    for payload in THROUGHPUT_PAYLOADS:
        ours, peer = _cell(results, SERVICE, payload, c), best_peer(results, payload, c)
        name = f"c={c} CPU per request ≤ the best peer's ({payload})"
        mine = _num(ours.get("cpu_ms_per_request")) if ours else None
        theirs = _num(peer.get("cpu_ms_per_request")) if peer else None
        if mine is not None and theirs is not None and peer is not None:
            value = f"{mine:.2f} vs {peer['server']} {theirs:.2f} ms"
            out.append(_target(name, value, mine <= theirs))
        else:
            out.append(_target(name, "not measured", None))
    for payload in P99_PAYLOADS:
        cell = _cell(results, SERVICE, payload, c)
        name = f"p99 ≤ {P99_C32_MS:g} ms at c={c} ({payload})"
        if cell and _num(cell.get("p99_ms")) is not None:
            out.append(_target(name, f"{cell['p99_ms']:.1f} ms", cell["p99_ms"] <= P99_C32_MS))
        else:
            out.append(_target(name, "not measured", None))
    cell = _cell(results, SERVICE, SEED_PAYLOAD, 1)
    name = f"p50 ≤ {P50_C1_MS:g} ms at c=1 ({SEED_PAYLOAD})"
    if cell and _num(cell.get("p50_ms")) is not None:
        out.append(_target(name, f"{cell['p50_ms']:.2f} ms", cell["p50_ms"] <= P50_C1_MS))
    else:
        out.append(_target(name, "not measured", None))
    return out


# A cell of this service in which more than this share of the answers are refusals (4xx)
# is not a measure of recognising digits: a payload it refuses wholesale would pass for a
# fast one, as refusals count as answers in req/s.
REFUSED_SHARE_MAX = 0.01


def evaluate_checks(results: dict) -> list[dict[str, Any]]:
    """What else a run of this service must show (issue 6's, kept): ready time, peak RSS
    per worker, no errors (5xx or no answer; refusals are answers), few refusals."""
    out: list[dict[str, Any]] = []
    service = results["servers"].get(SERVICE)
    name = f"ready ≤ {READY_S:g} s after start"
    if not service:
        return [_target(name, "not measured", None)]
    ready = service["ready_s"]
    value = f"{ready:.2f} s to the first /ready 200"
    if service.get("all_workers_ready_s") is not None:
        loaded = service["all_workers_ready_s"]
        value += f"; all {service['workers']} workers loaded at {loaded:.2f} s"
    out.append(_target(name, value, ready <= READY_S))
    workers = service.get("peak_rss_mb_per_worker") or []
    value = ", ".join(f"{mb:.0f}" for mb in workers) + " MB" if workers else "none seen"
    out.append(_target("peak RSS per worker reported", value, bool(workers)))
    cells = [cell for cell in results["cells"] if cell["server"] == SERVICE]
    errors = sum(cell["errors"] for cell in cells)
    out.append(
        _target("no errors, 5xx or transport (this service, all cells)", str(errors), errors == 0)
    )
    name = f"refusals (4xx) ≤ {REFUSED_SHARE_MAX:.0%} of the answers in every cell (this service)"
    shares = [
        (cell.get("refused", 0) / cell["answered"], cell) for cell in cells if cell.get("answered")
    ]
    if shares:
        worst, at = max(shares, key=lambda pair: pair[0])
        refused = sum(cell.get("refused", 0) for cell in cells)
        value = (
            f"{refused} refused in all; at most {worst:.2%} ({at['payload']} c={at['concurrency']})"
        )
        out.append(_target(name, value, worst <= REFUSED_SHARE_MAX))
    else:
        out.append(_target(name, "not measured", None))
    return out


# Issue 22 also asks for figures without a threshold: how throughput and memory grow with
# a second worker on two cores, and what the image log costs when it is switched off (so
# that the comparison with peers that log nothing is fair both ways).
ONE_WORKER, NO_LOG, CEILING = "service-1w", "service-nolog", "ceiling"


def _also(name: str, value: str | None) -> dict[str, Any]:
    """A figure asked for without a threshold; ``value`` None when the run lacks a cell."""
    return {"target": name, "value": value or "not measured", "measured": value is not None}


def evaluate_also(results: dict, concurrency: int = TARGET_CONCURRENCY) -> list[dict[str, Any]]:
    """Per payload at ``concurrency``: 2 workers against 1 (req/s and peak RSS), and the
    image log on against off (req/s and CPU per request), as ratios of the same run;
    ``measured`` False when the run lacks a cell."""
    out: list[dict[str, Any]] = []
    for payload in results["payloads"]:
        two, one = (
            _cell(results, SERVICE, payload, concurrency),
            _cell(results, ONE_WORKER, payload, concurrency),
        )
        name = f"c={concurrency} 1 and 2 workers: throughput and peak RSS ({payload})"
        value = None
        if two and one and one["rps"] > 0:
            value = (
                f"2 workers {two['rps']:.0f} req/s, {two['peak_rss_mb_total']:.0f} MB; "
                f"1 worker {one['rps']:.0f} req/s, {one['peak_rss_mb_total']:.0f} MB: "
                f"{two['rps'] / one['rps']:.2f}× the throughput for "
                f"{two['peak_rss_mb_total'] - one['peak_rss_mb_total']:+.0f} MB"
            )
        out.append(_also(name, value))
    for payload in results["payloads"]:
        on, off = (
            _cell(results, SERVICE, payload, concurrency),
            _cell(results, NO_LOG, payload, concurrency),
        )
        name = f"c={concurrency} what the image log costs: on against off ({payload})"
        on_cpu = _num(on.get("cpu_ms_per_request")) if on else None
        off_cpu = _num(off.get("cpu_ms_per_request")) if off else None
        value = None
        if on and off and off["rps"] > 0 and on_cpu is not None and off_cpu:
            value = (
                f"req/s {on['rps']:.0f} vs {off['rps']:.0f} ({on['rps'] / off['rps']:.2f}×), "
                f"CPU per request {on_cpu:.2f} vs {off_cpu:.2f} ms ({on_cpu / off_cpu:.2f}×)"
            )
        out.append(_also(name, value))
    out += evaluate_budget(results, concurrency)
    return out


def evaluate_budget(results: dict, concurrency: int = TARGET_CONCURRENCY) -> list[dict[str, Any]]:
    """Per throughput payload: the CPU per request that the throughput target allows even
    with every core of the machine to the server (the load generator needs some of them,
    so this is generous), beside what the stack alone costs (the ceiling) and what this
    service spends beyond it now. It says how far off the target is, not only that it is
    missed: when the ceiling alone takes most of the budget, no cut in the app reaches it."""
    out: list[dict[str, Any]] = []
    cpus = results["meta"]["host"]["cpus"]
    for payload in THROUGHPUT_PAYLOADS:
        name = (
            f"c={concurrency} CPU per request that {THROUGHPUT_RATIO:g}× the best peer's "
            f"throughput allows ({payload})"
        )
        ours, peer = _cell(results, SERVICE, payload, concurrency), best_peer(results, payload)
        top = _cell(results, CEILING, payload, concurrency)
        mine = _num(ours.get("cpu_ms_per_request")) if ours else None
        stack = _num(top.get("cpu_ms_per_request")) if top else None
        value = None
        if peer is not None and peer["rps"] > 0 and mine is not None and stack is not None:
            budget = cpus * 1000.0 / (THROUGHPUT_RATIO * peer["rps"])
            value = (
                f"{budget:.2f} ms ({THROUGHPUT_RATIO:g}× {peer['server']}'s "
                f"{peer['rps']:.0f} req/s on all {cpus} cores); the stack alone (ceiling) takes "
                f"{stack:.2f} ms, which leaves {budget - stack:.2f} ms for the image, the model "
                f"and the image log; this service spends {mine - stack:.2f} ms on them now"
            )
        out.append(_also(name, value))
    name = f"c=1 latency that p50 ≤ {P50_C1_MS:g} ms leaves for the work ({SEED_PAYLOAD})"
    ours, top = _cell(results, SERVICE, SEED_PAYLOAD, 1), _cell(results, CEILING, SEED_PAYLOAD, 1)
    mine = _num(ours.get("p50_ms")) if ours else None
    stack = _num(top.get("p50_ms")) if top else None
    value = None
    if mine is not None and stack is not None:
        value = (
            f"the stack alone (ceiling) answers in {stack:.2f} ms at p50, which leaves "
            f"{P50_C1_MS - stack:.2f} ms; this service's work adds {mine - stack:.2f} ms now"
        )
    out.append(_also(name, value))
    return out


# This service's other configurations, each against the default one (2 workers, image
# log on): what a second worker costs and gives, and what keeping the images costs.
VARIANTS = {
    "service-1w": "1 worker instead of 2",
    "service-nostore": "STORE_IMAGES=false (records kept, image bytes not)",
    "service-nolog": "IMAGE_LOG=off (no image log: nothing opened or written per request)",
}


def variant_rows(results: dict, concurrency: int = TARGET_CONCURRENCY) -> list[dict[str, Any]]:
    """Per variant run and payload: req/s, CPU ms/req and peak RSS beside the default's."""
    rows = []
    for name, change in VARIANTS.items():
        for payload in results["payloads"]:
            ours, base = (
                _cell(results, name, payload, concurrency),
                _cell(results, SERVICE, payload, concurrency),
            )
            if ours is None:
                continue
            rows.append(
                {
                    "server": name,
                    "change": change,
                    "payload": payload,
                    "rps": ours["rps"],
                    "base_rps": base["rps"] if base else None,
                    "cpu_ms": ours.get("cpu_ms_per_request"),
                    "base_cpu_ms": base.get("cpu_ms_per_request") if base else None,
                    "rss_mb": ours["peak_rss_mb_total"],
                    "base_rss_mb": base["peak_rss_mb_total"] if base else None,
                }
            )
    return rows


def _fmt(value: float | None, digits: int = 1) -> str:
    return (
        "–"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.{digits}f}"
    )


def markdown(results: dict) -> str:
    meta, servers = results["meta"], results["servers"]
    lines = [
        "# Benchmark: this service against the servers a team would deploy instead",
        "",
        f"Run {meta['started']} on {meta['host']['cpus']} CPUs; {meta['loadgen']['version']} "
        f"({meta['loadgen']['tool']}), {meta['duration_s']:g} s per cell after a warm-up; "
        f"load average {meta['host']['loadavg_before'][0]:.2f} before, "
        f"{meta['host']['loadavg_after'][0]:.2f} after (1 min). Model "
        f"`{meta['model_uri']}` (version {meta.get('model_version') or '?'}).",
        "",
        "| server | payload | conc. | req/s | p50 ms | p95 ms | p99 ms | errors | refused "
        "| CPU % | CPU ms/req | peak RSS MB | others % |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for cell in _ordered(results["cells"], list(results["payloads"])):
        lines.append(
            f"| {cell['server']} | {cell['payload']} | {cell['concurrency']} "
            f"| {cell['rps']:.0f} | {_fmt(cell['p50_ms'], 2)} | {_fmt(cell['p95_ms'], 2)} "
            f"| {_fmt(cell['p99_ms'], 2)} | {cell['errors']} | {cell.get('refused', '–')} "
            f"| {cell['server_cpu_pct']:.0f} "
            f"| {_fmt(cell.get('cpu_ms_per_request'), 2)} "
            f"| {cell['peak_rss_mb_total']:.0f} | {cell['other_cpu_pct']:.0f} |"
        )
    lines += [
        "",
        "CPU % is the server's process tree (CPU seconds / wall seconds, 100 % = one core); "
        "CPU ms/req is its CPU seconds over the requests it answered; "
        "peak RSS is the whole tree's (master + workers); errors are 5xx answers and requests "
        "with no HTTP answer (timeouts, resets); refused are 4xx answers (this service "
        "refuses an image it does not take for one digit with a 422), counted in req/s as "
        "answers, as a peer's 200 for the same image is; "
        "others % is the CPU everything else on the machine used meanwhile (machine-wide busy "
        "CPU minus the server and the load generator): high values mean a noisy cell.",
        "",
        "| server | what ran | ready s | errors | refused | peak RSS MB per process |",
        "|---|---|--:|--:|--:|---|",
    ]
    for name in _ordered_names(servers):
        s = servers[name]
        per = ", ".join(f"{p['role']} {p['peak_rss_mb']:.0f}" for p in s["peak_rss_mb_per_process"])
        label = f"{s['label']} (**{s['died']}**)" if s.get("died") else s["label"]
        own = [c for c in results["cells"] if c["server"] == name]
        errors = sum(c["errors"] for c in own)
        refused = sum(c.get("refused", 0) for c in own)
        lines.append(f"| {name} | {label} | {s['ready_s']:.2f} | {errors} | {refused} | {per} |")
    rows = variant_rows(results)
    if rows:
        lines += [
            "",
            f"## This service's configurations (c={TARGET_CONCURRENCY}, against the default: "
            "2 workers, image log on)",
            "",
            "| server | change | payload | req/s | default req/s | CPU ms/req | default CPU ms/req "
            "| peak RSS MB | default peak RSS MB |",
            "|---|---|---|--:|--:|--:|--:|--:|--:|",
        ]
        for r in rows:
            lines.append(
                f"| {r['server']} | {r['change']} | {r['payload']} | {r['rps']:.0f} "
                f"| {_fmt(r['base_rps'], 0)} | {_fmt(r['cpu_ms'], 2)} "
                f"| {_fmt(r['base_cpu_ms'], 2)} "
                f"| {r['rss_mb']:.0f} | {_fmt(r['base_rss_mb'], 0)} |"
            )
    lines += [
        "",
        f"## Targets (issue 22): this service, image log on, c={TARGET_CONCURRENCY}, against "
        "the best peer of this run",
        "",
        f"The best peer is, per payload, the one of {', '.join(PEERS)} with the most req/s at "
        f"c={TARGET_CONCURRENCY}.",
        "",
    ]
    for t in results["targets"]:
        lines.append(_judged(t))
    lines += [
        "",
        "Also asked (figures without a threshold: how cost grows with workers on "
        f"{meta['host']['cpus']} cores, and the image log's cost when switched off):",
        "",
    ]
    for t in results.get("also", []):
        lines.append(f"- {t['target']}: {t['value']}")
    lines += ["", "Checks (kept from issue 6):", ""]
    for t in results.get("checks", []):
        lines.append(_judged(t))
    lines += [
        "",
        "Machine load during the run: other processes used on average "
        f"{meta['host']['other_cpu_pct_mean']:.0f} % of a core per cell.",
        "",
    ]
    return "\n".join(lines)


def _judged(t: dict[str, Any]) -> str:
    if t["met"] is None and t["value"] == "not measured":
        return f"- {t['target']}: not measured"  # once, not "not measured — not measured"
    return f"- {t['target']}: {t['value']} — {_mark(t['met'])}"


def _mark(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "not measured"}[met]


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
    results["checks"] = evaluate_checks(results)
    results["also"] = evaluate_also(results)
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
