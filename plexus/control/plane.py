"""The control plane of one running gateway: where finished usage records go, and its lifecycle.

`Plane.record(u, capture)` is the request path's only call into the control plane, once per
request, on the loop, O(1): the record goes to the metrics (counter increments), the store's
queue (the writer thread persists it in batches), the live `/events` subscribers (nothing when
there are none) and, only while debug capture matches, the debug ring. Nothing here awaits.

`start()` starts the store's writer thread and the config file watcher; `close()` stops the
watcher and flushes the store (a clean shutdown loses no record).
"""

from __future__ import annotations

import asyncio
import logging

from ..server import protocol
from .debug import DebugLog
from .events import EventHub
from .management import Management
from .metrics import Metrics
from .reload import Reloader

log = logging.getLogger("plexus")


class Plane:
    def __init__(self, config, gateway=None) -> None:
        self.gateway = gateway
        self.store = None
        if config.usage.enabled:
            from .store_sqlite import SqliteStore
            self.store = SqliteStore(config.usage.path, config.usage.retention_days)
        self.metrics = Metrics(gauges=self._gauges())
        self.events = EventHub()
        self.debug = DebugLog(config.debug.max_entries)
        self.reloader = None
        self.management = None

    def attach(self, gateway, loop) -> None:
        """Bind to the gateway (built after the plane, which it records into)."""
        self.gateway = gateway
        self.reloader = Reloader(gateway, gateway.config.path, loop)
        self.management = Management(gateway, self)

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
        }

    def record(self, u, capture=None) -> None:
        self.metrics.observe(u)
        if self.store is not None:
            self.store.add(u)
        self.events.publish(u)
        if capture is not None:
            capture.finish(u)

    def reconfigure(self, config) -> None:
        """A reload changed the config: a changed ``usage:`` section gets a new store (started
        before the old one is flushed and closed in a thread, so no record waits or is lost)."""
        u = config.usage
        old = self.store
        if old is None and not u.enabled:
            return
        if old is not None and u.enabled and old.path == u.path and old.retention_days == u.retention_days:
            return
        new = None
        if u.enabled:
            from .store_sqlite import SqliteStore
            try:
                new = SqliteStore(u.path, u.retention_days)
            except Exception as e:  # (a file that is no database, a directory we cannot create)
                log.error("usage store %s cannot be opened (%s); records keep going to the old one", u.path, e)
                return
            new.start()
        self.store = new
        if old is not None:
            asyncio.get_running_loop().run_in_executor(None, old.close)
        log.info("usage store: %s", f"{u.path} (retention {u.retention_days:g} days)" if new else "disabled")

    def start(self) -> None:
        if self.store is not None:
            self.store.start()
        if self.reloader is not None and self.gateway.config.path not in ("", "<config>"):
            self.reloader.start()

    async def close(self) -> None:
        if self.reloader is not None:
            self.reloader.stop()
        if self.store is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.store.close)
