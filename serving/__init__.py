"""Flask adapter serving the registry's Production digit model."""

from serving.app import create_app

__all__ = ["create_app"]
