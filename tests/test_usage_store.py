"""SqliteStore against real sqlite3 files: writes arrive whole, reads filter, page and summarise
exactly, retention deletes, shutdown loses nothing, and `add()` never waits for the writer."""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from plexus.control import store_queue, store_sqlite
from plexus.control.store import FILTERS, nearest_rank
from plexus.control.store_sqlite import SqliteStore
from plexus.control.usage import FIELDS, SQL_TYPES, Usage

T0 = float(int(time.time()) - 86400)  # a day ago: inside the default 30-day retention


def make(i: int, t: float | None = None, **attrs) -> Usage:
    u = Usage(f"req-{i:06d}", T0 + i if t is None else t, "10.0.0.1", "openai", "/v1/chat/completions")
    u.alias, u.provider, u.model, u.key = "fast", "p1", "m1", "k1"
    u.stream, u.attempts = True, 1
    for name, value in attrs.items():
        setattr(u, name, value)
    return u


def varied(n: int) -> list[Usage]:
    """n records spread over aliases, providers, keys, dialects and statuses, with some unknowns."""
    out = []
    for i in range(n):
        out.append(make(
            i, alias=("fast", "smart", "cheap")[i % 3], provider=("p1", "p2")[i % 2],
            model=("m1", "m2", "m3", "m4")[i % 4], key=("k1", "k2", None)[i % 3],
            dialect=("openai", "anthropic", "gemini")[i % 3],
            status="success" if i % 5 else ("error", "error_stream", "client_closed")[i // 5 % 3],
            input_tokens=None if i % 7 == 0 else 100 + i, output_tokens=None if i % 7 == 0 else i,
            cached_tokens=None if i % 2 else i // 2, cache_write_tokens=None, reasoning_tokens=None,
            cost=None if i % 7 == 0 else i * 0.001, duration_ms=float((i * 37) % 101),
            ttft_ms=None if i % 4 == 0 else float((i * 13) % 53),
            tokens_per_second=None if i % 7 == 0 else float(i % 11),
            request_id=f"client-{i % 6}" if i % 2 else None))
        if out[-1].request_id is None:
            out[-1].request_id = out[-1].id   # no client id: the record's own
    return out


@pytest.fixture
def new_store(tmp_path):
    """Factory of started stores on tmp files; every store is closed at the end of the test."""
    made = []

    def factory(name="usage.db", start=True, **kw):
        s = SqliteStore(str(tmp_path / name), **kw)
        if start:
            s.start()
        made.append(s)
        return s

    yield factory
    for s in made:
        s.close()


def filled(new_store, records, **kw):
    s = new_store(**kw)
    for u in records:
        s.add(u)
    assert s.flush()
    return s


def count(path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT COUNT(*) FROM usage").fetchone()[0]


# -- writing --------------------------------------------------------------------------------------

def test_many_records_all_present_and_equal(new_store):
    records = varied(5000)
    s = filled(new_store, records)
    rows, total = s.query({}, limit=1000)
    assert total == 5000
    assert rows[0] == records[-1].as_dict()  # round trip: stream/passthrough back to booleans
    assert count(s.path) == 5000


def test_close_flushes_and_reopen_keeps_records(new_store, tmp_path):
    s = new_store()
    for u in varied(300):
        s.add(u)
    s.close()
    s.close()  # idempotent
    assert count(s.path) == 300
    again = new_store()
    assert again.query({})[1] == 300
    again.add(make(999))
    assert again.flush() and again.query({})[1] == 301


def test_add_after_close_is_ignored(new_store):
    s = new_store()
    s.close()
    s.add(make(1))  # no error
    assert s.flush()
    assert count(s.path) == 0


def test_close_without_start_writes_queued(new_store):
    s = new_store(start=False)
    s.add(make(1))
    s.close()
    assert count(s.path) == 1


def test_flush_before_start_starts_writer(new_store):
    s = new_store(start=False)
    assert s.flush()  # nothing queued
    s.add(make(1))
    assert s.flush() and count(s.path) == 1


def test_directory_is_created(tmp_path):
    s = SqliteStore(str(tmp_path / "a" / "b" / "usage.db"))
    s.start()
    s.add(make(1))
    s.close()
    assert count(tmp_path / "a" / "b" / "usage.db") == 1


def test_memory_path_is_refused(tmp_path):
    with pytest.raises(ValueError):
        SqliteStore(":memory:")


def test_slow_writer_does_not_block_add(new_store, monkeypatch):
    entered = threading.Event()
    real = store_sqlite._insert

    def slow(conn, rows):
        if not entered.is_set():  # the first batch takes half a second
            entered.set()
            time.sleep(0.5)
        return real(conn, rows)

    monkeypatch.setattr(store_sqlite, "_insert", slow)
    s = new_store()
    s.add(make(0))
    assert entered.wait(5)  # the writer is now inside a slow write
    records = [make(i) for i in range(1, 10_001)]
    t = time.perf_counter()
    for u in records:
        s.add(u)
    assert time.perf_counter() - t < 0.1
    assert s.flush() and count(s.path) == 10_001


def test_overflow_drops_oldest(new_store):
    s = new_store(start=False, max_queued=store_queue.WAKE_AT + 10)
    for i in range(store_queue.WAKE_AT + 100):
        s.add(make(i))
    assert s.dropped == 90  # the queue holds at most max_queued rows
    s.start()
    assert s.flush()
    rows, total = s.query({}, limit=1000)
    assert total == store_queue.WAKE_AT + 10
    assert rows[-1]["id"] == f"req-{90:06d}" or total > 1000  # the oldest went first
    assert rows[0]["id"] == f"req-{store_queue.WAKE_AT + 99:06d}"  # the newest survived
    assert s.query({"until": T0 + 90})[1] == 0


def test_overflow_keeps_flush_markers(new_store, monkeypatch):
    gate, entered = threading.Event(), threading.Event()
    real = store_sqlite._insert

    def gated(conn, rows):
        entered.set()
        assert gate.wait(10)
        return real(conn, rows)

    monkeypatch.setattr(store_sqlite, "_insert", gated)
    s = new_store(max_queued=store_queue.WAKE_AT + 10)
    s.add(make(0))
    assert entered.wait(5)  # the writer holds row 0; the queue is empty
    result = []
    flusher = threading.Thread(target=lambda: result.append(s.flush(10)))
    flusher.start()
    while not s._queue:  # the flush marker is queued
        time.sleep(0.001)
    n = store_queue.WAKE_AT + 100
    for i in range(1, n + 1):
        s.add(make(i))
    assert s.dropped > 0
    gate.set()
    flusher.join()
    assert result == [True]
    assert s.flush()
    assert s.query({})[1] + s.dropped == n + 1


def test_database_error_is_retried(new_store, monkeypatch, caplog):
    real = store_sqlite._insert
    calls = []

    def flaky(conn, rows):
        calls.append(len(rows))
        if len(calls) == 1:
            raise sqlite3.OperationalError("database is locked")
        return real(conn, rows)

    monkeypatch.setattr(store_sqlite, "_insert", flaky)
    s = new_store(interval=0.01)
    for u in varied(50):
        s.add(u)
    assert s.flush(5)
    assert count(s.path) == 50 and s.dropped == 0
    assert "database is locked" in caplog.text


def test_refused_row_is_dropped_alone(new_store):
    s = new_store()
    s.add(make(1))
    s.add(make(2, error={"not": "bindable"}))
    s.add(make(3))
    assert s.flush()
    assert [r["id"] for r in s.query({})[0]] == ["req-000003", "req-000001"]
    assert s.dropped == 1


def test_missing_columns_are_added(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        keep = [(f, t) for f, t in zip(FIELDS, SQL_TYPES) if f not in ("ttft_ms", "overhead_ms", "error")]
        conn.execute(f"CREATE TABLE usage ({', '.join(f'{chr(34)}{f}{chr(34)} {t}' for f, t in keep)})")
    s = SqliteStore(str(path))
    s.start()
    s.add(make(1, ttft_ms=12.5, error="boom"))
    s.close()
    rows, _ = s.query({})
    assert rows[0]["ttft_ms"] == 12.5 and rows[0]["error"] == "boom"


# -- reading ---------------------------------------------------------------------------------------

def matches(u: Usage, filters: dict) -> bool:
    checks = {
        "since": lambda v: u.time >= v, "until": lambda v: u.time < v,
        "min_duration_ms": lambda v: u.duration_ms >= v, "max_duration_ms": lambda v: u.duration_ms <= v,
    }
    return all(checks[k](v) if k in checks else getattr(u, k) == v for k, v in filters.items())


FILTER_CASES = [
    {"since": T0 + 100}, {"until": T0 + 100}, {"since": T0 + 50, "until": T0 + 60},
    {"alias": "smart"}, {"provider": "p2"}, {"model": "m3"}, {"key": "k2"}, {"dialect": "gemini"},
    {"status": "error"}, {"status": "success"}, {"min_duration_ms": 50}, {"max_duration_ms": 10},
    {"min_duration_ms": 20, "max_duration_ms": 30, "alias": "fast"}, {"alias": "nope"},
    {"request_id": "client-3"},
]


@pytest.mark.parametrize("filters", FILTER_CASES)
def test_query_filters(new_store, filters):
    records = varied(400)
    s = filled(new_store, records)
    rows, total = s.query(filters, limit=1000)
    expected = sorted((u.id for u in records if matches(u, filters)), reverse=True)
    assert [r["id"] for r in rows] == expected
    assert total == len(expected)


def test_every_filter_is_exercised():
    assert {k for case in FILTER_CASES for k in case} == set(FILTERS)


def test_none_filter_means_no_filter(new_store):
    s = filled(new_store, varied(20))
    assert s.query({"alias": None, "since": None})[1] == 20


def test_numeric_filter_from_string(new_store):
    s = filled(new_store, varied(20))
    assert s.query({"since": str(T0 + 10)})[1] == 10


def test_paging_newest_first(new_store):
    records = varied(250)
    s = filled(new_store, records)
    seen = []
    for offset in range(0, 250, 100):
        rows, total = s.query({"provider": "p1"}, limit=100, offset=offset)
        assert total == 125
        seen += rows
    times = [r["time"] for r in seen]
    assert times == sorted(times, reverse=True) and len(set(r["id"] for r in seen)) == 125
    assert s.query({}, limit=5, offset=248)[0] == [records[1].as_dict(), records[0].as_dict()]
    assert s.query({}, limit=5, offset=1000) == ([], 250)


def test_same_time_orders_by_id(new_store):
    s = filled(new_store, [make(i, t=T0) for i in range(5)])
    assert [r["id"] for r in s.query({})[0]] == [f"req-{i:06d}" for i in (4, 3, 2, 1, 0)]


@pytest.mark.parametrize("call", [
    lambda s: s.query({"since": 1, "bogus": 2}),
    lambda s: s.summary("alias", {"bogus": 2}),
    lambda s: s.summary("bogus", {}),
    lambda s: s.query({"since": "yesterday"}),
    lambda s: s.query({"since": True}),
    lambda s: s.query({"alias": 3}),
    lambda s: s.query({}, limit=0),
    lambda s: s.query({}, limit=1001),
    lambda s: s.query({}, offset=-1),
])
def test_bad_arguments_raise_value_error(new_store, call):
    s = new_store()
    with pytest.raises(ValueError):
        call(s)


def test_unknown_filter_is_named(new_store):
    with pytest.raises(ValueError, match="bogus"):
        new_store().query({"bogus": 1})


def pct(values, p):
    values = sorted(values)
    return values[nearest_rank(p, len(values)) - 1] if values else None


def test_nearest_rank():
    assert [nearest_rank(50, n) for n in (1, 2, 3, 4, 5)] == [1, 1, 2, 2, 3]
    assert [nearest_rank(95, n) for n in (1, 19, 20, 21, 100)] == [1, 19, 19, 20, 95]
    assert all(nearest_rank(p, n) == math.ceil(p * n / 100) for p in (50, 95, 99) for n in range(1, 500))


def test_summary_percentiles_exact(new_store):
    durations = [30, 10, 20, 50, 40, 100, 90, 80, 70, 60, 15, 25, 35, 45, 55, 65, 75, 85, 95, 5]
    records = [make(i, duration_ms=float(d), ttft_ms=None if i % 2 else float(d) / 2)
               for i, d in enumerate(durations)]
    records.append(make(100, alias="solo", duration_ms=7.0))
    s = filled(new_store, records)
    fast, solo = s.summary("alias", {})
    assert fast["duration_ms_p50"] == 50.0 and fast["duration_ms_p95"] == 95.0  # ranks 10 and 19 of 20
    ttfts = sorted(d / 2 for i, d in enumerate(durations) if i % 2 == 0)  # 10 values
    assert fast["ttft_ms_p50"] == ttfts[4] and fast["ttft_ms_p95"] == ttfts[9]
    assert solo == {**solo, "requests": 1, "duration_ms_p50": 7.0, "duration_ms_p95": 7.0,
                    "ttft_ms_p50": None, "ttft_ms_p95": None}


def _group_value(u, group_by: str):
    if group_by == "target":  # "<provider>/<model>"
        return None if u.provider is None or u.model is None else f"{u.provider}/{u.model}"
    return getattr(u, group_by)


@pytest.mark.parametrize("group_by", ["alias", "provider", "model", "key", "dialect", "status", "target"])
def test_summary_matches_python(new_store, group_by):
    records = varied(300)
    filters = {"since": T0 + 20}
    s = filled(new_store, records)
    got = s.summary(group_by, filters)
    groups: dict = {}
    for u in records:
        if matches(u, filters):
            groups.setdefault(_group_value(u, group_by), []).append(u)
    assert [d["requests"] for d in got] == sorted((len(v) for v in groups.values()), reverse=True)
    assert {d[group_by] for d in got} == set(groups)
    for d in got:
        us = groups[d[group_by]]

        def known(f):
            return [getattr(u, f) for u in us if getattr(u, f) is not None]

        assert d["requests"] == len(us)
        assert d["errors"] == sum(u.status != "success" for u in us)
        for f in ("input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens"):
            assert d[f] == (sum(known(f)) if known(f) else None), f
        assert d["cost"] == pytest.approx(sum(known("cost")))
        for f in ("duration_ms", "ttft_ms"):
            for p in (50, 95):
                assert d[f"{f}_p{p}"] == pct(known(f), p)
        tps = known("tokens_per_second")
        assert d["tokens_per_second"] == pytest.approx(sum(tps) / len(tps))


def test_summary_unknown_sums_are_none(new_store):
    s = filled(new_store, [make(1, input_tokens=None, cost=None), make(2, input_tokens=5, cost=None)])
    (d,) = s.summary("alias", {})
    assert d["input_tokens"] == 5 and d["cost"] is None and d["cache_write_tokens"] is None
    assert d["tokens_per_second"] is None and d["errors"] == 0
    assert s.summary("alias", {"alias": "nope"}) == []


def test_concurrent_queries_during_writes(new_store):
    s = new_store(interval=0.005)
    done = threading.Event()

    def writer():  # 10k records in small bursts while the readers run
        for i in range(10_000):
            s.add(make(i))
            if i % 50 == 49:
                time.sleep(0.001)
        done.set()

    def reader(_):
        last, reads = 0, 0
        while not done.is_set() or reads < 3:
            rows, total = s.query({"provider": "p1"}, limit=50)
            assert total >= last and len(rows) == min(50, total)
            assert [r["time"] for r in rows] == sorted((r["time"] for r in rows), reverse=True)
            last, reads = total, reads + 1
            s.summary("alias", {"since": T0})
        return reads

    t = threading.Thread(target=writer)
    t.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            reads = list(pool.map(reader, range(4)))
    finally:
        t.join()
    assert s.flush()
    assert min(reads) >= 3 and s.dropped == 0
    assert s.query({})[1] == 10_000


# -- retention -------------------------------------------------------------------------------------

def test_retention_purges_old_records(new_store):
    now = time.time()
    old = [make(i, t=now - 3 * 86400 - i) for i in range(10)]
    recent = [make(100 + i, t=now - 3600 - i) for i in range(5)]
    first = filled(new_store, old + recent, retention_days=0)  # 0 keeps everything
    first.close()
    assert count(first.path) == 15
    s = new_store(retention_days=2)
    assert s.flush() and s.flush()  # the second marker is taken after the first cycle's purge
    assert count(s.path) == 5


def test_purge(new_store):
    s = filled(new_store, varied(100), retention_days=0)
    assert s.purge(T0 + 30) == 30
    assert s.purge(T0 + 30) == 0
    rows, total = s.query({}, limit=1000)
    assert total == 70 and min(r["time"] for r in rows) == T0 + 30
