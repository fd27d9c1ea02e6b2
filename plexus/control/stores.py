"""Opening the stores a config names, and what /health and /metrics say of them.

- The usage store: the SQLite file of ``usage.path`` (store_sqlite.py), or PostgreSQL when
  ``usage_store:`` is set (store_pg.py). A PostgreSQL store that cannot reach its server still
  opens: it buffers, then spools, and replays when the server is back (store_pg.py).
- The state store: with ``state_store:`` a RedisState (state_redis.py) that shares cooldowns and
  the keys' rate limits with every other instance; without it both stay in this process.
- Spool files: every PostgreSQL store needs a spool file of its own (spool.py locks it), also
  several instances on one host that share one config (and so one ``usage.spool_path``), the
  workers of each, and the new store of a reload while the old one still flushes. The store
  takes the first of ``<spool_path>``, ``<spool_path>.1``, ``.2``... that no other store holds,
  so a restarted process takes over (and replays) what an earlier one left in the lowest free
  slot.
- ``Fanout``: the Cooldowns table has one listener; with workers and Redis both listening, the
  table's listener is a Fanout of the two.
"""

from __future__ import annotations

import logging

import orjson

from ..config_stores import masked_url

log = logging.getLogger("plexus")

SPOOL_SLOTS = 256

def open_usage_store(config):
    """The usage store the config asks for (not started), or None when usage is off."""
    u = config.usage
    if not u.enabled:
        return None
    url = config.stores.usage_store
    if url:
        from .spool import SpoolInUse
        from .store_pg import PostgresStore
        for n in range(SPOOL_SLOTS):   # the first spool path no other store holds (see above)
            try:
                return PostgresStore(url, u.retention_days, spool_path=u.spool_path if n == 0 else f"{u.spool_path}.{n}",
                                     buffer_records=u.buffer_records)
            except SpoolInUse:
                continue
        raise OSError(f"no free spool file next to {u.spool_path} ({SPOOL_SLOTS} are in use)")
    from .store_sqlite import SqliteStore
    return SqliteStore(u.path, u.retention_days)


def usage_identity(config) -> tuple:
    """What decides whether a reload needs a new usage store."""
    u = config.usage
    if not u.enabled:
        return ()
    if config.stores.usage_store:
        return ("pg", config.stores.usage_store, u.retention_days, u.buffer_records, u.spool_path)
    return ("sqlite", u.path, u.retention_days)


def describe_usage(config) -> str:
    u = config.usage
    if not u.enabled:
        return "disabled"
    where = masked_url(config.stores.usage_store) if config.stores.usage_store else u.path
    return f"{where} (retention {u.retention_days:g} days)"


def open_state_store(config):
    """A RedisState for ``state_store:`` (not started), or None."""
    url = config.stores.state_store
    if not url:
        return None
    from .state_redis import RedisState
    return RedisState(url)


def usage_status(store) -> dict | None:
    """The usage store's state for /health and /metrics (SQLite: always ok while it opens)."""
    if store is None:
        return None
    status = getattr(store, "status", None)
    if status is not None:
        return status()
    return {"backend": "sqlite", "state": "ok", "dropped": store.dropped}


def health(plane) -> tuple[bool, dict]:
    """(every store ok, {"usage_store": status, "state_store": status}) for GET /health."""
    out = {}
    u = usage_status(plane.store)
    if u is not None:
        out["usage_store"] = u
    if plane.state is not None:
        out["state_store"] = plane.state.status()
    return all(s.get("state") == "ok" for s in out.values()), out


_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]
_JSON = [(b"content-type", b"application/json")]


def health_answer(plane, query: bytes) -> tuple[list, bytes]:
    """GET /health: 200 either way (a degraded store does not stop this instance serving, so a
    load balancer must not take it out): ``OK``, or ``DEGRADED`` and a line per store;
    ``?format=json``: {"status": "ok"|"degraded", "usage_store": {...}, "state_store": {...}}."""
    ok, detail = health(plane) if plane is not None else (True, {})
    if b"format=json" in query:
        return _JSON, orjson.dumps({"status": "ok" if ok else "degraded", **detail})
    if ok:
        return _TEXT, b"OK"
    lines = ["DEGRADED"]
    for name, s in detail.items():
        extra = ", ".join(f"{k} {s[k]}" for k in ("buffered", "spooled", "dropped") if s.get(k))
        err = f": {s['last_error']}" if s.get("last_error") else ""
        lines.append(f"{name}: {s['backend']} {s['state']}{err}{f' ({extra})' if extra else ''}")
    return _TEXT, "\n".join(lines).encode()


class Fanout:
    """Several Cooldowns listeners as one (workers' peers and Redis)."""

    __slots__ = ("targets",)

    def __init__(self, targets) -> None:
        self.targets = tuple(targets)

    def cooled(self, key, e, now: float) -> None:
        for t in self.targets:
            t.cooled(key, e, now)

    def healthy(self, key) -> None:
        for t in self.targets:
            t.healthy(key)

    def cleared(self, provider, model) -> None:
        for t in self.targets:
            t.cleared(provider, model)
