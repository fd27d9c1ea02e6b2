"""Two Plexus instances sharing one PostgreSQL and one Redis, all real servers.

- Usage records from both instances are in the one PostgreSQL database, once each, and either
  instance's `/v0/management/usage` shows them all.
- A 429 seen by instance A cools the target down in instance B within a second (B skips it).
- A key's `rpm` holds across both instances (Redis leases): exactly `rpm` requests of the
  window succeed, whichever instance they reach; the rest get 429 with retry-after.
- Killing Redis and PostgreSQL in the middle of a load fails no request and loses no record:
  both instances say DEGRADED in /health and `plexus_store_up 0` in /metrics meanwhile, and
  recover without a restart when the servers come back.
- Config for many instances is the same file on every host: a changed file is applied by each
  instance's file watch within seconds.
"""

from __future__ import annotations

import contextlib
import threading
import time

import httpx
import pytest
import redis as redis_py
from prometheus_client.parser import text_string_to_metric_families

from fake_upstream import FakeUpstream, Reply, openai_error
from pg_server import PgServer
from redis_server import RedisServer
from spawn import start_plexus, wait_for

ADMIN = "adm-shared-15"
KEY = "sk-team-shared-15"
MSGS = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def fake():
    with FakeUpstream() as f:
        yield f


@pytest.fixture(scope="module")
def pg():
    # synchronous_commit on: a commit the store saw succeed survives the kill -9 of the outage test
    with PgServer(synchronous_commit=True) as server:
        yield server


@pytest.fixture(scope="module")
def redis():
    with RedisServer() as server:
        yield server


def config(fake, db_url: str, redis_url: str, rpm: int = 0, extra: str = "") -> str:
    limit = f", rpm: {rpm}" if rpm else ""
    return f"""\
admin_key: {ADMIN}
usage_store: "{db_url}"
state_store: "{redis_url}"
keys:
  team: {{secret: {KEY}{limit}}}
providers:
  p1: {{type: OpenAI, api_base_url: "{fake.base_url}/v1", api_key: k1, models: [m1, m2, m3]}}
models:
  a: {{targets: [{{provider: p1, model: m1}}]}}
  fo: {{targets: [{{provider: p1, model: m2}}, {{provider: p1, model: m3}}], selector: in_order}}
{extra}"""


@contextlib.contextmanager
def two_instances(text: str, tmp_path):
    """Two Plexus processes, each with its own directory and copy of the config (two hosts)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with start_plexus(text, tmp_path / "a") as a, start_plexus(text, tmp_path / "b") as b:
        yield a, b


def post(url: str, alias: str = "a", **kw) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=10, trust_env=False) as c:
        return c.post("/v1/chat/completions", json={"model": alias, "messages": MSGS},
                      headers={"authorization": f"Bearer {KEY}"}, **kw)


def admin_get(url: str, path: str, **params) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=10, trust_env=False, headers={"x-admin-key": ADMIN}) as c:
        return c.get(path, params=params)


def all_usage(url: str) -> list[dict]:
    rows, offset = [], 0
    while True:
        r = admin_get(url, "/v0/management/usage", limit=1000, offset=offset)
        assert r.status_code == 200, r.text
        page = r.json()["data"]
        rows += page
        offset += len(page)
        if len(page) < 1000:
            return rows


def metric(url: str, name: str, **labels) -> float | None:
    text = admin_get(url, "/metrics").text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def health(url: str) -> dict:
    return httpx.get(url + "/health?format=json", timeout=5, trust_env=False).json()


def test_usage_from_both_instances_is_stored_once_each(fake, pg, redis, tmp_path):
    fake.reset()
    db = pg.create_database()
    with two_instances(config(fake, db, redis.url), tmp_path) as (a, b):
        ids = []
        for i in range(20):
            r = post((a, b)[i % 2].url)
            assert r.status_code == 200, r.text
            ids.append(r.headers["x-plexus-request-id"])
        assert len(set(ids)) == 20
        for px in (a, b):   # each instance reads the one database
            wait_for(lambda: sorted(row["id"] for row in all_usage(px.url)) == sorted(ids), 10,
                     what="every record of both instances, once each")
        rows = admin_get(a.url, "/v0/management/usage/summary", group_by="key").json()["data"]
        assert rows == [pytest.approx({**rows[0], "key": "team", "requests": 20, "errors": 0})]
        assert health(a.url)["status"] == "ok" and health(b.url)["usage_store"]["backend"] == "postgresql"


def test_a_429_in_one_instance_cools_the_target_down_in_the_other(fake, pg, redis, tmp_path):
    fake.reset()
    with two_instances(config(fake, pg.create_database(), redis.url), tmp_path) as (a, b):
        assert post(b.url, "fo").status_code == 200      # B is warm and healthy: m2 answers
        fake.reset()
        fake.script(Reply(status=429, json=openai_error("slow down", "rate_limit_exceeded"),
                          headers={"retry-after": "30"}))
        r = post(a.url, "fo")
        assert r.status_code == 200                       # A failed over to m3
        assert [q.json["model"] for q in fake.requests] == ["m2", "m3"]

        def b_cooling():
            rows = admin_get(b.url, "/v0/management/cooldowns").json()["data"]
            return any(row["model"] == "m2" and row["cooling"] for row in rows)
        wait_for(b_cooling, 1.0, what="instance B to see A's cooldown within a second")
        fake.reset()
        assert post(b.url, "fo").status_code == 200
        assert [q.json["model"] for q in fake.requests] == ["m3"]   # B skipped m2 without trying it
        # a management clear on B ends it on A too
        with httpx.Client(base_url=b.url, trust_env=False, headers={"x-admin-key": ADMIN}) as c:
            assert c.delete("/v0/management/cooldowns").status_code == 200

        def a_clear():
            rows = admin_get(a.url, "/v0/management/cooldowns").json()["data"]
            return not any(row["cooling"] for row in rows)
        wait_for(a_clear, 2.0, what="instance A to forget the cooldown B cleared")


def _away_from_minute_end(margin: float = 8.0) -> None:
    """Rate windows are wall-clock minutes: start a window test where it cannot straddle two."""
    left = 60.0 - time.time() % 60.0
    if left < margin:
        time.sleep(left + 0.2)


def test_a_keys_rpm_holds_across_both_instances(fake, pg, redis, tmp_path):
    fake.reset()
    with two_instances(config(fake, pg.create_database(), redis.url, rpm=7), tmp_path) as (a, b):
        _away_from_minute_end()
        codes = [post((a, b)[i % 2].url).status_code for i in range(16)]
        assert codes.count(200) == 7 and codes.count(429) == 9, codes
        r = post(b.url)
        assert r.status_code == 429
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert "rpm" in r.json()["error"]["message"]
        assert len(fake.requests) == 7     # refused requests never reached the provider


def test_killing_redis_and_postgres_mid_load_fails_nothing_and_loses_nothing(fake, pg, tmp_path):
    fake.reset()
    small = "usage: {buffer_records: 20}\n"   # a small memory buffer: most records of the outage are spooled
    with RedisServer() as redis, two_instances(config(fake, pg.create_database(), redis.url, extra=small),
                                               tmp_path) as (a, b):
        results: list[tuple[int, str | None]] = []
        stop = threading.Event()

        def load(url: str) -> None:
            with httpx.Client(base_url=url, timeout=10, trust_env=False,
                              headers={"authorization": f"Bearer {KEY}"}) as c:
                while not stop.is_set():
                    r = c.post("/v1/chat/completions", json={"model": "a", "messages": MSGS})
                    results.append((r.status_code, r.headers.get("x-plexus-request-id")))
                    time.sleep(0.01)

        threads = [threading.Thread(target=load, args=(px.url,)) for px in (a, b, a, b)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: len(results) > 40, 10, what="load to start")
            redis.stop()
            pg.stop()
            for px in (a, b):
                wait_for(lambda: health(px.url)["status"] == "degraded", 10, what="/health to say degraded")
            n = len(results)
            wait_for(lambda: len(results) > n + 100, 20, what="requests served while both stores are down")
            h = health(a.url)
            assert h["usage_store"]["state"] == "degraded" and h["state_store"]["state"] == "degraded"
            assert httpx.get(a.url + "/health", trust_env=False).text.startswith("DEGRADED")
            assert metric(a.url, "plexus_store_up", store="usage", backend="postgresql") == 0
            assert metric(b.url, "plexus_store_up", store="state", backend="redis") == 0
            assert metric(a.url, "plexus_usage_buffered_records") > 0
            wait_for(lambda: metric(b.url, "plexus_usage_spooled_records") > 0, 10, what="records in B's spool")
            assert (tmp_path / "b" / "plexus-usage.spool").stat().st_size > 0
            pg.start()
            redis.start()
            for px in (a, b):
                wait_for(lambda: health(px.url)["status"] == "ok", 20, what="both stores to recover")
            n = len(results)
            wait_for(lambda: len(results) > n + 40, 10, what="requests after recovery")
        finally:
            stop.set()
            for t in threads:
                t.join(15)
        assert results and all(code == 200 for code, _ in results), {c for c, _ in results}
        ids = [rid for _, rid in results]
        assert len(set(ids)) == len(ids)

        def stored():
            rows = all_usage(a.url)
            return len(rows) == len(ids) and {row["id"] for row in rows} == set(ids)
        wait_for(stored, 20, what="every record of the outage in PostgreSQL, once each")
        assert metric(a.url, "plexus_store_up", store="usage", backend="postgresql") == 1
        assert metric(b.url, "plexus_usage_spooled_records") == 0
        assert metric(b.url, "plexus_store_up", store="state", backend="redis") == 1


def test_a_changed_config_file_is_applied_by_every_instance(fake, pg, redis, tmp_path):
    fake.reset()
    text = config(fake, pg.create_database(), redis.url)
    with two_instances(text, tmp_path) as (a, b):
        assert post(a.url, "new").status_code == 404
        for d in ("a", "b"):   # the deploy tool writes the same file on every host
            path = tmp_path / d / "plexus.yaml"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text + "  new: {targets: [{provider: p1, model: m1}]}\n")
            tmp.replace(path)
        for px in (a, b):
            wait_for(lambda: post(px.url, "new").status_code == 200, 10, what="each instance to apply the file")


def test_an_instance_with_workers_gives_each_its_own_link_and_spool(fake, pg, redis, tmp_path):
    fake.reset()
    with start_plexus(config(fake, pg.create_database(), redis.url), tmp_path, args=("--workers", "2")) as px:
        ids = []
        for _ in range(30):
            with httpx.Client(base_url=px.url, timeout=10, trust_env=False, headers={"connection": "close"}) as c:
                r = c.post("/v1/chat/completions", json={"model": "a", "messages": MSGS},
                           headers={"authorization": f"Bearer {KEY}"})
            assert r.status_code == 200
            ids.append(r.headers["x-plexus-request-id"])
        assert len({i[:16] for i in ids}) == 2          # both workers answered
        wait_for(lambda: sorted(row["id"] for row in all_usage(px.url)) == sorted(ids), 10,
                 what="both workers' records in PostgreSQL")
        locks = sorted(p.name for p in tmp_path.glob("plexus-usage.spool*.lock"))
        assert locks == ["plexus-usage.spool.1.lock", "plexus-usage.spool.lock"]   # a spool slot each
        with redis_py.Redis.from_url(redis.url) as r:   # each worker: a command and a pub/sub connection
            assert len(r.client_list()) - 1 >= 4
