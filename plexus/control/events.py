"""EventHub: the live feed of usage records behind ``GET /v0/management/events`` (SSE).

Theory: a fan-out where the publisher never waits and no buffer grows without bound.

* ``publish(u)`` runs on the loop once per finished request. With no subscribers it is one
  attribute check and a return. With subscribers the record is encoded once, as a complete SSE
  frame (``event: usage\\ndata: <json>\\n\\n``), and appended to each subscriber's queue.
* Each subscriber has its own queue of at most ``max_queue`` frames. A consumer that falls that
  far behind (its client reads too slowly and the stream handler is stuck on backpressure) is
  dropped: removed from the hub, its queue freed, and its ``get`` returns None so that its stream
  ends. Memory is therefore bounded by subscribers x max_queue frames, whatever the clients do.
* A subscriber may set a ``rate`` (records per second, `?max_rate=` on the endpoint; the
  dashboard's Live page uses it): records beyond it are counted, not encoded or sent, and the
  count goes out as ``event: skipped`` with the next write. A person cannot read 10,000 rows a
  second, and an open dashboard must not cost the gateway one JSON document per request.
* ``Subscriber.get(timeout)`` returns every pending frame joined into one write, ``b""`` when
  ``timeout`` passed with nothing to send (time for a heartbeat), or None once dropped or closed.
  The caller closes its subscriber in a ``finally`` (a client that goes away cancels its handler
  task), and ``close`` is idempotent.

All of this runs on one event loop; nothing here is thread-safe, nothing needs to be.
"""

from __future__ import annotations

import asyncio
from collections import deque
from time import monotonic

__all__ = ["EventHub", "Subscriber", "DEFAULT_MAX_QUEUE"]

DEFAULT_MAX_QUEUE = 1000


class Subscriber:
    """One listener of the hub: a bounded queue of encoded SSE frames and a wake-up future."""

    __slots__ = ("_hub", "_queue", "max_queue", "_waiter", "dropped", "closed", "rate", "_tokens", "_at",
                 "skipped")

    def __init__(self, hub: "EventHub", max_queue: int, rate: float = 0.0) -> None:
        self._hub = hub
        self._queue: deque[bytes] = deque()
        self.max_queue = max_queue
        self._waiter: asyncio.Future | None = None
        self.dropped = False  # fell max_queue frames behind
        self.closed = False
        self.rate = rate      # records per second at most (0: all); beyond it they are counted, not sent
        self._tokens = rate   # a token bucket of one second's worth
        self._at = 0.0
        self.skipped = 0      # records left out by the rate since the last frame sent

    def admit(self, now: float) -> bool:
        """Whether this record goes out under the rate (else it is counted in ``skipped``)."""
        t = min(self.rate, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if t >= 1.0:
            self._tokens = t - 1.0
            return True
        self._tokens = t
        self.skipped += 1
        return False

    def push(self, frame: bytes) -> None:
        """Queue one frame; a full queue drops this subscriber instead (never waits, never grows)."""
        if self.closed:
            return
        if len(self._queue) >= self.max_queue:
            self.dropped = True
            self._queue.clear()
            self.close()
            self._hub.drops += 1
        else:
            self._queue.append(frame)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self, timeout: float) -> bytes | None:
        """Pending frames as one chunk; ``b""`` after ``timeout`` s of nothing; None once dropped/closed."""
        if not self._queue and not self.closed:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await waiter
            except TimeoutError:
                pass
            finally:
                self._waiter = None
        if self.closed:
            return None
        data = b"".join(self._queue)
        self._queue.clear()
        if self.skipped:  # what the rate left out, so a client can say "N more"
            data += b'event: skipped\ndata: {"count":%d}\n\n' % self.skipped
            self.skipped = 0
        return data

    def close(self) -> None:
        """Leave the hub (idempotent); a pending ``get`` returns None."""
        if self.closed:
            return
        self.closed = True
        self._hub._remove(self)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __len__(self) -> int:
        return len(self._queue)


class EventHub:
    """Usage records to live subscribers. ``subscribers`` is empty in the common case."""

    __slots__ = ("subscribers", "drops")

    def __init__(self) -> None:
        self.subscribers: list[Subscriber] = []
        self.drops = 0  # subscribers dropped for falling behind, since start

    def publish(self, u) -> None:
        """One finished request's ``Usage`` record to every subscriber (no await, never blocks)."""
        subs = self.subscribers
        if not subs:
            return
        frame = None
        now = None
        for s in tuple(subs):  # push may drop (remove) a subscriber
            if s.rate:
                if now is None:
                    now = monotonic()
                if not s.admit(now):
                    continue
            if frame is None:  # encoded once, and only when someone takes it
                frame = b"event: usage\ndata: " + u.to_json() + b"\n\n"
            s.push(frame)

    def subscribe(self, max_queue: int = DEFAULT_MAX_QUEUE, rate: float = 0.0) -> Subscriber:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        s = Subscriber(self, max_queue, rate)
        self.subscribers.append(s)
        return s

    def _remove(self, s: Subscriber) -> None:
        try:
            self.subscribers.remove(s)
        except ValueError:
            pass
