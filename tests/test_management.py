"""The management API over real HTTP: Plexus's own server (``start_server``) with
``Management.handle`` as the handler, in front of a small fake gateway (config, router, apply)
and a plane of the real parts (EventHub, DebugLog, Reloader on a real file, Metrics) with a fake
usage store. End to end through a whole running Plexus: test_management_e2e.py."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import os
from types import SimpleNamespace

import httpx
import orjson
import pytest

from plexus.config import validate_text
from plexus.config_error import ConfigError
from plexus.control.debug import DebugLog
from plexus.control.events import EventHub
from plexus.control.management import Management
from plexus.control.metrics import Metrics
from plexus.control.reload import Reloader
from plexus.control.usage import Usage
from plexus.routing import Router
from plexus.server.protocol import start_server

ADMIN = "adm-secret-1234"
PROVIDER_KEY = "sk-provider-secret-123"
CONFIG = """\
admin_key: {admin}
usage: {{enabled: false}}
providers:
  p1: {{type: OpenAI, api_base_url: "http://127.0.0.1:9/v1", api_key: {key}, models: [m1, m2],
        headers: {{X-Org: org-secret-value}}}}
  p2: {{type: OpenAI, api_base_url: "http://127.0.0.1:9/v1", api_key: "", models: [m1]}}
models:
  {alias}: {{targets: [{{provider: p1, model: m1}}, {{provider: p2, model: m1}}]}}
"""
AUTH = {"x-admin-key": ADMIN}


def config_text(alias="a1", admin=ADMIN) -> str:
    return CONFIG.format(admin=admin, key=PROVIDER_KEY, alias=alias)


class FakeGateway:
    """What Management reads of a gateway: config, router, apply(config)."""

    def __init__(self, config) -> None:
        self.config = config
        self.router = Router(config)
        self.applied = []
        self.fail = None

    def apply(self, config) -> None:
        if self.fail is not None:
            raise self.fail
        self.config = config
        self.router = Router(config, cooldowns=self.router.cooldowns)
        self.applied.append(config)


class FakeStore:
    def __init__(self) -> None:
        self.calls = []

    def query(self, filters, limit, offset):
        self.calls.append(("query", filters, limit, offset))
        if filters.get("model") == "explode":
            raise ValueError("unknown filter 'explode'")
        return [{"id": "r2"}, {"id": "r1"}], 2

    def summary(self, group_by, filters):
        self.calls.append(("summary", group_by, filters))
        return [{"provider": "p1", "requests": 2}]


class World:
    def __init__(self, tmp_path) -> None:
        self.path = tmp_path / "plexus.yaml"
        self.path.write_text(config_text())
        config, details = validate_text(self.path.read_text(), str(self.path))
        assert not details
        self.gw = FakeGateway(config)
        loop = asyncio.get_running_loop()
        self.plane = SimpleNamespace(store=FakeStore(), metrics=Metrics(), events=EventHub(), debug=DebugLog(10),
                                     peers=None,
                                     reloader=Reloader(self.gw, str(self.path), loop, interval=0.05, settle=0.05))
        self.mgmt = Management(self.gw, self.plane, heartbeat=0.2, max_queue=5)
        self.gw.plane = self.plane
        self.plane.management = self.mgmt

    def reconfigure(self, **changes) -> None:
        self.gw.config = dataclasses.replace(self.gw.config, **changes)


@pytest.fixture
async def world(tmp_path):
    w = World(tmp_path)
    w.plane.reloader.start()
    server = await start_server(w.mgmt.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    w.url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=w.url + "/v0/management", timeout=5, trust_env=False) as c:
        w.client = c
        yield w
    w.plane.reloader.stop()
    server.close()


# ------------------------------------------------------------------ access

async def test_admin_key_in_either_header_and_401_without_it(world):
    c = world.client
    assert (await c.get("/debug", headers={"x-admin-key": ADMIN})).status_code == 200
    assert (await c.get("/debug", headers={"authorization": f"Bearer {ADMIN}"})).status_code == 200
    for headers in ({}, {"x-admin-key": "wrong"}, {"authorization": "Bearer wrong"},
                    {"authorization": ADMIN}, {"x-api-key": ADMIN}):
        r = await c.get("/debug", headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["content-type"] == "application/json" and "admin key" in r.json()["error"]
        assert r.headers["www-authenticate"].startswith("Bearer")
    # no route is revealed without the key
    assert (await c.get("/no-such-thing")).status_code == 401


async def test_off_without_an_admin_key_is_the_gateways_unknown_path_404(world):
    world.reconfigure(admin_key="")
    for method, path in (("GET", "/config"), ("POST", "/debug"), ("GET", "/nope")):
        r = await world.client.request(method, path, headers=AUTH)
        assert r.status_code == 404
        assert r.json() == {"error": {"message": f"no route for {method} /v0/management{path}",
                                      "type": "invalid_request_error", "param": None, "code": None}}


async def test_unknown_path_404_and_wrong_method_405(world):
    c = world.client
    for path in ("/nope", "/config/", "/debug/logs/a/b", ""):
        r = await c.get(path, headers=AUTH)
        assert r.status_code == 404 and "error" in r.json(), path
    r = await c.delete("/config", headers=AUTH)
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST" and "error" in r.json()
    r = await c.get("/cooldowns/p1", headers=AUTH)
    assert r.status_code == 405 and r.headers["allow"] == "DELETE"
    r = await c.get("/debug?verbose=1", headers=AUTH)
    assert r.status_code == 400 and "verbose" in r.json()["error"]


# ------------------------------------------------------------------ config

async def test_get_config_is_the_applied_text_masked(world):
    r = await world.client.get("/config", headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"] == "application/yaml"
    for secret in (ADMIN, PROVIDER_KEY, "org-secret-value"):
        assert secret not in r.text
    assert r.text.count('"****"') == 3 and "a1:" in r.text


async def test_post_invalid_config_is_400_with_every_problem_and_changes_nothing(world):
    bad = config_text().replace("models: [m1, m2]", "models: [m1, m2], colour: red") + "bogus: 1\n"
    bad = bad.replace("model: m1}, {provider: p2", "model: m9}, {provider: p2")
    r = await world.client.post("/config", headers=AUTH, content=bad)
    assert r.status_code == 400
    body = r.json()
    assert body["error"] == "Validation failed"
    paths = {d["path"] for d in body["details"]}
    assert {"bogus", "providers.p1.colour"} <= paths and len(body["details"]) >= 3
    assert all(set(d) == {"path", "message"} for d in body["details"])
    assert world.path.read_text() == config_text() and not world.gw.applied
    assert not (world.path.parent / "plexus.yaml.bak").exists()
    r = await world.client.post("/config", headers=AUTH, content=b"\xff\xfe bad")
    assert r.status_code == 400 and "UTF-8" in r.json()["details"][0]["message"]
    status = (await world.client.get("/config/status", headers=AUTH)).json()
    assert status["last_error"]["source"] == "api" and status["source"] == "startup"


async def test_post_valid_config_replaces_the_file_keeps_bak_and_applies(world):
    new = config_text(alias="fresh")
    r = await world.client.post("/config", headers=AUTH, content=new)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["status"] == "ok" and body["source"] == "api" and body["path"] == str(world.path)
    assert world.path.read_text() == new
    assert (world.path.parent / "plexus.yaml.bak").read_text() == config_text()
    assert sorted(os.listdir(world.path.parent)) == ["plexus.yaml", "plexus.yaml.bak"]
    assert list(world.gw.config.aliases) == ["fresh"] and len(world.gw.applied) == 1
    assert "fresh:" in (await world.client.get("/config", headers=AUTH)).text
    status = (await world.client.get("/config/status", headers=AUTH)).json()
    assert set(status) == {"path", "loaded_at", "source", "last_error", "last_check"}
    assert status["source"] == "api" and status["last_error"] is None and status["loaded_at"] > 0
    await asyncio.sleep(0.4)
    assert len(world.gw.applied) == 1  # the watcher does not apply the API's own write again


async def test_post_config_that_cannot_be_applied_is_400_and_the_file_is_restored(world):
    world.gw.fail = ConfigError(str(world.path), "providers.p1.ca_file", "cannot load the CA bundle")
    r = await world.client.post("/config", headers=AUTH, content=config_text(alias="fresh"))
    assert r.status_code == 400
    assert r.json()["details"] == [{"path": "providers.p1.ca_file", "message": "cannot load the CA bundle"}]
    assert world.path.read_text() == config_text() and list(world.gw.config.aliases) == ["a1"]


async def test_config_status_shows_a_bad_file_edit(world):
    world.path.write_text(config_text(alias="edited") + "bogus: 1\n")
    for _ in range(100):
        status = (await world.client.get("/config/status", headers=AUTH)).json()
        if status["last_error"]:
            break
        await asyncio.sleep(0.05)
    assert status["last_error"]["details"][0]["path"] == "bogus" and status["source"] == "startup"
    assert list(world.gw.config.aliases) == ["a1"]
    assert "edited" not in (await world.client.get("/config", headers=AUTH)).text  # still the applied text


async def test_a_config_built_in_memory_has_no_config_endpoints(world):
    world.plane.reloader = Reloader(world.gw, "<config>", asyncio.get_running_loop())
    for method, path in (("GET", "/config"), ("POST", "/config"), ("GET", "/config/status")):
        r = await world.client.request(method, path, headers=AUTH, content=config_text())
        assert r.status_code == 409 and "not loaded from a file" in r.json()["error"]
    assert not os.path.exists("<config>")


# ------------------------------------------------------------------ usage

async def test_usage_query_and_summary(world):
    c, store = world.client, world.plane.store
    r = await c.get("/usage", headers=AUTH, params={"alias": "a1", "since": "2024-06-01T00:00:00Z", "limit": 5})
    assert r.status_code == 200
    assert r.json() == {"data": [{"id": "r2"}, {"id": "r1"}], "total": 2, "limit": 5, "offset": 0}
    assert store.calls[-1] == ("query", {"alias": "a1", "since": 1717200000.0}, 5, 0)
    r = await c.get("/usage", headers=AUTH, params={"limit": 5000})
    assert r.status_code == 400 and "'limit'" in r.json()["error"]
    r = await c.get("/usage", headers=AUTH, params={"model": "explode"})
    assert r.status_code == 400 and r.json() == {"error": "unknown filter 'explode'"}
    r = await c.get("/usage/summary", headers=AUTH, params={"group_by": "provider", "status": "success"})
    assert r.json() == {"data": [{"provider": "p1", "requests": 2}], "group_by": "provider"}
    assert store.calls[-1] == ("summary", "provider", {"status": "success"})
    r = await c.get("/usage/summary", headers=AUTH)
    assert r.status_code == 400 and "group_by" in r.json()["error"]
    world.plane.store = None
    for path in ("/usage", "/usage/summary?group_by=alias"):
        r = await c.get(path, headers=AUTH)
        assert r.status_code == 409 and "disabled" in r.json()["error"]


# ------------------------------------------------------------------ events

def usage(i: int) -> Usage:
    u = Usage(f"req{i}", 1700000000.0 + i, "127.0.0.1", "openai", "/v1/chat/completions")
    u.alias = "a1"
    u.finish(3.0)
    return u


async def read_until(lines, marker: str, timeout: float = 3.0) -> list[str]:
    got = []
    async with asyncio.timeout(timeout):
        async for line in lines:
            got.append(line)
            if marker in line:
                return got
    raise AssertionError(f"stream ended before {marker!r}: {got}")


async def test_events_stream_records_and_heartbeats_and_cleans_up(world):
    hub = world.plane.events
    async with world.client.stream("GET", "/events", headers=AUTH) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream" and r.headers["cache-control"] == "no-cache"
        lines = r.aiter_lines()
        await read_until(lines, ": connected")
        assert len(hub.subscribers) == 1
        hub.publish(usage(1))
        got = await read_until(lines, "data: ")
        assert "event: usage" in got
        assert orjson.loads(got[-1][len("data: "):])["id"] == "req1"
        await read_until(lines, ": ping")  # heartbeat every 0.2 s here
    for _ in range(100):  # the client went away: the handler was cancelled and unsubscribed
        if not hub.subscribers:
            break
        await asyncio.sleep(0.02)
    assert hub.subscribers == []


async def test_events_slow_consumer_is_dropped_and_its_stream_ends(world):
    hub = world.plane.events
    async with world.client.stream("GET", "/events", headers=AUTH) as r:
        lines = r.aiter_lines()
        await read_until(lines, ": connected")
        for i in range(6):  # max_queue is 5 here: published before the handler can run
            hub.publish(usage(i))
        got = await read_until(lines, "event: dropped")
        assert not any("data: {\"id\"" in line for line in got)
        rest = [line async for line in lines]  # the stream ends
        assert any("did not keep up" in line for line in rest)
    assert hub.subscribers == [] and hub.drops == 1


async def test_events_max_rate_sends_at_most_that_and_counts_the_rest(world, monkeypatch):
    """`?max_rate=N`: at most N records a second are encoded and sent; the others are counted
    (`event: skipped` with the next write); subscribers without a rate still get every record."""
    hub = world.plane.events
    encoded = []
    real = Usage.to_json

    def counting(self):
        encoded.append(self.id)
        return real(self)
    monkeypatch.setattr(Usage, "to_json", counting)
    async with world.client.stream("GET", "/events", headers=AUTH, params={"max_rate": "2"}) as r:
        lines = r.aiter_lines()
        await read_until(lines, ": connected")
        for i in range(4):   # max_queue is 5 here: stay under it
            hub.publish(usage(i))
        got = await read_until(lines, "event: skipped")
        got += await read_until(lines, "data: ")
        sent = [orjson.loads(x[len("data: "):]) for x in got if x.startswith('data: {"id"')]
        assert [d["id"] for d in sent] == ["req0", "req1"]
        assert orjson.loads(got[-1][len("data: "):]) == {"count": 2}
        assert encoded == ["req0", "req1"]       # the skipped ones were never encoded
    assert (await world.client.get("/events", headers=AUTH, params={"max_rate": "x"})).status_code == 400
    assert (await world.client.get("/events", headers=AUTH, params={"max_rate": "-1"})).status_code == 400


async def test_targets_counts_per_provider_and_model(world):
    """GET /targets: cumulative requests, errors and latency histograms per (provider, model),
    from the metrics (no store query), for the dashboard's Providers page."""
    m = world.plane.metrics
    for i, (status, dur) in enumerate((("success", 3.0), ("success", 40.0), ("error", 700.0))):
        u = usage(i)
        u.provider, u.model, u.status, u.duration_ms, u.ttft_ms = "p1", "m1", status, dur, 1.0
        m.observe(u)
    body = (await world.client.get("/targets", headers=AUTH)).json()
    row = next(r for r in body["data"] if (r["provider"], r["model"]) == ("p1", "m1"))
    assert (row["requests"], row["errors"]) == (3, 1)
    bounds = body["buckets_ms"]
    assert len(row["duration"]) == len(bounds) + 2 and sum(row["duration"][:-1]) == 3
    assert row["duration"][-1] == 743.0 and row["duration"][bounds.index(5.0)] == 1
    assert abs(body["time"] - __import__("time").time()) < 5
    assert (await world.client.get("/targets", headers=AUTH, params={"x": "1"})).status_code == 400


# ------------------------------------------------------------------ cooldowns

async def test_cooldowns_list_and_clear(world):
    c, cd = world.client, world.gw.router.cooldowns
    now = asyncio.get_running_loop().time()
    for key in (("p1", "m1"), ("p1", "m2"), ("p2", "m1")):
        cd.failure(key, now, status=503)
    rows = (await c.get("/cooldowns", headers=AUTH)).json()["data"]
    failing = {(r["provider"], r["model"]): r for r in rows if r["failures"]}
    assert set(failing) == {("p1", "m1"), ("p1", "m2"), ("p2", "m1")}
    row = failing[("p1", "m1")]
    assert row["cooling"] and row["last_status"] == 503
    assert abs(row["until_unix"] - (__import__("time").time() + 5)) < 1.0
    r = await c.delete("/cooldowns/p1", headers=AUTH, params={"model": "m2"})
    assert r.json() == {"cleared": 1}
    assert (await c.delete("/cooldowns/p1", headers=AUTH)).json() == {"cleared": 1}
    r = await c.delete("/cooldowns/nope", headers=AUTH)
    assert r.status_code == 404 and "nope" in r.json()["error"]
    r = await c.delete("/cooldowns/p1", headers=AUTH, params={"modell": "x"})
    assert r.status_code == 400
    assert (await c.delete("/cooldowns", headers=AUTH)).json() == {"cleared": 1}
    assert cd.entries == {}


# ------------------------------------------------------------------ debug

async def test_debug_switch_filters_list_get_and_clear(world):
    c, debug = world.client, world.plane.debug
    assert (await c.get("/debug", headers=AUTH)).json() == {"enabled": False, "aliases": None, "keys": None,
                                                            "max_entries": 10, "count": 0}
    r = await c.post("/debug", headers=AUTH, json={"enabled": True, "aliases": ["a1"]})
    assert r.json() == {"enabled": True, "aliases": ["a1"], "keys": None, "max_entries": 10, "count": 0}
    assert debug.begin("x", "other", None) is None
    r = await c.post("/debug", headers=AUTH, json={"enabled": "yes"})
    assert r.status_code == 400 and debug.enabled

    cap = debug.begin("rid-1", "a1", "team")
    cap.client_request(b"POST", b"/v1/chat/completions?key=client-key-123456",
                       [(b"authorization", b"Bearer client-key-123456")], b'{"model": "a1"}')
    cap.upstream_request("p1", "http://127.0.0.1:9/v1/chat/completions",
                         [(b"authorization", f"Bearer {PROVIDER_KEY}".encode()), (b"x-org", b"org-secret-value")],
                         f'{{"model": "m1", "echo": "{PROVIDER_KEY}"}}'.encode())
    cap.upstream_response(200, [(b"content-type", b"application/json")], b'{"ok": true}')
    cap.client_response(200, [(b"content-type", b"application/json")], b'{"ok": true}')
    cap.finish(usage(1))

    listed = (await c.get("/debug/logs", headers=AUTH)).json()["data"]
    assert [e["id"] for e in listed] == ["rid-1"] and listed[0]["alias"] == "a1"
    assert listed[0]["request_bytes"] == 15 and listed[0]["response_bytes"] == 12
    r = await c.get("/debug/logs/rid-1", headers=AUTH)
    assert r.status_code == 200
    for secret in (PROVIDER_KEY, "client-key-123456", "org-secret-value"):
        assert secret not in r.text
    full = r.json()
    assert full["client_request"]["target"] == "/v1/chat/completions?key=****"
    assert full["upstream"][0]["request"]["body"] == '{"model": "m1", "echo": "****"}'
    assert ["x-org", "****"] in full["upstream"][0]["request"]["headers"]  # a configured provider header
    assert full["usage"]["id"] == "req1"
    assert (await c.get("/debug/logs/nope", headers=AUTH)).status_code == 404
    assert (await c.delete("/debug/logs", headers=AUTH)).json() == {"cleared": 1}
    assert (await c.get("/debug/logs", headers=AUTH)).json() == {"data": []}


# ------------------------------------------------------------------ /metrics

async def test_metrics_access_rules(world):
    async with httpx.AsyncClient(base_url=world.url, timeout=5, trust_env=False) as c:
        r = await c.get("/metrics")  # admin key configured, none given, no allow list
        assert r.status_code == 401 and "error" in r.json()
        assert (await c.get("/metrics", headers={"x-admin-key": "wrong"})).status_code == 401
        r = await c.get("/metrics", headers={"authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 200 and r.headers["content-type"] == Metrics.CONTENT_TYPE
        assert (await c.post("/metrics", headers=AUTH)).status_code == 405

        world.reconfigure(metrics=dataclasses.replace(world.gw.config.metrics,
                                                      allow=(ipaddress.ip_network("127.0.0.0/8"),)))
        assert (await c.get("/metrics")).status_code == 200  # in the allow list: no key needed

        world.reconfigure(admin_key="", metrics=dataclasses.replace(world.gw.config.metrics, allow=()))
        assert (await c.get("/metrics")).status_code == 200  # no key, no list: loopback only
        # behind a trusted local proxy, the forwarded client address counts, not the proxy's
        server = dataclasses.replace(world.gw.config.server, trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),))
        world.reconfigure(server=server)
        r = await c.get("/metrics", headers={"x-forwarded-for": "203.0.113.7"})
        assert r.status_code == 403 and "not allowed" in r.json()["error"]
        world.plane.metrics = None
        world.reconfigure(admin_key=ADMIN)
        assert (await c.get("/metrics", headers=AUTH)).status_code == 404
