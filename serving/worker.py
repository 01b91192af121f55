"""The gunicorn worker: gthread, with new connections going to a worker that has a free thread.

Every worker polls the same listening socket and whichever wakes first accepts, whether or
not its threads are free (benoitc/gunicorn#3433, #2817). With keep-alive clients that
split decides a connection's worker for its whole life: 32 clients split 21/11 and 19/13
as readily as 16/16 here, and the busier worker's requests then waited 2.5 times as long
(in-app mean 22 against 8.5 ms), which set the service's p99. So a worker whose threads
are all busy stops listening for a moment (``ACCEPT_DEFER_SECONDS``) and leaves the
connection to a sibling with a free thread; a connection still waiting in the listening
queue after that wait is taken by the busy worker (it looks at the queue without accepting,
so a connection that arrived a moment ago is left to a free sibling: taking whatever was
there every 5 ms raced free siblings and split 6 stalled clients on 2 × 3 threads 4/2).
Nothing is refused, and a worker with a free thread accepts at once, as before.

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
import time
from collections.abc import Callable
from multiprocessing.sharedctypes import RawArray

from gunicorn.workers.gthread import ThreadWorker

ACCEPT_DEFER_SECONDS = 0.005


class AcceptGate:
    """When a worker with ``threads`` threads may accept: at once while one is free (and, when
    the siblings' load is known, none of them is less busy); otherwise only a connection
    seen waiting unclaimed for ``defer`` seconds (its siblings had their chance)."""

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
        whether a connection is waiting to be accepted now (asked only when crowded)."""
        self.brief = False
        if busy < self.threads and (least_elsewhere is None or busy <= least_elsewhere):
            self.crowded, self.unclaimed_since = False, None
            return True
        self.crowded = True
        if not waiting():  # none, or a sibling took it: the next one starts its own wait
            self.unclaimed_since = None
            return False
        if self.unclaimed_since is None:
            self.unclaimed_since = now
        if now - self.unclaimed_since < self.defer:
            return False
        # Taking a connection that arrived a moment ago would race a free sibling for it.
        self.unclaimed_since = None
        self.brief = True
        return True

    def poll_timeout(self, timeout: float) -> float:
        """How long the event loop may wait now without missing the gate's next turn."""
        if self.brief:
            return 0.0
        if self.crowded:
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
        # gthread accepts while nr_conns < worker_connections: a closed gate makes that false.
        if self._gate is None:
            return self._max_connections
        busy = self._busy_threads()
        if self._gate.open(busy, time.monotonic(), self._least_elsewhere(busy), self._waiting):
            return self._max_connections
        return min(self.nr_conns, self._max_connections)

    @worker_connections.setter
    def worker_connections(self, value: int) -> None:
        self._max_connections = value

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
