"""Private runtime directories: what an instance killed outright leaves is removed by the
next one; a directory still in use (its owner or a child it forked alive) never is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from serving import runtime

PREFIX = "digits-runtime-"
# Makes a directory, forks a child that inherits the lock (as gunicorn's workers do),
# prints both pids and the directory, and waits to be killed.
OWNER = """
import os, sys, time
from serving import runtime
directory, _lock = runtime.private_directory(sys.argv[1], sys.argv[2])
child = os.fork()
if child == 0:
    time.sleep(600)
    os._exit(0)
print(os.getpid(), child, directory, flush=True)
time.sleep(600)
"""


def _owner(parent: Path) -> tuple[subprocess.Popen, int, Path]:
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER, PREFIX, str(parent)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    _pid, child, directory = proc.stdout.readline().split()
    return proc, int(child), Path(directory)


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def test_a_directory_is_private_and_kept_while_in_use(tmp_path):
    directory, fd = runtime.private_directory(PREFIX, str(tmp_path))
    assert directory.stat().st_mode & 0o777 == 0o700
    assert runtime.remove_stale(PREFIX, str(tmp_path)) == []
    assert directory.is_dir()
    os.close(fd)  # as if its owner had died
    assert runtime.remove_stale(PREFIX, str(tmp_path)) == [directory]
    assert not directory.exists()


def test_leftovers_of_a_killed_instance_go_once_its_last_process_is_gone(tmp_path):
    live, live_child, live_dir = _owner(tmp_path)
    killed, killed_child, killed_dir = _owner(tmp_path)
    (killed_dir / "gunicorn.sock").write_text("")  # whatever it had in there
    unrelated = tmp_path / "digits-runtime-from-an-older-version"  # no lock file: left alone
    unrelated.mkdir()
    try:
        _kill(killed.pid)
        killed.wait()
        # Its forked child still holds the lock: still in use.
        assert runtime.remove_stale(PREFIX, str(tmp_path)) == []
        _kill(killed_child)
        # The child is not ours to reap (its parent is gone); its lock goes when it dies.
        # What the next instance does first, as it makes its own directory.
        directory, _fd = runtime.private_directory(PREFIX, str(tmp_path))
        deadline = time.monotonic() + 10
        while killed_dir.exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # the child's death is asynchronous
            runtime.remove_stale(PREFIX, str(tmp_path))
        assert not killed_dir.exists()
        assert live_dir.is_dir() and directory.is_dir() and unrelated.is_dir()
    finally:
        for pid in (live_child, live.pid):
            _kill(pid)
        live.wait()
