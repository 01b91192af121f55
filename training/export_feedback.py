"""``python -m training.export_feedback --out PATH``: the labelled images users sent, as an
``.npz`` in the MNIST layout, ready to train on.

Reads the image log the service writes, with the same settings from the same file and
environment (``IMAGE_LOG_BACKEND``, ``DATA_DIR``, ``DATABASE_URL`` …). Each image goes
through the model's own :func:`pyfunc.preprocess.pre_process`, and is stored as MNIST
stores digits: uint8 ``(N, 28, 28)`` in ``x_train``, its current label in ``y_train``;
``x_test``/``y_test`` are empty and ``request_ids`` says where each row came from.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from imagelog import ImageLog, ImageLogConfig, StorageError, open_image_log
from locations import DEFAULT_DATA_DIR, settings_sources
from pyfunc.errors import ImageError
from pyfunc.preprocess import SIZE, Limits, pre_process

log = logging.getLogger(__name__)
DEFAULT_OUT = DEFAULT_DATA_DIR / "feedback.npz"


class ExportSettings(ImageLogConfig, BaseSettings):
    """The service's image log and image limits, read as the service reads them: explicit
    values, then the environment, then the settings file (``DIGITS_CONFIG``/serving.toml)."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    data_dir: Path = DEFAULT_DATA_DIR
    max_image_side: int = Field(default=Limits.max_side, ge=28)
    max_image_pixels: int = Field(default=Limits.max_pixels, ge=784)

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


@dataclass(frozen=True)
class Export:
    path: Path
    count: int
    skipped: int


def to_mnist(image: bytes, limits: Limits) -> np.ndarray:
    """Encoded bytes → the (28, 28) uint8 digit MNIST would hold."""
    x = pre_process([image], limits=limits)[0, :, :, 0]
    return np.round(x * 255).astype(np.uint8)


def export(image_log: ImageLog, out: str | os.PathLike, limits: Limits | None = None) -> Export:
    """Write every labelled, stored image of ``image_log`` to ``out`` (atomically)."""
    limits = limits or Limits()
    xs: list[np.ndarray] = []
    ys: list[int] = []
    ids: list[str] = []
    skipped = 0
    for item in image_log.labelled():
        try:
            xs.append(to_mnist(item.image, limits))
        except ImageError as exc:
            # Answered once, so decodable then; a stricter pre_process may refuse it now.
            log.warning("skipped %s: %s", item.request_id, exc)
            skipped += 1
            continue
        ys.append(item.label)
        ids.append(item.request_id)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "x_train": np.stack(xs) if xs else np.zeros((0, SIZE, SIZE), np.uint8),
        "y_train": np.asarray(ys, dtype=np.uint8),
        "x_test": np.zeros((0, SIZE, SIZE), np.uint8),
        "y_test": np.zeros((0,), np.uint8),
        "request_ids": np.asarray(ids, dtype=str),
    }
    # Written beside the target and renamed: a reader never sees half a file.
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            # mypy matches **arrays against allow_pickle: bool too; every key is an array's name.
            np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Export(out, len(ys), skipped)


def export_configured(out: str | os.PathLike, settings: ExportSettings | None = None) -> Export:
    """:func:`export` from the image log the settings name."""
    settings = settings or ExportSettings()
    limits = Limits(max_side=settings.max_image_side, max_pixels=settings.max_image_pixels)
    with open_image_log(settings) as image_log:
        return export(image_log, out, limits)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"default {DEFAULT_OUT}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        result = export_configured(args.out)
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {result.count} labelled image(s) to {result.path} ({result.skipped} skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
