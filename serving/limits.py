"""Who may call /recognize and /feedback, and how often: optional API keys and rate limits.

Rate limits are Flask-Limiter's, counted per client address (the front's
``X-Forwarded-For`` is only believed behind the front, see serving/server.py) or, when a
request carries an API key, per key with that key's own limit. Counters live in
``RATE_LIMIT_STORAGE_URI``: ``memory://`` (the default) counts in each worker process on
its own; ``redis://127.0.0.1:6379`` shares them between workers and replicas (the
production setting: with N processes, memory counters let a client through N times).

Defaults keep one well-behaved client (a benchmark on the same machine) unthrottled: no
limit on /recognize, 30 labels a minute per client on /feedback.

With API_KEYS set, a request without a valid key is refused (401/403) only after it has been
counted against its client address (``KEYLESS_RATE_LIMIT``, whatever the endpoint's own
limit): whoever guesses keys or floods without one is throttled like anyone else.

The limiter is consulted once per request of a limited endpoint, and not at all where no
limit is configured (/recognize and /read by default): its checks were 12 % of a
/recognize request's instructions (docs/performance-history.md).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, g, request
from flask_limiter import Limiter

from serving.access_settings import AccessConfig
from serving.errors import ApiError

log = logging.getLogger(__name__)
EXTENSION = "digits_limiter"
API_KEY_HEADER = "X-API-Key"
STORAGE_TIMEOUT = 0.5  # seconds; Redis answers a count in well under a millisecond
# Requests refused for a missing or unknown API key, per client address and endpoint: ample
# for a client that forgot its key, and a wall for one trying keys.
KEYLESS_RATE_LIMIT = "60/minute"
# The endpoints that keys and limits apply to.
FEEDBACK_ENDPOINT, RECOGNIZE_ENDPOINT = "feedback.feedback", "digits.recognize"
READ_ENDPOINT = "read.read"  # reads like /recognize: the same key and limit


def _settings() -> AccessConfig:
    return current_app.config["SETTINGS"]


def api_key() -> str | None:
    """The configured API key the request carries (checked by :func:`require_api_key`)."""
    return g.get("api_key")


def require_api_key() -> None:
    """With API_KEYS set: the request's X-API-Key must be one of them (401/403)."""
    keys = _settings().api_keys
    if not keys:
        return
    given = request.headers.get(API_KEY_HEADER)
    if not given:
        raise ApiError(401, "api_key_required", f"send your API key as {API_KEY_HEADER}")
    # Every key compared, each in constant time: the answer's timing says nothing.
    found = None
    for key in keys:
        if hmac.compare_digest(key.encode(), given.encode("utf-8", "surrogatepass")):
            found = key
    if found is None:
        raise ApiError(403, "invalid_api_key", "unknown API key")
    g.api_key = found


def _identify_key() -> None:
    """Before the limits: the request's key, or its refusal, raised only once it has been
    counted (:func:`_refused_after_counting`)."""
    g.key_refusal = None
    try:
        require_api_key()
    except ApiError as refusal:
        g.key_refusal = refusal


def _refused_after_counting(view: Callable[..., Any]) -> Callable[..., Any]:
    """``view``, preceded by the key's refusal if any; wrapped inside the limits, so that a
    refused request has been counted first."""

    @functools.wraps(view)
    def checked(*args: Any, **kwargs: Any) -> Any:
        refusal = g.get("key_refusal")
        if refusal is not None:
            raise refusal
        return view(*args, **kwargs)

    return checked


def _client() -> str:
    key = api_key()
    if key is not None:  # never the key itself in the store's key names
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:24]
    return "addr:" + (request.remote_addr or "unknown")


def _limit_for(default_of: str) -> Callable[[], str]:
    def limit() -> str:
        key = api_key()
        own = _settings().api_keys.get(key, "") if key is not None else ""
        return own or getattr(_settings(), default_of)

    return limit


def _unlimited(limit: Callable[[], str]) -> Callable[[], bool]:
    """An empty limit (no limit set for this key) exempts the request."""
    return lambda: not limit()


def _message() -> str:
    where = "this API key" if api_key() is not None else "this client"
    return f"too many requests from {where} to {request.path}; retry after the Retry-After seconds"


def init_app(app: Flask, settings: AccessConfig) -> None:
    """Keys and limits on the app's /recognize and /feedback (their views must be registered)."""
    limiter = Limiter(
        _client,
        app=app,
        storage_uri=settings.rate_limit_storage_uri,
        # A Redis that hangs must not hold requests: it counts as unreachable (see below).
        # (flask-limiter types the options str | int; redis takes float timeouts.)
        storage_options={"socket_timeout": STORAGE_TIMEOUT, "socket_connect_timeout": 0.5},  # type: ignore[dict-item]
        strategy="moving-window",
        headers_enabled=True,
        key_prefix="digits",
        # Counting must not take the service down: if Redis is unreachable, each process
        # counts in memory until it is back (and says so in the log).
        swallow_errors=True,
        in_memory_fallback_enabled=True,
    )
    app.extensions[EXTENSION] = limiter
    # Flask-Limiter checks every request twice: in its before-request hook (for default and
    # application-wide limits) and again in each decorated view. This app declares neither
    # default nor application limits, so the hook never finds a limit to count, on any
    # endpoint: it is pure cost. The decorated views count alone.
    _drop_middleware_check(app, limiter)
    keyless = limiter.limit(
        KEYLESS_RATE_LIMIT,
        error_message=_message,
        exempt_when=lambda: g.get("key_refusal") is None,
    )
    keyed = bool(settings.api_keys)
    limited_endpoints: set[str] = set()
    for endpoint, default_of in (
        (RECOGNIZE_ENDPOINT, "recognize_rate_limit"),
        (READ_ENDPOINT, "recognize_rate_limit"),
        (FEEDBACK_ENDPOINT, "feedback_rate_limit"),
    ):
        # An endpoint without a limit (none of its own, no API keys, so no key's limit and
        # no keyless limit either) is not wrapped: the limiter is not consulted at all.
        # Settings are fixed once the app is built, so this cannot change while it runs.
        if not (keyed or getattr(settings, default_of)):
            continue
        limit = _limit_for(default_of)
        limited = limiter.limit(limit, error_message=_message, exempt_when=_unlimited(limit))
        view = _refused_after_counting(app.view_functions[endpoint])
        app.view_functions[endpoint] = keyless(limited(view))
        limited_endpoints.add(endpoint)
    _only_where_limited(app, limiter, limited_endpoints)

    if keyed:

        @app.before_request
        def check_key() -> None:
            if request.endpoint in (RECOGNIZE_ENDPOINT, READ_ENDPOINT, FEEDBACK_ENDPOINT):
                _identify_key()


def _drop_middleware_check(app: Flask, limiter: Limiter) -> None:
    """Remove the limiter's before-request check (see :func:`init_app`); an error if it is
    not where Flask-Limiter puts it, so an upgrade that moves it fails loudly rather than
    leaving the cost in place unnoticed."""
    hooks = app.before_request_funcs.get(None, [])
    check = limiter._check_request_limit
    if check not in hooks:
        raise RuntimeError("Flask-Limiter's before-request check was not found to remove")
    hooks.remove(check)


def _only_where_limited(app: Flask, limiter: Limiter, endpoints: set[str]) -> None:
    """Run the limiter's after-request hook (its X-RateLimit headers) and its teardown only
    on the ``endpoints`` it counts: elsewhere no limit applies, so they found nothing to
    add or release, yet built the limiter's request context on every request (/recognize
    unless a limit is set). Like :func:`_drop_middleware_check`, an error if they are not
    where Flask-Limiter puts them."""
    hooks = app.after_request_funcs.get(None, [])
    teardowns = app.teardown_request_funcs.get(None, [])
    # (Name-mangled private methods: the hooks are a partial of one and a bound other.)
    ours = getattr(Limiter, "_Limiter__inject_headers", None)
    inject = [h for h in hooks if getattr(h, "func", None) is ours]
    release = getattr(limiter, "_Limiter__release_context", None)
    if len(inject) != 1 or release not in teardowns:
        raise RuntimeError("Flask-Limiter's after-request and teardown hooks were not found")

    def inject_headers(response: Any) -> Any:
        if request.endpoint in endpoints:
            return inject[0](response)
        return response

    def release_context(exc: BaseException | None = None) -> None:
        if request.endpoint in endpoints:
            release(exc)

    hooks[hooks.index(inject[0])] = inject_headers
    teardowns[teardowns.index(release)] = release_context
