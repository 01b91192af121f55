"""Fixtures for the tests that start real processes (`mlflow run`, `python -m serving`,
`mlflow models serve`, gunicorn, chromium): every test here is marked ``integration``, which
`make test-fast` (``pytest -m "not integration"``) leaves out."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from tests.support import TRAINING_TIMEOUT_S, Registry, run_checked, start_server

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Called with the whole session's items, wherever this conftest lives.
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory, mnist_path: Path) -> Registry:
    """Here, unlike the tiny model of the in-process tests: a fresh sqlite registry with one
    small CNN trained by the real `mlflow run` (minutes), promoted to Production by the real
    promote entry point."""
    reg = Registry.create(tmp_path_factory.mktemp("registry"))
    # The reference family, named: the tests that read its answers over HTTP expect it, and
    # the default family may change with the evidence (docs/model.md).
    run_checked(
        reg.mlflow_run(
            "train",
            family="keras_example",
            limit=8000,
            epochs=3,
            data_path=mnist_path,
            seed=1,
        ),
        env=reg.env,
        timeout=TRAINING_TIMEOUT_S,
    )
    run_checked(reg.mlflow_run("promote"), env=reg.env, timeout=TRAINING_TIMEOUT_S)
    return reg


@pytest.fixture(scope="session")
def live_server(registry: Registry, tmp_path_factory: pytest.TempPathFactory):
    """`python -m serving` (gunicorn, 2 workers) on a free port, following the registry."""
    with start_server(
        registry.env,
        {
            "MAX_BODY_BYTES": str(4 * 1024 * 1024),
            "MAX_BASE64_CHARS": str(512 * 1024),
            # Shared by many tests (schemathesis sends hundreds of labels): the feedback
            # limit is tested on servers of its own (test_http.py).
            "FEEDBACK_RATE_LIMIT": "100000 per minute",
        },
        log_dir=tmp_path_factory.mktemp("server-logs"),
    ) as url:
        yield url


@pytest.fixture(scope="module")
def model_dir(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's trained version 1 as a plain directory, to register elsewhere."""
    mlflow.set_tracking_uri(registry.tracking_uri)
    mlflow.set_registry_uri(registry.tracking_uri)
    target = tmp_path_factory.mktemp("model-v1")
    return Path(mlflow.artifacts.download_artifacts("models:/digits/1", dst_path=str(target)))
