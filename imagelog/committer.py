"""One committer for the SQLite image log records of every gunicorn worker.

Each worker committing its own records (:meth:`SqliteImageLog.record`) makes two streams of
group commits and fsyncs that queue on a file lock, polled in sub-millisecond sleeps, and
inside each worker a leader/follower hand-over of the connection between request threads.
Here one process commits for all workers: a request thread sends its record over a Unix
socket and sleeps on the socket until the committer answers that the group holding it is
committed (``synchronous=FULL``, as before). The committer is one thread on one event loop:
whatever arrived from any worker while the last group committed is the next group.

The guarantees are those of :meth:`SqliteImageLog.record`: the answer comes after the
commit; a file image is written and fsynced by the worker before its record is sent, so no
row points at a partial file; a record that fails (a reused request id) fails alone. A
committer that dies closes its sockets (the waiting requests fail at once with
:class:`StorageError`); one that hangs costs each waiting request its deadline
(``StorageTimeout``), as a hung disk did. Its :class:`Supervisor` (in the gunicorn master)
restarts it when it exits or stops answering pings.

Off by default (``IMAGE_LOG_COMMITTER``): measured against the in-process group commit it
cost as much CPU per answer at c=32 and more at c=1, where it puts a second process on each
request's path (docs/performance.md, "One committer for both workers' records").

Wire format, both ways: a 4-byte big-endian length, then a :mod:`marshal`-ed tuple of str,
int, float, bytes and None (the same interpreter at both ends, and the socket is in the
instance's private runtime directory).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import marshal
import os
import select
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

from imagelog.base import (
    PROBE_TIMEOUT,
    Deadline,
    DuplicateRequestId,
    Record,
    StorageError,
    StorageTimeout,
)
from imagelog.sqlite import (
    _FALLBACK,
    _GROUP_VIEW,
    _REQUEST_WIDTH,
    CHUNK_ROWS,
    SqliteImageLog,
    _begun,
    _Pending,
    _placeholders,
)

log = logging.getLogger(__name__)

# Set by the gunicorn master for the workers it forks: where its committer listens.
SOCKET_ENV = "DIGITS_IMAGELOG_COMMITTER"
SOCKET_NAME = "imagelog-committer.sock"
_HEADER = struct.Struct(">I")
# A frame larger than this is not from a worker (whose bodies are capped far below).
MAX_FRAME = 256 * 1024 * 1024
READ_BYTES = 256 * 1024
# Acks: (code, message, group number).
OK, FAILED, TIMED_OUT, DUPLICATE = range(4)
PING: tuple = ()
# Under load (the last group had company) the committer waits this long after a record
# arrives before it commits, so that more of the records on their way join the group.
LINGER_SECONDS = 0.001
# The committer looks this often whether its parent (the master) is still there.
PARENT_CHECK_SECONDS = 1.0
# The supervisor pings this often; no pong within the storage timeout means it hangs.
PING_SECONDS = 1.0
START_SECONDS = 30.0
RESTART_BACKOFF = (0.1, 5.0)


def _frame(message: tuple) -> bytes:
    body = marshal.dumps(message)
    return _HEADER.pack(len(body)) + body


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = sock.recv(size)
    if len(data) == size:  # the usual case: one small ack in one read
        return data
    chunks = [data]
    got = len(data)
    while data and got < size:
        data = sock.recv(size - got)
        chunks.append(data)
        got += len(data)
    if got < size:
        raise ConnectionResetError("the image log committer closed the connection")
    return b"".join(chunks)


def _recv_frame(sock: socket.socket) -> tuple:
    (size,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    return marshal.loads(_recv_exact(sock, size))


def _entry(group_row: tuple, file_image: bytes | None) -> Record:
    """The record a worker sent, for the statements that need more than its row."""
    (rid, stamp, sha, _stored, size, fmt, width, height, digit, conf, probs, name, version,
     trailing, data) = group_row  # fmt: skip
    image = data if data is not None else file_image
    return Record(
        rid, datetime.fromisoformat(stamp), sha, size, fmt, width, height, digit, conf,
        json.loads(probs), name, version, image, trailing,
    )  # fmt: skip


def _ack(error: Exception | None, request_id: str, group: int) -> tuple:
    if error is None:
        return (OK, "", group)
    if isinstance(error, DuplicateRequestId):
        return (DUPLICATE, request_id, group)
    if isinstance(error, StorageTimeout):
        return (TIMED_OUT, str(error), group)
    return (FAILED, str(error), group)


class _Client:
    __slots__ = ("buffer", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()


class Committer:
    """The committer's event loop: records from every connection, committed in groups.

    A record is ``(group_row, rel, file_image)``: its row for the one-statement group of
    :class:`SqliteImageLog` (made by the worker, as its own group commit made it), the
    path of its image file if it has one, and that file's bytes (to write it again if
    retention removed it meanwhile)."""

    def __init__(
        self, image_log: SqliteImageLog, socket_path: Path, linger: float = LINGER_SECONDS
    ) -> None:
        self.log = image_log
        self.socket_path = socket_path
        self.linger = linger
        self._epoll = select.epoll()
        self._clients: dict[int, _Client] = {}
        self._arrived: list[tuple[_Client, tuple]] = []
        self._groups = 0
        self._last_size = 0
        self._stopping = False
        self._parent = os.getppid()
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()  # a predecessor's, left by a crash
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(socket_path))
        self._listener.listen(128)
        self._listener.setblocking(False)
        self._listen_fd = self._listener.fileno()
        self._epoll.register(self._listen_fd, select.EPOLLIN)

    def stop_when_idle(self, *_: object) -> None:
        """SIGTERM: serve on until no worker is connected (workers finish their requests
        first when the server stops), then exit."""
        self._stopping = True

    def serve(self) -> None:
        try:
            while True:
                self._gather(PARENT_CHECK_SECONDS)
                if self._arrived:
                    if self._last_size > 1 and self.linger:
                        # Others are about: a moment's wait makes the group, and its
                        # commit's fixed cost per record, larger. A lone client never waits.
                        time.sleep(self.linger)
                        self._gather(0)
                    self._commit()
                if os.getppid() != self._parent:
                    log.warning("image log committer: its server is gone; exiting")
                    return
                if self._stopping and not self._clients:
                    return
        finally:
            self._epoll.close()
            self._listener.close()
            self.log.close()

    def _gather(self, timeout: float) -> None:
        """Read what the sockets hold, waiting up to ``timeout`` for something."""
        for fd, _ in self._epoll.poll(timeout):
            if fd == self._listen_fd:
                self._accept()
            else:
                client = self._clients.get(fd)
                if client is not None:
                    self._read(client)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            client = self._clients[sock.fileno()] = _Client(sock)
            self._epoll.register(sock.fileno(), select.EPOLLIN)
            # A worker sends its first record right after connecting: it may be here
            # already, and belongs in the group being gathered now, not the next.
            self._read(client)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(READ_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        buffer = client.buffer
        buffer += data
        start = 0
        while len(buffer) - start >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buffer, start)
            if size > MAX_FRAME:
                self._drop(client)
                return
            end = start + _HEADER.size + size
            if len(buffer) < end:
                break
            try:
                message = marshal.loads(memoryview(buffer)[start + _HEADER.size : end])
            except (EOFError, ValueError, TypeError):
                self._drop(client)
                return
            self._arrived.append((client, message))
            start = end
        del buffer[:start]

    def _drop(self, client: _Client) -> None:
        fd = client.sock.fileno()
        if self._clients.pop(fd, None) is not None:
            with contextlib.suppress(OSError):
                self._epoll.unregister(fd)
        client.sock.close()

    def _take(self) -> list[tuple[_Client, tuple]]:
        """The records arrived so far; pings among them are answered here."""
        arrived, self._arrived = self._arrived, []
        records = []
        for client, message in arrived:
            if message == PING:
                self._send(client, (OK, "pong", self._groups))
            elif type(message) is tuple and len(message) == 3:
                records.append((client, message))
            else:
                log.error("image log committer: a malformed record; connection dropped")
                self._drop(client)
        return records

    def _commit(self) -> None:
        deadline = Deadline(self.log.timeout)
        batch: list[tuple[_Client, tuple]] = []
        errors: list[Exception | None] = []
        try:
            # The connection is this process's alone: no lock of the log's own is needed,
            # only the file lock other writers of the database (labels, retention) take.
            with self.log._writer(deadline) as conn:
                self._gather(0)  # what arrived while the write lock was not ours joins
                batch = self._take()
                if batch:
                    errors = self._commit_batch(conn, [message for _, message in batch])
        except Exception as exc:
            batch = batch or self._take()
            errors = [exc] * len(batch)
        if not batch:
            return
        self._groups += 1
        self._last_size = len(batch)
        for (client, message), error in zip(batch, errors, strict=True):
            self._send(client, _ack(error, message[0][0], self._groups))

    def _commit_batch(
        self, conn: sqlite3.Connection, messages: list[tuple]
    ) -> list[Exception | None]:
        """One statement for a group of rows alone (what _GROUP_VIEW takes), otherwise the
        transaction in which each record may fail alone; each record's error or None."""
        if len(messages) <= CHUNK_ROWS and all(rel is None for _, rel, _ in messages):
            try:
                conn.execute(
                    f"INSERT INTO {_GROUP_VIEW} VALUES "
                    f"{_placeholders(_REQUEST_WIDTH + 1, len(messages))}",
                    [value for row, _, _ in messages for value in row],
                )
                return [None] * len(messages)
            except sqlite3.IntegrityError as exc:
                if str(exc) != _FALLBACK:
                    raise
        data_dir = self.log.data_dir
        batch = [
            _Pending(
                _entry(row, image), rel, data_dir / rel if rel else None, inline=row[-1] is not None
            )
            for row, rel, image in messages
        ]
        with _begun(conn):
            self.log._commit_in_transaction(conn, batch)
        return [pending.error for pending in batch]

    def _send(self, client: _Client, message: tuple) -> None:
        # An ack is a few dozen bytes to a worker that waits for it: the socket's buffer has
        # room unless the worker stopped reading, and then it is dropped.
        try:
            client.sock.send(_frame(message))
        except OSError:
            self._drop(client)


class SharedCommitLog(SqliteImageLog):
    """A worker's SQLite image log whose records the shared committer commits; everything
    else (labels, reads, retention, /ready's probe) as :class:`SqliteImageLog`."""

    def __init__(self, socket_path: str | os.PathLike, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.socket_path = str(socket_path)
        self._local = threading.local()
        self._sockets: set[socket.socket] = set()
        self._sockets_lock = threading.Lock()

    def _record(self, entry: Record, deadline: Deadline) -> None:
        rel, path, inline = self._stage(entry, deadline)
        row = _Pending(entry, rel, path, inline=inline).group_row
        frame = _frame((row, rel, entry.image if rel is not None else None))
        ack = self._exchange(frame, deadline)
        code, message = ack[0], ack[1]
        if code == OK:
            return
        if code == DUPLICATE:
            raise DuplicateRequestId(message)
        if code == TIMED_OUT:
            raise StorageTimeout(message)
        raise StorageError(message)

    def check(self) -> None:
        """As :meth:`SqliteImageLog.check`, and the committer answers: /ready must not say
        ready while every record would fail."""
        super().check()
        try:
            ping(self.socket_path, PROBE_TIMEOUT)
        except OSError as exc:
            raise StorageError(f"image log committer unreachable: {exc}") from exc

    def last_group(self) -> int:
        """The committer's number of the group that held this thread's last record."""
        return getattr(self._local, "group", 0)

    def _exchange(self, frame: bytes, deadline: Deadline) -> tuple:
        sock: socket.socket | None = getattr(self._local, "sock", None)
        fresh = sock is None
        try:
            if sock is None:
                sock = self._dial(deadline)
            try:
                sock.settimeout(deadline.remaining("image log committer"))
                sock.sendall(frame)
            except (BrokenPipeError, ConnectionResetError):
                if fresh:
                    raise
                # Kept from before the committer restarted: nothing of this frame was read.
                self._forget(sock)
                sock = self._dial(deadline)
                sock.settimeout(deadline.remaining("image log committer"))
                sock.sendall(frame)
            sock.settimeout(deadline.remaining("image log committer"))
            ack = _recv_frame(sock)
        except TimeoutError:
            self._forget(sock)  # its ack may still come, and must not answer the next record
            raise StorageTimeout(
                f"image log committer: no answer within {deadline.seconds:g} s"
            ) from None
        except (OSError, EOFError, ValueError) as exc:
            self._forget(sock)
            raise StorageError(f"image log committer unreachable: {exc}") from exc
        self._local.group = ack[2]
        return ack

    def _dial(self, deadline: Deadline) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(deadline.remaining("image log committer"))
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self._local.sock = sock
        with self._sockets_lock:
            self._sockets.add(sock)
        return sock

    def _forget(self, sock: socket.socket | None) -> None:
        self._local.sock = None
        if sock is not None:
            with self._sockets_lock:
                self._sockets.discard(sock)
            sock.close()

    def close(self) -> None:
        with self._sockets_lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            sock.close()
        super().close()


def ping(socket_path: str | os.PathLike, timeout: float) -> int:
    """The committer's count of groups so far; OSError or TimeoutError if it does not
    answer within ``timeout``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path))
        sock.sendall(_frame(PING))
        return _recv_frame(sock)[2]


class Supervisor:
    """Runs the committer as a child process (a fresh interpreter: the gunicorn master's
    threads and whatever it imported stay out of it) and restarts it when it exits or does
    not answer a ping within ``timeout``."""

    def __init__(self, data_dir: Path, socket_path: Path, timeout: float) -> None:
        self.data_dir = data_dir
        self.socket_path = socket_path
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "imagelog.committer",
            "--data-dir", str(self.data_dir), "--socket", str(self.socket_path),
            "--timeout", str(self.timeout),
        ]  # fmt: skip

    def start(self) -> None:
        self._spawn()
        self._watcher = threading.Thread(target=self._watch, name="committer-watch", daemon=True)
        self._watcher.start()

    def _spawn(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # so that "listening" below is the new one's socket
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline and not self._stop.is_set():
            if self.proc.poll() is not None:
                log.error("image log committer exited with %s at start", self.proc.returncode)
                return
            with contextlib.suppress(OSError):
                ping(self.socket_path, self.timeout)
                log.info("image log committer %d on %s", self.proc.pid, self.socket_path)
                return
            time.sleep(0.02)

    def _watch(self) -> None:
        backoff = RESTART_BACKOFF[0]
        while not self._stop.wait(PING_SECONDS):
            proc = self.proc
            assert proc is not None
            if proc.poll() is None:
                try:
                    ping(self.socket_path, self.timeout)
                    backoff = RESTART_BACKOFF[0]
                    continue
                except OSError as exc:  # TimeoutError among them
                    if self._stop.is_set():
                        return
                    log.error("image log committer %d does not answer (%s); killed", proc.pid, exc)
                    proc.kill()
                    proc.wait()
            else:
                log.error("image log committer %d exited with %s", proc.pid, proc.returncode)
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, RESTART_BACKOFF[1])
            self.restarts += 1
            self._spawn()

    def stop(self) -> None:
        self._stop.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()  # exits once no worker is connected (see Committer)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imagelog.committer", description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    committer = Committer(SqliteImageLog(args.data_dir, timeout=args.timeout), args.socket)
    signal.signal(signal.SIGTERM, committer.stop_when_idle)
    # A Ctrl-C at the terminal reaches the whole process group: the master stops the
    # workers, and their closed connections end this process.
    signal.signal(signal.SIGINT, committer.stop_when_idle)
    committer.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
