"""One upstream connection (an asyncio.Protocol that only records) and the shared read watchdog.

Theory
------
* ``Conn`` is one TCP/TLS connection. Its callbacks only *record*: ``data_received`` appends the raw
  chunk to a deque and wakes the one waiter, and ``eof_received``/``connection_lost`` set ``closed``.
  The consumer (``transport.py``, in the request's task) pulls chunks with ``read``/``pop``. The
  deque is the only place where bytes wait, and its byte count is the consumer's lag: above
  HIGH_WATER we call ``pause_reading()``, and once the consumer has pulled the count under
  LOW_WATER we call ``resume_reading()``.
* ``dead()`` is the liveness probe the transport runs on a pooled connection right before reusing
  it: the ``closed`` flag, ``transport.is_closing()``, then one zero-timeout ``poll()`` of the
  socket, which sees a FIN, a reset or stray bytes the loop has not processed yet. (The "socket"
  that asyncio and uvloop hand out does not allow ``recv``, so ``recv(MSG_PEEK)`` is not an option
  on the transport's socket; poll gives the same answer in one syscall without one.)
* ``Watchdog``: a call_later per read costs ~10 us on uvloop, so a waiting read records its deadline
  in a set and one timer per loop, armed for the earliest deadline, expires the overdue reads.
* Push mode (``sink``): while a response body is piped (``transport.RawResponse.pipe``), the
  callbacks hand each chunk straight to ``sink(data)`` instead of queueing it and waking a task:
  ``sink(b"")`` is the end of input (EOF or loss; ``exc`` says which), ``sink(None)`` the watchdog's
  timeout. A relayed stream event then costs one callback, not a future, a task step and a loop
  pass.
"""

from __future__ import annotations

import asyncio
import select
import socket
from collections import deque

PROBE_AFTER = 0.005  # s: a pooled connection idle at least this long is polled before reuse
HIGH_WATER = 256 * 1024  # unconsumed socket bytes above which we pause reading
LOW_WATER = 64 * 1024  # ... and below which we resume


class TimedOut(Exception):
    """An awaited read did not complete in time (-> httpx.ReadTimeout)."""


if hasattr(select, "poll"):
    def readable(fd: int) -> bool:
        """One poll(2) with a zero timeout: is there EOF, a reset or data waiting on `fd`?"""
        p = select.poll()
        p.register(fd, select.POLLIN)
        return bool(p.poll(0))
else:  # pragma: no cover - no poll() (Windows, where uvloop does not run either)
    def readable(fd: int) -> bool:
        return bool(select.select((fd,), (), (), 0)[0])


class Watchdog:
    """Timeouts for every pending read on one loop, using one timer.

    A call_later per read costs ~10 us on uvloop (a libuv timer handle is created, started, stopped
    and closed). Instead, a waiting read records its deadline here with a set add/discard, which is
    O(1). One timer is armed for the earliest deadline. When it fires, it expires the overdue reads
    and re-arms for the next deadline. With uniform timeouts it fires about once per timeout period,
    not once per request.
    """

    __slots__ = ("loop", "waiting", "handle", "at")

    def __init__(self, loop) -> None:
        self.loop = loop
        self.waiting: set[Conn] = set()
        self.handle: asyncio.TimerHandle | None = None
        self.at = 0.0

    def add(self, conn: Conn) -> None:
        self.waiting.add(conn)
        if self.handle is None or conn.deadline < self.at:
            if self.handle is not None:
                self.handle.cancel()
            self.at = conn.deadline
            self.handle = self.loop.call_at(self.at, self._fire)

    def _fire(self) -> None:
        self.handle = None
        now = self.loop.time()
        nxt = None
        for conn in list(self.waiting):
            if conn.deadline <= now:
                self.waiting.discard(conn)
                if conn.sink is not None:
                    conn.sink(None)
                    continue
                w = conn.waiter
                if w is not None and not w.done():
                    w.set_result(False)
            elif nxt is None or conn.deadline < nxt:
                nxt = conn.deadline
        if nxt is not None:
            self.at = nxt
            self.handle = self.loop.call_at(nxt, self._fire)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


class Conn(asyncio.Protocol):
    """One upstream connection. The callbacks record. ``read()`` is the single consumer."""

    __slots__ = ("key", "loop", "registry", "watchdog", "transport", "chunks", "buffered", "paused",
                 "waiter", "deadline", "closed", "exc", "got", "idle_since", "fd", "sink")

    def __init__(self, key, loop, registry: set, watchdog: Watchdog) -> None:
        self.key, self.loop, self.registry, self.watchdog = key, loop, registry, watchdog
        self.deadline = 0.0  # loop time at which the pending read times out
        self.transport = None
        self.chunks: deque[bytes] = deque()  # raw socket chunks not yet consumed, oldest first
        self.buffered = 0  # their total size
        self.paused = False
        self.waiter: asyncio.Future | None = None
        self.closed = False  # EOF, connection lost or aborted: never reuse
        self.exc: BaseException | None = None
        self.got = False  # any byte received since the current request was written
        self.idle_since = 0.0
        self.fd = -1  # the TCP socket's descriptor, for dead(); valid while the transport is not closing
        self.sink = None  # push mode: called with each chunk (b"" at the end, None on timeout)

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError):
                pass
            try:
                self.fd = sock.fileno()
            except (OSError, AttributeError):
                pass
        self.registry.add(self)

    def data_received(self, data: bytes) -> None:
        self.got = True
        sink = self.sink
        if sink is not None:
            sink(data)
            return
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > HIGH_WATER and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> None:
        self.closed = True
        if self.sink is not None:
            self.sink(b"")
        self._wake()  # returning None lets the transport close itself

    def connection_lost(self, exc) -> None:
        self.closed = True
        if exc is not None and self.exc is None:
            self.exc = exc
        self.registry.discard(self)
        if self.sink is not None:
            self.sink(b"")
        self._wake()

    def _wake(self) -> None:
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(True)

    def pop(self) -> bytes:
        data = self.chunks.popleft()
        self.buffered -= len(data)
        if self.paused and self.buffered < LOW_WATER:
            self.paused = False
            if not self.closed:
                self.transport.resume_reading()
        return data

    async def read(self, until: float | None) -> bytes:
        """The next raw chunk; b"" at EOF; raises the socket error, or TimedOut if none by loop time `until`."""
        while not self.chunks:
            if self.closed:
                if self.exc is not None:
                    raise self.exc
                return b""
            w = self.waiter = self.loop.create_future()
            if until is None:
                await w
                continue
            if until <= self.loop.time():
                raise TimedOut()
            self.deadline = until
            watchdog = self.watchdog
            watchdog.add(self)
            try:
                ok = await w
            finally:
                watchdog.waiting.discard(self)
            if not ok:
                raise TimedOut()
        return self.pop()

    def dead(self, now: float = float("inf")) -> bool:
        """True if this idle connection must not carry a request (transport.py: "sent at most once").

        The transport closes the descriptor only after ``is_closing()`` turns true, so while it is
        false `fd` is still this connection's socket. The poll sees the peer's FIN or reset even
        when the loop has not processed it yet; on TLS it sees raw records (a close_notify, a late
        session ticket), and calling those dead only costs a new connection. A connection idle for
        less than PROBE_AFTER (at loop time ``now``) is not polled: servers close idle connections
        after seconds, and the syscall costs ~4 us on a busy gateway, where connections come back
        within a millisecond. (Should one die in that window anyway, the request fails once with a
        502; it is still never sent twice.)
        """
        if self.closed or self.chunks or self.transport.is_closing():
            return True
        if self.fd < 0 or now - self.idle_since < PROBE_AFTER:
            return False
        try:
            return readable(self.fd)
        except (OSError, ValueError):
            return True

    def abort(self) -> None:
        self.closed = True
        self.registry.discard(self)
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:  # graceful: idle expiry, end of a close-delimited body
        self.closed = True
        self.registry.discard(self)
        if self.transport is not None:
            self.transport.close()
