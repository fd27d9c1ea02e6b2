"""RedisState (plexus/control/state_redis.py) against a real redis-server (tests/redis_server.py):
several "instances" (a RedisState + Cooldowns + RateLimits each) in one event loop."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time

import orjson
import pytest
import redis.asyncio as aioredis

from plexus.control.ratelimit import RateLimits
from plexus.config_stores import masked_url
from plexus.control.state_redis import RedisState
from plexus.routing.cooldowns import Cooldowns
from redis_server import RedisServer

T = 2_000_000 * 60.0 + 30.0   # a fixed mid-window `now` for the limits (no real window boundary)
KEY = ("prov", "model-1")
_prefixes = itertools.count()


@pytest.fixture(scope="module")
def server():
    with RedisServer() as s:
        yield s


@pytest.fixture
def prefix():
    return f"t{os.getpid()}-{next(_prefixes)}"


class Instance:
    def __init__(self, url: str, prefix: str, name: str, limits: dict | None = None) -> None:
        self.cd = Cooldowns()
        self.rl = RateLimits()
        self.rl.configure(limits or {})
        self.state = RedisState(url, instance=name, prefix=prefix)
        self.cd.listener = self.state

    async def start(self) -> "Instance":
        await self.state.start(asyncio.get_running_loop(), lambda: self.cd, self.rl)
        return self

    async def admit(self, key: str, now: float = T):
        r = self.rl.admit(key, now)
        if isinstance(r, asyncio.Future):
            r = await r
        return r


async def until(cond, timeout: float, step: float = 0.01) -> float:
    """Wait for cond() to be true; returns the seconds it took (fails after timeout)."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(step)
    return time.monotonic() - t0


async def started(url, prefix, *names, limits=None):
    return [await Instance(url, prefix, n, limits).start() for n in names]


async def close(*insts):
    for i in insts:
        await i.state.close()


def test_masked_url():
    assert masked_url("redis://:s3cret@h:6379/0") == "redis://:****@h:6379/0"
    assert masked_url("rediss://u:p@h/1") == "rediss://u:****@h/1"
    assert masked_url("redis://h:6379") == "redis://h:6379"
    assert masked_url("redis://user@h:6379") == "redis://user@h:6379"   # a user name, no password


async def test_cooldowns_follow_between_instances(server, prefix):
    a, b = await started(server.url, prefix, "A", "B")
    try:
        assert a.state.up and b.state.up and a.state.status()["state"] == "ok"
        loop = asyncio.get_running_loop()
        until_a = a.cd.failure(KEY, loop.time(), status=503)
        took = await until(lambda: KEY in b.cd.entries, 1.0)
        assert took < 1.0
        e = b.cd.entries[KEY]
        assert abs(e.until - until_a) < 0.05 and e.failures == 1 and e.steps == 1 and e.last_status == 503
        assert KEY not in a.cd.entries or a.cd.entries[KEY].failures == 1   # no echo back into A

        a.cd.success(KEY)                                        # ok -> forgotten in B
        await until(lambda: KEY not in b.cd.entries, 1.0)

        b.cd.failure(KEY, loop.time())                           # the other way round
        b.cd.failure(("prov", "model-2"), loop.time())
        b.cd.failure(("other", "m"), loop.time())
        await until(lambda: len(a.cd.entries) == 3, 1.0)
        b.cd.clear("prov")                                       # clear -> dropped in A
        await until(lambda: list(a.cd.entries) == [("other", "m")], 1.0)
        b.cd.clear()
        await until(lambda: not a.cd.entries, 1.0)
        r = aioredis.Redis.from_url(server.url)
        assert await r.hlen(f"{prefix}:cd") == 0                 # the hash follows too
        await r.aclose()
        assert a.state.published >= 2 and b.state.received >= 2 and a.state.received >= 5
        assert a.state.errors == 0 and b.state.errors == 0
    finally:
        await close(a, b)


async def test_new_instance_loads_cooldowns_in_force(server, prefix):
    (a,) = await started(server.url, prefix, "A")
    r = aioredis.Redis.from_url(server.url)
    try:
        loop = asyncio.get_running_loop()
        until_a = a.cd.failure(KEY, loop.time(), retry_after=120.0, status=429)
        a.cd.failure(("prov", "gone"), loop.time())
        a.cd.success(("prov", "gone"))
        await until(lambda: a.state.published == 3, 1.0)
        # a lapsed field (Redis 7.0 has no per-field TTL): pruned when the hash is read
        await r.hset(f"{prefix}:cd", "old\x00m", orjson.dumps(
            {"i": "X", "c": "fail", "p": "old", "m": "m", "until": time.time() - 1, "n": 1, "s": 1, "st": None,
             "at": time.time() - 5}))
        (c,) = await started(server.url, prefix, "C")
        try:
            assert list(c.cd.entries) == [KEY]                   # loaded by start(), before any message
            e = c.cd.entries[KEY]
            assert abs(e.until - until_a) < 0.05 and e.last_status == 429
            assert await r.hkeys(f"{prefix}:cd") == [b"prov\x00model-1"]
        finally:
            await close(c)
    finally:
        await r.aclose()
        await close(a)


async def test_rpm_shared_exactly(server, prefix):
    a, b = await started(server.url, prefix, "A", "B", limits={"k": (10, 0)})
    try:
        assert a.rl.shared is a.state and b.rl.shared is b.state
        res = await asyncio.gather(*[(a if i % 2 else b).admit("k") for i in range(40)])
        assert sum(r is None for r in res) == 10
        assert all(r == (30.0, "rpm", 10) for r in res if r is not None)
        assert await a.admit("k") == (30.0, "rpm", 10)            # exhausted: refused without I/O
        assert not isinstance(b.rl.admit("k", T), asyncio.Future)
        assert await a.admit("k", T + 60) is None                 # the next window
    finally:
        await close(a, b)


async def test_rpm_shared_sequential_under_admission_bound(server, prefix):
    """A steady stream over three instances: never more than rpm, and the permits held at the
    end stay within the documented bound."""
    insts = await started(server.url, prefix, "A", "B", "C", limits={"k": (200, 0)})
    try:
        res = [await insts[i % 3].admit("k") for i in range(300)]
        admitted = sum(r is None for r in res)
        held = sum(i.rl.snapshot(T)[0]["lease"] for i in insts)
        assert admitted <= 200 and admitted + held == 200
        assert held <= 3 * (4 + 2)                                 # instances x (ask + low)
    finally:
        await close(*insts)


async def test_tpm_shared(server, prefix):
    a, b = await started(server.url, prefix, "A", "B", limits={"k": (0, 100)})
    try:
        assert await a.admit("k") is None and await b.admit("k") is None
        a.rl.spend("k", 120, T)
        assert a.rl.admit("k", T) == (30.0, "tpm", 100)
        # b learns the global total from the batches (it is in use: refreshed every 100 ms)
        await until(lambda: b.rl.admit("k", T) is not None, 2.0, step=0.05)
        assert b.rl.admit("k", T) == (30.0, "tpm", 100)
        assert b.rl.snapshot(T)[0]["tokens"] >= 120
    finally:
        await close(a, b)


async def test_redis_down_then_back(prefix):
    with RedisServer() as srv:
        a, b = await started(srv.url, prefix, "A", "B", limits={"k": (100, 0)})
        try:
            loop = asyncio.get_running_loop()
            assert await a.admit("k") is None
            srv.stop()
            await until(lambda: not a.state.up and not b.state.up, 5.0)
            for i in (a, b):
                st = i.state.status()
                assert st["state"] == "degraded" and st["last_error"] and st["url"] == srv.url
                assert i.rl.shared is None
                assert i.rl.admit("k", T) is None                 # answered at once, counted locally
            a.cd.failure(KEY, loop.time(), retry_after=60.0)      # queued, does not raise
            a.cd.success(("x", "y"))
            errors = a.state.errors
            assert errors >= 1

            srv.start()                                           # Redis is back (empty)
            await until(lambda: a.state.up and b.state.up, 10.0)
            assert a.state.status()["state"] == "ok" and a.state.status()["last_error"] is None
            assert a.rl.shared is a.state and b.rl.shared is b.state
            await until(lambda: KEY in b.cd.entries, 2.0)         # the change made while down arrives
            r = a.rl.admit("k", T)
            assert r is None or isinstance(r, asyncio.Future)
            if isinstance(r, asyncio.Future):
                assert await r is None
            b.cd.failure(("p2", "m2"), loop.time())               # pub/sub works again
            await until(lambda: ("p2", "m2") in a.cd.entries, 1.0)
            # the requests admitted alone during the outage were reported with the first ask
            rr = aioredis.Redis.from_url(srv.url)
            used = int(await rr.get(f"{prefix}:rl:k:{int(T // 60)}:r"))
            await rr.aclose()
            assert used >= 2
        finally:
            await close(a, b)


async def test_hung_redis_never_blocks(prefix):
    with RedisServer() as srv:
        a, b = await started(srv.url, prefix, "A", "B", limits={"k": (100, 0)})
        try:
            os.kill(srv.proc.pid, signal.SIGSTOP)
            t0 = time.monotonic()
            r = a.rl.admit("k", T)                                # empty lease: waits on a hung Redis
            assert isinstance(r, asyncio.Future)
            assert await asyncio.wait_for(r, 3.0) is None         # decided locally after the timeout
            assert time.monotonic() - t0 < 3.0
            await until(lambda: not a.state.up and not b.state.up, 5.0)
            a.cd.failure(KEY, asyncio.get_running_loop().time(), retry_after=60.0)
            assert a.rl.admit("k", T) is None
            os.kill(srv.proc.pid, signal.SIGCONT)
            await until(lambda: a.state.up and b.state.up, 10.0)
            await until(lambda: KEY in b.cd.entries, 2.0)
        finally:
            if srv.proc is not None:
                os.kill(srv.proc.pid, signal.SIGCONT)
            await close(a, b)


async def test_start_with_redis_down_never_raises(prefix):
    srv = RedisServer(start=False)
    try:
        (a,) = await started(srv.url, prefix, "A", limits={"k": (5, 0)})
        assert not a.state.up and a.state.status()["state"] == "degraded"
        assert a.rl.shared is None and a.rl.admit("k", T) is None
        a.cd.failure(KEY, asyncio.get_running_loop().time(), retry_after=60.0)
        srv.start()                                               # comes up later: joins without a restart
        await until(lambda: a.state.up, 5.0)
        assert a.rl.shared is a.state
        r = aioredis.Redis.from_url(srv.url)
        await until(lambda: a.state.published >= 1, 2.0)
        assert await r.hexists(f"{prefix}:cd", "prov\x00model-1")
        await r.aclose()
        await close(a)
    finally:
        srv.close()


async def test_bad_url_stays_degraded(prefix):
    st = RedisState("notaurl://x", prefix=prefix)
    rl = RateLimits()
    await st.start(asyncio.get_running_loop(), lambda: None, rl)
    assert st.status()["state"] == "degraded" and st.last_error
    st.cooled(KEY, Cooldowns().entries.setdefault(KEY, type("E", (), {"until": 1.0, "failures": 1, "steps": 1,
                                                                      "last_status": None, "last_failure": 0.0})()), 0.0)
    await st.close()
