"""Where runs and models go: ``MLFLOW_TRACKING_URI``, else the embedded sqlite registry."""

from __future__ import annotations

import os

from locations import DEFAULT_TRACKING_URI, PROJECT_ROOT, tracking_uri


def configure() -> str:
    """Point mlflow at the registry and make sure the project's experiment keeps its artifacts
    under ``mlruns/`` at the project root (not wherever the process happens to run)."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def ensure_experiment(name: str) -> str:
    """The experiment id for ``name``, created with artifacts under ``mlruns/`` if new."""
    import mlflow

    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if tracking_uri() == DEFAULT_TRACKING_URI:
        location = (PROJECT_ROOT / "mlruns").as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


def use_experiment(name: str) -> None:
    """Configure tracking and pick the experiment, unless ``mlflow run`` already made the run
    (it passes ``MLFLOW_RUN_ID``, and the run's experiment is the one it chose)."""
    import mlflow

    configure()
    if os.environ.get("MLFLOW_RUN_ID"):
        return
    mlflow.set_experiment(experiment_id=ensure_experiment(name))
