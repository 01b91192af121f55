"""Driving a server with a real load generator: ``wrk`` (default) or ``hey``.

Both are closed-loop: ``concurrency`` connections, each sending its next request as soon as
the previous answer arrived, for a fixed duration. wrk is the default because it reports
latency percentiles at microsecond resolution and every kind of error in one run, and
because it is light (C, epoll): on a 2-core machine the load generator competes with the
server for CPU, and the less it takes the less it skews the comparison. hey (Go) prints
latencies at 0.1 ms resolution and drops failed requests from its CSV output, so its
summary is parsed instead.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TOOLS = ("wrk", "hey")
# Far above any latency seen here: a slow answer must be measured, not dropped as a timeout.
REQUEST_TIMEOUT_S = 30


@dataclass
class LoadResult:
    tool: str
    concurrency: int
    duration_s: float
    responses: int  # HTTP responses received, any status
    non_2xx: int
    transport_errors: int  # connect/read/write/timeout: no HTTP response at all
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    loadgen_cpu_s: float
    error_detail: dict[str, int] = field(default_factory=dict)
    # Of non_2xx: the server's refusals (4xx: a body it judged and answered, such as this
    # service's 422 for a training digit it does not take for a digit) and its failures
    # (5xx). A refusal is an answer, not an error: a peer that answers the same image 200
    # did the same work.
    refused: int = 0
    server_errors: int = 0
    # Bodies sent in turn (write_bodies): where the next run starts so that it sends none of
    # this run's (no body at or beyond it was sent). Exact whatever each wrk thread's share
    # of the requests, which a count of responses is not. None for one body, or hey.
    next_body: int | None = None

    @property
    def errors(self) -> int:
        """What went wrong: 5xx answers and requests that got no HTTP answer at all."""
        return self.server_errors + self.transport_errors

    @property
    def answered(self) -> int:
        """Responses that are answers: 2xx and 4xx (refusals), not 5xx."""
        return self.responses - self.server_errors - self.other_non_2xx

    @property
    def other_non_2xx(self) -> int:
        """Neither 2xx, 4xx nor 5xx (1xx/3xx: nothing here answers those)."""
        return max(self.non_2xx - self.refused - self.server_errors, 0)

    @property
    def rps(self) -> float:
        """Answers (2xx and 4xx refusals) per second: a 5xx or a dropped request is not
        throughput, a refusal is."""
        return self.answered / self.duration_s if self.duration_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["errors"] = self.errors
        out["answered"] = self.answered
        out["rps"] = round(self.rps, 1)
        return out


def available(tool: str) -> bool:
    return shutil.which(tool) is not None


def version(tool: str) -> str:
    if tool == "wrk":
        proc = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
        # "wrk debian/4.1.0-3+b2 [epoll] Copyright (C) …" → "wrk debian/4.1.0-3+b2"
        return " ".join((proc.stdout + proc.stderr).split()[:2])
    # hey has no --version; Debian's package version is the best name for it.
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "hey"], capture_output=True, text=True, check=False
    )
    return f"hey {proc.stdout.strip() or 'unknown'}"


def write_bodies(path: Path, bodies: list[bytes]) -> Path:
    """Several request bodies for one run, each sent in turn: ``path`` holds them end to end,
    ``path`` + ``.lengths`` their sizes, one per line."""
    path.write_bytes(b"".join(bodies))
    path.with_name(path.name + ".lengths").write_text("".join(f"{len(b)}\n" for b in bodies))
    return path


def _is_bundle(body_file: Path) -> bool:
    return body_file.with_name(body_file.name + ".lengths").is_file()


def run(
    tool: str,
    url: str,
    content_type: str,
    body_file: Path,
    concurrency: int,
    duration_s: float,
    work_dir: Path,
    start: int = 0,
) -> LoadResult:
    """One closed-loop run; POSTs the bytes of ``body_file`` to ``url`` — or, for a file
    from :func:`write_bodies`, its bodies in turn from the ``start``-th one (wrk only)."""
    if tool == "wrk":
        argv = _wrk_argv(url, content_type, body_file, concurrency, duration_s, work_dir, start)
    elif _is_bundle(body_file):
        raise ValueError("a different body per request needs wrk: hey sends one body")
    elif tool == "hey":
        argv = _hey_argv(url, content_type, body_file, concurrency, duration_s)
    else:
        raise ValueError(f"unknown load generator {tool!r}")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        argv, capture_output=True, text=True, check=False, timeout=duration_s + 120
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # Only this child is reaped in between, so the difference is the generator's own CPU.
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    parse = _parse_wrk if tool == "wrk" else _parse_hey
    return parse(proc.stdout, concurrency, cpu)


# -- wrk -------------------------------------------------------------------------------------
_WRK_SCRIPT = """\
local f = assert(io.open({body!r}, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = {content_type!r}
-- wrk counts every status >= 400 in one figure; refusals (4xx) and failures (5xx) are
-- counted apart, per thread (globals of each thread's Lua state), summed in done().
refused, failed = 0, 0
local threads = {{}}
function setup(thread)
  thread:set("id", #threads)
  thread:set("step", {threads_total})
  threads[#threads + 1] = thread
end
function response(status, headers, body)
  if status >= 500 then
    failed = failed + 1
  elseif status >= 400 then
    refused = refused + 1
  end
end
{bodies}
function done(summary, latency, requests)
  local e = summary.errors
  local r4, r5, next_body = 0, 0, -1
  for _, t in ipairs(threads) do
    r4 = r4 + t:get("refused")
    r5 = r5 + t:get("failed")
    -- A thread's n is past every body it sent, those still in flight at the end included.
    local tn = t:get("n")
    if tn and tn > next_body then next_body = tn end
  end
  io.write(string.format(
    "BENCH responses=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d " ..
    "refused=%d failed=%d next=%d " ..
    "p50_us=%d p95_us=%d p99_us=%d max_us=%d mean_us=%f\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    r4, r5, next_body,
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.max, latency.mean))
end
"""

# Bodies in turn: thread t of T sends bodies start + t, start + t + T, … (wrapping around).
_WRK_BODIES = """\
local bodies = {{}}
n = 0  -- global: done() reads each thread's
function init(args)
  local offset = 0
  for size in io.lines({lengths!r}) do
    bodies[#bodies + 1] = wrk.body:sub(offset + 1, offset + tonumber(size))
    offset = offset + tonumber(size)
  end
  n = {start} + id
end
function request()
  local body = bodies[(n % #bodies) + 1]
  n = n + step
  return wrk.format(nil, nil, nil, body)
end
"""


def _wrk_argv(
    url: str,
    content_type: str,
    body_file: Path,
    concurrency: int,
    duration_s: float,
    work: Path,
    start: int = 0,
) -> list[str]:
    script = work / f"wrk-{body_file.stem}.lua"
    # One wrk thread per core at most: more would only fight the server for the 2 cores.
    threads = max(1, min(concurrency, os.cpu_count() or 1))
    bodies = ""
    if _is_bundle(body_file):
        lengths = body_file.with_name(body_file.name + ".lengths")
        bodies = _WRK_BODIES.format(lengths=str(lengths), start=start)
    # Lua string literals accept Python's repr of a plain ASCII path / content type.
    script.write_text(
        _WRK_SCRIPT.format(
            body=str(body_file), content_type=content_type, bodies=bodies, threads_total=threads
        )
    )
    return [
        "wrk",
        f"-t{threads}",
        f"-c{concurrency}",
        # wrk takes whole seconds only.
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={REQUEST_TIMEOUT_S}s",
        "-s",
        str(script),
        url,
    ]


def _parse_wrk(stdout: str, concurrency: int, cpu: float) -> LoadResult:
    line = next((ln for ln in stdout.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"no summary line in wrk's output:\n{stdout[-3000:]}")
    v = {k: float(x) for k, x in (item.split("=") for item in line.split()[1:])}
    detail = {k: int(v[k]) for k in ("connect", "read", "write", "timeout") if v[k]}
    if v["refused"]:
        detail["4xx"] = int(v["refused"])
    if v["failed"]:
        detail["5xx"] = int(v["failed"])
    return LoadResult(
        tool="wrk",
        concurrency=concurrency,
        duration_s=v["duration_us"] / 1e6,
        responses=int(v["responses"]),
        # wrk counts status >= 400 as "status" errors; nothing here answers 3xx.
        non_2xx=int(v["status"]),
        refused=int(v["refused"]),
        server_errors=int(v["failed"]),
        next_body=int(v["next"]) if v["next"] >= 0 else None,
        transport_errors=int(v["connect"] + v["read"] + v["write"] + v["timeout"]),
        p50_ms=v["p50_us"] / 1e3,
        p95_ms=v["p95_us"] / 1e3,
        p99_ms=v["p99_us"] / 1e3,
        max_ms=v["max_us"] / 1e3,
        mean_ms=v["mean_us"] / 1e3,
        loadgen_cpu_s=cpu,
        error_detail=detail,
    )


# -- hey -------------------------------------------------------------------------------------
def _hey_argv(
    url: str, content_type: str, body_file: Path, concurrency: int, duration_s: float
) -> list[str]:
    return [
        "hey",
        "-z",
        f"{duration_s:g}s",
        "-c",
        str(concurrency),
        "-m",
        "POST",
        "-T",
        content_type,
        "-D",
        str(body_file),
        "-t",
        str(REQUEST_TIMEOUT_S),
        url,
    ]


def _parse_hey(stdout: str, concurrency: int, cpu: float) -> LoadResult:
    def seconds(label: str) -> float:
        m = re.search(rf"^\s*{label}:\s+([\d.]+) secs", stdout, re.MULTILINE)
        return float(m.group(1)) if m else float("nan")

    def pct(p: int) -> float:
        m = re.search(rf"^\s*{p}% in ([\d.]+) secs", stdout, re.MULTILINE)
        return float(m.group(1)) * 1e3 if m else float("nan")

    statuses = {
        int(code): int(n)
        for code, n in re.findall(r"^\s*\[(\d{3})\]\s+(\d+) responses", stdout, re.MULTILINE)
    }
    error_block = (
        stdout.split("Error distribution:", 1)[1] if "Error distribution:" in stdout else ""
    )
    errors: dict[str, int] = {}
    for n, message in re.findall(r"^\s*\[(\d+)\]\s+(.+)$", error_block, re.MULTILINE):
        key = message.strip()[:120]
        errors[key] = errors.get(key, 0) + int(n)
    non_2xx = sum(n for code, n in statuses.items() if not 200 <= code < 300)
    refused = sum(n for code, n in statuses.items() if 400 <= code < 500)
    server_errors = sum(n for code, n in statuses.items() if code >= 500)
    detail = dict(errors)
    if refused:
        detail["4xx"] = refused
    if server_errors:
        detail["5xx"] = server_errors
    return LoadResult(
        tool="hey",
        concurrency=concurrency,
        duration_s=seconds("Total"),
        responses=sum(statuses.values()),
        non_2xx=non_2xx,
        refused=refused,
        server_errors=server_errors,
        transport_errors=sum(errors.values()),
        p50_ms=pct(50),
        p95_ms=pct(95),
        p99_ms=pct(99),
        max_ms=seconds("Slowest") * 1e3,
        mean_ms=seconds("Average") * 1e3,
        loadgen_cpu_s=cpu,
        error_detail=detail,
    )
