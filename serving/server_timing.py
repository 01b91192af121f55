"""An opt-in ``Server-Timing`` header: where one request's time went inside the worker.

``SERVER_TIMING=true`` wraps the WSGI app: the wrapper starts a clock when the request
enters the app, the code marks the end of each stage (:func:`mark`), and the header is
added when the response starts (after every ``after_request`` hook, the access log's
included), e.g. ``Server-Timing: route;dur=0.21;cpu=0.2, …, app;dur=1.62;cpu=0.9``
(milliseconds): ``dur`` is wall time, ``cpu`` the request thread's CPU time (work handed
to other threads, such as the image log's writer, shows in ``dur`` only). Each stage runs
from the previous mark. ``python -m
bench.stages`` aggregates the header under load (docs/performance.md).

Off (the default) the wrapper is not installed and :func:`mark` is one context-variable
read: nothing else is paid.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any

HEADER = "Server-Timing"
# The last stage: from the last mark until the response starts (the after_request hooks
# and the access log line, which run after the view).
_TAIL = "access_log"
_TOTAL = "app"

_current: ContextVar[list[tuple[str, float, float]] | None] = ContextVar(
    "server_timing", default=None
)


def mark(stage: str) -> None:
    """The stage that just ended (named for what ran since the previous mark)."""
    marks = _current.get()
    if marks is not None:
        marks.append((stage, time.perf_counter(), time.thread_time()))


def header_value(marks: list[tuple[str, float, float]], end: tuple[float, float]) -> str:
    """``name;dur=ms;cpu=ms`` per stage (a stage marked twice adds up), the total as
    ``app``."""
    spent: dict[str, list[float]] = {}
    _, wall, cpu = marks[0]
    for name, at, cpu_at in [*marks[1:], (_TAIL, *end)]:
        total = spent.setdefault(name, [0.0, 0.0])
        total[0] += at - wall
        total[1] += cpu_at - cpu
        wall, cpu = at, cpu_at
    spent[_TOTAL] = [end[0] - marks[0][1], end[1] - marks[0][2]]
    return ", ".join(
        f"{name};dur={1000 * w:.3f};cpu={1000 * c:.3f}" for name, (w, c) in spent.items()
    )


class ServerTimingMiddleware:
    """WSGI wrapper: starts the marks, adds the header in ``start_response``."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]):
        marks = [("start", time.perf_counter(), time.thread_time())]
        token = _current.set(marks)

        def timed_start_response(status: str, headers: list, exc_info: Any = None):
            end = (time.perf_counter(), time.thread_time())
            headers.append((HEADER, header_value(marks, end)))
            return start_response(status, headers, exc_info)

        try:
            return self.app(environ, timed_start_response)
        finally:
            _current.reset(token)


def init_app(app: Any, enabled: bool) -> None:
    """Called right after the access log's ``init_app``: the hook below then runs after
    every other ``after_request`` hook but before the access log's."""
    if not enabled:
        return
    app.wsgi_app = ServerTimingMiddleware(app.wsgi_app)

    @app.after_request
    def _hooks_done(response: Any) -> Any:
        mark("hooks")
        return response
