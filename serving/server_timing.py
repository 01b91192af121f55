"""An opt-in ``Server-Timing`` header: where one request's time went inside the worker.

``SERVER_TIMING=true`` wraps the WSGI app: the wrapper starts a clock when the request
enters the app, the code marks the end of each stage (:func:`mark`), and the header is
added when the response starts (after every ``after_request`` hook, the access log's
included), e.g. ``Server-Timing: route;dur=0.21, body;dur=0.03, …, app;dur=1.62``
(milliseconds). Each stage's duration runs from the previous mark. ``python -m
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

_current: ContextVar[list[tuple[str, float]] | None] = ContextVar("server_timing", default=None)


def mark(stage: str) -> None:
    """The stage that just ended (named for what ran since the previous mark)."""
    marks = _current.get()
    if marks is not None:
        marks.append((stage, time.perf_counter()))


def header_value(marks: list[tuple[str, float]], end: float) -> str:
    """``name;dur=ms`` per stage (a stage marked twice adds up) and the total as ``app``."""
    durations: dict[str, float] = {}
    previous = marks[0][1]
    for name, at in [*marks[1:], (_TAIL, end)]:
        durations[name] = durations.get(name, 0.0) + (at - previous)
        previous = at
    durations[_TOTAL] = end - marks[0][1]
    return ", ".join(f"{name};dur={1000 * sec:.3f}" for name, sec in durations.items())


class ServerTimingMiddleware:
    """WSGI wrapper: starts the marks, adds the header in ``start_response``."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]):
        marks: list[tuple[str, float]] = [("start", time.perf_counter())]
        token = _current.set(marks)

        def timed_start_response(status: str, headers: list, exc_info: Any = None):
            headers.append((HEADER, header_value(marks, time.perf_counter())))
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
