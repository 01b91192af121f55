"""Where the project keeps things by default: its root, the embedded registry, the image
log's files and the settings file. Standard library only: the service, training and the
benchmarks all import it, and none of them should pay for more to learn a path."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent
# MLflow 3 refuses a bare file store, so the default registry is an sqlite file.
DEFAULT_TRACKING_URI = f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"
DEFAULT_DATA_DIR = PROJECT_ROOT / "data"
CONFIG_ENV = "DIGITS_CONFIG"
DEFAULT_CONFIG_FILE = PROJECT_ROOT / "serving.toml"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the project's sqlite registry."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def settings_file() -> Path | None:
    """The TOML settings file to read now: the one ``DIGITS_CONFIG`` names (it must exist),
    else ``serving.toml`` at the root if there is one."""
    named = os.environ.get(CONFIG_ENV)
    if named:
        if not Path(named).is_file():
            raise FileNotFoundError(f"{CONFIG_ENV} names a missing file: {named}")
        return Path(named)
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def settings_sources(settings_cls: type, init_settings: object, env_settings: object) -> tuple:
    """The project's settings precedence for a pydantic-settings class: explicit values,
    then the environment, then the settings file. Chosen when settings are built, not at
    import time; the service and the feedback export both use it, so they agree."""
    from pydantic_settings import TomlConfigSettingsSource

    config_file = settings_file()
    if config_file is None:
        return (init_settings, env_settings)
    return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, config_file))
