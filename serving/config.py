"""One typed settings object: defaults < config file (TOML) < environment < explicit values."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_ENV = "DIGITS_CONFIG"
# Set by the gunicorn master for its workers: touching this file makes each check the
# registry now (POST /admin/reload reaches one worker; this reaches the others).
RELOAD_FILE_ENV = "DIGITS_RELOAD_FILE"
DEFAULT_CONFIG_FILE = PROJECT_ROOT / "serving.toml"


def _default_tracking_uri() -> str:
    return f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


class Settings(BaseSettings):
    """Service configuration. Environment variables use the upper-case field names."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    mlflow_tracking_uri: str = Field(default_factory=_default_tracking_uri)
    model_uri: str = "models:/digits/Production"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=2, ge=1)
    # Measured with make bench (balanced worker, frozen heap): 8 threads gave the best c=32
    # p99 (40-46 ms against 47-54 ms with 16, for 5-10 % less throughput).
    threads: int = Field(default=8, ge=1)
    timeout: int = Field(default=60, ge=1, description="gunicorn worker timeout, seconds")

    # Limits, enforced before any heavy work.
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_base64_chars: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_image_side: int = Field(default=10_000, ge=28)
    max_image_pixels: int = Field(default=40_000_000, ge=784)

    low_confidence_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    model_retry_max_seconds: float = Field(default=30.0, gt=0)

    # Following the registry: seconds between checks of MODEL_URI (0 = never, after start).
    model_poll_interval: float = Field(default=10.0, ge=0)
    # POST /admin/reload needs this token; unset disables the endpoint.
    admin_token: str | None = None

    # Dynamic micro-batching of the network's forward passes within a worker.
    batching: bool = True
    batch_max_size: int = Field(default=32, ge=1)
    batch_max_wait_us: int = Field(default=0, ge=0)
    # Threads of the model's runtime per worker: with one worker per core, 1 avoids
    # oversubscription.
    inference_threads: int = Field(default=1, ge=0, description="0 = the runtime's default")

    # Where predictions run: in this process, or on an MLflow scoring server
    # (`mlflow models serve` of the same registered model) at remote_predictor_url.
    predictor: Literal["local", "remote"] = "local"
    remote_predictor_url: str = "http://127.0.0.1:5001/invocations"
    remote_timeout_seconds: float = Field(default=5.0, gt=0)
    remote_retries: int = Field(default=2, ge=0, le=10)

    # The image log (serving/imagelog): every answered /recognize request, kept durably.
    image_log_backend: Literal["sqlite", "postgres"] = "sqlite"
    # sqlite: the index (imagelog.sqlite3) and images/ live here.
    data_dir: Path = PROJECT_ROOT / "data"
    # postgres: e.g. postgresql://postgres@127.0.0.1:5432/test; tables go in database_schema.
    database_url: str = ""
    database_schema: str = Field(default="image_log", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    # false: predictions are still logged (with the image's sha256), the bytes are not kept.
    store_images: bool = True
    # 0 = unlimited. Labelled records are kept unless retention_keep_labelled is false.
    retention_max_age_days: float = Field(default=0, ge=0)
    retention_max_count: int = Field(default=0, ge=0)
    retention_keep_labelled: bool = True
    # When a record cannot be written: "refuse" answers 503 storage_unavailable; "answer"
    # answers anyway with "logged": false.
    log_failure_policy: Literal["refuse", "answer"] = "refuse"
    # How long a write may wait for the database (lock or connection) before it fails.
    storage_timeout_seconds: float = Field(default=10.0, gt=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file is chosen when settings are built, not at import time.
        config_file = Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_FILE)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if config_file.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        elif os.environ.get(CONFIG_ENV):
            raise FileNotFoundError(f"{CONFIG_ENV} names a missing file: {config_file}")
        return tuple(sources)


def load_settings(overrides: dict[str, Any] | None = None) -> Settings:
    return Settings(**(overrides or {}))
