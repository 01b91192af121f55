"""An app's registry poller and batcher stop when the app ends (serving.model_store.close),
and the test fixtures end the apps of each test: threads counted after their teardown."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from serving import create_app, model_store
from tests.support import Registry

# The threads an app starts: its registry poller (the batcher has none: serving/batching.py).
APP_THREADS = ("model-poller",)


def app_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name in APP_THREADS]


def started_since(before: set[threading.Thread]) -> list[str]:
    """The app threads started since ``before`` still alive (a batcher ends just after its
    close, on its own thread: given a moment)."""
    new = [t for t in app_threads() if t not in before]
    for t in new:
        t.join(timeout=5)
    return [t.name for t in new if t.is_alive()]


@pytest.fixture(scope="module", autouse=True)
def no_app_thread_left() -> Iterator[None]:
    """Set up before every test's own fixtures (conftest's autouse ones too) and torn down
    after them all: what their teardown left running is counted here."""
    before = set(app_threads())
    yield
    left = started_since(before)
    assert not left, f"left running after the fixtures' teardown: {left}"


def test_closing_an_app_stops_its_poller_and_batcher(registry: Registry, seed_png: bytes):
    before = set(app_threads())
    apps = [
        create_app({"mlflow_tracking_uri": registry.tracking_uri, "workers": 1}) for _ in range(3)
    ]
    started = [t for t in app_threads() if t not in before]
    # One poller per app, the model loaded.
    assert [t.name for t in started].count("model-poller") == 3
    stores = [a.extensions[model_store.EXTENSION] for a in apps]
    assert all(s.current is not None for s in stores)
    assert all(s.following for s in stores)
    assert set(stores) <= set(model_store.following())
    answer = apps[0].test_client().post("/recognize", data=seed_png, content_type="image/png")
    assert answer.status_code == 200
    for a in apps:
        model_store.close(a)
    assert not started_since(before)
    assert not any(s.following for s in stores)
    assert not set(stores) & set(model_store.following())
    # A straggler after close is still answered (without the batcher).
    answer = apps[0].test_client().post("/recognize", data=seed_png, content_type="image/png")
    assert answer.status_code == 200


def test_the_app_fixture_stops_its_threads(app, client, seed_png: bytes):
    assert client.post("/recognize", data=seed_png, content_type="image/png").status_code == 200
    assert any(t.name == "model-poller" for t in app_threads())


def test_an_app_built_in_a_test_is_stopped_when_it_ends(registry: Registry):
    # Not closed here: conftest's autouse fixture ends it, before no_app_thread_left counts.
    app = create_app({"mlflow_tracking_uri": registry.tracking_uri, "workers": 1})
    assert app.extensions[model_store.EXTENSION].following
