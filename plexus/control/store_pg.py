"""PostgresStore: the usage store in PostgreSQL, shared by many Plexus instances, written by one
background thread per store, with a local spool file while PostgreSQL is unreachable.

Theory (see store.py for the contract; the shape mirrors store_sqlite.py):

- `add()` runs on the event loop and costs what SqliteStore.add costs (closed check, `len()`,
  `store.row_of`, `deque.append`; no lock, I/O or log). A queue of `WAKE_AT` rows wakes the
  writer; one of `max_queued` (a writer stuck for seconds) drops the oldest, counted.
- The writer thread owns the write connection (autocommit; it opens its own transactions). Each
  cycle (`interval`, or woken) it takes everything queued and commits it in one transaction:
  a binary COPY into a session temp table (ON COMMIT DELETE ROWS), then
  `INSERT ... SELECT ... ON CONFLICT ("id") DO NOTHING`, so a retried or replayed batch is
  harmless. Measured writer CPU per row (tests/pg_server.py, PG 15, 5000-row batches, 29
  columns): multi-row INSERT with 100-500 rows x 29 parameters ~80 us, executemany (pipeline)
  ~12-14 us, text COPY ~2.1 us, binary COPY ~0.8 us (~4 us at 200-row batches; ~15 us at 20-row
  batches, where the per-transaction round trips dominate, at a rate too low to matter). The
  writer's CPU competes with the event loop through the GIL, hence COPY; its thread also runs
  at a lower priority (store_sqlite._lower_priority).
- A row PostgreSQL (or the COPY encoder) refuses makes the batch take the slow path: integral
  floats in integer columns and numbers in text columns are coerced as SQLite would store them,
  then the rows are copied in savepoint-guarded halves until each refused row is alone; it is
  dropped and counted, the rest commit.
- PostgreSQL unreachable or failing: the store turns `degraded`, the rows stay in memory up to
  `buffer_records`, the older ones beyond are appended to the spool file (spool.py: orjson lines,
  fsynced per batch). Reconnects back off from 0.5 s, doubling to 10 s. Back online, the spool is
  replayed first (oldest first, `REPLAY_ROWS` per cycle; the file is removed once committed),
  then memory. A spool left by an earlier process is replayed the same way. Rows are lost only
  when the spool cannot be written (counted in `dropped`, logged at error).
- `flush()` puts a marker in the queue; the writer sets it once everything before it is
  committed, spool included (so it times out while degraded). `close()` flushes, then the
  writer's last cycle writes what it can and spools the rest before it exits.
- Migrations (migrations/pg/NNNN_*.sql) are applied by the writer thread on its first connection
  (not in __init__, not on the event loop; a read that comes first applies them too), under an
  advisory lock. A constructor never touches the network: PostgreSQL may be down at start.
- Reads (`query`, `summary`, `purge`) are blocking, for an executor: a lazily opened
  psycopg_pool (0-4 connections, 3 s timeout, REPEATABLE READ so a count and its page agree).
  PostgreSQL unreachable: `store.StoreUnavailable`. Results equal SqliteStore's: text columns
  use the "C" collation (SQLite's byte order), group ties order NULL first like SQLite, integer
  sums are cast back from numeric to bigint, percentiles use the same integer nearest rank.
- Passwords never reach a log, status or exception (masked URL, scrubbed error texts).

Why psycopg 3 (not asyncpg): the store contract is a writer thread plus blocking reads in an
executor, as with SQLite; psycopg's sync API fits it without a second event loop, its binary
COPY is cheap per row, and the binary wheel bundles libpq. The temp staging table is per
session: behind pgbouncer use session pooling (transaction pooling would lose it).
"""

from __future__ import annotations

import logging
import os
import threading
import time

import psycopg
from psycopg import conninfo as _ci
from psycopg_pool import ConnectionPool, PoolTimeout

from ..config_stores import masked_url
from . import migrations, store
from .spool import Buffer, Throttle
from .store import PERCENTILE_FIELDS, PERCENTILES, SUMMED, StoreUnavailable
from .store_pg_sql import COLUMNS, PG_TYPES, STAGE, TABLE, conninfo, delete_before, insert, repeatable_read
from .store_queue import RowQueue
from .store_sqlite import _lower_priority
from .usage import FIELDS, from_row

log = logging.getLogger("plexus")

WRITE_TIMEOUT_MS = 30_000  # statement_timeout of the writer's session
READ_TIMEOUT_MS = 60_000  # ... and of the readers'
POOL_TIMEOUT = 3.0  # seconds a read waits for a connection before StoreUnavailable
BACKOFF_MIN, BACKOFF_MAX = 0.5, 10.0  # reconnect delays, doubling
REPLAY_ROWS = 20_000  # spooled rows replayed per writer cycle
REPLAY_BATCH = 5_000  # rows per replay transaction
RETENTION_EVERY = 3600.0
DEGRADED_CLOSE_WAIT = 1.0  # seconds close() waits for a degraded store before spooling the rest
CLOSE_GRACE = 5.0  # seconds close() waits for the writer to spool what it could not commit
LOG_EVERY = 60.0

class PostgresStore(RowQueue):
    """Usage records in the PostgreSQL database at `url`; rows it cannot commit yet are kept in
    memory (`buffer_records`) and beyond that in the spool file at `spool_path`."""

    def __init__(self, url: str, retention_days: float = 30.0, *, spool_path: str | os.PathLike,
                 buffer_records: int = 50_000, interval: float = 0.2, max_queued: int = 100_000,
                 pool_size: int = 4) -> None:
        if retention_days < 0:
            raise ValueError(f"retention_days must be >= 0, got {retention_days!r}")
        if buffer_records < 0 or max_queued < 1:
            raise ValueError("buffer_records must be >= 0 and max_queued >= 1")
        self.url = masked_url(url)  # printable
        try:
            params = _ci.conninfo_to_dict(url)
        except psycopg.Error as e:
            raise ValueError(f"bad PostgreSQL URL {self.url}: {self._scrub(str(e))}") from None
        self._password = str(params.get("password") or "")
        self._write_info = conninfo(params, WRITE_TIMEOUT_MS)
        self._read_info = conninfo(params, READ_TIMEOUT_MS)
        self.retention_days = retention_days
        self._interval = interval
        self._pool_size = pool_size
        self._warn = Throttle(log, LOG_EVERY)
        self._buf = Buffer(spool_path, buffer_records, self._warn)  # takes the spool's lock
        self._spool = self._buf.spool
        self.spool_path = self._buf.path
        self._init_queue(max_queued, self._buf.rows)  # _pending: the buffer's rows (oldest first)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # start/close/pool
        self._pool: ConnectionPool | None = None
        self._migrated = False
        # writer-thread state
        self._conn: psycopg.Connection | None = None
        self._more = False  # the spool has more to replay right away
        self._next_connect = 0.0
        self._backoff = BACKOFF_MIN
        self._next_purge = 0.0
        self._degraded = False
        self._last_error: str | None = None
        self._logged_dropped = 0
        self._dropped_writer = 0  # writer: refused rows, or the spool not writable

    @property
    def dropped(self) -> int:
        return self._dropped_queue + self._dropped_writer + self._buf.dropped

    @property
    def degraded(self) -> bool:
        """True while the last connect or write failed, until one succeeds."""
        return self._degraded

    def status(self) -> dict:
        return {"backend": "postgresql", "state": "degraded" if self._degraded else "ok",
                "buffered": len(self._queue) + len(self._pending), "spooled": self._spool.rows,
                "dropped": self.dropped, "last_error": self._buf.error or self._last_error}

    # -- lifecycle (start, flush: store_queue.RowQueue) ----------------------------------------

    def _unwritten(self) -> bool:
        return bool(self._queue or self._pending or self._spool.rows)

    def close(self, timeout: float = 10) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        deadline = time.monotonic() + timeout
        if self._thread is None and not self._queue:
            self._spool.close()
        else:
            # PostgreSQL down: no use waiting for it; what is not committed at once is spooled
            if not self.flush(min(timeout, DEGRADED_CLOSE_WAIT) if self._degraded else timeout):
                log.warning("usage store: PostgreSQL %s: not everything committed within %.1fs; "
                            "the rest goes to the spool %s", self.url, timeout, self.spool_path)
            self._stopping = True
            self._wake.set()
            thread = self._thread
            thread.join(max(0.0, deadline - time.monotonic()) + CLOSE_GRACE)
            if thread.is_alive():
                log.error("usage store: writer still busy at close; %d records may be lost",
                          len(self._queue) + len(self._pending))
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(timeout=1.0)

    # -- the writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        _lower_priority()
        try:
            found, torn = self._spool.open()
            if found or torn:
                log.warning("usage store: %d records in the spool %s from an earlier run will be "
                            "replayed%s", found, self.spool_path, f" ({torn} torn bytes cut)" if torn else "")
            while True:
                if not self._more:
                    self._wake.wait(self._interval)
                self._wake.clear()
                stopping = self._stopping
                self._take()
                try:
                    self._cycle()
                except Exception as e:  # a bug: keep the rows, try again
                    self._warn(logging.WARNING, "usage store: writer error (will retry): %s", self._scrub(repr(e)))
                self._warn_dropped()
                if stopping:
                    break
        finally:
            self._take()
            if self._pending:
                self._buf.spill(len(self._pending))
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._spool.close()

    def _cycle(self) -> None:
        if self._conn is None and time.monotonic() >= self._next_connect:
            self._connect()
        if self._conn is not None:
            try:
                self._more = self._buf.replay(self._commit, REPLAY_ROWS, REPLAY_BATCH)
                if not self._more and self._pending:
                    self._commit(self._pending)
                    self._pending.clear()
                self._retention()
                self._recovered()
            except Exception as e:
                self._more = False
                self._failed("writing", e)
        self._buf.bound()
        if self._markers and not self._pending and not self._spool.rows:
            for m in self._markers:
                m.set()
            self._markers.clear()

    def _connect(self) -> None:
        conn = None
        try:
            conn = psycopg.connect(self._write_info, autocommit=True)
            self._ensure_schema(conn)
            conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {STAGE} (LIKE {TABLE}) ON COMMIT DELETE ROWS")
        except Exception as e:
            if conn is not None:
                conn.close()
            self._failed("connecting", e)
            return
        self._conn = conn

    def _failed(self, doing: str, e: Exception) -> None:
        """A connect or write failed: degraded; drop the connection; reconnect after a backoff."""
        was = self._degraded
        self._degraded = True
        self._last_error = f"{doing}: {self._scrub(str(e).strip() or repr(e))}"
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        delay = self._backoff if was else 0.0  # the first failure after a success retries at once
        self._backoff = min(BACKOFF_MAX, self._backoff * 2) if was else BACKOFF_MIN
        self._next_connect = time.monotonic() + delay
        args = ("usage store: PostgreSQL %s unavailable (%s); keeping records (memory, then spool %s)",
                self.url, self._last_error, self.spool_path)
        if was:
            self._warn(logging.WARNING, *args)
        else:  # the change to degraded is always logged; repeats at most once a minute
            log.warning(*args)

    def _recovered(self) -> None:
        if self._degraded:
            self._degraded = False
            self._backoff = BACKOFF_MIN
            log.warning("usage store: PostgreSQL %s is back", self.url)

    def _commit(self, rows: list) -> None:
        refused = insert(self._conn, rows)
        if refused:
            self._dropped_writer += len(refused)
            self._warn(logging.WARNING, "usage store: dropped %d records PostgreSQL refused: %s",
                       len(refused), self._scrub(str(refused[0])))

    def _retention(self) -> None:
        now = time.monotonic()
        if not self.retention_days or now < self._next_purge:
            return
        self._next_purge = now + LOG_EVERY  # a failed purge is retried in a minute
        n = delete_before(self._conn, time.time() - self.retention_days * 86400.0)
        self._next_purge = now + RETENTION_EVERY
        if n:
            log.info("usage store: retention removed %d records older than %g days", n, self.retention_days)

    def _warn_dropped(self) -> None:
        dropped = self.dropped
        if dropped != self._logged_dropped:
            self._warn(logging.WARNING, "usage store: %d usage records dropped so far", dropped)
            self._logged_dropped = dropped

    def _scrub(self, text: str) -> str:
        pw = getattr(self, "_password", "")
        return text.replace(pw, "****") if pw else text

    def _ensure_schema(self, conn: psycopg.Connection) -> None:
        """Apply missing migrations (once per store), then check the table has every FIELD."""
        if self._migrated:
            return
        done = migrations.apply(conn)
        if done:
            log.info("usage store: PostgreSQL migrations applied: %s", done)
        have = {r[0] for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
            "AND NOT attisdropped", (TABLE,))}
        missing = [f for f in FIELDS if f not in have]
        if missing:
            raise RuntimeError(f"table {TABLE} lacks columns {missing}: a FIELDS change needs a migration")
        self._migrated = True

    # -- reads and purge (any thread; blocking) -------------------------------------------------

    def _read(self, fn):
        with self._lock:
            pool = self._pool
            if pool is None:
                pool = self._pool = ConnectionPool(
                    self._read_info, min_size=0, max_size=self._pool_size, open=False,
                    timeout=POOL_TIMEOUT, name="plexus-usage-read", kwargs={"autocommit": True},
                    configure=repeatable_read, check=ConnectionPool.check_connection,
                    reconnect_timeout=0)
                pool.open(wait=False)
        try:
            with pool.connection() as conn:
                self._ensure_schema(conn)
                with conn.transaction():
                    return fn(conn)
        except (PoolTimeout, psycopg.OperationalError) as e:
            raise StoreUnavailable(f"usage store PostgreSQL {self.url} unavailable: "
                                   f"{self._scrub(str(e))}") from None

    def query(self, filters: dict, limit: int = 100, offset: int = 0) -> tuple[list[dict], int]:
        store.check_page(limit, offset)
        where, params = store.where(filters, "%s")

        def run(conn):
            (total,) = conn.execute(f"SELECT COUNT(*) FROM {TABLE}{where}", params).fetchone()
            cur = conn.execute(f'SELECT {COLUMNS} FROM {TABLE}{where} ORDER BY "time" DESC, "id" DESC '
                               "LIMIT %s OFFSET %s", (*params, limit, offset))
            return [from_row(r) for r in cur], total
        return self._read(run)

    def summary(self, group_by: str, filters: dict) -> list[dict]:
        store.check_group_by(group_by)
        where, params = store.where(filters, "%s")
        g = store.group_expr(group_by)
        sums = ", ".join(f'SUM("{f}")::bigint' if PG_TYPES[FIELDS.index(f)] == "int8" else f'SUM("{f}")'
                         for f in SUMMED)

        def run(conn):
            groups = {}
            for value, requests, errors, *rest in conn.execute(
                    f"SELECT {g}, COUNT(*), COUNT(*) FILTER (WHERE \"status\" IS DISTINCT FROM 'success'), "
                    f'{sums}, AVG("tokens_per_second") FROM {TABLE}{where} GROUP BY 1 '
                    "ORDER BY 2 DESC, 1 NULLS FIRST", params):
                d = store.empty_summary(group_by, value, requests, errors)
                d.update(zip(SUMMED, rest))
                d["tokens_per_second"] = rest[-1]
                groups[value] = d
            for f in PERCENTILE_FIELDS:
                for value, n, rank, v in conn.execute(store.percentile_sql(TABLE, g, f, where), params):
                    for p in PERCENTILES:
                        if rank == store.nearest_rank(p, n):
                            groups[value][f"{f}_p{p}"] = v
            return list(groups.values())
        return self._read(run)

    def purge(self, before: float) -> int:
        return self._read(lambda conn: conn.execute(
            f'DELETE FROM {TABLE} WHERE "time" < %s', (before,)).rowcount)
