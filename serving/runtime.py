"""Private runtime directories (sockets, the front's files, temporary downloads) that leave
nothing behind, even when their owner is killed outright.

Each directory holds a lock file, flock'ed by the process that made it; processes it forks
(gunicorn's workers) inherit the descriptor and so the lock. The kernel drops the lock with
the last of them, however they ended, so a directory whose lock can be taken belongs to
nobody any more: the next instance that starts removes it. Normal exits remove their own.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

LOCK_NAME = "in-use"


def private_directory(prefix: str, parent: str | None = None) -> tuple[Path, int]:
    """A new directory only this user can enter (mode 0700) under ``parent`` (the temporary
    directory by default), and the descriptor holding its lock (keep it open for as long as
    the directory is in use). Leftovers with the same prefix are removed first."""
    remove_stale(prefix, parent)
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return directory, fd


def remove_stale(prefix: str, parent: str | None = None) -> list[Path]:
    """Removes this user's directories named ``prefix*`` under ``parent`` whose lock nobody
    holds; returns them. A directory in use, or one still being set up (no lock file yet),
    is left alone."""
    removed = []
    for candidate in Path(parent or tempfile.gettempdir()).glob(prefix + "*"):
        with contextlib.suppress(OSError):  # gone meanwhile, not ours, no lock file
            if candidate.is_symlink() or candidate.stat().st_uid != os.geteuid():
                continue
            fd = os.open(candidate / LOCK_NAME, os.O_RDWR | os.O_NOFOLLOW)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: in use
                shutil.rmtree(candidate)
                removed.append(candidate)
            finally:
                os.close(fd)
    return removed
