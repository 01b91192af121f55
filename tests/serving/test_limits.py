"""Rate limits and API keys on /recognize and /feedback, in-process; the Redis-shared limit
is checked between two apps through the real Redis on 127.0.0.1:6379."""

from __future__ import annotations

import uuid

import pytest
import redis

from serving import create_app, limits

REDIS_URL = "redis://127.0.0.1:6379"
KEY_A, KEY_B = "a" * 20 + "-key", "b" * 20 + "-key"


def _app(registry, tmp_path, **settings):
    app = create_app(
        {
            "mlflow_tracking_uri": registry.tracking_uri,
            "workers": 1,
            "data_dir": tmp_path / "data",
            **settings,
        }
    )
    app.config.update(TESTING=True)
    return app


def _recognize(client, png: bytes, **headers):
    return client.post("/recognize", data=png, content_type="image/png", headers=headers)


def _feedback(client, answer: dict, label: int = 9, **headers):
    body = {
        "record_id": answer["record_id"],
        "feedback_token": answer["feedback_token"],
        "label": label,
    }
    return client.post("/feedback", json=body, headers=headers)


def test_by_default_recognize_is_not_limited_and_feedback_is(registry, tmp_path, seed_png):
    app = _app(registry, tmp_path, feedback_rate_limit="3/minute", feedback_max_labels=10)
    client = app.test_client()
    answers = [_recognize(client, seed_png) for _ in range(40)]
    assert {r.status_code for r in answers} == {200}
    answer = answers[0].get_json()
    assert [_feedback(client, answer).status_code for _ in range(3)] == [200] * 3
    refused = _feedback(client, answer)
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "too_many_requests"
    assert "Retry-After" in refused.headers
    # Per client: another address has its own allowance.
    other = client.post(
        "/feedback",
        json={"record_id": answer["record_id"], "feedback_token": answer["feedback_token"],
              "label": 9},
        environ_base={"REMOTE_ADDR": "10.0.0.2"},
    )  # fmt: skip
    assert other.status_code == 200


def test_the_default_feedback_limit_lets_a_person_label(client, seed_png):
    # 30 a minute by default: far more than anyone labels by hand.
    answer = _recognize(client, seed_png).get_json()
    assert [_feedback(client, answer).status_code for _ in range(5)] == [200] * 5


def test_recognize_can_be_limited_per_client(registry, tmp_path, seed_png):
    app = _app(registry, tmp_path, recognize_rate_limit="2/minute")
    client = app.test_client()
    assert [_recognize(client, seed_png).status_code for _ in range(3)] == [200, 200, 429]
    assert app.test_client().get("/health").status_code == 200  # only the limited routes


def test_api_keys_are_required_when_configured(registry, tmp_path, seed_png):
    app = _app(registry, tmp_path, api_keys={KEY_A: "", KEY_B: ""})
    client = app.test_client()
    missing = _recognize(client, seed_png)
    assert missing.status_code == 401
    assert missing.get_json()["error"]["code"] == "api_key_required"
    wrong = _recognize(client, seed_png, **{"X-API-Key": "c" * 24})
    assert wrong.status_code == 403
    assert wrong.get_json()["error"]["code"] == "invalid_api_key"
    answer = _recognize(client, seed_png, **{"X-API-Key": KEY_A})
    assert answer.status_code == 200
    assert _feedback(client, answer.get_json()).status_code == 401
    assert _feedback(client, answer.get_json(), **{"X-API-Key": KEY_B}).status_code == 200
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 200


def test_each_api_key_has_its_own_limit(registry, tmp_path, seed_png):
    app = _app(
        registry,
        tmp_path,
        api_keys={KEY_A: "2/minute", KEY_B: "4/minute"},
        recognize_rate_limit="1/minute",
    )
    client = app.test_client()
    a = [_recognize(client, seed_png, **{"X-API-Key": KEY_A}).status_code for _ in range(3)]
    b = [_recognize(client, seed_png, **{"X-API-Key": KEY_B}).status_code for _ in range(5)]
    assert a == [200, 200, 429]
    assert b == [200] * 4 + [429]


def test_api_keys_shorter_than_16_characters_are_refused(registry, tmp_path):
    with pytest.raises(ValueError, match="16 characters"):
        _app(registry, tmp_path, api_keys={"short": ""})


@pytest.mark.parametrize(
    "settings",
    [
        {"feedback_rate_limit": "thirty a minute"},
        {"recognize_rate_limit": "5/fortnight"},
        {"api_keys": {KEY_A: "often"}},
    ],
    ids=["feedback", "recognize", "api-key"],
)
def test_a_limit_that_does_not_parse_is_refused_at_start(registry, tmp_path, settings):
    with pytest.raises(ValueError, match=r"rate limit string|granularity"):
        _app(registry, tmp_path, **settings)


def test_a_limit_is_shared_through_redis_between_replicas(registry, tmp_path, seed_png):
    # Two apps (two workers or replicas) counting in the same Redis: 4 a minute in all.
    redis.Redis.from_url(REDIS_URL, socket_timeout=5).ping()  # a failure, not a skip
    limit = f"4/minute;{uuid.uuid4().int % 1000 + 5}/hour"  # a fresh counter per run
    apps = [
        _app(
            registry,
            tmp_path / name,
            recognize_rate_limit=limit,
            rate_limit_storage_uri=REDIS_URL,
        )
        for name in ("one", "two")
    ]
    # A client address of this run only, so earlier runs' counters do not interfere.
    addr = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.7"
    statuses = [
        apps[i % 2]
        .test_client()
        .post(
            "/recognize",
            data=seed_png,
            content_type="image/png",
            environ_base={"REMOTE_ADDR": addr},
        )
        .status_code
        for i in range(6)
    ]
    assert statuses == [200] * 4 + [429] * 2


def test_memory_counters_are_per_app(registry, tmp_path, seed_png):
    # The default, memory://, counts in each process: two apps each allow the limit.
    apps = [_app(registry, tmp_path / name, recognize_rate_limit="2/minute") for name in ("x", "y")]
    statuses = [_recognize(app.test_client(), seed_png).status_code for app in apps for _ in "ab"]
    assert statuses == [200] * 4


@pytest.mark.parametrize("redis_state", ["refusing", "hung"])
def test_without_its_redis_each_process_counts_alone(registry, tmp_path, seed_png, redis_state):
    # Counting must not take the service down: a Redis that refuses connections or accepts
    # and never answers is left aside, and the limit is still kept, in memory.
    import socket
    import time

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        if redis_state == "hung":
            listener.listen(16)  # accepts (the kernel does), never answers
        port = listener.getsockname()[1]
        app = _app(
            registry,
            tmp_path,
            feedback_rate_limit="3/minute",
            rate_limit_storage_uri=f"redis://127.0.0.1:{port}",
        )
        client = app.test_client()
        answer = _recognize(client, seed_png).get_json()
        started = time.monotonic()
        statuses = [_feedback(client, answer).status_code for _ in range(4)]
        took = time.monotonic() - started
    assert statuses == [200, 200, 200, 429]
    assert took < 5, f"{took:.1f} s: requests waited for the missing Redis"


def test_a_client_cannot_pick_its_address_with_x_forwarded_for(registry, tmp_path, seed_png):
    # Without a front (no ProxyFix), X-Forwarded-For is the client's own word: ignored.
    app = _app(registry, tmp_path, recognize_rate_limit="2/minute")
    client = app.test_client()
    statuses = [
        _recognize(client, seed_png, **{"X-Forwarded-For": f"10.9.9.{i}"}).status_code
        for i in range(3)
    ]
    assert statuses == [200, 200, 429]


def test_requests_without_a_valid_key_are_limited_per_client(registry, tmp_path, seed_png,
                                                              monkeypatch):  # fmt: skip
    # Refused for their key, yet counted first: guessing keys or flooding without one is
    # throttled, while a client with a valid key keeps its own (unlimited) allowance.
    monkeypatch.setattr(limits, "KEYLESS_RATE_LIMIT", "3/minute")
    app = _app(registry, tmp_path, api_keys={KEY_A: ""})
    client = app.test_client()
    missing = [_recognize(client, seed_png).status_code for _ in range(3)]
    guessed = _recognize(client, seed_png, **{"X-API-Key": "c" * 24})
    assert missing == [401] * 3
    assert guessed.status_code == 429
    assert guessed.get_json()["error"]["code"] == "too_many_requests"
    assert "Retry-After" in guessed.headers
    # Another address has its own allowance; a valid key is not held by the keyless count.
    other = client.post("/recognize", data=seed_png, content_type="image/png",
                        environ_base={"REMOTE_ADDR": "10.0.0.3"})  # fmt: skip
    assert other.status_code == 401
    keyed = [_recognize(client, seed_png, **{"X-API-Key": KEY_A}).status_code for _ in range(5)]
    assert keyed == [200] * 5
    # /feedback counts refusals on its own.
    assert _feedback(client, {"record_id": "x", "feedback_token": "y"}).status_code == 401


def test_a_limit_set_in_the_environment_answers_429_as_json(registry, tmp_path, seed_png,
                                                            monkeypatch):  # fmt: skip
    # Read by Settings from the environment, as a deployment sets it; /read shares it.
    monkeypatch.setenv("RECOGNIZE_RATE_LIMIT", "2/minute")
    app = _app(registry, tmp_path)
    client = app.test_client()
    assert [_recognize(client, seed_png).status_code for _ in range(2)] == [200, 200]
    refused = _recognize(client, seed_png)
    assert refused.status_code == 429
    assert refused.is_json
    assert refused.get_json()["error"]["code"] == "too_many_requests"
    assert int(refused.headers["Retry-After"]) > 0
    read = client.post("/read", data=seed_png, content_type="image/png")
    assert read.status_code == 200  # its own count, at the same limit


def test_the_limiter_is_consulted_once_only_where_a_limit_is_set(
    registry, tmp_path, seed_png, monkeypatch
):
    # Flask-Limiter checks in a before-request hook and again in the view: the hook is
    # removed (no default limits here), and an endpoint without a limit is not wrapped.
    from flask_limiter import Limiter

    calls: list[str] = []
    real = Limiter._check_request_limit

    def counting(self, *args, **kwargs):
        from flask import request

        calls.append(request.path)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Limiter, "_check_request_limit", counting)
    app = _app(registry, tmp_path, feedback_rate_limit="3/minute", feedback_max_labels=10)
    client = app.test_client()
    answer = _recognize(client, seed_png).get_json()
    assert client.get("/health").status_code == 200
    assert calls == []  # /recognize has no limit by default, /health none ever
    statuses = [_feedback(client, answer).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert calls == ["/feedback"] * 4  # once per request, not twice


def test_the_limiter_hooks_run_only_on_limited_endpoints(registry, tmp_path, seed_png,
                                                         monkeypatch):  # fmt: skip
    # Its after-request hook (the X-RateLimit headers) and teardown are skipped where no
    # limit applies: they built its request context on every /recognize for nothing.
    from flask import request
    from flask_limiter import Limiter

    real = Limiter.context
    paths: list[str] = []

    def counting(self):
        paths.append(request.path)
        return real.fget(self)

    monkeypatch.setattr(Limiter, "context", property(counting))
    app = _app(registry, tmp_path, feedback_rate_limit="3/minute", feedback_max_labels=10)
    client = app.test_client()
    recognized = _recognize(client, seed_png)
    assert client.get("/health").status_code == 200
    assert paths == []
    assert not any(name.startswith("X-RateLimit") for name, _ in recognized.headers.items())
    labelled = _feedback(client, recognized.get_json())
    assert labelled.status_code == 200 and paths and set(paths) == {"/feedback"}
    assert labelled.headers["X-RateLimit-Limit"] == "3"
    assert labelled.headers["X-RateLimit-Remaining"] == "2"
    limited = _app(registry, tmp_path / "limited", recognize_rate_limit="5/minute")
    assert _recognize(limited.test_client(), seed_png).headers["X-RateLimit-Remaining"] == "4"
