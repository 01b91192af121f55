"""Every model family trained (tiny) by the real `mlflow run`, registered, and served one
after another by ONE running service, switched by promotion alone: no restart, no change to
the service."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from mlflow import MlflowClient
from PIL import Image

from tests.support import (
    TRAINING_TIMEOUT_S,
    Registry,
    run_checked,
    set_production,
    start_scorer,
    start_server,
)
from training import families

POLL = 1.0
# A few thousand digits, one epoch, no prepared copies: each family trains in seconds; what
# is tested is that it registers and serves, not how well it reads.
TINY = {"limit": 3000, "epochs": 1, "seed": 1, "augment": "false", "rejector": "false"}


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
            timeout=TRAINING_TIMEOUT_S,
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


def test_the_scikit_learn_family_answers_under_mlflow_models_serve(
    family_versions: tuple[Registry, dict[str, str]], tmp_path: Path, seed_png: bytes
) -> None:
    reg, versions = family_versions
    uri = f"models:/digits/{versions['pca_svm']}"
    seed = base64.b64encode(seed_png).decode()
    with start_scorer(reg.env, tmp_path, model_uri=uri) as (url, _):
        payload = {"dataframe_split": {"columns": ["image"], "data": [[seed]]}}
        response = requests.post(f"{url}/invocations", json=payload, timeout=60)
        assert response.status_code == 200, response.text
        (answer,) = response.json()["predictions"]
        assert answer["error"] is None and len(answer["probabilities"]) == 10
        # A notebook's bare (N, 28, 28) array: an empty image is its own row's error.
        pixels = np.asarray(Image.open(io.BytesIO(seed_png))).tolist()
        payload = {"inputs": [np.zeros((28, 28), np.uint8).tolist(), pixels]}
        response = requests.post(f"{url}/invocations", json=payload, timeout=60)
        assert response.status_code == 200, response.text
        answers = response.json()["predictions"]
        assert [a["error"] for a in answers] == ["no_digit", None]
        assert answers[1]["digit"] == answer["digit"]
