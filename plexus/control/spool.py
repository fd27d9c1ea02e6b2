"""Spool: the local append-only file that keeps usage rows while the database is unreachable,
and Throttle: rate-limited logging for background writers.

Theory: the PostgreSQL store (store_pg.py) holds rows it cannot commit in memory up to a bound;
beyond it, its writer thread appends them here, one line per batch:

    <row count> <orjson array of the rows (each a FIELDS-ordered array)>\\n

Each append is flushed and fsynced before `append()` returns, so an appended row survives a
crash. When the database is back the writer replays the file oldest first: `read()` returns
whole lines from the replay offset without moving it, the writer commits them, then `commit()`
moves the offset. Once everything is replayed the file is removed. A crash mid-replay replays the
file again from its start: the store's INSERT ignores rows already present (ON CONFLICT), so that
is harmless. A file left by an earlier process is found by `open()` and replayed the same way; a
torn last line (a crash inside a write) is cut off there, and a line that does not parse is
dropped at replay and counted.

Only one thread (the store's writer) uses a Spool; `rows` may be read from any thread. Only one
process may use a spool path: an exclusive flock on `<path>.lock` is taken at construction and
held until `close()` (a second user gets RuntimeError, not a corrupted file).
"""

from __future__ import annotations

import fcntl
import logging
import os
import time

import orjson

from .reload import fsync_dir


class Throttle:
    """Log at most once per `every` seconds; the messages in between are counted and the count is
    added to the next one logged. For warnings a background thread may repeat in a loop."""

    def __init__(self, logger: logging.Logger, every: float = 60.0) -> None:
        self.logger = logger
        self.every = every
        self._next = 0.0
        self._suppressed = 0

    def __call__(self, level: int, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return
        if self._suppressed:
            msg += f" ({self._suppressed} similar messages suppressed)"
            self._suppressed = 0
        self._next = now + self.every
        self.logger.log(level, msg, *args)


class SpoolInUse(RuntimeError):
    """Another store (this process's or another's) holds the spool path."""


class Spool:
    """The spool file at `path` (its directory is created; not opened until `open()`)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        if not self.path:
            raise ValueError("spool path must not be empty")
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._lock = open(self.path + ".lock", "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise SpoolInUse(f"spool {self.path} is in use by another usage store; give each "
                             "instance (and each worker process) its own spool path") from None
        self.rows = 0  # rows in the file not yet committed by a replay
        self._w = None  # append handle
        self._r = None  # replay handle
        self._offset = 0  # bytes of the file replayed and committed

    def open(self) -> tuple[int, int]:
        """Count the rows of a file left by an earlier run and cut off a torn last line.
        Returns (rows found, bytes cut off)."""
        self.rows, good, torn = 0, 0, 0
        try:
            with open(self.path, "rb") as f:
                for line in f:
                    if not line.endswith(b"\n"):
                        torn = len(line)
                        break
                    good += len(line)
                    self.rows += _count(line)
        except FileNotFoundError:
            return 0, 0
        if torn:
            os.truncate(self.path, good)
        if not good:
            self._remove()
        return self.rows, torn

    def append(self, rows: list) -> list[tuple[object, Exception]]:
        """Write `rows` as one line, flushed and fsynced. Rows orjson cannot encode are left out
        and returned with their error. OSError when the file cannot be written (nothing of
        this batch is then left in the file)."""
        bad: list[tuple[object, Exception]] = []
        try:
            body = orjson.dumps(rows)
        except (TypeError, orjson.JSONEncodeError):
            parts = []
            for row in rows:
                try:
                    parts.append(orjson.dumps(row))
                except (TypeError, orjson.JSONEncodeError) as e:
                    bad.append((row, e))
            body = b"[" + b",".join(parts) + b"]"
        n = len(rows) - len(bad)
        if not n:
            return bad
        created = self._w is None and not os.path.exists(self.path)
        if self._w is None:
            self._w = open(self.path, "ab")
        f = self._w
        size = f.tell()
        try:
            f.write(b"%d %s\n" % (n, body))
            f.flush()
            os.fsync(f.fileno())
            if created:  # the file's directory entry must survive a crash too
                fsync_dir(os.path.dirname(os.path.abspath(self.path)))
        except OSError:
            try:
                f.truncate(size)
            except (OSError, ValueError):
                pass
            self._close_w()
            raise
        self.rows += n
        return bad

    def read(self, max_rows: int) -> tuple[list, int, int]:
        """Whole lines from the replay offset, at least one, stopping once `max_rows` rows are
        read. Returns (rows, their end offset for `commit`, rows of lines that did not parse).
        The replay offset does not move."""
        if self._r is None:
            self._r = open(self.path, "rb")
        if self._w is not None:
            self._w.flush()
        r = self._r
        r.seek(self._offset)
        rows: list = []
        end, bad = self._offset, 0
        while len(rows) < max_rows:
            line = r.readline()
            if not line.endswith(b"\n"):  # the end of the file
                break
            end += len(line)
            try:
                rows.extend(orjson.loads(line[line.index(b" ") + 1:]))
            except ValueError:  # (orjson.JSONDecodeError is one)
                bad += _count(line)
        return rows, end, bad

    def commit(self, offset: int, rows: int) -> None:
        """Rows up to `offset` are committed: move the replay offset; remove the file once all
        of it is replayed."""
        self._offset = offset
        self.rows = max(0, self.rows - rows)
        if self.rows == 0 and offset >= os.path.getsize(self.path):
            self._remove()

    def close(self) -> None:
        self._close_w()
        if self._r is not None:
            self._r.close()
            self._r = None
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def _remove(self) -> None:
        self._close_w()
        if self._r is not None:
            self._r.close()
            self._r = None
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self._offset = 0
        self.rows = 0

    def _close_w(self) -> None:
        if self._w is not None:
            try:
                self._w.close()
            except OSError:
                pass
            self._w = None


def _count(line: bytes) -> int:
    try:
        return int(line[:line.index(b" ")])
    except ValueError:
        return 0


class Buffer:
    """Rows not yet committed, oldest first: `rows` in memory (at most `limit` once `bound()`
    ran), the older ones in the Spool at `path`. Used by one writer thread."""

    def __init__(self, path: str | os.PathLike, limit: int, warn: Throttle) -> None:
        self.spool = Spool(path)
        self.path = self.spool.path
        self.limit = limit
        self.rows: list = []
        self.dropped = 0  # rows lost: the spool could not be written, encoded or read back
        self.error: str | None = None  # the last spool write error
        self._warn = warn

    @property
    def spooled(self) -> int:
        return self.spool.rows

    def bound(self) -> None:
        """Spool the oldest rows beyond `limit`."""
        if len(self.rows) > self.limit:
            self.spill(len(self.rows) - self.limit)

    def spill(self, n: int) -> None:
        """Move the n oldest rows to the spool; if it cannot be written they are dropped."""
        rows = self.rows[:n]
        try:
            bad = self.spool.append(rows)
        except OSError as e:
            self.dropped += len(rows)
            self.error = f"spool {self.path}: {e}"
            self._warn(logging.ERROR, "usage store: %d records lost: the spool %s cannot be written: %s",
                       len(rows), self.path, e)
        else:
            self.error = None
            if bad:
                self.dropped += len(bad)
                self._warn(logging.WARNING, "usage store: dropped %d records the spool cannot encode: %s",
                           len(bad), bad[0][1])
        del self.rows[:n]

    def replay(self, commit, budget: int, batch: int) -> bool:
        """Pass spooled rows, oldest first, `batch` at a time, to `commit` (which raises if they
        were not committed) until `budget` rows are done; True if more remain."""
        spool = self.spool
        while spool.rows and budget > 0:
            rows, end, bad = spool.read(min(budget, batch))
            if bad:
                self.dropped += bad
                logging.getLogger("plexus").error("usage store: %d spooled records unreadable in %s, "
                                                  "dropped", bad, self.path)
            if rows:
                commit(rows)
            spool.commit(end, len(rows) + bad)
            budget -= max(1, len(rows))
            if not spool.rows:
                logging.getLogger("plexus").warning("usage store: spool %s replayed", self.path)
        return bool(spool.rows)
