"""Flask adapter serving the registry's Production digit model.

Importing the package loads nothing: ``serving.config`` is read by tools that have no use
for Flask or MLflow. ``serving.create_app`` is looked up on first use."""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from serving.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
