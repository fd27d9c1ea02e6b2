"""Per inbound key rate limits: requests per minute (``rpm``) and tokens per minute (``tpm``).

Owns the counting; pure (no I/O, no clock: every time is passed in as wall-clock seconds).

Windows.  Fixed one-minute windows of wall-clock time: window = ``int(now // 60)``.  Each
limited key keeps one window's counts; the first call that falls outside it rolls the key to
the new window (counts back to zero).  A refusal's ``retry_after`` is the time to the window's
end.  Fixed windows allow up to 2 x rpm across a boundary (the end of one window and the start
of the next): the price of O(1) state and of windows every instance agrees on without talking.

rpm.  A request is counted when admitted; one over ``rpm`` in the window is refused with
``(retry_after, "rpm", rpm)``.  Refused requests are not counted.

tpm.  Tokens are only known when an answer ends, so ``spend`` counts them afterwards and
``admit`` refuses once the tokens already spent in the window reach ``tpm``
(``(retry_after, "tpm", tpm)``).  The request that crosses the limit completes: a window can
end over ``tpm`` by what the requests in flight at that moment use (OpenAI's TPM works the
same way).  Tokens of a request reported after its window ended count in the window they are
reported in (``now`` of ``spend``); reports for a window already left behind are dropped.

Cost.  Only limited keys are stored: a key without limits is one dict miss.  The admitted path
is a lookup, two float compares, integer compares and an increment: O(1), nothing allocated
(beyond CPython's own ints above 256).

Shared mode (``shared`` is a lease source, e.g. ``state_redis.RedisState``, attached while its
link is up).  rpm: this instance holds a *lease* of request permits for (key, window), granted
atomically by the source (Redis: grant = min(ask, rpm - used), so the permits granted to all
instances together never exceed rpm and so neither do the requests admitted).  ``admit`` takes
a permit with no I/O; when the lease falls to the low-water mark it asks for more in the
background (one ask per key at a time); only when it is empty does ``admit`` return an
``asyncio.Future`` that resolves (to None or a refusal tuple) when the answer arrives.  A
grant smaller than asked means the window is spent everywhere: the key is *exhausted* and
refuses at once, without I/O, until the window rolls.

    ask  = max(1, rpm // 50)     permits per ask (2% of rpm)
    low  = ask // 2              ask again when the lease falls to this many

So a steady stream waits on Redis about once per ``ask`` requests only when the prefetch has
not come back yet, and at most ``low + ask`` permits (about 3% of rpm, at least 1) are held by
each instance at the window's end: worst case the instances together admit
``rpm - instances x (low + ask)`` in a window, never more than ``rpm``.

tpm in shared mode: ``spend`` adds to ``unsent``; the source takes them in batches
(``take_unsent``, e.g. every 100 ms), INCRBYs them and reports the global total
(``tokens_sent``), which also arrives with every grant.  ``admit`` refuses when
``seen + unsent + sending >= tpm`` (the global total last seen plus what is on its way).

Fallback.  While the source is down (``detach``) the instance counts alone with the full
limits: during an outage each instance enforces the limits by itself (N instances may admit up
to N x the limit).  Requests admitted without a lease are remembered (``local_only``) and
reported with the next ask once the source is back (``attach``), as are unsent tokens, so the
shared counts catch up within the window.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["RateLimits", "LeaseAsk", "WINDOW", "lease_size"]

WINDOW = 60.0
_NEVER = float("-inf")


def lease_size(rpm: int) -> tuple[int, int]:
    """``(ask, low)``: permits asked for at a time, and the lease left that asks again."""
    ask = max(1, rpm // 50)
    return ask, ask // 2


class _Key:
    __slots__ = ("name", "rpm", "tpm", "ask", "low", "window", "start", "end", "requests", "tokens",
                 "unsent", "sending", "seen", "local_only", "lease", "exhausted", "asking", "waiters",
                 "wait_now", "touched")

    def __init__(self, name: str, rpm: int, tpm: int) -> None:
        self.name = name
        self.rpm = rpm
        self.tpm = tpm
        self.ask, self.low = lease_size(rpm)
        self.window = -1
        self.start = self.end = _NEVER   # [start, end): every `now` is outside until the first roll
        self.requests = 0      # admitted here in this window
        self.tokens = 0        # spent here in this window
        self.unsent = 0        # spent here, not yet given to the lease source
        self.sending = 0       # given to the lease source, no answer yet
        self.seen = 0          # the global token total last reported by the source
        self.local_only = 0    # admitted without a lease (local mode), not yet reported
        self.lease = 0         # permits held (shared mode)
        self.exhausted = False  # the source granted less than asked: the window is spent
        self.asking: LeaseAsk | None = None
        self.waiters: deque[asyncio.Future] = deque()
        self.wait_now = 0.0    # `now` of the latest waiter (its refusal's retry_after)
        self.touched = False   # admitted since the last take_unsent (refresh `seen`)

    def roll(self, now: float) -> None:
        w = int(now // WINDOW)
        self.window = w
        self.start = w * WINDOW
        self.end = self.start + WINDOW
        self.requests = self.tokens = self.unsent = self.sending = self.seen = self.local_only = 0
        self.lease = 0
        self.exhausted = False
        self.asking = None     # an answer for the old window is ignored when it comes
        self.touched = False


class LeaseAsk:
    """One request for permits, handed to the lease source and handed back with its answer."""

    __slots__ = ("key", "state", "window", "n", "rpm", "pre", "now")

    def __init__(self, state: _Key, n: int, pre: int, now: float) -> None:
        self.key = state.name
        self.state = state
        self.window = state.window
        self.n = n             # permits wanted
        self.rpm = state.rpm
        self.pre = pre         # requests admitted here without a lease: add them to the count first
        self.now = now


class RateLimits:
    """rpm/tpm per inbound key name; see the module docstring."""

    def __init__(self) -> None:
        self._keys: dict[str, _Key] = {}
        self.enabled = False
        self.shared = None

    # ---- configuration -------------------------------------------------------------------------

    def configure(self, limits: dict[str, tuple[int, int]]) -> None:
        """``name -> (rpm, tpm)`` (0 = no limit), at load and every reload; a key that stays
        keeps its counts (a changed rpm clears the window's exhaustion: the new limit decides)."""
        old = self._keys
        new: dict[str, _Key] = {}
        for name, (rpm, tpm) in limits.items():
            rpm, tpm = max(0, int(rpm or 0)), max(0, int(tpm or 0))
            if not rpm and not tpm:
                continue
            k = old.get(name)
            if k is None:
                k = _Key(name, rpm, tpm)
            else:
                if k.rpm != rpm:
                    k.exhausted = False
                    k.ask, k.low = lease_size(rpm)
                k.rpm, k.tpm = rpm, tpm
            new[name] = k
        for name, k in old.items():
            if name not in new:   # no longer limited: whoever waits is admitted
                _resolve_all(k, None)
        self._keys = new
        self.enabled = bool(new)
        if self.shared is not None:   # a new limit may let waiters through
            for k in new.values():
                if k.waiters and not k.rpm:
                    _resolve_all(k, None)

    # ---- the request path ------------------------------------------------------------------------

    def admit(self, key: str, now: float):
        """None (admitted and counted), ``(retry_after, "rpm"|"tpm", limit)`` (refused), or, in
        shared mode with an empty lease only, a Future resolving to one of those. Never raises."""
        k = self._keys.get(key)
        if k is None:
            return None
        if now >= k.end or now < k.start:
            k.roll(now)
        if k.tpm and k.seen + k.unsent + k.sending >= k.tpm:
            return (k.end - now, "tpm", k.tpm)
        src = self.shared
        if src is None or not k.rpm:
            if k.rpm and k.requests >= k.rpm:
                return (k.end - now, "rpm", k.rpm)
            k.requests += 1
            if k.rpm:
                k.local_only += 1
            k.touched = True
            return None
        if k.lease > 0:
            k.lease -= 1
            k.requests += 1
            k.touched = True
            if k.lease <= k.low and k.asking is None and not k.exhausted:
                self._ask(k, now)
            return None
        if k.exhausted:
            return (k.end - now, "rpm", k.rpm)
        try:
            fut = asyncio.get_running_loop().create_future()
        except RuntimeError:   # no loop (a synchronous caller): decide alone
            return _local(k, now)
        k.waiters.append(fut)
        k.wait_now = now
        if k.asking is None:
            self._ask(k, now)
        return fut

    def spend(self, key: str, tokens: int, now: float) -> None:
        """Tokens a finished request used (off the request path)."""
        k = self._keys.get(key)
        if k is None or tokens <= 0:
            return
        if now >= k.end:
            k.roll(now)
        elif now < k.start:    # late news of a window already left behind
            return
        k.tokens += tokens
        k.unsent += tokens

    def snapshot(self, now: float) -> list[dict]:
        """Per limited key, this window as this instance knows it (plain JSON-able values)."""
        out = []
        shared = self.shared is not None
        for k in self._keys.values():
            current = k.start <= now < k.end
            out.append({"key": k.name, "rpm": k.rpm, "tpm": k.tpm,
                        "requests": k.requests if current else 0,
                        "tokens": (k.seen + k.unsent + k.sending) if current else 0,
                        "tokens_here": k.tokens if current else 0,
                        "lease": k.lease if current and shared else 0,
                        "exhausted": bool(current and shared and k.exhausted),
                        "shared": shared})
        return out

    # ---- the lease source's side -----------------------------------------------------------------
    # source.ask(LeaseAsk) must not block; it answers later with granted() or lease_failed().

    def attach(self, source) -> None:
        """The source is up: leases from now on (counts admitted meanwhile are reported first)."""
        self.shared = source

    def detach(self) -> None:
        """The source is down: count locally with the full limits; waiters are decided now."""
        self.shared = None
        for k in self._keys.values():
            k.lease = 0
            k.exhausted = False
            k.asking = None
            _decide_all(k)

    def granted(self, ask: LeaseAsk, grant: int, used: int, tokens: int) -> None:
        """The source's answer: ``grant`` permits (``used``: the window's global count after it,
        ``tokens``: the window's global token total)."""
        k = ask.state
        if self._keys.get(ask.key) is not k:
            return                     # reconfigured away meanwhile
        if k.asking is ask:
            k.asking = None
        if ask.window != k.window or self.shared is None:
            # the window rolled (those permits are of no use now) or the source was detached
            # meanwhile (counting is local now)
            self._kick(k, ask.now)
            return
        if tokens > k.seen:
            k.seen = tokens
        k.lease += grant
        if grant < ask.n:
            k.exhausted = True
        self._serve(k, ask.now)

    def lease_failed(self, ask: LeaseAsk) -> None:
        """The ask got no answer (the source is going down): waiters are decided locally."""
        k = ask.state
        if self._keys.get(ask.key) is not k:
            return
        if ask.window == k.window:
            k.local_only += ask.pre    # not reported after all
        if k.asking is ask:
            k.asking = None
            _decide_all(k)
        else:
            self._kick(k, ask.now)

    def take_unsent(self) -> list[tuple[str, int, int]]:
        """``(key, window, tokens)`` to add to the shared totals (tokens may be 0: a key in use
        whose total should be refreshed); moves them from unsent to sending."""
        out = []
        for k in self._keys.values():
            if k.tpm and (k.unsent or k.touched) and k.window >= 0:
                n = k.unsent
                k.sending += n
                k.unsent = 0
                k.touched = False
                out.append((k.name, k.window, n))
        return out

    def tokens_sent(self, key: str, window: int, n: int, total: int) -> None:
        k = self._keys.get(key)
        if k is None or k.window != window:
            return
        k.sending = max(0, k.sending - n)
        if total > k.seen:
            k.seen = total

    def tokens_failed(self, key: str, window: int, n: int) -> None:
        k = self._keys.get(key)
        if k is None or k.window != window:
            return
        n = min(n, k.sending)
        k.sending -= n
        k.unsent += n

    # ---- inside --------------------------------------------------------------------------------

    def _ask(self, k: _Key, now: float) -> None:
        pre = k.local_only
        k.local_only = 0
        a = k.asking = LeaseAsk(k, max(k.ask, len(k.waiters)), pre, now)
        try:
            self.shared.ask(a)
        except Exception:   # a source that cannot even queue: behave as if it were down
            self.lease_failed(a)

    def _serve(self, k: _Key, now: float) -> None:
        ws = k.waiters
        while ws and k.lease > 0:
            f = ws.popleft()
            if f.done():               # the caller gave up (cancelled): keep the permit
                continue
            k.lease -= 1
            k.requests += 1
            k.touched = True
            f.set_result(None)
        while ws and ws[0].done():
            ws.popleft()
        if ws:
            self._kick(k, now)
        elif k.lease <= k.low and k.asking is None and not k.exhausted:
            self._ask(k, now)

    def _kick(self, k: _Key, now: float) -> None:
        """Waiters and no ask on their way: ask, refuse (window spent) or decide locally."""
        while k.waiters and k.waiters[0].done():
            k.waiters.popleft()
        if not k.waiters or k.asking is not None:
            return
        if self.shared is None:
            _decide_all(k)
        elif k.exhausted:
            _resolve_all(k, (_retry(k, k.wait_now), "rpm", k.rpm))
        else:
            self._ask(k, now)


def _retry(k: _Key, now: float) -> float:
    """Seconds to the window's end (a waiter's `now` may be older than the window)."""
    return min(WINDOW, max(0.0, k.end - now))


def _local(k: _Key, now: float):
    """Local counting (no lease): the decision for one request."""
    if k.tpm and k.seen + k.unsent + k.sending >= k.tpm:
        return (_retry(k, now), "tpm", k.tpm)
    if k.rpm and k.requests >= k.rpm:
        return (_retry(k, now), "rpm", k.rpm)
    k.requests += 1
    if k.rpm:
        k.local_only += 1
    k.touched = True
    return None


def _decide_all(k: _Key) -> None:
    """Every waiter of ``k`` decided by local counting (no lease to be had)."""
    while k.waiters:
        f = k.waiters.popleft()
        if not f.done():
            f.set_result(_local(k, k.wait_now))


def _resolve_all(k: _Key, result) -> None:
    while k.waiters:
        f = k.waiters.popleft()
        if not f.done():
            f.set_result(result)
