"""Starting, timing, watching and stopping the servers under test.

Each server runs as its own process group on a free port, so stopping it reaches every
worker. A sampler thread walks the process tree every ~100 ms (psutil) for CPU seconds and
resident memory; that is how "CPU %" and "peak RSS" in the report are measured.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

MB = 1024 * 1024


@dataclass
class ServerSpec:
    name: str  # "service", "mlflow", "naive": the key in the report
    label: str  # what the report calls it
    api: str  # which request encoding it takes (bench.payloads.request_for)
    argv: list[str]
    env: dict[str, str]
    ready_path: str
    port: int
    # Recorded verbatim in bench.json: what exactly was measured.
    config: dict[str, object] = field(default_factory=dict)
    # A log line each worker prints once its model is loaded, and how many workers there
    # are: "ready" (the first 200) can come before the last worker is warm.
    worker_ready_pattern: str | None = None
    workers: int = 1
    cwd: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class RunningServer:
    spec: ServerSpec
    proc: subprocess.Popen
    log_path: Path
    ready_s: float = float("nan")
    all_workers_ready_s: float | None = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout: float = 1.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_post(url: str, body: bytes, content_type: str, timeout: float = 30.0) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, {"raw": raw[:500].decode("utf-8", "replace")}


def start(spec: ServerSpec, log_dir: Path, ready_timeout: float = 180.0) -> RunningServer:
    """Spawn ``spec`` and wait for its readiness URL; the time from spawn to the first 200
    is ``ready_s`` (the issue's "ready ≤ 6 s after start")."""
    log_path = log_dir / f"{spec.name}.log"
    with open(log_path, "wb") as log:
        started = time.monotonic()
        proc = subprocess.Popen(
            spec.argv,
            env=spec.env,
            cwd=spec.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = RunningServer(spec, proc, log_path)
    deadline = started + ready_timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{spec.name} exited with {proc.returncode}:\n{log_tail(log_path)}")
        with contextlib.suppress(OSError):
            if http_get(spec.url + spec.ready_path, timeout=1.0)[0] == 200:
                server.ready_s = time.monotonic() - started
                break
        if time.monotonic() > deadline:
            stop(server)
            raise RuntimeError(f"{spec.name} not ready in {ready_timeout} s:\n{log_tail(log_path)}")
        # Polled often: the readiness time is a target, 50 ms resolution is enough.
        time.sleep(0.05)
    if spec.worker_ready_pattern:
        server.all_workers_ready_s = _wait_for_workers(server, started, deadline)
    return server


def _wait_for_workers(server: RunningServer, started: float, deadline: float) -> float | None:
    pattern = re.compile(server.spec.worker_ready_pattern or "")
    while time.monotonic() < deadline:
        text = server.log_path.read_text(errors="replace")
        if len(pattern.findall(text)) >= server.spec.workers:
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def stop(server: RunningServer) -> None:
    proc = server.proc
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def log_tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:]


@dataclass
class ProcessStats:
    pid: int
    role: str
    peak_rss: int = 0
    cpu_first: float | None = None
    cpu_last: float = 0.0


@dataclass
class TreeUsage:
    wall_s: float
    cpu_s: float
    peak_rss_total: int
    processes: list[ProcessStats]

    @property
    def cpu_pct(self) -> float:
        """Process-tree CPU time over wall time, as % of one core (200 % = both cores)."""
        return 100.0 * self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "wall_s": round(self.wall_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "cpu_pct": round(self.cpu_pct, 1),
            "peak_rss_mb_total": round(self.peak_rss_total / MB, 1),
            "processes": [
                {"pid": p.pid, "role": p.role, "peak_rss_mb": round(p.peak_rss / MB, 1)}
                for p in self.processes
            ],
        }


class TreeSampler:
    """Samples a process tree every ``interval`` s between :meth:`start` and :meth:`stop`.

    CPU is counted per process from the first time it is seen (its CPU before the window
    is the baseline, a process born inside the window counts from zero), so forked
    workers and exited helpers are both accounted for.
    """

    def __init__(self, root_pid: int, roles: dict[int, str] | None = None, interval: float = 0.1):
        self.root = psutil.Process(root_pid)
        self.interval = interval
        self.roles = roles or {}
        self._procs: dict[int, psutil.Process] = {}
        self._stats: dict[int, ProcessStats] = {}
        self._peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)
        self._started = 0.0
        self._first = True

    def start(self) -> TreeSampler:
        self._started = time.monotonic()
        self._sample()
        self._first = False
        self._thread.start()
        return self

    def stop(self) -> TreeUsage:
        self._stop.set()
        self._thread.join()
        self._sample()
        wall = time.monotonic() - self._started
        cpu = sum(s.cpu_last - (s.cpu_first or 0.0) for s in self._stats.values())
        return TreeUsage(wall, cpu, self._peak_total, list(self._stats.values()))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _tree(self) -> list[psutil.Process]:
        try:
            found = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        procs = []
        for proc in found:
            # Reuse the Process object: psutil then notices if a pid was reused.
            known = self._procs.setdefault(proc.pid, proc)
            procs.append(known)
        return procs

    def _sample(self) -> None:
        total = 0
        for proc in self._tree():
            try:
                with proc.oneshot():
                    rss = proc.memory_info().rss
                    times = proc.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            cpu = times.user + times.system
            stats = self._stats.get(proc.pid)
            if stats is None:
                role = self.roles.get(proc.pid) or _role(self.root, proc)
                # Present when the window opened: its earlier CPU is not ours to count.
                stats = ProcessStats(proc.pid, role, cpu_first=cpu if self._first else 0.0)
                self._stats[proc.pid] = stats
            stats.cpu_last = cpu
            stats.peak_rss = max(stats.peak_rss, rss)
            total += rss
        self._peak_total = max(self._peak_total, total)


def _role(root: psutil.Process, proc: psutil.Process) -> str:
    if proc.pid == root.pid:
        return "main"
    try:
        parent = proc.ppid()
        name = proc.name()
    except psutil.Error:
        return "child"
    return "worker" if parent == root.pid else f"child ({name})"


def cpu_busy_seconds() -> float:
    """Machine-wide busy CPU seconds (all cores): what else was running shows up here."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
