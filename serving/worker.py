"""The gunicorn worker: gthread, with new connections going to a worker that has a free thread.

Every worker polls the same listening socket and whichever wakes first accepts, whether or
not its threads are free (benoitc/gunicorn#3433, #2817). With keep-alive clients that
split decides a connection's worker for its whole life: 32 clients split 21/11 and 19/13
as readily as 16/16 here, and the busier worker's requests then waited 2.5 times as long
(in-app mean 22 against 8.5 ms), which set the service's p99. So a worker whose threads
are all busy does not accept a connection it sees arrive: it stops listening for a moment
(``ACCEPT_DEFER_SECONDS``) and leaves the connection to a sibling with a free thread; a
connection still waiting in the listening queue after that wait is taken by the busy worker
(it looks at the queue without accepting, so a connection that arrived a moment ago is left
to a free sibling: taking whatever was there every 5 ms raced free siblings and split 6
stalled clients on 2 × 3 threads 4/2). Nothing is refused, and a worker with a free thread
accepts at once, as before.

Below that, a :class:`LoadBoard` the master shares with its workers tells each how busy
its siblings are, and a worker with more busy threads than the least busy sibling leaves
the connection to it in the same way. Without it 8 keep-alive clients on 2 workers × 8
threads split 8/0, 7/1 and 5/3 (nobody's threads were all busy): 239-394 req/s against
about twice that split evenly. Equally busy workers all accept at once, so clients that
open a connection per request are not slowed.

Relies on gthread's event loop of gunicorn 26 (``nr_conns``, ``keepalived_conns``,
``pending_conns``, and ``run`` re-reading ``worker_connections`` on each turn of the loop).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import select
import sys
import time
from collections.abc import Callable
from datetime import datetime
from multiprocessing.sharedctypes import RawArray

from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.workers.gthread import ThreadWorker

ACCEPT_DEFER_SECONDS = 0.005
# At most this often, the event loop tells the master it is alive (a file's mtime) and looks
# whether its parent changed: gthread does both, two system calls, on every turn of the loop
# (several per request). The master's timeout is TIMEOUT (60 s by default, 1 at least).
HEARTBEAT_SECONDS = 0.25


class CoalescedResponse(wsgi.Response):
    """gunicorn's response, its status line and headers sent with the first body bytes.

    gunicorn sends them with one ``sendall`` and the body with another: two system calls,
    and two reads for whoever reads the socket (nginx), for a JSON answer of a few hundred
    bytes. When the first chunk is all of a known length, both go in one ``sendall``;
    anything else (chunked, HEAD, 204/304, a file, no length) goes gunicorn's own way."""

    def write(self, arg: bytes) -> None:
        if (
            self.headers_sent  # type: ignore[has-type]
            or self.chunked
            or self._omits_body
            or self.response_length is None
            or type(arg) is not bytes
            or not 0 < len(arg) <= self.response_length
        ):
            super().write(arg)
            return
        # What send_headers sends, followed by what write() would then send.
        head = self.default_headers()
        head.extend([f"{name}: {value}\r\n" for name, value in self.headers])
        self.headers_sent = True
        self.sent += len(arg)
        util.write(self.sock, util.to_bytestring("{}\r\n".format("".join(head)), "latin-1") + arg)


class AcceptGate:
    """When a worker with ``threads`` threads may accept: at once while one is free (and, when
    the siblings' load is known, none of them is less busy); otherwise only a connection
    seen waiting unclaimed for ``defer`` seconds (its siblings had their chance).

    A crowded worker is told of a connection's arrival by its listening socket
    (:meth:`notice`) rather than by looking at the socket every ``defer / 2``: with
    connections kept alive (nginx's to gunicorn) nothing arrives for minutes, and the
    looking woke the event loop 400 times a second while the threads were busy."""

    def __init__(self, threads: int, defer: float = ACCEPT_DEFER_SECONDS) -> None:
        self.threads = threads
        self.defer = defer
        self.crowded = False  # the last decision left connections to the siblings
        self.unclaimed_since: float | None = None  # a connection first seen waiting
        self.brief = False  # open for one poll that does not wait: only a pending connection

    def open(
        self,
        busy: int,
        now: float,
        least_elsewhere: int | None = None,
        waiting: Callable[[], bool] = lambda: True,
    ) -> bool:
        """``least_elsewhere``: the fewest busy threads of a sibling, when known; ``waiting``:
        whether a connection is waiting to be accepted now (asked only while one noticed
        waits its turn)."""
        self.brief = False
        if busy < self.threads and (least_elsewhere is None or busy <= least_elsewhere):
            self.crowded, self.unclaimed_since = False, None
            return True
        self.crowded = True
        if self.unclaimed_since is None:  # nothing noticed: the listening socket will tell
            return False
        if not waiting():  # a sibling took it: the next one starts its own wait
            self.unclaimed_since = None
            return False
        if now - self.unclaimed_since < self.defer:
            return False
        # Taking a connection that arrived a moment ago would race a free sibling for it.
        self.unclaimed_since = None
        self.brief = True
        return True

    def notice(self, now: float) -> None:
        """A connection arrived (the listening socket is readable) while crowded."""
        if self.crowded and self.unclaimed_since is None:
            self.unclaimed_since = now

    @property
    def watching(self) -> bool:
        """Crowded with nothing noticed: the listening socket is to be watched, not accepted
        from (:meth:`notice`)."""
        return self.crowded and not self.brief and self.unclaimed_since is None

    def poll_timeout(self, timeout: float) -> float:
        """How long the event loop may wait now without missing the gate's next turn."""
        if self.brief:
            return 0.0
        if self.unclaimed_since is not None:
            return min(timeout, self.defer / 2)
        return timeout


class LoadBoard:
    """Each worker's busy threads, in memory the master creates and its forked workers share.

    A slot is a worker's pid and its count. Counts are written by their worker only and read
    without a lock: a count one event old only delays a connection by one wait."""

    def __init__(self, slots: int) -> None:
        self._pids = RawArray(ctypes.c_int, slots)
        self._busy = RawArray(ctypes.c_int, slots)
        self._lock = multiprocessing.Lock()  # for taking and freeing slots

    def join(self, pid: int) -> int | None:
        """A free slot for ``pid``, or None if all are taken (the worker goes without)."""
        with self._lock:
            for slot, owner in enumerate(self._pids):
                if owner == 0:
                    self._busy[slot] = 0
                    self._pids[slot] = pid
                    return slot
        return None

    def leave(self, pid: int) -> None:
        with self._lock:
            for slot, owner in enumerate(self._pids):
                if owner == pid:
                    self._pids[slot] = 0

    def publish(self, slot: int, busy: int) -> None:
        self._busy[slot] = busy

    def least_elsewhere(self, slot: int) -> int | None:
        """The fewest busy threads among the other workers on the board (None: no other)."""
        pids, busy = self._pids[:], self._busy[:]
        others = [busy[i] for i, pid in enumerate(pids) if pid and i != slot]
        return min(others) if others else None


class BalancedThreadWorker(ThreadWorker):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Alone, a worker has nobody to leave a connection to.
        self._gate = AcceptGate(self.cfg.threads) if self.cfg.workers > 1 else None
        # serving.server.DigitServer provides the board; under plain gunicorn there is none.
        self._board: LoadBoard | None = getattr(self.app, "load_board", None)
        self._slot: int | None = None
        # gunicorn gives its worker half the master's timeout to notify within.
        self._heartbeat_every = min(HEARTBEAT_SECONDS, self.timeout / 4)
        self._last_heartbeat = self._last_parent_check = -float("inf")

    def run(self) -> None:
        # Joined once the app is loaded: a worker still loading must not be waited for.
        if self._gate is not None and self._board is not None:
            self._slot = self._board.join(self.pid)
        try:
            super().run()
        finally:
            if self._slot is not None and self._board is not None:
                self._board.leave(self.pid)

    @property
    def worker_connections(self) -> int:
        # gthread listens while nr_conns < worker_connections: a closed gate makes that false,
        # except while it watches the listening socket for an arrival (see accept).
        if self._gate is None:
            return self._max_connections
        busy = self._busy_threads()
        gate = self._gate
        if gate.open(busy, time.monotonic(), self._least_elsewhere(busy), self._waiting):
            return self._max_connections
        return self._max_connections if gate.watching else min(self.nr_conns, self._max_connections)

    @worker_connections.setter
    def worker_connections(self, value: int) -> None:
        self._max_connections = value

    def accept(self, listener) -> None:
        gate = self._gate
        if gate is not None and gate.crowded and not gate.brief:
            # Watching: the connection is left to a sibling for now, and the socket is no
            # longer listened to until its wait is over (it would wake the loop at once).
            gate.notice(time.monotonic())
            return
        super().accept(listener)

    def _least_elsewhere(self, busy: int) -> int | None:
        # Ours published first, so the siblings' view is as fresh as this turn of the loop.
        if self._slot is None or self._board is None:
            return None
        self._board.publish(self._slot, busy)
        return self._board.least_elsewhere(self._slot)

    def _waiting(self) -> bool:
        """Whether a connection waits in a listening socket's queue (nothing is accepted)."""
        return bool(select.select(self.sockets, [], [], 0)[0])

    def _busy_threads(self) -> int:
        # Connections not waiting in the poller are in (or queued for) the thread pool.
        idle = len(self.keepalived_conns) + len(self.pending_conns)
        return self.nr_conns - idle

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        if self._gate is not None:
            timeout = self._gate.poll_timeout(timeout)
        super().wait_for_and_dispatch_events(timeout)

    def notify(self) -> None:
        now = time.monotonic()
        if now - self._last_heartbeat >= self._heartbeat_every:
            self._last_heartbeat = now
            super().notify()

    def is_parent_alive(self) -> bool:
        now = time.monotonic()
        if now - self._last_parent_check < self._heartbeat_every:
            return True
        self._last_parent_check = now
        return super().is_parent_alive()

    def handle_request(self, req, conn) -> bool:
        """gthread's handle_request (gunicorn 26), answering with :class:`CoalescedResponse`."""
        environ: dict = {}
        resp = None
        try:
            self.cfg.pre_request(self, req)
            request_start = datetime.now()
            resp, environ = wsgi.create(
                req, conn.sock, conn.client, conn.server, self.cfg,
                response_class=CoalescedResponse,
            )  # fmt: skip
            environ["wsgi.multithread"] = True
            self.nr += 1
            if self.nr >= self.max_requests:
                if self.alive:  # type: ignore[has-type]
                    self.log.info("Autorestarting worker after current request.")
                    self.alive = False
                resp.force_close()

            kept = len(self.keepalived_conns)
            if not self.alive or not self.cfg.keepalive or kept >= self.max_keepalived:
                resp.force_close()

            respiter = self.wsgi(environ, resp.start_response)
            try:
                if isinstance(respiter, environ["wsgi.file_wrapper"]):
                    resp.write_file(respiter)
                else:
                    for item in respiter:
                        resp.write(item)

                resp.close()
            finally:
                request_time = datetime.now() - request_start
                self.log.access(resp, req, environ, request_time)
                if hasattr(respiter, "close"):
                    respiter.close()

            if resp.should_close():
                self.log.debug("Closing connection.")
                return False
        except OSError:
            # pass to next try-except level
            util.reraise(*sys.exc_info())
        except Exception:
            if resp and resp.headers_sent:
                # If the requests have already been sent, we should close the
                # connection to indicate the error.
                self.log.exception("Error handling request")
                util.close_graceful(conn.sock)
                raise StopIteration() from None
            raise
        finally:
            try:
                self.cfg.post_request(self, req, environ, resp)
            except Exception:
                self.log.exception("Exception in post_request hook")

        return True
