"""The last version this machine loaded successfully, kept so that a worker can serve it
when the version behind ``MODEL_URI`` cannot be loaded at start (its artifacts gone, the
registry down).

Under ``STATE_DIR`` each registry + model name has its own folder (named by a hash: the
tracking URI may hold a password) with ``last_good.json`` and a copy of that version's
model directory, so it loads even if the registry's artifacts are gone. The record is
written atomically (a file beside it, then a rename) and the copy appears all at once
(pyfunc.loading.copy_directory), so workers of one or several instances may share the
folder: they all write the same facts, and a reader sees the old record or the new one.
The copy of the version before the last is kept too, for a worker that read the record a
moment before it moved.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pyfunc.loading import copy_directory

log = logging.getLogger(__name__)
RECORD = "last_good.json"
KEEP_VERSIONS = 2


@dataclass(frozen=True)
class Kept:
    name: str
    version: str
    path: Path
    saved_at: str


class LastGood:
    def __init__(self, state_dir: Path, tracking_uri: str, name: str) -> None:
        key = hashlib.sha256(f"{tracking_uri}\n{name}".encode()).hexdigest()[:16]
        self.root = Path(state_dir) / "last-good" / f"{_safe(name)}-{key}"
        self.name = name

    def remember(self, version: str, model_dir: Path) -> None:
        """Record ``version`` (just loaded from ``model_dir``) as the last good one."""
        target = self.root / f"v{_safe(version)}"
        copy_directory(model_dir, target)
        # Its time says when it was last good (copytree gave it the source's): the pruning
        # keeps the newest.
        os.utime(target)
        record = {
            "name": self.name,
            "version": str(version),
            "dir": target.name,
            "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        _write_atomically(self.root / RECORD, json.dumps(record, indent=2) + "\n")
        self._prune(keep={target.name})

    def recall(self) -> Kept | None:
        """The last good version and its kept copy, or None (never loaded here, or the copy
        is gone)."""
        try:
            record = json.loads((self.root / RECORD).read_text())
            kept = Kept(
                record["name"],
                str(record["version"]),
                self.root / record["dir"],
                record.get("saved_at", ""),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return kept if (kept.path / "MLmodel").is_file() else None

    def _prune(self, keep: set[str]) -> None:
        copies = sorted(
            (p for p in self.root.glob("v*") if p.is_dir() and p.name not in keep),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for old in copies[KEEP_VERSIONS - len(keep) :]:
            shutil.rmtree(old, ignore_errors=True)


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:64]


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # The rename itself made durable.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
