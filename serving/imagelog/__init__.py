"""The image log: every answered request with its image, and the labels users send back.

Two backends behind :class:`~serving.imagelog.base.ImageLog`: SQLite plus files under
``data_dir`` (one machine, the default) and PostgreSQL (several replicas). The service
writes through :mod:`serving.imagelog.extension`; ``training.export_feedback`` reads.
"""

from __future__ import annotations

from serving.config import Settings
from serving.imagelog.base import (
    DuplicateRequestId,
    Feedback,
    ImageLog,
    LabelledImage,
    Record,
    Retention,
    StorageError,
    StoredRecord,
)

__all__ = [
    "DuplicateRequestId",
    "Feedback",
    "ImageLog",
    "LabelledImage",
    "Record",
    "Retention",
    "StorageError",
    "StoredRecord",
    "open_image_log",
]


def open_image_log(settings: Settings) -> ImageLog:
    """The configured backend. Raises :class:`StorageError` if SQLite cannot be opened; a
    PostgreSQL server that is down only makes later calls fail (and later ones succeed)."""
    retention = Retention(
        max_age_days=settings.retention_max_age_days,
        max_count=settings.retention_max_count,
        keep_labelled=settings.retention_keep_labelled,
    )
    if settings.image_log_backend == "postgres":
        from serving.imagelog.postgres import PostgresImageLog  # psycopg only when used

        return PostgresImageLog(
            settings.database_url,
            schema=settings.database_schema,
            store_images=settings.store_images,
            retention=retention,
            timeout=settings.storage_timeout_seconds,
            # Up to one connection per thread, but few enough for replicas × workers to
            # stay well inside PostgreSQL's default 100 connections.
            pool_size=min(settings.threads, 8),
        )
    from serving.imagelog.sqlite import SqliteImageLog

    return SqliteImageLog(
        settings.data_dir,
        store_images=settings.store_images,
        retention=retention,
        timeout=settings.storage_timeout_seconds,
    )
