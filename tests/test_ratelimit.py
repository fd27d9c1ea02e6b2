"""RateLimits (plexus/control/ratelimit.py): local windows, rpm/tpm, and lease accounting with a
fake lease source (the real one, Redis, is in test_state_redis.py)."""

from __future__ import annotations

import asyncio

import pytest

from plexus.control.ratelimit import RateLimits, lease_size

T0 = 1_000_000 * 60.0   # a window start; T0 + 30 is mid-window


def test_disabled():
    rl = RateLimits()
    assert rl.enabled is False
    rl.configure({"a": (0, 0), "b": (0, 0)})
    assert rl.enabled is False
    assert rl.admit("a", T0) is None
    assert rl.snapshot(T0) == []
    rl.configure({"a": (5, 0)})
    assert rl.enabled is True
    rl.configure({})
    assert rl.enabled is False


def test_unlimited_key_is_admitted():
    rl = RateLimits()
    rl.configure({"a": (1, 0)})
    for _ in range(100):
        assert rl.admit("other", T0) is None
    rl.spend("other", 10, T0)


def test_rpm_exact_and_retry_after():
    rl = RateLimits()
    rl.configure({"a": (3, 0)})
    now = T0 + 20
    assert [rl.admit("a", now) for _ in range(3)] == [None, None, None]
    r = rl.admit("a", now)
    assert r == (40.0, "rpm", 3)
    assert rl.admit("a", T0 + 59.5) == (0.5, "rpm", 3)
    snap = rl.snapshot(now)
    assert snap == [{"key": "a", "rpm": 3, "tpm": 0, "requests": 3, "tokens": 0, "tokens_here": 0,
                     "lease": 0, "exhausted": False, "shared": False}]


def test_window_rolls():
    rl = RateLimits()
    rl.configure({"a": (2, 0)})
    assert rl.admit("a", T0 + 1) is None
    assert rl.admit("a", T0 + 2) is None
    assert rl.admit("a", T0 + 3)[1] == "rpm"
    assert rl.admit("a", T0 + 60) is None          # the next window starts at T0 + 60 exactly
    assert rl.admit("a", T0 + 61) is None
    assert rl.admit("a", T0 + 62) == (58.0, "rpm", 2)
    assert rl.snapshot(T0 + 200)[0]["requests"] == 0  # a later window: nothing counted yet
    assert rl.admit("a", T0 + 200) is None


def test_tpm_after_spend():
    rl = RateLimits()
    rl.configure({"a": (0, 100)})
    assert rl.admit("a", T0 + 10) is None
    assert rl.admit("a", T0 + 10) is None
    rl.spend("a", 60, T0 + 11)
    assert rl.admit("a", T0 + 12) is None           # 60 < 100: in flight requests may cross it
    rl.spend("a", 60, T0 + 13)
    rl.spend("a", 30, T0 + 13)
    assert rl.admit("a", T0 + 15) == (45.0, "tpm", 100)
    assert rl.snapshot(T0 + 15)[0]["tokens"] == 150
    rl.spend("a", 10, T0 - 5)                         # a window already left: dropped
    assert rl.snapshot(T0 + 15)[0]["tokens"] == 150
    assert rl.admit("a", T0 + 60) is None            # new window, tokens forgotten
    rl.spend("a", 0, T0 + 61)
    assert rl.admit("a", T0 + 61) is None


def test_tpm_refusal_is_checked_before_rpm_counting():
    rl = RateLimits()
    rl.configure({"a": (10, 5)})
    rl.spend("a", 5, T0)
    assert rl.admit("a", T0)[1] == "tpm"
    assert rl.snapshot(T0)[0]["requests"] == 0


def test_configure_keeps_counts_and_drops_removed():
    rl = RateLimits()
    rl.configure({"a": (2, 50), "b": (1, 0)})
    rl.admit("a", T0)
    rl.admit("a", T0)
    rl.spend("a", 20, T0)
    rl.admit("b", T0)
    rl.configure({"a": (3, 50)})
    assert rl.admit("a", T0) is None                  # 2 kept, 3 allowed now
    assert rl.admit("a", T0)[1] == "rpm"
    assert rl.snapshot(T0)[0]["tokens"] == 20
    assert rl.admit("b", T0) is None                  # no longer limited
    rl.configure({"a": (2, 50), "b": (1, 0)})
    assert rl.admit("b", T0) is None                  # new state for b
    assert rl.admit("b", T0)[1] == "rpm"


def test_lease_size():
    assert lease_size(1) == (1, 0)
    assert lease_size(10) == (1, 0)
    assert lease_size(100) == (2, 1)
    assert lease_size(6000) == (120, 60)


class FakeSource:
    """A lease source whose answers the test gives (granted/lease_failed)."""

    def __init__(self, rl: RateLimits) -> None:
        self.rl = rl
        self.asks = []

    def ask(self, a) -> None:
        self.asks.append(a)


class CounterSource:
    """A shared counter standing in for Redis: answers on the next loop iteration."""

    def __init__(self, rl: RateLimits, counts: dict, tokens: dict) -> None:
        self.rl, self.counts, self.tokens = rl, counts, tokens

    def ask(self, a) -> None:
        def answer():
            k = (a.key, a.window)
            used = self.counts.get(k, 0) + a.pre
            grant = max(0, min(a.n, a.rpm - used))
            self.counts[k] = used + grant
            self.rl.granted(a, grant, used + grant, self.tokens.get(k, 0))
        asyncio.get_running_loop().call_soon(answer)

    def flush(self) -> None:
        for key, window, n in self.rl.take_unsent():
            k = (key, window)
            self.tokens[k] = self.tokens.get(k, 0) + n
            self.rl.tokens_sent(key, window, n, self.tokens[k])


async def test_lease_exhaustion_returns_future_then_refuses():
    rl = RateLimits()
    rl.configure({"a": (100, 0)})
    src = FakeSource(rl)
    rl.attach(src)
    now = T0 + 30
    f1 = rl.admit("a", now)
    f2 = rl.admit("a", now)
    assert isinstance(f1, asyncio.Future) and isinstance(f2, asyncio.Future)
    assert len(src.asks) == 1 and src.asks[0].n == 2 and src.asks[0].window == int(now // 60)
    rl.granted(src.asks[0], 2, 2, 0)
    assert f1.result() is None and f2.result() is None
    assert len(src.asks) == 2                         # lease 0 <= low 1: prefetch
    rl.granted(src.asks[1], 2, 4, 0)
    assert rl.admit("a", now) is None                 # from the lease, no I/O
    assert len(src.asks) == 3                         # lease fell to the low-water mark
    assert rl.admit("a", now) is None
    f = rl.admit("a", now)
    assert isinstance(f, asyncio.Future) and not f.done()
    rl.granted(src.asks[2], 1, 100, 0)                # less than asked: the window is spent
    assert f.result() is None
    assert rl.admit("a", now) == (30.0, "rpm", 100)   # exhausted: refused at once
    assert len(src.asks) == 3
    snap = rl.snapshot(now)[0]
    assert snap["requests"] == 5 and snap["shared"] is True and snap["exhausted"] is True


async def test_lease_exhausted_waiters_are_refused():
    rl = RateLimits()
    rl.configure({"a": (3, 0)})
    src = FakeSource(rl)
    rl.attach(src)
    futs = [rl.admit("a", T0 + 10) for _ in range(5)]
    assert len(src.asks) == 1 and src.asks[0].n == 1  # asked at the first waiter
    rl.granted(src.asks[0], 1, 1, 0)
    assert futs[0].result() is None
    assert src.asks[1].n == 4                         # the rest wait: ask for all of them
    rl.granted(src.asks[1], 2, 3, 0)                  # got 2 of 4: the window is spent
    assert [f.result() for f in futs] == [None, None, None, (50.0, "rpm", 3), (50.0, "rpm", 3)]


async def test_cancelled_waiter_keeps_its_permit():
    rl = RateLimits()
    rl.configure({"a": (100, 0)})
    src = FakeSource(rl)
    rl.attach(src)
    f1, f2 = rl.admit("a", T0), rl.admit("a", T0)
    f1.cancel()
    rl.granted(src.asks[0], 2, 2, 0)
    assert f2.result() is None
    assert rl.snapshot(T0)[0]["requests"] == 1 and rl.snapshot(T0)[0]["lease"] == 1


async def test_stale_window_grant_is_ignored():
    rl = RateLimits()
    rl.configure({"a": (100, 0)})
    src = FakeSource(rl)
    rl.attach(src)
    f1 = rl.admit("a", T0 + 59)
    f2 = rl.admit("a", T0 + 61)                       # the window rolled: a new ask
    assert len(src.asks) == 2 and src.asks[1].window == src.asks[0].window + 1
    rl.granted(src.asks[0], 2, 2, 0)                  # permits of the old window: of no use
    assert not f1.done() and not f2.done()
    rl.granted(src.asks[1], 2, 2, 0)
    assert f1.result() is None and f2.result() is None


async def test_shared_total_never_exceeds_rpm():
    counts, tokens = {}, {}
    insts = []
    for _ in range(3):
        rl = RateLimits()
        rl.configure({"a": (50, 0)})
        rl.attach(CounterSource(rl, counts, tokens))
        insts.append(rl)
    now = T0 + 5
    results = []
    for i in range(100):
        r = insts[i % 3].admit("a", now)
        if isinstance(r, asyncio.Future):
            r = await r
        results.append(r)
    admitted = sum(r is None for r in results)
    assert admitted <= 50
    held = sum(rl.snapshot(now)[0]["lease"] for rl in insts)
    assert admitted + held == 50                      # every permit granted is used or held
    ask, low = lease_size(50)
    assert held <= 3 * (ask + low)


async def test_shared_tpm():
    counts, tokens = {}, {}
    a, b = RateLimits(), RateLimits()
    for rl in (a, b):
        rl.configure({"k": (0, 100)})
        rl.attach(CounterSource(rl, counts, tokens))
    now = T0 + 5
    assert a.admit("k", now) is None and b.admit("k", now) is None
    a.spend("k", 60, now)
    a.shared.flush()
    b.shared.flush()                                  # b learns the global total (60)
    assert b.admit("k", now) is None
    b.spend("k", 40, now)
    assert b.admit("k", now)[1] == "tpm"              # 60 seen + 40 unsent
    b.shared.flush()
    assert a.admit("k", now) is None                  # a has not heard yet (at most one batch late)
    a.shared.flush()                                  # a was in use: its total is refreshed
    assert a.admit("k", now) == (55.0, "tpm", 100)
    assert a.snapshot(now)[0]["tokens"] == 100 and a.snapshot(now)[0]["tokens_here"] == 60


async def test_tokens_failed_are_resent():
    rl = RateLimits()
    rl.configure({"k": (0, 100)})
    rl.spend("k", 30, T0)
    items = rl.take_unsent()
    assert items == [("k", int(T0 // 60), 30)]
    rl.tokens_failed("k", items[0][1], 30)
    assert rl.take_unsent() == items
    rl.tokens_sent("k", items[0][1], 30, 90)           # others spent 60
    assert rl.snapshot(T0)[0]["tokens"] == 90
    assert rl.take_unsent() == []


async def test_fallback_detach_and_reattach():
    rl = RateLimits()
    rl.configure({"a": (5, 0)})
    src = FakeSource(rl)
    rl.attach(src)
    now = T0 + 30
    f = rl.admit("a", now)
    rl.detach()                                       # the link went down: waiters decided locally
    assert f.result() is None and rl.shared is None
    assert [rl.admit("a", now) for _ in range(5)][:4] == [None] * 4
    assert rl.admit("a", now) == (30.0, "rpm", 5)     # the full limit, counted alone
    rl.granted(src.asks[0], 1, 1, 0)                  # a late answer: ignored
    assert rl.snapshot(now)[0]["lease"] == 0
    rl.attach(src)                                    # back: the first ask reports the local count
    f = rl.admit("a", now)
    assert isinstance(f, asyncio.Future)
    assert src.asks[-1].pre == 5
    rl.granted(src.asks[-1], 0, 6, 0)
    assert f.result() == (30.0, "rpm", 5)


async def test_lease_failed_decides_locally():
    rl = RateLimits()
    rl.configure({"a": (2, 0)})
    src = FakeSource(rl)
    rl.attach(src)
    futs = [rl.admit("a", T0 + 30) for _ in range(3)]
    rl.lease_failed(src.asks[0])
    assert [f.result() for f in futs] == [None, None, (30.0, "rpm", 2)]


async def test_reconfigure_releases_waiters():
    rl = RateLimits()
    rl.configure({"a": (5, 0)})
    rl.attach(FakeSource(rl))
    f = rl.admit("a", T0)
    rl.configure({})
    assert f.result() is None


def test_admit_without_loop_in_shared_mode_decides_locally():
    rl = RateLimits()
    rl.configure({"a": (1, 0)})
    rl.attach(FakeSource(rl))
    assert rl.admit("a", T0) is None
    assert rl.admit("a", T0)[1] == "rpm"


@pytest.mark.parametrize("rpm", [1, 7, 60, 1000])
def test_local_rpm_exact(rpm):
    rl = RateLimits()
    rl.configure({"a": (rpm, 0)})
    out = [rl.admit("a", T0 + 1 + i * (50 / (3 * rpm))) for i in range(3 * rpm)]
    assert sum(r is None for r in out) == rpm
