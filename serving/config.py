"""One typed settings object: defaults < config file (TOML) < environment < explicit values."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_ENV = "DIGITS_CONFIG"
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
    threads: int = Field(default=4, ge=1)
    timeout: int = Field(default=60, ge=1, description="gunicorn worker timeout, seconds")

    # Limits, enforced before any heavy work.
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_base64_chars: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_image_side: int = Field(default=10_000, ge=28)
    max_image_pixels: int = Field(default=40_000_000, ge=784)

    low_confidence_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    model_retry_max_seconds: float = Field(default=30.0, gt=0)

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
