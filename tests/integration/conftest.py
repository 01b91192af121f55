"""Fixtures for the integration tests."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from tests.support import Registry


@pytest.fixture(scope="module")
def model_dir(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's trained version 1 as a plain directory, to register elsewhere."""
    mlflow.set_tracking_uri(registry.tracking_uri)
    mlflow.set_registry_uri(registry.tracking_uri)
    target = tmp_path_factory.mktemp("model-v1")
    return Path(mlflow.artifacts.download_artifacts("models:/digits/1", dst_path=str(target)))
