"""What opening an image log needs to know, as one typed object.

Plain data: nothing here reads the environment or a file. The service's settings and the
feedback export extend it with their own sources, so both read the same keys
(``IMAGE_LOG_BACKEND``, ``DATA_DIR``, ``DATABASE_URL`` …) with the same validation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from imagelog.base import INLINE_MAX_BYTES, Retention


class ImageLogConfig(BaseModel):
    image_log_backend: Literal["sqlite", "postgres"] = "sqlite"
    # sqlite: the index (imagelog.sqlite3) and images/ live here.
    data_dir: Path | None = None
    # postgres: e.g. postgresql://postgres@127.0.0.1:5432/test; tables go in database_schema.
    database_url: str = ""
    database_schema: str = Field(default="image_log", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    # false: predictions are still logged (with the image's sha256), the bytes are not kept.
    store_images: bool = True
    # sqlite: an image of at most this many bytes is kept in its database row, committed
    # with its record, instead of a file of its own (a file's create, fsyncs and rename
    # cost about 1.2-1.6 ms of kernel time per distinct image). The default takes every
    # 28x28 PNG, /read's crops and the web page's drawings, not phone photos. 0: every
    # image a file. postgres keeps every image in its row whatever this says.
    image_inline_max_bytes: int = Field(default=INLINE_MAX_BYTES, ge=0)
    # 0 = unlimited. Labelled records are kept unless retention_keep_labelled is false.
    # Unlabelled records are only worth keeping until someone could have labelled them.
    retention_max_age_days: float = Field(default=90, ge=0)
    retention_max_count: int = Field(default=0, ge=0)
    retention_keep_labelled: bool = True
    # Bytes of stored images (0 = unlimited): over it, the oldest unlabelled records are
    # deleted first; labelled ones never are.
    image_store_max_bytes: int = Field(default=5 * 1024**3, ge=0)
    # Longest wait of a storage call (lock, connection, statement): past it, the request
    # gets 503 storage_unavailable and its thread is free again.
    storage_timeout_seconds: float = Field(default=10.0, gt=0)
    # A call inside the store for longer than this means it hangs: the worker's other
    # calls fail at once rather than each waiting storage_timeout_seconds (a healthy disk
    # or database answers in milliseconds; raise it for a store slow by nature).
    storage_stall_seconds: float = Field(default=1.0, gt=0)

    @property
    def retention(self) -> Retention:
        return Retention(
            max_age_days=self.retention_max_age_days,
            max_count=self.retention_max_count,
            keep_labelled=self.retention_keep_labelled,
            max_image_bytes=self.image_store_max_bytes,
        )
