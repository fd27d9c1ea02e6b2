"""Schema migrations, versioned in the package: `<backend>/NNNN_name.sql`, applied in version order.

Theory: the database records what it has in `plexus_schema_migrations(version, name, applied_at)`.
`apply()` runs every file whose version is not recorded, each in its own transaction together
with its row in that table, so a migration is either wholly applied and recorded or not at all.
Every transaction first takes `pg_advisory_xact_lock(LOCK_ID)` and only then reads what is
applied: several instances starting at once queue on the lock, and each one after the first
finds the work done. A file never changes once released; a schema change is a new file (and
`usage.FIELDS` must match the migrated table: tests/test_store_pg.py checks it).

Used by plexus/control/store_pg.py (in its writer thread on the first connection, and by the
first read, never on the event loop). The package data must ship the .sql files.
"""

from __future__ import annotations

import re
from importlib import resources

LOCK_ID = 0x706C6578  # "plex": the advisory lock key every Plexus instance migrates under

_NAME = re.compile(r"^(\d{4})_(\w+)\.sql$")

_TABLE = """CREATE TABLE IF NOT EXISTS plexus_schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())"""


def available(backend: str = "pg") -> list[tuple[int, str, str]]:
    """(version, name, SQL) of the package's migrations for `backend`, by version."""
    out = []
    for entry in resources.files(__name__).joinpath(backend).iterdir():
        m = _NAME.match(entry.name)
        if m:
            out.append((int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    out.sort()
    versions = [v for v, _, _ in out]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {backend}: {versions}")
    return out


def apply(conn, backend: str = "pg") -> list[int]:
    """Apply the missing migrations on a psycopg connection in autocommit mode; return the
    versions this call applied (empty when the schema was already current)."""
    done: list[int] = []
    for version, name, sql in available(backend):
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_ID,))
            conn.execute(_TABLE)
            if conn.execute("SELECT 1 FROM plexus_schema_migrations WHERE version = %s",
                            (version,)).fetchone():
                continue
            conn.execute(sql, prepare=False)  # no parameters: several statements are allowed
            conn.execute("INSERT INTO plexus_schema_migrations (version, name) VALUES (%s, %s)",
                         (version, name))
            done.append(version)
    return done


def applied(conn) -> list[int]:
    """Versions recorded in the database (empty when it was never migrated)."""
    if conn.execute("SELECT to_regclass('plexus_schema_migrations')").fetchone()[0] is None:
        return []
    return [v for (v,) in conn.execute("SELECT version FROM plexus_schema_migrations ORDER BY version")]
