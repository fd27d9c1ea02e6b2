"""The control plane of one running gateway: where finished usage records go, and its lifecycle.

`Plane.record(u)` is the request path's only call into the control plane, once per request,
on the loop, O(1): it appends the record to a queue. Every SETTLE_EVERY seconds the queued
records are settled in a batch (gateway/accounting.py: tokens, cost, times) and go to the
metrics (counter increments), the store's queue (the writer thread persists it in batches), the
live `/events` subscribers (nothing when there are none), the access log's queue (when it is
on: control/access_log.py) and, only while debug capture matches, the debug ring. Nothing here awaits; metrics and events lag a request by at most
SETTLE_EVERY.

`start()` starts the store's writer thread, the state store's link (Redis, when `state_store:`
is set: control/stores.py) and the config file watcher; `close()` stops the watcher, flushes the
store (a clean shutdown loses no record) and closes the link. Settled records also spend the
tokens of their key's `tpm` limit (control/ratelimit.py), here, off the request path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from ..gateway.accounting import settle
from ..server import protocol
from .access_log import AccessLog
from .debug import DebugLog
from .events import EventHub
from .management import Management
from .metrics import Metrics
from .reload import Reloader
from .stores import Fanout, describe_usage, open_state_store, open_usage_store, usage_identity, usage_status

log = logging.getLogger("plexus")

SETTLE_EVERY = 0.05   # seconds a record may wait before it is settled and published
SETTLE_BATCH = 32     # records settled per loop turn at most (~0.15 ms: never a pause clients see)


class Plane:
    def __init__(self, config, gateway=None, access_log: str | None = None, log_level: str | None = None) -> None:
        """``access_log`` / ``log_level``: the command line's choice, which wins over the config's
        `log:` section (then also after a reload); None: the config decides."""
        self.gateway = gateway
        self._access_flag, self._level_flag = access_log, log_level
        self.access = None
        self._logging(config)
        self.store = open_usage_store(config)
        self._store_id = usage_identity(config)
        self.state = open_state_store(config)   # RedisState, or None: cooldowns and limits local
        self.listeners: list = []               # Cooldowns listeners besides Redis (workers' peers)
        self._tasks: set = set()
        self.metrics = Metrics(gauges=self._gauges())
        self.events = EventHub()
        self.debug = DebugLog(config.debug.max_entries)
        self.reloader = None
        self.management = None
        self.peers = None     # control/peers.py, when this process is one of several workers
        self._pending: deque = deque()   # records the request path handed over, not yet settled
        self._timer = None
        self._loop = None

    def _logging(self, config) -> None:
        """Apply the log level and the access log format (flag, else config)."""
        level = self._level_flag or config.log.level
        if level is not None:
            logging.getLogger("plexus").setLevel(getattr(logging, level.upper()))
        fmt = self._access_flag or config.log.access
        old = self.access
        if old is not None and old.format == fmt:
            return
        self.access = AccessLog(fmt) if fmt != "off" else None
        if old is not None:
            old.close()

    def attach(self, gateway, loop) -> None:
        """Bind to the gateway (built after the plane, which it records into)."""
        self.gateway = gateway
        self._loop = loop
        self.reloader = Reloader(gateway, gateway.config.path, loop)
        self.management = Management(gateway, self)

    def add_listener(self, listener) -> None:
        """Tell ``listener`` of every change to the cooldown table (control/peers.py)."""
        self.listeners.append(listener)
        self.attach_listeners()

    def attach_listeners(self) -> None:
        """Point the cooldown table in force (a reload may have made a new one) at the listeners."""
        if self.gateway is None:
            return
        targets = [*self.listeners, *([self.state] if self.state is not None else [])]
        self.gateway.router.cooldowns.listener = (None if not targets else targets[0] if len(targets) == 1
                                                  else Fanout(targets))

    def _gauges(self) -> dict:
        def cooling():
            gw = self.gateway
            if gw is None:
                return {}
            now = asyncio.get_running_loop().time()
            out: dict = {}
            for (provider, model), e in gw.router.cooldowns.entries.items():
                if e.until > now:
                    out[(provider, model)] = 1.0
            return out
        return {
            "plexus_open_connections": ("Client connections open", lambda: float(protocol.OPEN[0])),
            "plexus_active_streams": ("Streamed answers in progress",
                                      lambda: float(self.gateway.streams if self.gateway else 0)),
            "plexus_cooldowns_active": ("Targets cooling down after failures", ("provider", "model"), cooling),
            # what the limits count (server.max_inflight, providers.<name>.max_inflight, keys.<name>.max_inflight)
            "plexus_inflight_requests": ("Inference requests in flight",
                                          lambda: float(self.gateway.inflight if self.gateway else 0)),
            "plexus_provider_inflight_requests": ("Upstream attempts in flight per provider", ("provider",),
                                                   lambda: {(name,): float(rt.inflight) for name, rt in
                                                            (self.gateway.runtime.items() if self.gateway else ())}),
            "plexus_key_inflight_requests": ("Requests in flight per inbound key that has a max_inflight",
                                              ("key",), lambda: {(k,): float(n) for k, n in
                                                                 (self.gateway.key_inflight.items()
                                                                  if self.gateway else ())}),
            # the shared stores (control/stores.py): 0 while degraded
            "plexus_store_up": ("1 when the store works, 0 while degraded (records buffered or spooled; "
                                "cooldowns and rate limits local)", ("store", "backend"), self._stores_up),
            "plexus_usage_buffered_records": ("Usage records held in memory, not yet in the store",
                                              lambda: float((usage_status(self.store) or {}).get("buffered", 0))),
            "plexus_usage_spooled_records": ("Usage records in the local spool file, waiting for the store",
                                             lambda: float((usage_status(self.store) or {}).get("spooled", 0))),
        }

    def _stores_up(self) -> dict:
        out = {}
        u = usage_status(self.store)
        if u is not None:
            out[("usage", u["backend"])] = 1.0 if u["state"] == "ok" else 0.0
        if self.state is not None:
            out[("state", "redis")] = 1.0 if self.state.up else 0.0
        return out

    def record(self, u) -> None:
        """The request path's one call: queue the record (settled within SETTLE_EVERY s)."""
        self._pending.append(u)
        if self._timer is None:
            self._timer = self._loop.call_later(SETTLE_EVERY, self._settle_pending)

    def _settle_pending(self) -> None:
        """Settle queued records (gateway/accounting.py) and hand them on: metrics, the store's
        queue, live /events subscribers, the debug ring. At most SETTLE_BATCH per loop turn, so
        a burst never holds the loop for long."""
        self._timer = None
        pending = self._pending
        observe, publish = self.metrics.observe, self.events.publish
        store = self.store
        add = store.add if store is not None else None
        access = self.access.add if self.access is not None else None
        rate = self.gateway.rate if self.gateway is not None and self.gateway.rate.enabled else None
        wall = time.time() if rate is not None else 0.0   # tokens count in the window they end in
        n = min(len(pending), SETTLE_BATCH)
        for _ in range(n):
            u = pending.popleft()
            try:
                settle(u)
            except Exception:  # a record must never break the loop; it is still counted
                log.exception("usage record %s could not be completed", u.id)
            observe(u)
            if rate is not None and u.key is not None and (u.input_tokens or u.output_tokens):
                rate.spend(u.key, (u.input_tokens or 0) + (u.output_tokens or 0), wall)
            if add is not None:
                add(u)
            publish(u)
            if access is not None:
                access(u)
            if u.capture is not None:
                cap, u.capture = u.capture, None
                cap.finish(u)
        if pending:
            self._timer = self._loop.call_soon(self._settle_pending)

    def flush_pending(self) -> None:
        """Settle every queued record now (shutdown, tests)."""
        if self._timer is not None:
            self._timer.cancel()
        while self._pending:
            self._settle_pending()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def reconfigure(self, config) -> None:
        """A reload changed the config: a changed ``usage:`` section gets a new store (started
        before the old one is flushed and closed in a thread, so no record waits or is lost);
        the `log:` section applies at once (unless the command line set it)."""
        self._logging(config)
        self._reconfigure_state(config)
        self.attach_listeners()
        ident = usage_identity(config)
        if ident == self._store_id:
            return
        old = self.store
        try:
            new = open_usage_store(config)
        except Exception as e:  # (a file that is no database, a directory we cannot create)
            log.error("usage store %s cannot be opened (%s); records keep going to the old one",
                      describe_usage(config), e)
            return
        if new is not None:
            new.start()
        self.store, self._store_id = new, ident
        if old is not None:
            asyncio.get_running_loop().run_in_executor(None, old.close)
        log.info("usage store: %s", describe_usage(config))

    def _reconfigure_state(self, config) -> None:
        """A changed ``state_store:`` URL: close the old link, open and start the new one."""
        old = self.state
        if (old.url if old is not None else "") == config.stores.state_store:
            return
        self.state = open_state_store(config)
        if old is not None:
            self._spawn(old.close())
        if self.state is not None:
            self._start_state()
        elif self.gateway is not None:
            self.gateway.rate.shared = None
        log.info("state store: %s", self.state.status()["url"] if self.state is not None else "this process only")

    def _start_state(self) -> None:
        gw = self.gateway
        self._spawn(self.state.start(self._loop, lambda: gw.router.cooldowns, gw.rate))

    def _spawn(self, coro) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start(self) -> None:
        if self.store is not None:
            self.store.start()
        if self.state is not None:
            self._start_state()
            self.attach_listeners()
        if self.reloader is not None and self.gateway.config.path not in ("", "<config>"):
            self.reloader.start()

    async def close(self) -> None:
        if self.reloader is not None:
            self.reloader.stop()
        self.flush_pending()
        if self.access is not None:
            self.access.close()
        if self.peers is not None:
            self.peers.close()   # the last metrics snapshot
        if self.store is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.store.close)
        if self.state is not None:
            await self.state.close()
