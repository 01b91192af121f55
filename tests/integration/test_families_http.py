"""Every model family trained (tiny) by the real `mlflow run`, registered, and served one
after another by ONE running service, switched by promotion alone: no restart, no change to
the service."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient

from tests.support import Registry, run_checked, set_production, start_server
from training import families

POLL = 1.0
# A few thousand digits, one epoch: each family trains in seconds; what is tested is that
# it registers and serves, not how well it reads.
TINY = {"limit": 3000, "epochs": 1, "seed": 1, "rejector": "false"}


@pytest.fixture(scope="module")
def family_versions(
    tmp_path_factory: pytest.TempPathFactory, mnist_path: Path
) -> tuple[Registry, dict[str, str]]:
    reg = Registry.create(tmp_path_factory.mktemp("families"))
    client = MlflowClient(tracking_uri=reg.tracking_uri, registry_uri=reg.tracking_uri)
    versions: dict[str, str] = {}
    for family in families.names():
        run_checked(
            reg.mlflow_run("train", family=family, data_path=mnist_path, **TINY),
            env=reg.env,
            timeout=600,
        )
        latest = max(client.search_model_versions("name = 'digits'"), key=lambda v: int(v.version))
        versions[family] = str(latest.version)
        run = client.get_run(latest.run_id)
        assert run.data.tags["family"] == family and run.data.params["family"] == family
        assert latest.tags.get("family") == family
    return reg, versions


def _recognize(url: str, png: bytes) -> requests.Response:
    return requests.post(
        f"{url}/recognize", data=png, headers={"Content-Type": "image/png"}, timeout=30
    )


def _serving(url: str, png: bytes, version: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        r = _recognize(url, png)
        if r.ok:
            body = r.json()
            if body["model"]["version"] == version:
                return body
        time.sleep(POLL / 2)
    raise AssertionError(f"version {version} not served within {timeout} s; last: {body}")


def test_one_service_serves_every_family_by_promotion_alone(
    family_versions: tuple[Registry, dict[str, str]], tmp_path: Path, seed_png: bytes
) -> None:
    reg, versions = family_versions
    assert list(versions) == families.names()
    first, *rest = versions
    set_production(reg.tracking_uri, versions[first])
    extra = {"MODEL_POLL_INTERVAL": str(POLL), "WORKERS": "1"}
    with start_server(reg.env, extra, log_dir=tmp_path) as url:
        for family in [first, *rest]:
            set_production(reg.tracking_uri, versions[family])
            body = _serving(url, seed_png, versions[family])
            assert body["model"]["family"] == family
            assert 0 <= body["digit"] <= 9 and len(body["probabilities"]) == 10
