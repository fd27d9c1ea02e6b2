"""Usage records and metrics over a real Plexus process's life (tests/spawn.py): what reaches the
SQLite file by the time a SIGTERM'd process has exited, the record of a client that went away, the
client address behind a reverse proxy, what `/metrics` counts, and retention at startup.

- Clean shutdown: every answered request has its row in the file once the process exited on
  SIGTERM (plexus/control/plane.py: "a clean shutdown loses no record"), read with sqlite3.
- A client that disconnects during a stream (or before its first byte) gets a `client_closed`
  record (http_status 499), and Plexus closes the upstream call.
- X-Forwarded-For is believed only from `server.trusted_proxies` (the record's client_ip, and the
  `metrics.allow` check that uses the same address).
- `/metrics` parses with prometheus_client's own parser; `plexus_requests_total` per alias and
  status equals the requests made; histograms are well formed; the gauges follow open
  connections and streams.
- Retention: rows older than `usage.retention_days` already in the file are deleted shortly after
  start (the store's purge itself is unit-tested in test_usage_store.py; this checks the config
  reaches it).
"""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fake_upstream import DEFAULT_TEXT, FakeUpstream, Reply, openai_stream
from spawn import start_plexus, stop_process, usage_record, usage_records, wait_for

ADMIN = "adm-lifecycle-e2e-3"
AUTH = {"x-admin-key": ADMIN}
MSGS = [{"role": "user", "content": "hi"}]


def config(base: str, extra: str = "", usage: str = "{path: u.db}") -> str:
    return f"""\
admin_key: {ADMIN}
usage: {usage}
{extra}
providers:
  p1: {{type: OpenAI, api_base_url: "{base}/v1", api_key: k1, models: [m1]}}
models:
  a: {{targets: [{{provider: p1, model: m1}}]}}
"""


@pytest.fixture(scope="module")
def fake_module():
    with FakeUpstream() as f:
        yield f


@pytest.fixture
def fake(fake_module):
    fake_module.reset()
    return fake_module


def chat(c: httpx.Client, stream: bool = False, model: str = "a", **kw) -> httpx.Response:
    return c.post("/v1/chat/completions", json={"model": model, "messages": MSGS, "stream": stream}, **kw)


def db_rows(path) -> dict[str, tuple]:
    """id -> (status, http_status, stream) of every row in the usage file."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {r[0]: r[1:] for r in conn.execute('SELECT id, status, http_status, stream FROM usage')}
    finally:
        conn.close()


def raw_stream_request(port: int, model: str = "a") -> socket.socket:
    """A streaming chat request on a raw socket (so the test decides exactly when it goes away)."""
    body = json.dumps({"model": model, "messages": MSGS, "stream": True}).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: plexus\r\ncontent-type: application/json\r\n"
              b"content-length: %d\r\n\r\n%s" % (len(body), body))
    return s


def read_until(s: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = s.recv(65536)
        assert chunk, f"connection closed before {marker!r}: {data!r}"
        data += chunk
    return data


def request_id(head: bytes) -> str:
    for line in head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"x-plexus-request-id":
            return value.strip().decode()
    raise AssertionError(f"no x-plexus-request-id in {head!r}")


# ----------------------------------------------------------------------------- (a) clean shutdown

def test_sigterm_right_after_200_requests_loses_no_record(fake, tmp_path):
    with start_plexus(config(fake.base_url), tmp_path) as px:
        ids: list[str] = []
        lock = threading.Lock()

        def client(i: int) -> None:
            with httpx.Client(base_url=px.url, timeout=10, trust_env=False) as c:
                for n in range(50):
                    r = chat(c, stream=(n % 3 == 0))
                    assert r.status_code == 200 and DEFAULT_TEXT.split()[0] in r.text
                    with lock:
                        ids.append(r.headers["x-plexus-request-id"])

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(ids) == 200
        stop_process(px.proc)  # SIGTERM at once: the writer commits every ~0.2 s, so rows are queued
        assert px.proc.returncode == 0, px.stderr()
    rows = db_rows(tmp_path / "u.db")
    assert len(rows) == 200 and set(rows) == set(ids)
    assert {r[:2] for r in rows.values()} == {("success", 200)}
    assert sum(r[2] for r in rows.values()) == 4 * 17  # streams: n % 3 == 0 for 17 of every 50
    assert "not written" not in px.stderr() and "Traceback" not in px.stderr()


def test_sigterm_during_a_stream_still_records_that_request(fake, tmp_path):
    gate = threading.Event()
    fake.script(Reply.sse(openai_stream("m1"), hold=gate, hold_after=2))
    with start_plexus(config(fake.base_url), tmp_path) as px:
        s = raw_stream_request(px.port)
        try:
            rid = request_id(read_until(s, b"data: "))
            px.proc.terminate()
            time.sleep(0.2)
            gate.set()
            px.proc.wait(10)
        finally:
            gate.set()
            s.close()
    assert rid in db_rows(tmp_path / "u.db"), px.stderr()


# ----------------------------------------------------------------------------- (b) client_closed

def test_client_that_disconnects_mid_stream_is_recorded_client_closed(fake, tmp_path):
    gate = threading.Event()
    held = Reply.sse(openai_stream("m1"), hold=gate, hold_after=2)
    fake.script(held, Reply(hang=True))
    with start_plexus(config(fake.base_url), tmp_path) as px:
        try:
            # mid-stream: two chunks reached the client, then it goes away
            s = raw_stream_request(px.port)
            rid = request_id(read_until(s, b'"role":"assistant"'))
            s.close()
            up = fake.wait_requests(1)[0]
            assert up.closed.wait(5), "Plexus did not close the upstream call"
            # before the first byte: the provider has not answered yet
            s = raw_stream_request(px.port)
            up2 = fake.wait_requests(2)[1]
            s.close()
            assert up2.closed.wait(5), "Plexus did not close the upstream call"

            def closed_records():
                r = httpx.get(px.url + "/v0/management/usage", headers=AUTH, trust_env=False,
                              params={"status": "client_closed"})
                return {row["id"]: row for row in r.json()["data"]} if r.json()["total"] == 2 else None
            recs = wait_for(closed_records, 5, 0.05, "two client_closed records")
        finally:
            gate.set()
        assert held.sent < len(held.chunks)
    assert rid in recs
    for r in recs.values():
        assert (r["status"], r["http_status"], r["stream"], r["alias"]) == ("client_closed", 499, True, "a"), r
        assert r["provider"] == "p1" and r["model"] == "m1"
    (rid2,) = set(recs) - {rid}
    assert recs[rid]["ttft_ms"] is not None and recs[rid2]["ttft_ms"] is None


def test_openai_sdk_stream_closed_at_done_is_a_success(fake, tmp_path):
    """openai-python stops reading at `data: [DONE]` and closes the response (its Stream breaks
    there). The answer was complete, so the record is a success with the usage the stream
    carried, even when the provider's end of body (the chunked terminator) comes after [DONE]."""
    import openai

    from fake_upstream import USAGE_IN, USAGE_OUT

    chunks = openai_stream("m1", include_usage=True)
    gate = threading.Event()
    fake.script(Reply.sse(chunks + [b""], hold=gate, hold_after=len(chunks)))  # all events, then wait
    with start_plexus(config(fake.base_url), tmp_path) as px:
        client = openai.OpenAI(base_url=f"{px.url}/v1", api_key="unused", max_retries=0, timeout=10)
        try:
            with client.chat.completions.with_streaming_response.create(
                    model="a", messages=MSGS, stream=True, stream_options={"include_usage": True}) as r:
                text = "".join(ch.choices[0].delta.content or "" for ch in r.parse() if ch.choices)
                rid = r.headers["x-plexus-request-id"]
            assert text == DEFAULT_TEXT
            rec = usage_record(px.url, ADMIN, rid)
        finally:
            gate.set()
            client.close()
    assert (rec["status"], rec["http_status"]) == ("success", 200), rec
    assert (rec["input_tokens"], rec["output_tokens"]) == (USAGE_IN, USAGE_OUT)


# ----------------------------------------------------------------------------- (c) X-Forwarded-For

def client_ips(px, c: httpx.Client, *xffs: str | list[str] | None) -> list[str]:
    """The recorded client_ip of one request per X-Forwarded-For value (None: no header; a list:
    one header line each)."""
    ids = []
    for xff in xffs:
        lines = [] if xff is None else [xff] if isinstance(xff, str) else xff
        r = chat(c, headers=[("x-forwarded-for", v) for v in lines])
        assert r.status_code == 200, r.text
        ids.append(r.headers["x-plexus-request-id"])
    recs = usage_records(px.url, ADMIN, ids)
    return [recs[i]["client_ip"] for i in ids]


def test_x_forwarded_for_only_from_trusted_proxies(fake, tmp_path):
    base = fake.base_url
    allow = "metrics: {allow: [203.0.113.0/24]}"
    with start_plexus(config(base, allow), tmp_path) as px, \
            httpx.Client(base_url=px.url, timeout=10, trust_env=False) as c:
        # no trusted proxies: a forged header changes nothing
        assert client_ips(px, c, "203.0.113.7", None) == ["127.0.0.1", "127.0.0.1"]
        assert c.get("/metrics", headers={"x-forwarded-for": "203.0.113.7"}).status_code == 401
        # behind a proxy on 127.0.0.1 (the reload applies server.trusted_proxies to the next request)
        r = c.post("/v0/management/config", headers=AUTH,
                   content=config(base, allow + "\nserver: {trusted_proxies: [127.0.0.1]}"))
        assert r.status_code == 200, r.text
        assert client_ips(px, c,
                          "203.0.113.7",
                          "198.51.100.1, 203.0.113.7",  # the client's own (forgeable) entries come first
                          "203.0.113.7, 127.0.0.1",     # two proxies on loopback
                          None) == ["203.0.113.7", "203.0.113.7", "203.0.113.7", "127.0.0.1"]
        # /metrics sees the same address: allowed by metrics.allow only through the proxy's header
        assert c.get("/metrics", headers={"x-forwarded-for": "203.0.113.7"}).status_code == 200
        assert c.get("/metrics", headers={"x-forwarded-for": "198.51.100.1"}).status_code == 401
        assert c.get("/metrics").status_code == 401


def test_x_forwarded_for_in_several_header_lines_is_one_list(fake, tmp_path):
    """RFC 9110 section 5.3: several field lines of one list field are one comma-separated list,
    in order. A proxy that appends its own X-Forwarded-For line (rather than extending the
    client's) must not let the client's forged line win."""
    with start_plexus(config(fake.base_url, "server: {trusted_proxies: [127.0.0.1]}"), tmp_path) as px, \
            httpx.Client(base_url=px.url, timeout=10, trust_env=False) as c:
        assert client_ips(px, c, ["198.51.100.66", "203.0.113.7"]) == ["203.0.113.7"]


# ----------------------------------------------------------------------------- (d) /metrics

def scrape(c: httpx.Client) -> dict:
    """(sample name, frozenset of labels) -> value, and the family types under ("TYPE", family)."""
    r = c.get("/metrics", headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4"), r.text
    out: dict = {}
    for fam in text_string_to_metric_families(r.text):
        out[("TYPE", fam.name)] = fam.type
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _labels(**kw) -> frozenset:
    return frozenset(kw.items())


def test_metrics_count_what_happened(fake, tmp_path):
    with start_plexus(config(fake.base_url), tmp_path) as px, \
            httpx.Client(base_url=px.url, timeout=10, trust_env=False) as scraper:
        with httpx.Client(base_url=px.url, timeout=10, trust_env=False) as c:
            for n in range(12):
                assert chat(c, stream=n % 2 == 1).status_code == 200
            fake.script(*[Reply(500, json={"error": {"message": "boom", "type": "server_error"}})] * 2)
            assert chat(c).status_code == 500 and chat(c, stream=True).status_code == 500
            assert chat(c, model="nope").status_code == 404
        m = scrape(scraper)
        a = dict(alias="a", provider="p1")
        assert m[("TYPE", "plexus_requests")] == "counter"
        assert m[("plexus_requests_total", _labels(**a, status="success"))] == 12
        assert m[("plexus_requests_total", _labels(**a, status="error"))] == 2
        assert m[("plexus_http_responses_total", _labels(code="200"))] == 12
        assert m[("plexus_http_responses_total", _labels(code="500"))] == 2
        assert m[("plexus_http_responses_total", _labels(code="404"))] == 1
        assert m[("plexus_attempts_total", _labels(alias="a"))] == 14
        for fam in ("plexus_request_duration_seconds", "plexus_time_to_first_token_seconds",
                    "plexus_upstream_latency_seconds", "plexus_gateway_overhead_seconds"):
            assert m[("TYPE", fam)] == "histogram", fam
        hist = {dict(k[1])["le"]: v for k, v in m.items()
                if k[0] == "plexus_request_duration_seconds_bucket" and _labels(**a) <= k[1]}
        bounds = sorted(hist, key=float)
        assert bounds[-1] == "+Inf" and hist["+Inf"] == 14
        assert all(hist[x] <= hist[y] for x, y in zip(bounds, bounds[1:]))  # cumulative
        assert m[("plexus_request_duration_seconds_count", _labels(**a))] == 14
        assert m[("plexus_request_duration_seconds_sum", _labels(**a))] > 0
        assert m[("plexus_time_to_first_token_seconds_count", _labels(**a))] >= 12
        assert m[("plexus_tokens_total", _labels(**a, model="m1", type="input"))] == 12 * 12

        # gauges: connections (the scraper's own, plus an idle one), streams in progress
        base_conns = m[("plexus_open_connections", frozenset())]
        assert base_conns >= 1
        idle = socket.create_connection(("127.0.0.1", px.port))
        try:
            wait_for(lambda: scrape(scraper)[("plexus_open_connections", frozenset())] == base_conns + 1,
                     5, what="plexus_open_connections to count the idle connection")
        finally:
            idle.close()
        wait_for(lambda: scrape(scraper)[("plexus_open_connections", frozenset())] == base_conns,
                 5, what="plexus_open_connections to drop back")
        gate = threading.Event()
        held = Reply.sse(openai_stream("m1"), hold=gate, hold_after=2)
        fake.script(held)
        s = raw_stream_request(px.port)
        try:
            read_until(s, b"data: ")
            assert scrape(scraper)[("plexus_active_streams", frozenset())] == 1
            gate.set()
            read_until(s, b"data: [DONE]\n\n\r\n0\r\n\r\n")  # to the end of the chunked body
        finally:
            gate.set()
            s.close()
        # (the stream gauge drops as the relay ends, the request is counted a moment later)
        wait_for(lambda: scrape(scraper)[("plexus_requests_total", _labels(**a, status="success"))] == 13, 5,
                 what="the held stream to be counted")
        assert scrape(scraper)[("plexus_active_streams", frozenset())] == 0


# ----------------------------------------------------------------------------- (e) retention

def test_rows_older_than_retention_are_deleted_at_start(fake, tmp_path):
    from plexus.control.store_sqlite import SqliteStore
    from plexus.control.usage import Usage

    path = tmp_path / "u.db"
    now = time.time()
    seed = SqliteStore(str(path), retention_days=0)  # 0 keeps everything: this store purges nothing
    for i, age_days in enumerate([40, 35, 31, 29, 1, 0.01]):
        u = Usage(f"seed{i}", now - age_days * 86400, "127.0.0.1", "openai", "/v1/chat/completions")
        u.alias = "a"
        seed.add(u)
    assert seed.flush()
    seed.close()
    assert len(db_rows(path)) == 6
    with start_plexus(config(fake.base_url, usage="{path: u.db, retention_days: 30}"), tmp_path) as px:
        wait_for(lambda: set(db_rows(path)) == {"seed3", "seed4", "seed5"}, 5, what="the retention purge")
        with httpx.Client(base_url=px.url, timeout=10, trust_env=False) as c:
            rid = chat(c).headers["x-plexus-request-id"]
        recs = usage_records(px.url, ADMIN, ["seed3", "seed4", "seed5", rid])
        assert recs[rid]["status"] == "success" and recs["seed3"]["alias"] == "a"
    assert set(db_rows(path)) == {"seed3", "seed4", "seed5", rid}
