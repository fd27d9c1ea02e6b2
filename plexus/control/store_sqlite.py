"""SqliteStore: the usage store in one SQLite file (WAL), written by one background thread.

Theory (see store.py for the contract):

- `add()` runs on the event loop, O(1), no lock, no I/O (store_queue.py: the queue both stores
  share; at `max_queued` the oldest rows are dropped and counted). Logging happens in the writer,
  never in `add()`.
- The writer thread owns the write connection (WAL, synchronous=NORMAL). It wakes every `interval`
  seconds (or when woken), takes everything queued and commits it with one `executemany` in one
  `BEGIN IMMEDIATE` transaction. `INSERT OR IGNORE` makes a retried batch harmless.
- `flush()` appends a marker (a threading.Event) to the same queue; the writer sets it once every
  row taken before it is committed. Queue order is therefore the only bookkeeping: `add()` keeps
  no counter. Dropping under overflow never drops a marker.
- Errors: a locked, busy, full or broken database (sqlite3 errors other than the per-row ones) keeps
  the batch for the next cycle, bounded by `max_queued`; a row sqlite refuses (a value it cannot
  bind) is dropped alone and counted. Writer warnings go to logger "plexus", at most one a minute
  (the others are counted in the next one).
- Retention: rows older than `retention_days` are deleted by the writer on start and about once an
  hour (0 keeps everything). `purge()` does the same on demand from any thread.
- Reads open their own short-lived connection per call (query_only, one read transaction so the
  count and the page agree), so executor threads read concurrently with the writer.
- Schema: the table is created from `FIELDS`/`SQL_TYPES`; columns added to `FIELDS` later are added
  to an existing table with ALTER TABLE ADD COLUMN when the store opens.

Several processes may share one file: each has its own writer, and SQLite's locks (with a busy
timeout) serialise them.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time

from . import store
from .store import PERCENTILE_FIELDS, PERCENTILES, SUMMED
from .store_queue import RowQueue
from .usage import FIELDS, SQL_TYPES, from_row

log = logging.getLogger("plexus")

RETENTION_EVERY = 3600.0  # seconds between retention purges
LOG_EVERY = 60.0  # at most one writer warning per this many seconds (the others are counted)
BUSY_TIMEOUT = 5.0  # seconds a connection waits for another's write lock
WRITER_NICE = 5  # the writer thread's nice value above the process's (a lower CPU priority)

_COLUMNS = ", ".join(f'"{f}"' for f in FIELDS)
_INSERT = f"INSERT OR IGNORE INTO usage ({_COLUMNS}) VALUES ({', '.join('?' * len(FIELDS))})"
# Only `time` is indexed: every query is bounded by a time range and each extra index costs the
# writer ~0.5 us per row (alias, provider, key: 7.2 -> 5.7 us per row measured); the other
# filters scan the rows of the range.
_INDEXED = ("time",)
_MULTI = 200  # rows per INSERT statement (200 x 29 values: under SQLite's 32766 parameters)
_INSERT_MULTI = (f"INSERT OR IGNORE INTO usage ({_COLUMNS}) VALUES "
                 + ", ".join(["(" + ", ".join("?" * len(FIELDS)) + ")"] * _MULTI))
# errors caused by one row's values, not by the database: drop the row, keep the batch
_ROW_ERRORS = (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError,
               sqlite3.DataError, OverflowError, TypeError, ValueError)


class SqliteStore(RowQueue):
    """Usage records in the SQLite file at `path` (its directory is created if missing)."""

    def __init__(self, path: str | os.PathLike, retention_days: float = 30.0, *,
                 max_queued: int = 100_000, interval: float = 0.2) -> None:
        path = os.fspath(path)
        if not path or path == ":memory:":
            raise ValueError(f"usage store needs a file path, got {path!r}")
        if retention_days < 0:
            raise ValueError(f"retention_days must be >= 0, got {retention_days!r}")
        self.path = path
        self.retention_days = retention_days
        self._interval = interval
        self._init_queue(max_queued)
        self._stopping = False  # the writer exits after its next cycle
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # start/close
        self._next_purge = 0.0
        self._next_log = 0.0
        self._suppressed = 0  # warnings not logged since the last one
        self._logged_dropped = 0
        # loss counters, one per thread so neither needs a lock (add()'s: _dropped_queue)
        self._dropped_writer = 0  # writer: refused rows, or its retry buffer full
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._create_schema()

    @property
    def dropped(self) -> int:
        return self._dropped_queue + self._dropped_writer

    # -- the event-loop side --------------------------------------------------------------------

    # -- lifecycle (start, flush: store_queue.RowQueue) ----------------------------------------

    def close(self, timeout: float = 10) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        deadline = time.monotonic() + timeout
        thread = self._thread
        if thread is None and not self._queue:
            return
        if not self.flush(timeout):
            log.warning("usage store: flush at close timed out after %.1fs", timeout)
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("usage store: writer still busy at close; %d records may be lost",
                            len(self._queue) + len(self._pending))

    # -- the writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        _lower_priority()
        conn = None
        try:
            while True:
                self._wake.wait(self._interval)
                self._wake.clear()
                stopping = self._stopping
                try:
                    if conn is None:
                        conn = self._connect(write=True)
                    self._take()
                    self._write(conn)
                    self._retention(conn)
                except Exception as e:  # opening failed, or a bug: keep the rows, try again
                    self._warn("usage store: writer error (will retry): %r", e)
                self._warn_dropped()
                if stopping:
                    break
        finally:
            lost = len(self._pending) + sum(1 for item in list(self._queue) if item.__class__ is tuple)
            if lost:
                log.error("usage store: %d usage records not written at close", lost)
            if conn is not None:
                try:
                    conn.execute("PRAGMA optimize")
                except sqlite3.Error:
                    pass
                conn.close()

    def _write(self, conn: sqlite3.Connection) -> None:
        """Commit _pending in one transaction; on a database error keep it (bounded) for next time."""
        rows = self._pending
        if rows:
            try:
                refused = _insert(conn, rows)
            except sqlite3.Error as e:
                excess = len(rows) - self._max_queued
                if excess > 0:
                    del rows[:excess]
                    self._dropped_writer += excess
                self._warn("usage store: writing %d records failed (will retry): %s", len(rows), e)
                return
            rows.clear()
            if refused:
                self._dropped_writer += len(refused)
                self._warn("usage store: dropped %d records sqlite refused: %s", len(refused), refused[0])
        for m in self._markers:
            m.set()
        self._markers.clear()

    def _retention(self, conn: sqlite3.Connection) -> None:
        now = time.monotonic()
        if not self.retention_days or now < self._next_purge:
            return
        self._next_purge = now + LOG_EVERY  # a failed purge is retried in a minute, not next cycle
        n = _delete_before(conn, time.time() - self.retention_days * 86400.0)
        self._next_purge = now + RETENTION_EVERY
        if n:
            log.info("usage store: retention removed %d records older than %g days", n, self.retention_days)

    def _warn(self, msg: str, *args: object) -> None:
        """log.warning, at most once per LOG_EVERY seconds; the rest are counted and reported."""
        now = time.monotonic()
        if now < self._next_log:
            self._suppressed += 1
            return
        if self._suppressed:
            msg += f" ({self._suppressed} similar warnings suppressed)"
            self._suppressed = 0
        self._next_log = now + LOG_EVERY
        log.warning(msg, *args)

    def _warn_dropped(self) -> None:
        dropped = self.dropped
        if dropped != self._logged_dropped and time.monotonic() >= self._next_log:
            self._warn("usage store: %d usage records dropped so far (writer behind or refused)", dropped)
            self._logged_dropped = dropped

    # -- connections and schema -----------------------------------------------------------------

    def _connect(self, write: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous=NORMAL" if write else "PRAGMA query_only=ON")
        except BaseException:
            conn.close()
            raise
        return conn

    def _create_schema(self) -> None:
        conn = self._connect(write=True)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("BEGIN IMMEDIATE")  # atomic against another process doing the same
            cols = ", ".join(f'"{f}" {t}' for f, t in zip(FIELDS, SQL_TYPES))
            conn.execute(f"CREATE TABLE IF NOT EXISTS usage ({cols})")
            have = {r[1] for r in conn.execute("PRAGMA table_info(usage)")}
            for f, t in zip(FIELDS, SQL_TYPES):
                if f not in have:
                    conn.execute(f'ALTER TABLE usage ADD COLUMN "{f}" {t}')
            for f in _INDEXED:
                conn.execute(f'CREATE INDEX IF NOT EXISTS usage_{f} ON usage ("{f}")')
            conn.execute("COMMIT")
        finally:
            conn.close()

    # -- reads and purge (any thread; blocking) -------------------------------------------------

    def query(self, filters: dict, limit: int = 100, offset: int = 0) -> tuple[list[dict], int]:
        store.check_page(limit, offset)
        where, params = store.where(filters)
        conn = self._connect(write=False)
        try:
            conn.execute("BEGIN")
            (total,) = conn.execute(f"SELECT COUNT(*) FROM usage{where}", params).fetchone()
            cur = conn.execute(f'SELECT {_COLUMNS} FROM usage{where} ORDER BY "time" DESC, "id" DESC '
                               "LIMIT ? OFFSET ?", (*params, limit, offset))
            rows = [from_row(r) for r in cur]
        finally:
            conn.close()
        return rows, total

    def summary(self, group_by: str, filters: dict) -> list[dict]:
        store.check_group_by(group_by)
        where, params = store.where(filters)
        g = store.group_expr(group_by)
        sums = ", ".join(f'SUM("{f}")' for f in SUMMED)
        conn = self._connect(write=False)
        try:
            conn.execute("BEGIN")
            groups = {}
            for value, requests, errors, *rest in conn.execute(
                    f"SELECT {g}, COUNT(*), SUM(\"status\" IS NOT 'success'), {sums}, "
                    f'AVG("tokens_per_second") FROM usage{where} GROUP BY {g} ORDER BY COUNT(*) DESC, {g}',
                    params):
                d = store.empty_summary(group_by, value, requests, errors)
                d.update(zip(SUMMED, rest))
                d["tokens_per_second"] = rest[-1]
                groups[value] = d
            for f in PERCENTILE_FIELDS:
                for value, n, rank, v in conn.execute(store.percentile_sql("usage", g, f, where), params):
                    for p in PERCENTILES:
                        if rank == store.nearest_rank(p, n):
                            groups[value][f"{f}_p{p}"] = v
        finally:
            conn.close()
        return list(groups.values())

    def purge(self, before: float) -> int:
        conn = self._connect(write=True)
        try:
            return _delete_before(conn, before)
        finally:
            conn.close()


def _lower_priority() -> None:
    """Give the writer thread a lower CPU priority than the event loop (Linux: a thread has its
    own nice value). Where both share a core, the loop's requests then run first and the writer
    takes the time they leave, instead of time slices of its batches (milliseconds of SQLite
    work) showing up in the requests' latency. It still gets a fair share, so it keeps up."""
    if not hasattr(os, "setpriority") or not hasattr(threading, "get_native_id"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + WRITER_NICE))
    except OSError:
        pass


def _insert(conn: sqlite3.Connection, rows: list[tuple]) -> list[Exception]:
    """Insert rows in one transaction; a row sqlite refuses is skipped. Returns the refusals."""
    refused: list[Exception] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        try:
            # Many rows per statement: the sqlite3 module lets go of the GIL around each step,
            # and every time this thread wants it back while the event loop runs, the loop may
            # lose it for up to the switch interval (5 ms): one step per _MULTI rows, not per row.
            full = len(rows) - len(rows) % _MULTI
            for i in range(0, full, _MULTI):
                conn.execute(_INSERT_MULTI, [v for row in rows[i:i + _MULTI] for v in row])
            if full < len(rows):
                conn.executemany(_INSERT, rows[full:])
        except _ROW_ERRORS:  # find the bad rows; the good ones already in are ignored (OR IGNORE)
            for row in rows:
                try:
                    conn.execute(_INSERT, row)
                except _ROW_ERRORS as e:
                    refused.append(e)
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return refused


def _delete_before(conn: sqlite3.Connection, before: float) -> int:
    conn.execute("BEGIN IMMEDIATE")
    try:
        n = conn.execute('DELETE FROM usage WHERE "time" < ?', (before,)).rowcount
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return n


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
