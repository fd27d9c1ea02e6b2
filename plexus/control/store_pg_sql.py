"""PostgreSQL usage store, the SQL side: column types, the COPY that writes a batch, the split
that finds the rows PostgreSQL refuses, the connection string (store_pg.py is the store).

A batch is written by a binary COPY into the writer session's temp table, then one
`INSERT ... SELECT ... ON CONFLICT ("id") DO NOTHING` (a replayed batch is harmless). A batch with
a row PostgreSQL refuses (a value it cannot take) is retried with its values coerced the way
SQLite would store them, then COPYed in halves in savepoints down to the single bad rows, which
are dropped and counted; the rest commit.
"""

from __future__ import annotations

import psycopg
from psycopg import conninfo as _ci

from .usage import FIELDS, SQL_TYPES

TABLE = "plexus_usage"
STAGE = "plexus_usage_stage"  # the writer session's temp table
CONNECT_TIMEOUT = 3  # seconds
KEEPALIVE = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
             "tcp_user_timeout": 30_000}

COLUMNS = ", ".join(f'"{f}"' for f in FIELDS)
_BOOLS = ("stream", "passthrough")
_PG = {"TEXT PRIMARY KEY": "text", "TEXT": "text", "REAL": "float8", "INTEGER": "int8"}
PG_TYPES = tuple("bool" if f in _BOOLS else _PG[t] for f, t in zip(FIELDS, SQL_TYPES))
_INT_COLS = tuple(i for i, t in enumerate(PG_TYPES) if t == "int8")
_TEXT_COLS = tuple(i for i, t in enumerate(PG_TYPES) if t == "text")
_COPY = f"COPY {STAGE} ({COLUMNS}) FROM STDIN (FORMAT BINARY)"
_MERGE = f'INSERT INTO {TABLE} ({COLUMNS}) SELECT {COLUMNS} FROM {STAGE} ON CONFLICT ("id") DO NOTHING'


def conninfo(params: dict, timeout_ms: int) -> str:
    """The connection string: the URL's parameters, our timeouts and keepalives (the URL's own
    `options` are kept, ours appended)."""
    kw = {**KEEPALIVE, "application_name": "plexus-usage", **params}
    kw.setdefault("connect_timeout", CONNECT_TIMEOUT)
    kw["options"] = f"{params.get('options') or ''} -c statement_timeout={timeout_ms}".strip()
    return _ci.make_conninfo("", **kw)


def repeatable_read(conn: psycopg.Connection) -> None:
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ


def row_error(e: BaseException) -> bool:
    """An error caused by one row's values (drop the row), not by the database or connection."""
    if isinstance(e, (TypeError, ValueError, OverflowError)):
        return True
    if isinstance(e, psycopg.Error):
        state = e.sqlstate
        if state is None:
            return isinstance(e, (psycopg.DataError, psycopg.ProgrammingError))
        return state[:2] in ("22", "23")
    return False


def copy_rows(conn: psycopg.Connection, rows: list) -> None:
    with conn.cursor() as cur, cur.copy(_COPY) as cp:
        cp.set_types(PG_TYPES)
        write = cp.write_row
        for row in rows:
            write(row)


def insert(conn: psycopg.Connection, rows: list) -> list[Exception]:
    """Commit rows in one transaction; rows PostgreSQL refuses are left out. Returns the refusals."""
    try:
        with conn.transaction():
            copy_rows(conn, rows)
            conn.execute(_MERGE)
        return []
    except Exception as e:
        if not row_error(e) or conn.broken:
            raise
    refused: list[Exception] = []
    with conn.transaction():
        copy_checked(conn, [coerce(r) for r in rows], refused)
        conn.execute(_MERGE)
    return refused


def copy_checked(conn: psycopg.Connection, rows: list, refused: list) -> None:
    """COPY rows in a savepoint; on a row error, each half in its own, down to single rows."""
    try:
        with conn.transaction():
            copy_rows(conn, rows)
    except Exception as e:
        if not row_error(e) or conn.broken:
            raise
        if len(rows) == 1:
            refused.append(e)
            return
        mid = len(rows) // 2
        copy_checked(conn, rows[:mid], refused)
        copy_checked(conn, rows[mid:], refused)


def coerce(row) -> list:
    """The row as SQLite would store it: integral floats in integer columns as integers, numbers
    in text columns as text."""
    row = list(row)
    for i in _INT_COLS:
        v = row[i]
        if v.__class__ is float and v.is_integer():
            row[i] = int(v)
    for i in _TEXT_COLS:
        v = row[i]
        if v.__class__ in (int, float):
            row[i] = str(v)
    return row


def delete_before(conn: psycopg.Connection, before: float) -> int:
    return conn.execute(f'DELETE FROM {TABLE} WHERE "time" < %s', (before,)).rowcount
