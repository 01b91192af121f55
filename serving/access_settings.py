"""The settings of who may call /recognize and /feedback, how often, and how labels are
trusted; part of ``serving.config.Settings`` (plain data: used by serving/limits.py and
serving/feedback.py)."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator


class AccessConfig(BaseModel):
    """The settings of this module and of /feedback's credential (part of ``Settings``)."""

    # Limits in Flask-Limiter's notation ("30/minute", "10/second;500/hour"); "" = none.
    feedback_rate_limit: str = "30/minute"
    recognize_rate_limit: str = ""
    rate_limit_storage_uri: str = "memory://"
    # API key -> its own limit on each of /recognize and /feedback ("" = the endpoint's
    # per-client default). Empty (the default): no key needed. Set: every call to
    # /recognize and /feedback must send one as X-API-Key. Environment: a JSON object.
    api_keys: dict[str, str] = Field(default_factory=dict)
    # The key of the per-answer feedback tokens (HMAC-SHA256). Unset: one is generated
    # once and kept in the image log, so every worker and replica shares it.
    feedback_secret: str | None = None
    # Labels one record may receive in all; further ones are refused (409).
    feedback_max_labels: int = Field(default=5, ge=1)
    # A label that contradicts a prediction at least this confident is held for review
    # (above 1: none is).
    review_confidence: float = Field(default=0.9, ge=0.0)

    @field_validator("feedback_rate_limit", "recognize_rate_limit")
    @classmethod
    def _limit_parses(cls, value: str) -> str:
        return _parsed(value)

    @field_validator("api_keys")
    @classmethod
    def _keys_are_long(cls, keys: dict[str, str]) -> dict[str, str]:
        short = [k for k in keys if len(k) < 16]
        if short:
            raise ValueError("API keys must have at least 16 characters")
        return {key: _parsed(limit) for key, limit in keys.items()}


def _parsed(limit: str) -> str:
    """``limit`` if Flask-Limiter reads it (checked at start, not at the first request)."""
    if limit.strip():
        from limits import parse_many  # Flask-Limiter's own parser

        parse_many(limit)  # ValueError: "couldn't parse rate limit string …"
    return limit.strip()
