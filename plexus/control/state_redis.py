"""Cooldowns and rate limits shared by many Plexus instances through one Redis.

Owns the link to Redis (redis-py's asyncio client): ``RedisState(url)`` is started once with
``await start(loop, cooldowns_getter, limits)`` and closed with ``await close()``.

Theory: Redis is never on the request path.  The request path only touches in-memory state
(the Cooldowns table, the RateLimits lease); this object keeps that state in step with the
other instances in the background, and when Redis is away each instance simply runs alone.

- **Cooldowns.**  This object is a Cooldowns listener: ``cooled``/``healthy``/``cleared`` are
  called on the request path's failure branch, so they only append to a bounded queue and wake
  the publisher task.  The publisher sends each change (one pipeline per batch) as a PUBLISH on
  ``{prefix}:cd:events`` (``{"i": instance, "c": "fail"|"ok"|"clear", ...}``, times as
  wall-clock seconds) and records it in the hash ``{prefix}:cd`` (field ``provider\\0model`` ->
  the same JSON; ``ok`` HDELs, ``clear`` deletes by a Lua script), so an instance that starts or
  reconnects loads the cooldowns already in force.  Redis 7.0 has no per-field TTL: expired
  fields are pruned (atomically, by a Lua script) whenever the hash is read, and every 30 s.
  A subscriber on its own connection applies the other instances' messages (its own are
  skipped by instance id) to ``cooldowns_getter()`` - called every time, a reload may have made
  a new table - with ``apply``/``forget``/``drop``, which do not call the listener back; wall
  clock is turned into the loop's clock as ``until + (loop.time() - time.time())``.  Delivery
  takes one PUBLISH (well under the 1 s bound).  While Redis is down the changes queue up (at
  most ``QUEUE_MAX``; expired failures are dropped when sent) and go out on reconnect, before
  the hash is read back.
- **Rate limits.**  While up, ``limits.shared`` is this object (``RateLimits.attach``): it grants
  request permits with one Lua script (``grant = min(ask, rpm - used)``; INCRBY; EXPIRE 120 s on
  ``{prefix}:rl:{key}:{window}:r``) and every ``FLUSH_EVERY`` s INCRBYs the tokens spent
  (``...:t``), reporting the global totals back.  See ``plexus/control/ratelimit.py``.
- **Failure.**  Socket and connect timeouts are 1 s and redis-py's own retries are off (a hung
  Redis costs one timeout, not several).  A failed command, a pub/sub read error, or a pub/sub
  connection silent for ``SILENT_AFTER`` s (it is PINGed every second) takes the link down:
  ``up`` False, ``limits`` detached (local counting), status "degraded", then reconnect with
  backoff 0.2 s doubling to 5 s; reconnecting resubscribes, resends the queue, reloads the hash
  and attaches the limits again.  ``start`` never raises: it tries once and runs degraded.

Counters for metrics: ``published`` (changes sent), ``received`` (other instances' changes
applied), ``errors`` (failed operations and lost links).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import deque

import orjson

from ..config_stores import masked_url
from ..routing.cooldowns import apply_message, failure_message

__all__ = ["RedisState"]

log = logging.getLogger("plexus")

TIMEOUT = 1.0            # socket and connect timeout of every Redis connection
BACKOFF_MIN, BACKOFF_MAX = 0.2, 5.0
FLUSH_EVERY = 0.1        # token batches
PING_EVERY = 1.0         # pub/sub liveness and command-link heartbeat
SILENT_AFTER = 3.0       # a pub/sub link that answered nothing for this long is dead
PRUNE_EVERY = 30.0
QUEUE_MAX = 10_000
BATCH_MAX = 500
COUNTER_TTL = 120        # seconds a window's counters live (two windows)

# KEYS: requests counter, tokens counter. ARGV: ask, rpm, pre (admitted without a lease), ttl.
_GRANT = """
local ask, rpm, pre = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local used = tonumber(redis.call('GET', KEYS[1]) or '0') + pre
local grant = math.max(0, math.min(ask, rpm - used))
if pre + grant > 0 then
  redis.call('INCRBY', KEYS[1], pre + grant)
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
end
return {grant, used + grant, tonumber(redis.call('GET', KEYS[2]) or '0')}
"""

# KEYS: the cooldown hash. ARGV: now (wall clock). Deletes lapsed fields, returns the live values.
_PRUNE = """
local out = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local ok, v = pcall(cjson.decode, all[i + 1])
  if (not ok) or type(v) ~= 'table' or (tonumber(v['until']) or 0) <= tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[1], all[i])
  else
    out[#out + 1] = all[i + 1]
  end
end
return out
"""

# KEYS: the cooldown hash. ARGV: mode ("all"|"provider"|"one"), provider, model.
_CLEAR = """
if ARGV[1] == 'all' then return redis.call('DEL', KEYS[1]) end
if ARGV[1] == 'one' then return redis.call('HDEL', KEYS[1], ARGV[2] .. '\\0' .. ARGV[3]) end
local p, n = ARGV[2] .. '\\0', 0
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(f, 1, #p) == p then redis.call('HDEL', KEYS[1], f); n = n + 1 end
end
return n
"""


def _field(provider: str, model: str) -> str:
    return f"{provider}\x00{model}"


class RedisState:
    def __init__(self, url: str, *, instance: str | None = None, prefix: str = "plexus") -> None:
        self.url = url
        self.instance = instance or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.prefix = prefix
        self.up = False
        self.published = self.received = self.errors = 0   # for metrics
        self.last_error: str | None = None
        self._hash = f"{prefix}:cd"
        self._channel = f"{prefix}:cd:events"
        self._out: deque[dict] = deque(maxlen=QUEUE_MAX)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cooldowns = lambda: None
        self._limits = self._r = self._ps = None
        self._wake: asyncio.Event | None = None      # the publisher's doorbell
        self._broken: asyncio.Event | None = None    # set by a background failure: relink
        self._runner: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._closed = False
        self._gen = 0            # links made so far: a late failure of an older link is ignored
        self._grant = self._prune = self._clear = None

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self, loop, cooldowns_getter, limits) -> None:
        """Connect (one try, at most ~2 s) and keep the link up in the background. Never raises."""
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self._loop, self._cooldowns, self._limits = loop, cooldowns_getter, limits
        self._wake, self._broken = asyncio.Event(), asyncio.Event()
        try:
            self._r = aioredis.Redis.from_url(
                self.url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT,
                health_check_interval=int(PING_EVERY * 5), retry=Retry(NoBackoff(), 0),
                retry_on_error=[], decode_responses=False)
        except Exception as e:  # an unreadable URL: stay degraded for good, say why
            self._failed(e)
            return
        self._grant, self._prune, self._clear = (self._r.register_script(s) for s in (_GRANT, _PRUNE, _CLEAR))
        try:
            await asyncio.wait_for(self._connect(), 2 * TIMEOUT + 0.5)
        except Exception as e:
            self._failed(e)
            await self._teardown()
        self._runner = loop.create_task(self._run(first_up=self.up))

    async def close(self) -> None:
        self._closed = True
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
            self._runner = None
        if self.up and self._out:
            try:  # last changes out, briefly
                await asyncio.wait_for(self._drain(), TIMEOUT)
            except Exception:
                pass
        self._set_down()
        await self._teardown()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._r is not None:
            await asyncio.gather(self._r.aclose(), return_exceptions=True)

    def status(self) -> dict:
        return {"backend": "redis", "state": "ok" if self.up else "degraded",
                "last_error": self.last_error, "url": masked_url(self.url)}

    # ---- the link ------------------------------------------------------------------------------

    async def _run(self, first_up: bool) -> None:
        backoff, connected = BACKOFF_MIN, first_up
        while not self._closed:
            if not connected:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                try:
                    await asyncio.wait_for(self._connect(), 2 * TIMEOUT + 0.5)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    self._failed(e)
                    await self._teardown()
                    continue
                log.warning("state: redis at %s is back", masked_url(self.url))
            backoff = BACKOFF_MIN
            connected = False
            try:
                await self._serve()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self._failed(e)
            self._set_down()
            await self._teardown()

    async def _connect(self) -> None:
        """Ping, subscribe, resend the queue, load the cooldowns in force, attach the limits."""
        await self._r.ping()
        ps = self._ps = self._r.pubsub(ignore_subscribe_messages=True)
        await ps.subscribe(self._channel)   # before reading the hash: nothing falls between
        await self._drain()
        self._load(await self._prune(keys=[self._hash], args=[time.time()]))
        self._broken.clear()
        self._gen += 1
        self.up = True
        self.last_error = None
        if self._out:
            self._wake.set()
        if self._limits is not None:
            self._limits.attach(self)

    async def _serve(self) -> None:
        """Run the reader, publisher, flusher and heartbeat until one fails (or a lease did)."""
        tasks = [asyncio.ensure_future(c) for c in
                 (self._reader(), self._publisher(), self._flusher(), self._heartbeat(), self._broken.wait())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for t in done:
            if not t.cancelled() and t.exception() is not None:
                raise t.exception()
        # else: a lease or another operation failed and already said so (_lost)

    def _failed(self, e: BaseException) -> None:
        self.errors += 1
        msg = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        if self.up or self.last_error is None:
            log.warning("state: redis at %s unavailable (%s): each instance counts alone until it returns",
                        masked_url(self.url), msg)
        self.last_error = msg
        self._set_down()

    def _set_down(self) -> None:
        self.up = False
        if self._limits is not None and self._limits.shared is self:
            self._limits.detach()

    def _lost(self, e: BaseException) -> None:
        """A background operation failed: take the link down (the runner reconnects)."""
        self._failed(e)
        if self._broken is not None:
            self._broken.set()

    async def _teardown(self) -> None:
        ps, self._ps = self._ps, None
        if ps is not None:
            close = getattr(ps, "aclose", None) or ps.close   # redis-py < 5.0.1: close() only
            try:
                await asyncio.wait_for(close(), TIMEOUT)
            except Exception:
                pass
        if self._r is not None:
            try:
                await self._r.connection_pool.disconnect()
            except Exception:
                pass

    # ---- cooldowns out (the listener; request path: enqueue only) ----------------------------

    def cooled(self, key, e, now: float) -> None:
        try:
            msg = failure_message(key, e, time.time() - now)
            msg["i"] = self.instance
            self._enqueue(msg)
        except Exception:
            pass

    def healthy(self, key) -> None:
        self._enqueue({"i": self.instance, "c": "ok", "p": key[0], "m": key[1]})

    def cleared(self, provider, model) -> None:
        self._enqueue({"i": self.instance, "c": "clear", "p": provider, "m": model})

    def _enqueue(self, msg: dict) -> None:
        self._out.append(msg)
        if self._wake is not None and self.up:
            self._wake.set()

    async def _publisher(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._drain()

    async def _drain(self) -> None:
        """Send the queued changes: PUBLISH each, and record it in the hash."""
        out = self._out
        while out:
            batch = [out.popleft() for _ in range(min(BATCH_MAX, len(out)))]
            now = time.time()
            pipe = self._r.pipeline(transaction=False)
            sent = 0
            for m in batch:
                kind, data = m["c"], orjson.dumps(m)
                if kind == "fail":
                    if m["until"] <= now:
                        continue     # lapsed while queued
                    pipe.hset(self._hash, _field(m["p"], m["m"]), data)
                elif kind == "ok":
                    pipe.hdel(self._hash, _field(m["p"], m["m"]))
                else:
                    p, mo = m["p"], m["m"]
                    mode = "all" if p is None else ("provider" if mo is None else "one")
                    await self._clear(keys=[self._hash], args=[mode, p or "", mo or ""], client=pipe)
                pipe.publish(self._channel, data)
                sent += 1
            if not sent:
                continue
            try:
                await pipe.execute()
            except BaseException:
                out.extendleft(reversed(batch))   # keep them for the next link
                raise
            self.published += sent

    # ---- cooldowns in --------------------------------------------------------------------------

    async def _reader(self) -> None:
        ps, loop = self._ps, self._loop
        heard = pinged = loop.time()
        while True:
            msg = await ps.get_message(ignore_subscribe_messages=True, timeout=PING_EVERY)
            now = loop.time()
            if msg is not None:
                heard = now
                if msg.get("type") == "message":
                    self._on_message(msg["data"])
            if now - pinged >= PING_EVERY:
                pinged = now
                await ps.ping(b"plexus")
            if now - heard > SILENT_AFTER:
                raise ConnectionError(f"pub/sub silent for {now - heard:.1f} s")

    def _on_message(self, data: bytes) -> None:
        try:
            msg = orjson.loads(data)
            if msg.get("i") == self.instance:
                return
            cd = self._cooldowns()
            if cd is None:
                return
            if apply_message(cd, msg, self._loop.time() - time.time()):
                self.received += 1
        except Exception:
            self.errors += 1
            log.warning("state: a cooldown message from redis could not be applied", exc_info=True)

    def _load(self, values) -> None:
        """The cooldowns in force (the hash, pruned): applied where they end later than ours."""
        cd = self._cooldowns()
        if cd is None:
            return
        shift = self._loop.time() - time.time()
        for raw in values or ():
            try:
                m = orjson.loads(raw)
                key = (m["p"], m["m"])
                until = m["until"] + shift
                if cd.until(key) < until:
                    cd.apply(key, until, m["n"], m["s"], m["st"], m["at"] + shift)
            except Exception:
                self.errors += 1

    async def _heartbeat(self) -> None:
        """PING the command link every second (a hung Redis shows as a timeout); prune the hash."""
        pruned = self._loop.time()
        while True:
            await asyncio.sleep(PING_EVERY)
            await self._r.ping()
            if self._loop.time() - pruned >= PRUNE_EVERY:
                pruned = self._loop.time()
                await self._prune(keys=[self._hash], args=[time.time()])

    # ---- rate limits (the lease source of RateLimits) --------------------------------------------

    def _rl(self, key: str, window: int, kind: str) -> str:
        return f"{self.prefix}:rl:{key}:{window}:{kind}"

    def ask(self, a) -> None:
        """RateLimits wants permits: asked in the background, answered with granted/lease_failed."""
        t = self._loop.create_task(self._lease(a))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _lease(self, a) -> None:
        limits = self._limits
        gen = self._gen
        try:
            res = await asyncio.wait_for(
                self._grant(keys=[self._rl(a.key, a.window, "r"), self._rl(a.key, a.window, "t")],
                            args=[a.n, a.rpm, a.pre, COUNTER_TTL]), TIMEOUT + 0.5)
        except asyncio.CancelledError:
            limits.lease_failed(a)
            raise
        except Exception as e:
            limits.lease_failed(a)
            if self.up and gen == self._gen:
                self._lost(e)
            return
        limits.granted(a, int(res[0]), int(res[1]), int(res[2]))

    async def _flusher(self) -> None:
        limits = self._limits
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            if limits is None:
                continue
            items = limits.take_unsent()
            if not items:
                continue
            pipe = self._r.pipeline(transaction=False)
            for key, window, n in items:
                k = self._rl(key, window, "t")
                pipe.incrby(k, n)
                pipe.expire(k, COUNTER_TTL)
            try:
                res = await pipe.execute()
            except BaseException:
                for key, window, n in items:
                    limits.tokens_failed(key, window, n)
                raise
            for i, (key, window, n) in enumerate(items):
                limits.tokens_sent(key, window, n, int(res[2 * i]))
