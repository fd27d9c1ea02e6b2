"""PostgresStore against a real PostgreSQL (tests/pg_server.py): migrations, the same answers as
SqliteStore for the same records, nothing lost or doubled while PostgreSQL goes away and comes
back (memory, spool file, replay, a new process replaying an old spool), refused rows dropped
alone, and no password anywhere."""

from __future__ import annotations

import os
import threading
import time

import psycopg
import pytest

from pg_server import PgServer, pg_fixture, wait_until
from plexus.control import migrations, store_pg
from plexus.control.spool import Spool
from plexus.control.store import GROUP_BY, StoreUnavailable
from plexus.config_stores import masked_url as mask_url
from plexus.control.store_pg import PG_TYPES, TABLE, PostgresStore
from plexus.control.store_sqlite import SqliteStore
from plexus.control.usage import FIELDS
from test_usage_store import FILTER_CASES, T0, make, varied

pg = pg_fixture()  # one server for the module; the outage tests use their own (`down`)


@pytest.fixture(scope="module")
def down():
    """A second server, for tests that stop it (each finds it running). Commits are synchronous:
    an immediate stop then loses no acknowledged commit (with synchronous_commit off it would)."""
    with PgServer(synchronous_commit=True) as server:
        yield server


@pytest.fixture
def new_store(tmp_path):
    """Factory of started PostgresStores, each with its own spool path; all closed at the end."""
    made = []

    def factory(url, name="spool", start=True, **kw):
        kw.setdefault("interval", 0.05)
        s = PostgresStore(url, spool_path=str(tmp_path / name / "usage.spool"), **kw)
        if start:
            s.start()
        made.append(s)
        return s

    yield factory
    for s in made:
        s.close(timeout=1)


def rows_in(url) -> tuple[int, int]:
    """(rows, distinct ids) in the usage table."""
    with psycopg.connect(url) as conn:
        return conn.execute(f'SELECT COUNT(*), COUNT(DISTINCT "id") FROM {TABLE}').fetchone()


def add_all(s, records):
    for u in records:
        s.add(u)


# -- schema ----------------------------------------------------------------------------------------

def test_migrations_applied_once_concurrently(pg):
    url = pg.create_database()
    barrier, results = threading.Barrier(4), []

    def migrate():
        with psycopg.connect(url, autocommit=True) as conn:
            barrier.wait()
            results.append(migrations.apply(conn))

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [[], [], [], [v for v, _, _ in migrations.available()]]
    with psycopg.connect(url, autocommit=True) as conn:
        assert migrations.apply(conn) == []
        assert migrations.applied(conn) == [v for v, _, _ in migrations.available()]
        n = conn.execute("SELECT COUNT(*) FROM plexus_schema_migrations").fetchone()[0]
        assert n == len(migrations.available())


def test_two_stores_starting_together_migrate_once(pg, new_store):
    url = pg.create_database()
    a, b = new_store(url, "a", start=False), new_store(url, "b", start=False)
    a.add(make(1))
    b.add(make(2))
    threads = [threading.Thread(target=s.start) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert a.flush() and b.flush()
    assert rows_in(url) == (2, 2)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT version, name FROM plexus_schema_migrations").fetchall() == [(1, "usage")]


def test_table_columns_equal_fields(pg, new_store):
    """A FIELDS change without a migration fails here."""
    url = pg.create_database()
    assert new_store(url).flush()
    with psycopg.connect(url) as conn:
        cols = conn.execute("SELECT column_name, udt_name FROM information_schema.columns "
                            "WHERE table_name = %s ORDER BY ordinal_position", (TABLE,)).fetchall()
        indexed = conn.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s", (TABLE,)).fetchall()
    assert [c for c, _ in cols] == list(FIELDS)
    assert tuple(t for _, t in cols) == PG_TYPES
    assert any('("time")' in d for (d,) in indexed)


def test_missing_column_is_reported(pg, new_store):
    url = pg.create_database()
    with psycopg.connect(url, autocommit=True) as conn:
        migrations.apply(conn)
        conn.execute(f'ALTER TABLE {TABLE} DROP COLUMN "bytes"')
    s = new_store(url)
    s.add(make(1))
    assert not s.flush(1)
    assert wait_until(lambda: s.degraded) and "bytes" in s.status()["last_error"]


# -- the same answers as SqliteStore ---------------------------------------------------------------

@pytest.fixture(scope="module")
def twins(pg, tmp_path_factory):
    """The same records in a SqliteStore and a PostgresStore."""
    records = varied(400) + [make(1000 + i, t=T0 + 7) for i in range(5)]  # ties on time
    records[3].model = records[5].provider = None  # a NULL target group
    d = tmp_path_factory.mktemp("twins")
    lite = SqliteStore(str(d / "usage.db"), retention_days=0)
    pgs = PostgresStore(pg.create_database(), retention_days=0, spool_path=str(d / "spool"))
    for s in (lite, pgs):
        s.start()
        add_all(s, records)
        assert s.flush()
    yield lite, pgs
    lite.close()
    pgs.close()


@pytest.mark.parametrize("filters", FILTER_CASES + [{}])
def test_query_parity(twins, filters):
    lite, pgs = twins
    assert pgs.query(filters, limit=1000) == lite.query(filters, limit=1000)


@pytest.mark.parametrize("page", [(1, 0), (7, 3), (100, 0), (100, 100), (100, 400), (5, 1000)])
def test_paging_parity(twins, page):
    lite, pgs = twins
    limit, offset = page
    assert pgs.query({"provider": "p1"}, limit, offset) == lite.query({"provider": "p1"}, limit, offset)
    assert pgs.query({}, limit, offset) == lite.query({}, limit, offset)


@pytest.mark.parametrize("group_by", GROUP_BY)
@pytest.mark.parametrize("filters", [{}, {"since": T0 + 20, "status": "success"}, {"alias": "nope"}])
def test_summary_parity(twins, group_by, filters):
    lite, pgs = twins
    want, got = lite.summary(group_by, filters), pgs.summary(group_by, filters)
    assert [d[group_by] for d in got] == [d[group_by] for d in want]  # order too (ties, NULL)
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        for k, v in w.items():  # float sums may differ in the last bits (summation order)
            assert g[k] == (pytest.approx(v, rel=1e-12) if isinstance(v, float) else v), (group_by, k)
            assert type(g[k]) is type(v), (group_by, k)


def test_bad_arguments_raise_value_error(twins):
    _, pgs = twins
    for call in (lambda: pgs.query({"bogus": 1}), lambda: pgs.summary("bogus", {}),
                 lambda: pgs.query({}, limit=0), lambda: pgs.query({"since": "yesterday"})):
        with pytest.raises(ValueError):
            call()


# -- writing ---------------------------------------------------------------------------------------

def test_flush_and_close_commit_everything(pg, new_store):
    url = pg.create_database()
    s = new_store(url, start=False)
    add_all(s, varied(3000))
    s.close()  # never started: close starts the writer, commits, stops
    s.close()
    assert rows_in(url) == (3000, 3000)
    s.add(make(99999))  # ignored after close
    s2 = new_store(url, "two")
    add_all(s2, [make(5000 + i) for i in range(10)])
    assert s2.flush() and rows_in(url) == (3010, 3010)
    assert s2.query({})[0][0] == make(5009).as_dict()  # round trip: booleans back, types kept


def test_insert_is_idempotent(pg, new_store):
    url = pg.create_database()
    s = new_store(url)
    s.add(make(1, alias="first"))
    s.add(make(1, alias="second"))  # same id in one batch
    assert s.flush()
    s.add(make(1, alias="third"))  # and again later
    assert s.flush()
    assert rows_in(url) == (1, 1)
    assert s.query({})[0][0]["alias"] == "first" and s.dropped == 0


def test_refused_row_is_dropped_alone(pg, new_store):
    url = pg.create_database()
    s = new_store(url)
    good = [make(i) for i in range(200)]
    add_all(s, good[:100])
    s.add(make(1000, error={"not": "bindable"}))  # the COPY encoder refuses it
    s.add(make(1001, error="nul \x00 byte"))  # PostgreSQL refuses it
    s.add(make(1002, input_tokens=2 ** 70))  # out of bigint range
    s.add(make(1003, input_tokens=12.0, error=500))  # coerced as SQLite stores them: kept
    add_all(s, good[100:])
    assert s.flush()
    assert s.dropped == 3 and rows_in(url) == (201, 201)
    (kept,) = s.query({"since": T0 + 1003, "until": T0 + 1004})[0]
    assert kept["input_tokens"] == 12 and kept["error"] == "500"


def test_two_instances_one_database(pg, new_store):
    url = pg.create_database()
    a, b = new_store(url, "a"), new_store(url, "b")
    records = varied(6000)
    for i, u in enumerate(records):
        (a if i % 2 else b).add(u)
        if i % 3 == 0:  # a third also reaches the other instance (a client retry, a replay)
            (b if i % 2 else a).add(u)
    assert a.flush() and b.flush()
    assert rows_in(url) == (6000, 6000)
    assert a.query({}, limit=10) == b.query({}, limit=10)


def test_retention_and_purge(pg, new_store):
    url = pg.create_database()
    now = time.time()
    old = [make(i, t=now - 3 * 86400 - i) for i in range(10)]
    recent = [make(100 + i, t=now - 3600 - i) for i in range(5)]
    s = new_store(url, "keep", retention_days=0)
    add_all(s, old + recent)
    assert s.flush()
    s.close()
    assert rows_in(url) == (15, 15)
    r = new_store(url, "retain", retention_days=2)
    assert r.flush() and r.flush()
    assert rows_in(url) == (5, 5)
    assert r.purge(now - 3600 - 2.5) == 2 and r.purge(now - 3600 - 2.5) == 0
    assert r.query({})[1] == 3


# -- PostgreSQL down -------------------------------------------------------------------------------

def test_outage_spools_and_replays(down, new_store, caplog):
    url = down.create_database()
    s = new_store(url, buffer_records=100)
    assert s.flush()
    added, stop = [0], threading.Event()

    def load():  # a steady trickle through the outage
        i = 0
        while not stop.is_set():
            s.add(make(100_000 + i))
            i += 1
            if i % 20 == 0:
                time.sleep(0.001)
        added[0] = i

    t = threading.Thread(target=load)
    t.start()
    try:
        time.sleep(0.2)
        down.stop("immediate")
        burst = [make(i) for i in range(10_000)]
        t0 = time.perf_counter()
        add_all(s, burst)  # add() never waits for PostgreSQL
        assert time.perf_counter() - t0 < 0.5
        assert wait_until(lambda: s.degraded and s.status()["spooled"] >= 10_000, 10)
        st = s.status()
        assert st["state"] == "degraded" and st["backend"] == "postgresql" and st["dropped"] == 0
        assert st["buffered"] <= 100 + 5000 and "Connection refused" in st["last_error"]
        assert os.path.getsize(s.spool_path) > 0
        assert not s.flush(0.2)  # nothing commits while PostgreSQL is away
    finally:
        down.start()
        stop.set()
        t.join()
    assert s.flush(15)
    assert rows_in(url) == (10_000 + added[0], 10_000 + added[0])
    assert not os.path.exists(s.spool_path)
    st = s.status()
    assert (st["state"], st["buffered"], st["spooled"], st["dropped"]) == ("ok", 0, 0, 0) and not s.degraded
    assert down.password not in caplog.text and "****" in caplog.text


def test_store_closed_while_down_is_replayed_by_a_new_one(down, new_store, tmp_path):
    url = down.create_database()
    a = new_store(url, "shared", buffer_records=100)
    assert a.flush()
    down.stop()
    try:
        records = varied(3000)
        add_all(a, records)
        a.close(timeout=0.3)  # PostgreSQL is down: close spools what it holds
        assert a.status()["spooled"] == 3000
        with open(a.spool_path, "ab") as f:
            f.write(b"7 [[\"torn")  # a crash inside a write: the torn line is cut at the next start
        b = new_store(url, "shared", buffer_records=100)  # a new process, the same spool path
        assert wait_until(lambda: b.status()["spooled"] == 3000)
        b.add(make(50_000))
    finally:
        down.start()
    assert b.flush(15)
    assert rows_in(url) == (3001, 3001) and b.dropped == 0
    assert not os.path.exists(b.spool_path)


def test_unreachable_at_start_then_migrates(down, new_store):
    url = down.create_database()
    down.stop()
    try:
        s = new_store(url)  # constructs and runs without PostgreSQL
        add_all(s, varied(50))
        assert wait_until(lambda: s.degraded)
        assert s.status()["buffered"] == 50
        with pytest.raises(StoreUnavailable) as e:
            store_pg.POOL_TIMEOUT, saved = 0.3, store_pg.POOL_TIMEOUT
            try:
                s.query({})
            finally:
                store_pg.POOL_TIMEOUT = saved
        assert down.password not in str(e.value) and "****" in str(e.value)
        assert down.password not in str(s.status())
    finally:
        down.start()
    assert s.flush(15) and not s.degraded
    assert s.query({})[1] == 50


# -- the spool file and the password ---------------------------------------------------------------

def test_spool_file(tmp_path):
    path = str(tmp_path / "s" / "spool")
    sp = Spool(path)
    with pytest.raises(RuntimeError):
        Spool(path)  # one user per path
    assert sp.open() == (0, 0)
    assert sp.append([("a", 1), ("b", 2.5)]) == []
    bad = sp.append([("c", 3), ("d", 2 ** 70)])  # orjson cannot encode the second
    assert [row for row, _ in bad] == [("d", 2 ** 70)] and sp.rows == 3
    with open(path, "ab") as f:
        f.write(b"2 not json\n")
    sp.rows += 2
    rows, end, unreadable = sp.read(10)
    assert rows == [["a", 1], ["b", 2.5], ["c", 3]] and unreadable == 2
    assert sp.read(1)[0] == [["a", 1], ["b", 2.5]]  # whole lines; the offset did not move
    sp.commit(end, 5)
    assert sp.rows == 0 and not os.path.exists(path)
    sp.close()
    Spool(path).close()  # the lock went with close()


def test_password_is_masked():
    assert mask_url("postgresql://u:s3cret@db:5432/x?sslmode=require") == "postgresql://u:****@db:5432/x?sslmode=require"
    assert mask_url("postgresql://u@db/x") == "postgresql://u@db/x"
    assert mask_url("host=db password=s3cret user=u") == "host=db password=**** user=u"
    with pytest.raises(ValueError) as e:
        PostgresStore("postgresql://u:s3cret@db/x?bogus=1", spool_path="/nonexistent/never")
    assert "s3cret" not in str(e.value)


def test_close_of_a_degraded_store_does_not_wait_out_its_timeout(down, new_store):
    url = down.create_database()
    s = new_store(url, buffer_records=10)
    assert s.flush()
    down.stop()
    try:
        add_all(s, varied(200))
        assert wait_until(lambda: s.degraded)
        t0 = time.monotonic()
        s.close(timeout=10)   # a shutdown during an outage: spool at once, not after 10 s
        assert time.monotonic() - t0 < 3
        assert s.status()["spooled"] == 200
    finally:
        down.start()
