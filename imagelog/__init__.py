"""The image log: every answered request with its image, and the labels users send back.

Two backends behind :class:`~imagelog.base.ImageLog`: SQLite plus files under
``data_dir`` (one machine, the default) and PostgreSQL (several replicas). The service
writes through :mod:`serving.image_log`; ``training.export_feedback`` reads.
"""

from __future__ import annotations

from imagelog.base import (
    DuplicateRequestId,
    Feedback,
    ImageLog,
    LabelledImage,
    Record,
    Retention,
    StorageError,
    StorageTimeout,
    StoredRecord,
)
from imagelog.config import ImageLogConfig

__all__ = [
    "DuplicateRequestId",
    "Feedback",
    "ImageLog",
    "ImageLogConfig",
    "LabelledImage",
    "Record",
    "Retention",
    "StorageError",
    "StorageTimeout",
    "StoredRecord",
    "open_image_log",
]


def open_image_log(config: ImageLogConfig, pool_size: int = 8, max_inflight: int = 8) -> ImageLog:
    """The configured backend. Raises :class:`StorageError` if SQLite cannot be opened; a
    PostgreSQL server that is down only makes later calls fail (and later ones succeed).

    ``pool_size`` caps PostgreSQL connections (one per thread at most is useful);
    ``max_inflight`` the calls inside the store at once (see :class:`imagelog.base.Guard`):
    fewer than the caller's threads, so a hung store cannot take them all."""
    if config.image_log_backend == "postgres":
        from imagelog.postgres import PostgresImageLog  # psycopg only when used

        return PostgresImageLog(
            config.database_url,
            schema=config.database_schema,
            store_images=config.store_images,
            retention=config.retention,
            timeout=config.storage_timeout_seconds,
            pool_size=pool_size,
            max_inflight=max_inflight,
            stall_seconds=config.storage_stall_seconds,
        )
    if config.data_dir is None:
        raise ValueError("the sqlite image log needs data_dir")
    from imagelog.sqlite import SqliteImageLog

    return SqliteImageLog(
        config.data_dir,
        store_images=config.store_images,
        retention=config.retention,
        timeout=config.storage_timeout_seconds,
        max_inflight=max_inflight,
        stall_seconds=config.storage_stall_seconds,
        inline_max_bytes=config.image_inline_max_bytes,
    )
