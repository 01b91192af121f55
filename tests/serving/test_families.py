"""A running app switches model family by promotion alone: a real registry, the tiny
Keras/ONNX-family model first, then a scikit-learn family with its own input spec promoted
over it; no restart, no change to the service."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving import create_app
from tests import tiny_model
from tests.support import Registry

POLL_SECONDS = 0.2


@pytest.fixture
def families_registry(tmp_path_factory, tiny_onnx) -> Registry:
    """A registry of its own whose Production version is the tiny model, for each test."""
    reg = Registry.create(tmp_path_factory.mktemp("families-registry"))
    tiny_model.register(reg.tracking_uri, tiny_onnx)
    return reg


@pytest.fixture(scope="module")
def pooled(mnist) -> tiny_model.PooledLogistic:
    return tiny_model.fit_pooled(mnist.x_train, mnist.y_train)


def _family_info(client) -> dict[tuple[str, str], float]:
    text = client.get("/metrics").get_data(as_text=True)
    return {
        (s.labels["version"], s.labels["family"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "digits_model_family_info"
    }


def _wait_for_version(client, version: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model = client.get("/ready").get_json()["model"]
        if model["version"] == version:
            return model
        time.sleep(POLL_SECONDS)
    raise AssertionError(f"version {version} not served within {timeout} s")


@pytest.mark.parametrize("batching", [True, False])
def test_promoting_another_family_switches_the_running_app(
    families_registry, pooled, seed_png, batching
):
    reg = families_registry
    app = create_app(
        {
            "mlflow_tracking_uri": reg.tracking_uri,
            "workers": 1,
            "model_poll_interval": POLL_SECONDS,
            "batching": batching,
        }
    )
    app.config.update(TESTING=True)
    client = app.test_client()
    first = client.get("/ready").get_json()["model"]
    answer = client.post("/recognize", data=seed_png, content_type="image/png").get_json()
    assert answer["model"] == first
    assert first["family"] == tiny_model.FAMILY

    version = tiny_model.register_pooled(reg.tracking_uri, pooled)
    served = _wait_for_version(client, version)
    assert served == {"name": "digits", "version": version, "family": tiny_model.POOLED_FAMILY}

    answer = client.post("/recognize", data=seed_png, content_type="image/png").get_json()
    assert answer["model"] == served and answer["digit"] == 9
    # The page's "what the model sees" is the family's own input: 14×14 here.
    seen = client.post(
        "/recognize?return_input=true", data=seed_png, content_type="image/png"
    ).get_json()
    assert seen["model"]["family"] == tiny_model.POOLED_FAMILY and seen.get("model_input")
    info = _family_info(client)
    assert info[(version, tiny_model.POOLED_FAMILY)] == 1
    assert info[(first["version"], tiny_model.FAMILY)] == 0
