"""Cooldowns: a failing target is skipped for a while; consecutive failures wait longer.

Theory (after Envoy's outlier detection: an ejection per failure streak, each lasting longer):
state is kept per ``(provider name, model)``, shared by every alias that names that pair.
A failure that arrives while the key is *not* cooling starts the next step of the schedule
(default 5 s, 30 s, 2 min, 10 min, then 10 min again: capped at the last step).  A failure
that arrives while it *is* cooling (requests already in flight when the first one failed, or
the all-cooling fallback trying it early) is counted but neither escalates nor extends: one
outage is one step, however many requests saw it.  A ``retry-after`` the provider sent wins
over the schedule (still one step of the streak), capped at ``RETRY_AFTER_CAP`` (1 hour:
a provider asking for a day is treated as asking for an hour, then asked again).  A success
forgets the key.  A key that has been quiet for longer than the last step after its cooldown
ended starts a fresh streak on its next failure (a backup that failed once last week starts
at 5 s again).

Only keys with failures are stored, so the common "all healthy" case is an empty dict and
``Router.plan`` skips every lookup.  The dict is bounded (``max_entries``; ``models: "*"``
lets clients invent keys): lapsed streaks go first, then the oldest entries.

Clock: ``now`` is any monotonic clock in seconds (``loop.time()``), passed in; ``until`` is on
that clock.  ``parse_retry_after`` converts the header to seconds from now, using the wall
clock epoch the caller passes (HTTP dates are wall-clock).  Pure: no I/O, no clock inside.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import timezone
from email.utils import parsedate_to_datetime

__all__ = ["Cooldowns", "RETRY_AFTER_CAP", "apply_message", "failure_message", "parse_retry_after",
           "parse_retry_after_ms", "retry_after"]

RETRY_AFTER_CAP = 3600.0
MAX_ENTRIES = 10_000
DEFAULT_SCHEDULE = (5.0, 30.0, 120.0, 600.0)


class _Entry:
    __slots__ = ("until", "failures", "steps", "last_status", "last_failure")

    def __init__(self) -> None:
        self.until = 0.0          # skip the key while now < until
        self.failures = 0         # consecutive failures reported (all of them)
        self.steps = 0            # cooldowns started in this streak: the schedule index
        self.last_status: int | None = None
        self.last_failure = 0.0


class Cooldowns:
    """Per (provider, model) cooldown state.  ``entries`` is read directly by Router.plan."""

    __slots__ = ("schedule", "entries", "max_entries", "_lapse", "listener")

    def __init__(self, schedule: Sequence[float] = DEFAULT_SCHEDULE, max_entries: int = MAX_ENTRIES) -> None:
        if not schedule or any(not (s > 0 and math.isfinite(s)) for s in schedule):
            raise ValueError("cooldown schedule must be a non-empty list of positive seconds")
        self.schedule = tuple(float(s) for s in schedule)
        self.entries: dict[tuple[str, str], _Entry] = {}
        self.max_entries = max(1, max_entries)
        self._lapse = self.schedule[-1]
        # told of every change made here (not of `apply`): the other workers' copies follow it
        # (control/peers.py); None in a single process
        self.listener = None

    def failure(self, key: tuple[str, str], now: float, retry_after: float | None = None,
                status: int | None = None) -> float:
        """Record a failed attempt; returns the time the key is skipped until."""
        e = self.entries.get(key)
        if e is None:
            if len(self.entries) >= self.max_entries:
                self._shrink(now)
            e = self.entries[key] = _Entry()
        elif now >= e.until + self._lapse:  # quiet for a long while: a new streak
            e.failures = e.steps = 0
        e.failures += 1
        e.last_status = status
        e.last_failure = now
        cooling = now < e.until
        if retry_after is not None and retry_after == retry_after:  # not NaN
            until = now + min(max(retry_after, 0.0), RETRY_AFTER_CAP)
            if not cooling:
                e.steps += 1
                e.until = until
            elif until > e.until:
                e.until = until
        elif not cooling:
            s = self.schedule
            e.until = now + s[e.steps if e.steps < len(s) else -1]
            e.steps += 1
        if self.listener is not None:
            self.listener.cooled(key, e, now)
        return e.until

    def success(self, key: tuple[str, str]) -> None:
        """A successful attempt: the key is healthy again and its streak is forgotten."""
        if self.entries and self.entries.pop(key, None) is not None and self.listener is not None:
            self.listener.healthy(key)

    def apply(self, key: tuple[str, str], until: float, failures: int, steps: int, status: int | None,
              last_failure: float) -> None:
        """Another worker's state of ``key`` (times on this clock), taken as it is."""
        e = self.entries.get(key)
        if e is None:
            if len(self.entries) >= self.max_entries:
                self._shrink(last_failure)
            e = self.entries[key] = _Entry()
        e.until, e.failures, e.steps, e.last_status, e.last_failure = until, failures, steps, status, last_failure

    def forget(self, key: tuple[str, str]) -> None:
        """Another worker saw ``key`` answer: forget its streak here too."""
        self.entries.pop(key, None)

    def until(self, key: tuple[str, str]) -> float:
        """The time the key is skipped until (0.0 if it has no failures); cooling iff until > now."""
        e = self.entries.get(key)
        return e.until if e is not None else 0.0

    def cooling(self, key: tuple[str, str], now: float) -> bool:
        e = self.entries.get(key)
        return e is not None and now < e.until

    def clear(self, provider: str | None = None, model: str | None = None) -> int:
        """Forget failures (the management API): all of them, one provider's, or one
        (provider, model)'s; returns how many keys were cleared.  Keys are deleted from
        ``entries`` in place: Router.plan holds that very dict."""
        n = self.drop(provider, model)
        if self.listener is not None:
            self.listener.cleared(provider, model)
        return n

    def drop(self, provider: str | None = None, model: str | None = None) -> int:
        """`clear` without telling the listener (a clear another worker made)."""
        if provider is None:
            if model is not None:
                raise ValueError("clear(model=...) needs the provider too")
            n = len(self.entries)
            self.entries.clear()
            return n
        if model is not None:
            return 1 if self.entries.pop((provider, model), None) is not None else 0
        keys = [k for k in self.entries if k[0] == provider]
        for k in keys:
            del self.entries[k]
        return len(keys)

    def snapshot(self, now: float) -> list[dict]:
        """Every key with failures, for the management API (a copy; plain JSON-able values)."""
        return [{"provider": k[0], "model": k[1], "cooling": now < e.until, "until": e.until,
                 "remaining": max(0.0, e.until - now), "failures": e.failures, "step": e.steps,
                 "last_status": e.last_status, "last_failure": e.last_failure}
                for k, e in self.entries.items()]

    def _shrink(self, now: float) -> None:
        """Make room: drop lapsed streaks, then the oldest entries, down to 3/4 of the bound."""
        lapse = self._lapse
        entries = self.entries
        for k in [k for k, e in entries.items() if now >= e.until + lapse]:
            del entries[k]
        target = self.max_entries * 3 // 4
        while len(entries) > target:
            del entries[next(iter(entries))]


# ---- the messages other processes' tables follow (control/peers.py: workers; state_redis.py: instances)
# {"c": "fail", "p", "m", "until", "n", "s", "st", "at"} (times on the wall clock), {"c": "ok", "p", "m"},
# {"c": "clear", "p", "m"} (p, m: None = all)

def failure_message(key: tuple[str, str], e: _Entry, to_wall: float) -> dict:
    """The state of ``key`` after a failure; ``to_wall`` = wall clock − this table's clock."""
    return {"c": "fail", "p": key[0], "m": key[1], "until": e.until + to_wall, "n": e.failures,
            "s": e.steps, "st": e.last_status, "at": e.last_failure + to_wall}


def apply_message(cd: Cooldowns, msg: dict, from_wall: float) -> bool:
    """Apply another process's message to ``cd`` (without telling its listener); ``from_wall`` =
    this table's clock − wall clock. False for a message of an unknown kind."""
    kind = msg.get("c")
    if kind == "fail":
        cd.apply((msg["p"], msg["m"]), msg["until"] + from_wall, msg["n"], msg["s"], msg["st"],
                 msg["at"] + from_wall)
    elif kind == "ok":
        cd.forget((msg["p"], msg["m"]))
    elif kind == "clear":
        cd.drop(msg["p"], msg["m"])
    else:
        return False
    return True


def parse_retry_after(value: bytes | str, now_epoch: float) -> float | None:
    """``retry-after`` (RFC 9110 §10.2.3) as seconds from now: delay-seconds or an HTTP-date.

    A past date gives 0.0; an unreadable or negative value gives None (use the schedule).
    Fractional seconds ("1.5") are accepted, as some providers send them.
    """
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    v = value.strip()
    if not v:
        return None
    if v[0].isdigit() or v[0] == ".":
        return _seconds(v, 1.0)
    try:
        when = parsedate_to_datetime(v)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # asctime form and "-0000": GMT by definition
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now_epoch)


def parse_retry_after_ms(value: bytes | str) -> float | None:
    """``retry-after-ms`` (OpenAI, Azure): milliseconds, as seconds."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return _seconds(value.strip(), 0.001)


def retry_after(headers: Iterable[tuple[bytes, bytes]], now_epoch: float) -> float | None:
    """Seconds to wait from an upstream's raw headers: ``retry-after-ms`` (more precise) wins
    over ``retry-after``; None when neither is present and readable."""
    seconds = None
    for name, value in headers:
        n = name.lower()
        if n == b"retry-after-ms":
            ms = parse_retry_after_ms(value)
            if ms is not None:
                return ms
        elif n == b"retry-after" and seconds is None:
            seconds = parse_retry_after(value, now_epoch)
    return seconds


def _seconds(text: str, unit: float) -> float | None:
    try:
        n = float(text)
    except ValueError:
        return None
    return n * unit if n >= 0 and math.isfinite(n) else None
