"""The event-loop side every usage store shares: a bounded queue of rows and flush markers that
the store's writer thread drains (store_sqlite.py, store_pg.py).

`add()` runs on the event loop for every request: a closed check, one `len()` compared with
`_limit`, one C-level tuple build (`store.row_of`) and a `deque.append`. It takes no lock and
does not wake the writer. Only when the queue reaches `_limit` does it call `_crowded()`: the
first time (`WAKE_AT` rows) that wakes the writer early and raises `_limit` to `max_queued`
until the writer next empties the queue; at `max_queued` it drops the oldest rows and counts
them (`_dropped_queue`). Flush markers (threading.Events) share the queue, so queue order is
the only bookkeeping, and dropping never drops a marker. The writer's `_take()` moves
everything queued to `_pending` (rows) and `_markers`. `flush()` is the same for every store:
a marker in the queue, set by the writer once everything before it is committed; a store
provides `_lock`, `_thread`, `_run()` (the writer) and, if it keeps rows elsewhere too, `_unwritten()`.
"""

from __future__ import annotations

import threading
from collections import deque

from .store import row_of
from .usage import Usage

WAKE_AT = 5_000  # queued rows that wake the writer before its interval ends


class RowQueue:
    """Mixin: call `_init_queue(max_queued, pending)` from the store's constructor."""

    def _init_queue(self, max_queued: int, pending: list | None = None) -> None:
        self._max_queued = max_queued
        self._queue: deque = deque()  # row tuples and flush markers, oldest first
        self._limit = min(WAKE_AT, max_queued)  # the queue length at which add() calls _crowded()
        self._wake = threading.Event()
        self._closed = False  # add() ignores records from now on
        self._dropped_queue = 0  # add(): queue full
        # writer-thread state
        self._pending: list = [] if pending is None else pending  # rows taken, not yet committed
        self._markers: list[threading.Event] = []  # flushes waiting for _pending

    def add(self, u: Usage) -> None:
        if self._closed:
            return
        q = self._queue
        if len(q) >= self._limit:
            self._crowded()
        q.append(row_of(u))

    def _crowded(self) -> None:
        """Wake the writer; at max_queued drop the oldest rows (flush markers keep their place)."""
        self._wake.set()
        self._limit = self._max_queued
        q, markers = self._queue, []
        try:
            while len(q) >= self._max_queued:
                item = q.popleft()
                if item.__class__ is tuple:
                    self._dropped_queue += 1
                else:
                    markers.append(item)
        except IndexError:  # the writer emptied the queue meanwhile
            pass
        finally:
            q.extendleft(reversed(markers))

    def _take(self) -> None:
        """(writer) Move everything queued to _pending (rows) and _markers (flushes)."""
        q, rows, markers = self._queue, self._pending, self._markers
        self._limit = min(WAKE_AT, self._max_queued)
        popleft = q.popleft
        for _ in range(len(q)):
            try:
                item = popleft()
            except IndexError:  # add() dropped some meanwhile
                break
            if item.__class__ is tuple:
                rows.append(item)
            else:
                markers.append(item)

    def start(self) -> None:
        """Start the writer thread (the store's `_run`)."""
        with self._lock:
            if self._thread is None and not self._closed:
                self._spawn()

    def _spawn(self) -> None:
        """Start the writer thread (the caller holds _lock)."""
        self._thread = threading.Thread(target=self._run, name=f"plexus-{type(self).__name__}-writer", daemon=True)
        self._thread.start()

    def _unwritten(self) -> bool:
        """Rows not committed yet (a store that keeps rows elsewhere too, a spool, adds those)."""
        return bool(self._queue or self._pending)

    def flush(self, timeout: float = 10) -> bool:
        """Block until every record added before the call is committed (starting the writer if
        it was never started). False on timeout, or if the writer has already stopped."""
        with self._lock:
            if self._thread is None:
                if not self._unwritten():
                    return True
                self._spawn()
        thread = self._thread
        if thread is None or not thread.is_alive():
            return not self._unwritten()
        done = threading.Event()
        self._queue.append(done)
        self._wake.set()
        return done.wait(timeout)
