"""Config, shared-state part: where many Plexus instances keep what they share.

    usage_store: postgresql://plexus:${PGPASSWORD}@db.internal:5432/plexus
                 usage records in PostgreSQL (control/store_pg.py) instead of the SQLite file of
                 ``usage.path``; while it is unreachable, records wait in memory
                 (``usage.buffer_records``), then in ``usage.spool_path``, and are replayed.
    state_store: redis://:${REDIS_PASSWORD}@cache.internal:6379/0   (also rediss://, unix://)
                 cooldowns and the keys' rpm/tpm limits shared through Redis
                 (control/state_redis.py) instead of kept in this process alone.

Both are URLs whose ``${VAR}`` references are substituted like every other value; a password
with URL-special characters must be percent-encoded.  Only the URL's ``user:password`` is a
secret (GET /config masks it, logs and /health show the URL masked by ``masked_url``).  The
Python drivers (psycopg 3, redis-py) come with ``pip install 'plexus[shared]'``; a configured
store whose driver is missing is a config error, not a failure at the first request.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .config_reader import Reader

__all__ = ["StoreSettings", "masked_url", "parse_stores"]

_USAGE_SCHEMES = ("postgresql", "postgres")
_STATE_SCHEMES = ("redis", "rediss", "unix")
_DRIVERS = {"usage_store": ("psycopg", "psycopg_pool"), "state_store": ("redis",)}
_USERINFO = re.compile(r"\A([A-Za-z][A-Za-z0-9+.\-]*://)([^@/]*)@")
_PASSWORD_KV = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)")


@dataclass(frozen=True, slots=True)
class StoreSettings:
    usage_store: str = field(default="", repr=False)   # "" = the SQLite file (usage.path)
    state_store: str = field(default="", repr=False)   # "" = cooldowns and limits in this process


def masked_url(url: str) -> str:
    """The URL with its password shown as ****  (``user:****@``; a lone ``user@`` has none); also
    a libpq ``password=`` (a query parameter, or a key=value conninfo string)."""
    m = _USERINFO.match(url)
    if m is not None and ":" in m.group(2):
        url = m.group(1) + m.group(2).partition(":")[0] + ":****" + url[m.end(2):]
    return _PASSWORD_KV.sub(r"\1****", url)


def _url(r: Reader, raw: object, path: str, schemes: tuple[str, ...], example: str) -> str:
    if raw is None:
        return ""
    url = r.string(raw, path).strip()
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as e:
        r.fail(path, f"is not a valid URL ({e}), e.g. {example}")
    if parts.scheme not in schemes:
        r.fail(path, f"must be a {'/'.join(s + '://' for s in schemes)} URL, e.g. {example}; got "
                     f"{masked_url(url)!r}")
    if parts.scheme != "unix" and not parts.hostname:
        r.fail(path, f"names no host: {masked_url(url)!r} (e.g. {example})")
    missing = [m for m in _DRIVERS[path] if importlib.util.find_spec(m) is None]
    if missing:
        r.fail(path, f"needs the Python package(s) {', '.join(missing)}: pip install 'plexus[shared]'")
    return url


def parse_stores(r: Reader, top: dict) -> StoreSettings:
    usage = _url(r, top.get("usage_store"), "usage_store", _USAGE_SCHEMES,
                 "postgresql://plexus:${PGPASSWORD}@db:5432/plexus")
    state = _url(r, top.get("state_store"), "state_store", _STATE_SCHEMES, "redis://cache:6379/0")
    return StoreSettings(usage_store=usage, state_store=state)
