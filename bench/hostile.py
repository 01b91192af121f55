"""Hostile clients for `make attack` (bench/attack.py): the scenario registry and its rows.

A scenario is a function that attacks a live server until told to stop, recording what its
hostile requests got in an :class:`Outcome`, plus what that outcome must look like for the
row to hold. Add a row by writing one more function decorated with :func:`scenario`; the
runner measures a normal client during each and prints the table.

Outcomes are short words: an HTTP status ("200", "413"), or what happened to a connection:
"closed" (the server closed it without answering), "reset", "timeout" (no answer within the
client's own timeout), "refused" (no connection), "open" (still open, not answered, when the
scenario ended), "cut" (a request still waiting for its answer when the scenario ended).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.bombs import jpeg_scan_bomb, webp_canvas_bomb
from locations import PROJECT_ROOT

EXAMPLES = PROJECT_ROOT / "examples"
MiB = 1024 * 1024


@dataclass
class Target:
    host: str
    port: int
    # The server's image log directory when the harness started the server (else None):
    # lets a row check what was stored.
    data_dir: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass
class Outcome:
    """What the hostile clients of one scenario saw; safe to add to from many threads."""

    counts: Counter = field(default_factory=Counter)
    seconds: list[float] = field(default_factory=list)  # hostile requests that got an answer
    notes: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, what: str, seconds: float | None = None) -> None:
        with self._lock:
            self.counts[what] += 1
            if seconds is not None and what.isdigit():
                self.seconds.append(seconds)

    def note(self, text: str) -> None:
        with self._lock:
            self.notes.append(text)

    def summary(self) -> str:
        parts = [f"{what}×{n}" for what, n in sorted(self.counts.items())]
        if self.seconds:
            ordered = sorted(self.seconds)
            parts.append(f"answered in ≤{ordered[-1]:.1f} s")
        return ", ".join(parts) or "nothing"


# An expectation returns None when the hostile outcome is as it should be, else why not.
Expectation = Callable[[Outcome], "str | None"]


def only(*allowed: str) -> Expectation:
    """Every hostile request ended in one of ``allowed``, and at least one ended ("cut", a
    request the harness itself abandoned when the scenario ended, counts for neither)."""

    def check(outcome: Outcome) -> str | None:
        ended = {what: n for what, n in outcome.counts.items() if what != "cut"}
        if not ended:
            return "no hostile request completed"
        wrong = {what: n for what, n in ended.items() if what not in allowed}
        return f"got {wrong}, expected only {'/'.join(allowed)}" if wrong else None

    return check


# Slow and idle connections never complete a request: the server may close them, time them
# out (408) or keep them, but never answer them as requests nor fail (5xx).
NOT_ANSWERED = ("open", "closed", "reset", "408", "400", "cycled")


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str  # the hostile load, for the table
    issue: str  # the class of attack it belongs to
    attack: Callable[[Target, threading.Event, Outcome], None]
    expect: Expectation
    # A further check after the scenario, e.g. what the server stored: None when it held.
    after: Callable[[Target, Outcome, dict], str | None] | None = None


SCENARIOS: dict[str, Scenario] = {}


def scenario(
    name: str,
    what: str,
    issue: str,
    expect: Expectation,
    after: Callable[[Target, Outcome, dict], str | None] | None = None,
):
    """Registers the decorated ``attack(target, stop, outcome)`` as a row of the table."""

    def register(attack):
        SCENARIOS[name] = Scenario(name, what, issue, attack, expect, after)
        return attack

    return register


# ---------------------------------------------------------------------------- raw HTTP


class Connections:
    """The hostile sockets open now, so that stopping a scenario can cut them all."""

    def __init__(self) -> None:
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def open(self, target: Target, timeout: float) -> socket.socket:
        sock = socket.create_connection((target.host, target.port), timeout=timeout)
        with self._lock:
            self._open.add(sock)
        return sock

    def close(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)
        sock.close()

    def cut_all(self) -> None:
        with self._lock:
            socks, self._open = list(self._open), set()
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: attack",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def exchange(
    conns: Connections,
    target: Target,
    request_head: bytes,
    body: Iterable[bytes] = (),
    timeout: float = 60.0,
) -> tuple[str, float, bytes]:
    """Sends one request and reads its answer: (outcome word, seconds, response body).

    A server may answer before the body is all sent (413 on a body over the cap): sending
    stops and the answer is still read."""
    started = time.monotonic()
    try:
        sock = conns.open(target, timeout)
    except TimeoutError:
        return "timeout", time.monotonic() - started, b""
    except OSError:
        return "refused", time.monotonic() - started, b""
    try:
        try:
            sock.sendall(request_head)
            for chunk in body:
                sock.sendall(chunk)
        except OSError:
            pass  # the server stopped reading: its answer, if any, is in the socket
        response = b""
        try:
            while b"\r\n\r\n" not in response or not _complete(response):
                data = sock.recv(65536)
                if not data:
                    break
                response += data
        except TimeoutError:
            return "timeout", time.monotonic() - started, b""
        except OSError:
            if not response:
                return ("cut" if sock.fileno() < 0 else "reset"), time.monotonic() - started, b""
        seconds = time.monotonic() - started
        if not response.startswith(b"HTTP/1."):
            return "closed", seconds, b""
        status = response[9:12].decode(errors="replace")
        return status, seconds, response.partition(b"\r\n\r\n")[2]
    finally:
        conns.close(sock)


def _complete(response: bytes) -> bool:
    """Whether the response's body has all arrived (Content-Length; else wait for close)."""
    head_part, _, body = response.partition(b"\r\n\r\n")
    for line in head_part.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip() or 0)
    return False


def chunked(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        part = data[start : start + size]
        yield f"{len(part):x}\r\n".encode() + part + b"\r\n"
    yield b"0\r\n\r\n"


def flood(
    target: Target,
    stop: threading.Event,
    outcome: Outcome,
    clients: int,
    request: Callable[[], tuple[bytes, Iterable[bytes]]],
    timeout: float = 60.0,
    pause: float = 0.0,
) -> None:
    """``clients`` threads each sending ``request()`` again and again until ``stop``, with
    ``pause`` s between two requests (0: back to back, as a bomb thrower would)."""
    conns = Connections()

    def client() -> None:
        while not stop.is_set():
            request_head, body = request()
            what, seconds, _ = exchange(conns, target, request_head, body, timeout)
            outcome.add("cut" if stop.is_set() and what in ("reset", "closed") else what, seconds)
            stop.wait(pause)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    stop.wait()
    conns.cut_all()
    for thread in threads:
        thread.join(timeout=5)


# ------------------------------------------------------------ slow and idle connections


async def _slow_connection(
    target: Target,
    stop: threading.Event,
    outcome: Outcome,
    opening: bytes,
    drip: bytes,
    interval: float,
    delay: float,
) -> None:
    """Opens a connection, sends ``opening``, then one byte of ``drip`` every ``interval`` s
    (``drip`` empty: nothing, and the connection is dropped and opened again after
    ``interval``), for as long as the scenario lasts; opens a new one when the server
    closes it, as a slowloris client does."""
    await asyncio.sleep(delay)
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(target.host, target.port)
        except OSError:
            outcome.add("refused")
            await asyncio.sleep(interval)
            continue
        what = "open"
        try:
            writer.write(opening)
            await writer.drain()
            position = 0
            while not stop.is_set():
                try:
                    data = await asyncio.wait_for(reader.read(4096), timeout=interval)
                except TimeoutError:
                    if not drip:
                        what = "cycled"
                        break
                    writer.write(drip[position % len(drip) : position % len(drip) + 1])
                    position += 1
                    await writer.drain()
                    continue
                what = data[9:12].decode(errors="replace") if data[:7] == b"HTTP/1." else "closed"
                break
        except OSError:
            what = "reset"
        finally:
            writer.close()
        outcome.add(what)


def slow_connections(
    target: Target,
    stop: threading.Event,
    outcome: Outcome,
    groups: list[tuple[int, bytes, bytes, float]],
    ramp: float = 1.0,
) -> None:
    """Groups of (count, opening, drip, interval) slow connections, opened over ``ramp`` s."""

    async def main() -> None:
        total = sum(count for count, *_ in groups)
        tasks, index = [], 0
        for count, opening, drip, interval in groups:
            for _ in range(count):
                delay = ramp * index / max(total, 1)
                tasks.append(
                    asyncio.create_task(
                        _slow_connection(target, stop, outcome, opening, drip, interval, delay)
                    )
                )
                index += 1
        while not stop.is_set():
            await asyncio.sleep(0.1)
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        # A task cancelled while waiting was an open, unanswered connection.
        outcome.counts["open"] += sum(isinstance(r, asyncio.CancelledError) for r in results)

    asyncio.run(main())


SLOW_INTERVAL = 3.0  # a byte every 3 s, as in the original report
IDLE_INTERVAL = 4.5
SLOW_HEAD = (b"POST /recognize HTTP/1.1\r\nHost: attack\r\nX-Slow: ", b"aaaaaaaa")
SLOW_BODY = (
    head("POST", "/recognize", {"Content-Type": "image/png", "Content-Length": "100000"}),
    b"\x89PNG\r\n\x1a\n",
)


def slow_heads(n: int):
    return (n, *SLOW_HEAD, SLOW_INTERVAL)


def slow_bodies(n: int):
    return (n, *SLOW_BODY, SLOW_INTERVAL)


def idle_sockets(n: int):
    return (n, b"", b"", IDLE_INTERVAL)


@scenario("slow-heads", "256 heads, 1 byte / 3 s", "slow clients", only(*NOT_ANSWERED))
def attack_slow_heads(target, stop, outcome):
    slow_connections(target, stop, outcome, [slow_heads(256)])


@scenario("slow-bodies", "256 uploads of 100 kB, 1 byte / 3 s", "slow clients", only(*NOT_ANSWERED))
def attack_slow_bodies(target, stop, outcome):
    slow_connections(target, stop, outcome, [slow_bodies(256)])


@scenario(
    "idle-sockets",
    "64 silent sockets, reconnecting every 4.5 s",
    "slow clients",
    only(*NOT_ANSWERED),
)
def attack_idle_sockets(target, stop, outcome):
    slow_connections(target, stop, outcome, [idle_sockets(64)])


@scenario(
    "slow-all-at-once",
    "256 slow heads + 256 slow bodies + 64 idle, together",
    "slow clients",
    only(*NOT_ANSWERED),
)
def attack_slow_all(target, stop, outcome):
    groups = [slow_heads(256), slow_bodies(256), idle_sockets(64)]
    slow_connections(target, stop, outcome, groups, ramp=2.0)


# ------------------------------------------------------------------- decoder bombs

# Each hostile client waits this long after an answer before sending again: these rows are
# about what one request costs and what it gets, and "16 at once" stays 16 at once. Sheer
# volume is a rate limit's business, not a decoder's.
BOMB_PAUSE = 1.0
BODY_PAUSE = 0.5


def raw_image(data: bytes, content_type: str) -> tuple[bytes, list[bytes]]:
    return head(
        "POST", "/recognize", {"Content-Type": content_type, "Content-Length": str(len(data))}
    ), [data]


@scenario(
    "jpeg-scan-bomb",
    "16 at once, again 1 s after each answer: progressive JPEG 10000×4000, one AC scan ×1000",
    "decoder bombs",
    only("400", "413", "422"),
)
def attack_jpeg_scans(target, stop, outcome):
    bomb = jpeg_scan_bomb()
    outcome.note(f"{len(bomb) // 1024} kB each")
    flood(target, stop, outcome, 16, lambda: raw_image(bomb, "image/jpeg"), pause=BOMB_PAUSE)


@scenario(
    "webp-canvas-bomb",
    "4 at once, again 1 s after each answer: animated WebP, 1×1 frames on a 10000×4000 canvas",
    "decoder bombs",
    only("400", "413", "422"),
)
def attack_webp_canvas(target, stop, outcome):
    bomb = webp_canvas_bomb()
    outcome.note(f"{len(bomb)} bytes each")
    flood(target, stop, outcome, 4, lambda: raw_image(bomb, "image/webp"), pause=BOMB_PAUSE)


# ------------------------------------------------------------------ malformed bodies


def _json_request(path: str, body: bytes) -> tuple[bytes, list[bytes]]:
    return head(
        "POST", path, {"Content-Type": "application/json", "Content-Length": str(len(body))}
    ), [body]


DEEP_JSON = b"[" * 100_000 + b"]" * 100_000


@scenario(
    "deep-json",
    "2 clients, one each 0.5 s: a 100,000-deep JSON array to /recognize and /feedback",
    "malformed bodies",
    only("400"),
)
def attack_deep_json(target, stop, outcome):
    turns = iter(range(1 << 62))

    def request():
        path = "/recognize" if next(turns) % 2 else "/feedback"
        return _json_request(path, DEEP_JSON)

    flood(target, stop, outcome, 2, request, pause=BODY_PAUSE)


@scenario(
    "chunked-over-cap",
    "2 clients, one each 0.5 s: a 9 MB chunked upload (cap 8 MiB)",
    "malformed bodies",
    only("413"),
)
def attack_chunked_over_cap(target, stop, outcome):
    data = b"\x89PNG\r\n\x1a\n" + b"\0" * (9_000_000 - 8)

    def request():
        return head(
            "POST", "/recognize", {"Content-Type": "image/png", "Transfer-Encoding": "chunked"}
        ), chunked(data)

    flood(target, stop, outcome, 2, request, pause=BODY_PAUSE)


# ------------------------------------------------------------------------ the disk


def stored_bytes(directory: Path | None) -> int | None:
    if directory is None or not directory.exists():
        return None
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def stored_at_most(per_answer: int) -> Callable[[Target, Outcome, dict], str | None]:
    """The image log grew by at most ``per_answer`` bytes per request answered 200 (the
    normal client's included); a rejected request stores nothing."""

    def check(target: Target, outcome: Outcome, measured: dict) -> str | None:
        grown = measured.get("stored_growth")
        if grown is None:
            return None  # not our server: nothing to look at
        answered = outcome.counts.get("200", 0) + measured.get("probe_ok", 0)
        allowed = per_answer * answered
        measured["stored_note"] = f"stored +{grown / MiB:.1f} MiB"
        if grown > allowed:
            return f"stored {grown / MiB:.1f} MiB for {answered} answers"
        return None

    return check


@functools.cache
def example(name: str) -> bytes:
    return (EXAMPLES / name).read_bytes()


@scenario(
    "png-trailing-junk",
    "1 client, one each 0.5 s: a valid PNG + 8 MiB of junk",
    "the disk",
    only("200", "400", "413"),
    after=stored_at_most(64 * 1024),
)
def attack_png_junk(target, stop, outcome):
    png = example("seven.png")
    body = png + b"\xa5" * (8 * MiB - len(png) - 4096)
    flood(target, stop, outcome, 1, lambda: raw_image(body, "image/png"), pause=BODY_PAUSE)


@scenario(
    "png-signature-junk",
    "1 client, one each 0.5 s: a PNG signature + 8 MiB of junk",
    "the disk",
    only("400"),
    after=stored_at_most(64 * 1024),
)
def attack_png_signature(target, stop, outcome):
    body = b"\x89PNG\r\n\x1a\n" + b"\xa5" * (8 * MiB - 4096)
    flood(target, stop, outcome, 1, lambda: raw_image(body, "image/png"), pause=BODY_PAUSE)


# ------------------------------------------------------------ who may name and label


def _recognize(conns: Connections, target: Target, image: bytes, request_id: str | None = None):
    headers = {"Content-Type": "image/png", "Content-Length": str(len(image))}
    if request_id:
        headers["X-Request-ID"] = request_id
    return exchange(conns, target, head("POST", "/recognize", headers), [image], timeout=30)


@scenario(
    "request-id-collision",
    "an attacker sends X-Request-ID order-N first; then the real client with the same id",
    "who may label",
    only("200"),
)
def attack_request_id(target, stop, outcome):
    conns = Connections()
    while not stop.is_set():
        forged = f"order-{uuid.uuid4().hex[:8]}"
        _recognize(conns, target, example("canvas-four.png"), forged)
        what, seconds, _ = _recognize(conns, target, example("seven.png"), forged)
        outcome.add(what, seconds)  # the real client's answer is what counts
        stop.wait(0.05)


@scenario(
    "feedback-relabel-flood",
    "1 client relabels another client's answer, knowing only its request id",
    "who may label",
    only("400", "401", "403", "404", "429"),
)
def attack_relabel(target, stop, outcome):
    conns = Connections()
    what, _, body = _recognize(conns, target, example("seven.png"))
    if what != "200":
        outcome.note(f"the victim's own request got {what}")
        return
    victim = json.loads(body)["request_id"]
    payload = json.dumps({"request_id": victim, "label": 1}).encode()
    while not stop.is_set():
        request_head, request_body = _json_request("/feedback", payload)
        what, seconds, _ = exchange(conns, target, request_head, request_body, timeout=30)
        outcome.add(what, seconds)
