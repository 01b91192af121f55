"""One typed settings object: defaults < config file (TOML) < environment < explicit values."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from imagelog import ImageLogConfig
from locations import DEFAULT_DATA_DIR, DEFAULT_TRACKING_URI, settings_sources
from serving.access_settings import AccessConfig

# Set by the gunicorn master for its workers: touching this file makes each check the
# registry now (POST /admin/reload reaches one worker; this reaches the others).
RELOAD_FILE_ENV = "DIGITS_RELOAD_FILE"


class Settings(ImageLogConfig, AccessConfig, BaseSettings):
    """Service configuration. Environment variables use the upper-case field names.

    The image log's keys (``IMAGE_LOG_BACKEND``, ``DATA_DIR`` …) come from
    :class:`imagelog.ImageLogConfig`; the feedback export reads the same ones."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    mlflow_tracking_uri: str = DEFAULT_TRACKING_URI
    model_uri: str = "models:/digits/Production"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=2, ge=1)
    # Measured with make bench (balanced worker, frozen heap): 8 threads gave the best c=32
    # p99 (40-46 ms against 47-54 ms with 16, for 5-10 % less throughput).
    threads: int = Field(default=8, ge=1)
    timeout: int = Field(default=60, ge=1, description="gunicorn worker timeout, seconds")
    # What takes the clients' connections (serving/front.py, docs/front.md): nginx reads
    # whole requests before gunicorn sees them; "none" is gunicorn alone on HOST:PORT.
    front: Literal["nginx", "none"] = "nginx"
    # With FRONT=none: gunicorn listens on this unix socket instead of HOST:PORT, for a front
    # that runs elsewhere (make stack's load balancer).
    unix_socket: Path | None = None

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
    # The last version loaded successfully is kept here (serving/last_good.py), to serve when
    # MODEL_URI's version cannot be loaded at start; default: DATA_DIR/serving-state.
    state_dir: Path | None = None
    # Set: /metrics is answered on this port of metrics_host only (an internal listener in
    # the gunicorn master), not on the public port.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"

    # Dynamic micro-batching of the network's forward passes within a worker.
    batching: bool = True
    batch_max_size: int = Field(default=32, ge=1)
    # A pass waits this long for company, only when others are about (serving/batching.py):
    # 2000 measured 1.19x answers per CPU-second at c=32 (docs/performance-history.md), a lone
    # request never waits.
    batch_max_wait_us: int = Field(default=2000, ge=0)
    # Threads of the model's runtime per worker: with one worker per core, 1 avoids
    # oversubscription.
    inference_threads: int = Field(default=1, ge=0, description="0 = the runtime's default")

    # A Server-Timing header with the duration of each stage of /recognize (serving/
    # server_timing.py, python -m bench.stages); off, it costs nothing.
    server_timing: bool = False
    # POST /bench/ceiling answers a constant JSON (bench/ceiling.py): benchmarks only.
    ceiling_route: bool = False

    # Where predictions run: in this process, or on an MLflow scoring server
    # (`mlflow models serve` of the same registered model) at remote_predictor_url.
    predictor: Literal["local", "remote"] = "local"
    remote_predictor_url: str = "http://127.0.0.1:5001/invocations"
    remote_timeout_seconds: float = Field(default=5.0, gt=0)
    remote_retries: int = Field(default=2, ge=0, le=10)

    # The image log (imagelog/, its other keys in ImageLogConfig): every answered
    # /recognize request, kept durably.
    # false (IMAGE_LOG=off): no image log at all, opened or written: answers carry
    # "logged": false and no record_id / feedback_token, POST /feedback answers 409
    # image_log_off. For measuring the log's cost against servers that log nothing.
    image_log: bool = True
    data_dir: Path = DEFAULT_DATA_DIR
    # When a record cannot be written: "refuse" answers 503 storage_unavailable; "answer"
    # answers anyway with "logged": false.
    log_failure_policy: Literal["refuse", "answer"] = "refuse"

    @property
    def state_path(self) -> Path:
        return self.state_dir or self.data_dir / "serving-state"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return settings_sources(settings_cls, init_settings, env_settings)


def load_settings(overrides: dict[str, Any] | None = None) -> Settings:
    return Settings(**(overrides or {}))
