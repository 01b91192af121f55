"""The front: nginx in front of gunicorn, so that slow and idle clients cost a connection in an
event loop instead of a worker thread.

gunicorn's gthread worker gives a connection a thread as soon as it has a request head, and
keeps it until the body has arrived: 16 clients sending a byte every few seconds held all 16
threads of the default (2 workers x 8 threads) and nobody else was answered. nginx reads the
whole request (head, then body, to memory or a temporary file) before it opens a connection
to gunicorn, gives up on clients that stall (``client_header_timeout``,
``client_body_timeout``), and holds thousands of open connections in one process; gunicorn's
own documentation recommends it for exactly this. Measured against gunicorn alone in
docs/front.md.

``python -m serving`` runs one nginx as its child (:class:`Front`): foreground, with a config
generated into a private temporary directory that is removed on exit, in front of gunicorn
on a unix socket in that directory. ``python -m serving.front`` runs the same front over
several upstreams as the load balancer of ``make stack`` (deploy/stack.sh).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import http.client
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from serving import runtime
from serving.headers import HEADERS

# Debian installs nginx in /usr/sbin, which is not on every user's PATH.
NGINX_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
MISSING_NGINX = (
    "nginx was not found (looked on PATH and in /usr/sbin): the service's front reads whole "
    "requests before a worker thread sees them, so that slow clients cannot hold the workers. "
    "Install it (`make setup` does where it can, or `apt-get install nginx`), or run gunicorn "
    "alone with FRONT=none (then slow or idle clients can starve it; see docs/front.md)."
)

# A client that stalls this long while sending its head or between two reads of its body is
# dropped; 10 s is ample for a phone on a bad network sending a few hundred kB.
CLIENT_TIMEOUT_SECONDS = 10
KEEPALIVE_SECONDS = 15
# Idle connections to gunicorn kept per nginx worker, and for how long: under gunicorn's
# keep-alive (GUNICORN_KEEPALIVE_SECONDS, set by serving/server.py behind a front).
UPSTREAM_KEEPALIVE = 32
UPSTREAM_IDLE_SECONDS = 4
GUNICORN_KEEPALIVE_SECONDS = 10
# sun_path's size on Linux, with its terminating NUL.
UNIX_PATH_MAX = 108
# Bodies up to this stay in memory; larger ones go to a file in the front's directory.
BODY_BUFFER = "256k"
# make stack's balancer asks each replica's /ready this often; one that fails this many
# times in a row is left out until it answers 200 again (see ReadyWatch).
READY_INTERVAL_SECONDS = 2.0
READY_FAILS_TO_LEAVE_OUT = 2

# The errors nginx answers itself, as the service's JSON ({"error": {"code", "message"}}),
# never nginx's HTML pages. An upstream's own error bodies pass through untouched.
FRONT_ERRORS = {
    400: ("bad_request", "the request could not be read"),
    408: ("request_timeout", "the request was not sent in time"),
    413: ("request_entity_too_large", "the request body is over the size limit"),
    # TRACE, which nginx refuses before the service could (with the Allow header below).
    405: ("method_not_allowed", "the method is not allowed for this path"),
    414: ("request_uri_too_large", "the request line is too long"),
    # nginx's own code for a header over its buffers; it is sent as 400.
    494: ("request_header_fields_too_large", "a request header is too long"),
    502: ("upstream_unavailable", "the service cannot be reached; try again"),
    504: ("upstream_timeout", "the service did not answer in time"),
}


_HTTP_METHODS = ("get", "post", "put", "delete", "patch")


def allow_map() -> str:
    """An nginx map from the request URI to the methods its route takes, as Flask's own 405
    lists them: RFC 9110 wants an Allow header on a 405, and nginx answers TRACE itself.
    The routes come from the OpenAPI document, the one list of them."""
    from serving.openapi import document

    lines = []
    for path, operations in document()["paths"].items():
        methods = {m.upper() for m in operations if m in _HTTP_METHODS} | {"OPTIONS"}
        if "GET" in methods:
            methods.add("HEAD")
        pattern = re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(path))
        lines.append(f'        "~^{pattern}(\\?|$)" "{", ".join(sorted(methods))}";')
    return "\n".join(lines)


def find_nginx() -> str | None:
    return shutil.which("nginx", path=NGINX_SEARCH_PATH)


@dataclass(frozen=True)
class FrontConfig:
    listen_host: str
    listen_port: int
    # gunicorn's addresses as nginx writes them: "unix:/path/to.sock" or "127.0.0.1:8001".
    upstreams: tuple[str, ...]
    max_body_bytes: int
    # How long a request may take inside gunicorn (its worker timeout).
    upstream_timeout: int
    directory: Path
    # Upstreams whose /ready fails, left out (``down``) until it answers 200 (ReadyWatch).
    down: frozenset[str] = frozenset()
    # Counts reloads: nginx answers it on its control socket, so that a reload is known to
    # be in effect (new workers accepting) rather than only asked for.
    generation: int = 0

    @property
    def control_socket(self) -> Path | None:
        """None where its path would be over a unix socket's limit (nginx would not start):
        a reload then waits for the old workers' exit alone."""
        path = self.directory / "ctl"
        return path if len(os.fsencode(path)) < UNIX_PATH_MAX else None

    @property
    def listen(self) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"


def render(config: FrontConfig) -> str:
    """nginx.conf for ``config``: everything it writes stays in ``config.directory``."""
    d = config.directory
    # Started as root, nginx would switch its workers to "nobody", who cannot reach the
    # private directory nor the socket in it: they run as the service's own user instead.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    # Several replicas: round robin, and a replica that refuses connections or answers 502/503
    # is skipped for a while (nginx's passive health checks) and the request tried on the
    # next. A 503 of this service means "not answered, not stored", so a POST may be retried.
    several = len(config.upstreams) > 1
    servers = "\n".join(
        f"        server {u}{' max_fails=1 fail_timeout=5s' if several else ''}"
        f"{' down' if u in config.down else ''};"
        for u in config.upstreams
    )
    next_upstream = (
        "proxy_next_upstream error http_502 http_503 non_idempotent;\n"
        "            proxy_next_upstream_tries 2;"
        if several
        # One gunicorn: a GET that met a kept connection just closed is tried again; a POST
        # is not (it may have been answered and stored).
        else "proxy_next_upstream error;"
    )
    # Locations by URI, not named ones: a request line too long to parse has no URI to
    # redirect from and a named location would fail with a 500.
    error_pages = "\n".join(
        f"        error_page {status} /.front-error/{status};" for status in FRONT_ERRORS
    )
    # nginx's 413 names the limit and its unit, in the words of the service's own 413.
    from serving.errors import body_limit_message

    too_large = (FRONT_ERRORS[413][0], body_limit_message(config.max_body_bytes))
    # The service's security headers on nginx's own answers too ("always": add_header
    # skips error statuses without it). Only here: a proxied answer has the service's own.
    security_headers = "".join(
        f'            add_header {name} "{value}" always;\n' for name, value in HEADERS.items()
    )
    error_locations = "\n".join(
        f"        location = /.front-error/{status} {{\n"
        f"            internal;\n"
        f"            default_type application/json;\n"
        + security_headers
        + ("            add_header Allow $front_allow always;\n" if status == 405 else "")
        + f"            return {400 if status == 494 else status} "
        f'\'{{"error": {{"code": "{code}", "message": "{message}"}}}}\\n\';\n'
        f"        }}"
        for status, (code, message) in {**FRONT_ERRORS, 413: too_large}.items()
    )
    # Reachable only through the private directory: which config the accepting workers run.
    control = (
        f"""
    server {{
        listen unix:{config.control_socket};
        location = /generation {{
            default_type text/plain;
            return 200 "{config.generation}";
        }}
    }}
"""
        if config.control_socket is not None
        else ""
    )
    return f"""\
{user}daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 16384;
pid {d}/nginx.pid;
error_log stderr error;

events {{
    worker_connections 8192;
}}

http {{
    server_tokens off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;

    # The service logs every request it answers (serving/logs.py); the front logs only what
    # it answered itself (refused, timed out, unreachable service).
    map $upstream_addr $front_only {{ "" 1; default 0; }}
    map $request_uri $front_allow {{
        default "GET, HEAD, OPTIONS";
{allow_map()}
    }}
    log_format front escape=json '{{"msg": "front", "status": $status, '
        '"remote_addr": "$remote_addr", "request": "$request", "bytes_in": $request_length, '
        '"seconds": $request_time}}';
    access_log /dev/stderr front if=$front_only;

    client_max_body_size {config.max_body_bytes};
    client_body_buffer_size {BODY_BUFFER};
    client_header_timeout {CLIENT_TIMEOUT_SECONDS}s;
    client_body_timeout {CLIENT_TIMEOUT_SECONDS}s;
    send_timeout {CLIENT_TIMEOUT_SECONDS}s;
    keepalive_timeout {KEEPALIVE_SECONDS}s;
    keepalive_requests 10000;
    reset_timedout_connection on;

    upstream service {{
{servers}
        # Connections to gunicorn are kept and reused: a new one per request costs gunicorn
        # more CPU than the request's own HTTP (measured in docs/front.md). Closed here
        # before gunicorn's own keep-alive limit closes them, so a reused one is never
        # found closed by the other side.
        keepalive {UPSTREAM_KEEPALIVE};
        keepalive_timeout {UPSTREAM_IDLE_SECONDS}s;
        keepalive_requests 10000;
    }}

    server {{
        listen {config.listen} backlog=4096;
{error_pages}

        location / {{
            proxy_pass http://service;
            # Whole request first, then one short exchange with gunicorn.
            proxy_request_buffering on;
            proxy_buffering on;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            # Set, not appended: what a client sends in these headers is not believed.
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_connect_timeout 5s;
            proxy_send_timeout {config.upstream_timeout}s;
            proxy_read_timeout {config.upstream_timeout}s;
            {next_upstream}
        }}

{error_locations}
    }}
{control}}}
"""


def _parent_death_signal(sig: int) -> Callable[[], None]:
    """A preexec_fn making the child get ``sig`` when its parent dies (Linux's
    PR_SET_PDEATHSIG), so that a master killed with -9 does not leave nginx behind."""
    libc_name = ctypes.util.find_library("c")

    def arm() -> None:
        if libc_name:
            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL(libc_name, use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG

    return arm


class Front:
    """nginx as a child process: started, watched, stopped; its directory removed on stop."""

    def __init__(self, config: FrontConfig, nginx: str) -> None:
        self.config = config
        self.nginx = nginx
        self.proc: subprocess.Popen | None = None
        self._stopping = False

    def start(self, startup_timeout: float = 10.0) -> None:
        """Writes the config, starts nginx and returns once it listens; RuntimeError if it
        exits first. nginx writes its messages to our stderr (no pipe read by a thread: the
        gunicorn master forks workers, and a thread holding stderr's lock at a fork would
        leave it held in the child)."""
        d = self.config.directory
        conf = d / "nginx.conf"
        conf.write_text(render(self.config))
        argv = [self.nginx, "-p", str(d), "-c", str(conf), "-e", "stderr"]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            # Its own process group: a Ctrl-C for the master reaches nginx through stop().
            start_new_session=True,
            preexec_fn=_parent_death_signal(signal.SIGTERM),
        )
        deadline = time.monotonic() + startup_timeout
        while not _listening(self.config.listen_host, self.config.listen_port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"nginx did not start on {self.config.listen} (its own words are above)"
                )
            time.sleep(0.02)

    def reload(self, config: FrontConfig, timeout: float = 10.0) -> bool:
        """Rewrites the config and has nginx load it (SIGHUP: new workers take over, the old
        ones finish their requests). Returns once the new workers accept connections (True),
        or False if that was not seen within ``timeout``: SIGHUP alone returns before nginx
        has started them, and a request in between still meets the old config."""
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError("nginx is reloaded while it runs")
        config = replace(config, generation=self.config.generation + 1)
        self.config = config
        (config.directory / "nginx.conf").write_text(render(config))
        old_workers = _children(self.proc.pid)
        self.proc.send_signal(signal.SIGHUP)
        # Until the old workers have exited they may still accept a connection (seen here:
        # generation 2 answered, then 1 again), so both conditions are waited for.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if not old_workers & _children(self.proc.pid) and (
                config.control_socket is None
                or loaded_generation(config.control_socket) == config.generation
            ):
                return True
            time.sleep(0.02)
        return False

    def watch(self, on_exit: Callable[[int], None]) -> None:
        """Calls ``on_exit(returncode)`` from a thread if nginx exits before stop()."""
        proc = self.proc
        if proc is None:
            raise RuntimeError("nginx is watched once started")

        def wait() -> None:
            code = proc.wait()
            if not self._stopping:
                on_exit(code)

        threading.Thread(target=wait, daemon=True).start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stops nginx (SIGQUIT: open requests finish first) and removes its directory."""
        self._stopping = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.config.directory, ignore_errors=True)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def _children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (nginx's workers), read from /proc."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The command name in parentheses may hold spaces: the fields after it are split.
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(stat.parent.name))
    return found


def loaded_generation(control_socket: Path, timeout: float = 1.0) -> int | None:
    """The generation of the config that nginx's accepting workers run, or None."""
    conn = _UnixHTTPConnection(str(control_socket), timeout)
    try:
        conn.request("GET", "/generation")
        response = conn.getresponse()
        return int(response.read()) if response.status == 200 else None
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def is_ready(upstream: str, timeout: float = READY_INTERVAL_SECONDS) -> bool:
    """Whether the replica at ``upstream`` (as nginx writes it) answers GET /ready with 200."""
    if upstream.startswith("unix:"):
        conn: http.client.HTTPConnection = _UnixHTTPConnection(upstream[5:], timeout)
    else:
        host, port = upstream.rsplit(":", 1)
        conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)
    try:
        conn.request("GET", "/ready")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


class ReadyWatch:
    """Active health checks for make stack's balancer: open-source nginx has none (NGINX
    Plus's ``health_check``), only passive ones (``max_fails``), which notice a replica that
    refuses connections or answers 502/503 but not one that is up and unready. So this
    thread asks each replica's /ready every ``interval`` seconds and leaves out (``down``,
    then a graceful reload) one that failed ``fails`` times in a row, until it answers 200.
    If none is ready, none is left out: the replicas' own 503s say why, where nginx would
    only have a 502."""

    def __init__(
        self,
        front: Front,
        interval: float = READY_INTERVAL_SECONDS,
        fails: int = READY_FAILS_TO_LEAVE_OUT,
        check: Callable[[str], bool] = is_ready,
    ) -> None:
        self.front, self.interval, self.fails, self.check = front, interval, fails, check
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ready-watch", daemon=True)

    def start(self) -> ReadyWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        upstreams = self.front.config.upstreams
        failed = dict.fromkeys(upstreams, 0)
        while not self._stop.wait(self.interval):
            for upstream in upstreams:
                failed[upstream] = 0 if self.check(upstream) else failed[upstream] + 1
            down = frozenset(u for u in upstreams if failed[u] >= self.fails)
            if down == frozenset(upstreams):
                down = frozenset()
            if down != self.front.config.down and not self._stop.is_set():
                with contextlib.suppress(RuntimeError):  # nginx gone: main() is stopping
                    in_effect = self.front.reload(replace(self.front.config, down=down))
                    print(
                        f"front: left out (/ready not 200): {', '.join(sorted(down)) or 'none'}"
                        + ("" if in_effect else " (asked; nginx has not confirmed it yet)"),
                        flush=True,
                    )


def _listening(host: str, port: int) -> bool:
    target = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    with contextlib.suppress(OSError), socket.create_connection((target, port), timeout=0.5):
        return True
    return False


def private_directory(prefix: str = "digits-front-") -> Path:
    """A directory only this user can enter (mode 0700), held for this process's life: what
    a front killed outright leaves is removed by the next one (serving/runtime.py)."""
    directory, _lock = runtime.private_directory(prefix)  # the descriptor stays open
    return directory


def main(argv: list[str] | None = None) -> int:
    """``python -m serving.front``: nginx alone in front of gunicorns already running
    elsewhere (make stack's load balancer), until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m serving.front", description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--upstream",
        action="append",
        required=True,
        help="unix:/path.sock or host:port of a replica's gunicorn (repeat for each)",
    )
    # By default the service's own settings (same environment and settings file).
    parser.add_argument("--max-body-bytes", type=int, help="default: MAX_BODY_BYTES")
    parser.add_argument("--upstream-timeout", type=int, help="default: TIMEOUT + 5 s")
    parser.add_argument(
        "--ready-interval",
        type=float,
        default=READY_INTERVAL_SECONDS,
        help="seconds between two checks of each upstream's /ready (0: no checks)",
    )
    args = parser.parse_args(argv)
    if args.max_body_bytes is None or args.upstream_timeout is None:
        from serving.config import Settings

        settings = Settings()
        args.max_body_bytes = args.max_body_bytes or settings.max_body_bytes
        args.upstream_timeout = args.upstream_timeout or settings.timeout + 5
    nginx = find_nginx()
    if nginx is None:
        print(MISSING_NGINX, file=sys.stderr)
        return 2
    config = FrontConfig(
        args.host,
        args.port,
        tuple(args.upstream),
        args.max_body_bytes,
        args.upstream_timeout,
        private_directory(),
    )
    front = Front(config, nginx)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    watch = None
    try:
        front.start()
        front.watch(lambda code: done.set())
        print(
            f"front: nginx on http://{config.listen} -> {', '.join(config.upstreams)}", flush=True
        )
        if args.ready_interval > 0 and len(config.upstreams) > 1:
            watch = ReadyWatch(front, args.ready_interval).start()
        done.wait()
    finally:
        if watch is not None:
            watch.stop()
        front.stop()
    return 0 if front.proc is None or front.proc.returncode in (0, None, -signal.SIGQUIT) else 1


if __name__ == "__main__":
    sys.exit(main())
