"""Management API building blocks, without a server: query parsing, the event hub, debug capture
and its masking, Cooldowns.clear, and the config file watcher (real files, a fake gateway)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
from datetime import datetime, timezone

import orjson
import pytest

from plexus.config import validate_text
from plexus.config_error import ConfigError
from plexus.control.debug import MASK, DebugLog, mask_url
from plexus.control.events import EventHub
from plexus.control.management import metrics_refusal
from plexus.control.management_query import (
    ApiError, debug_settings, parse_query, parse_time, summary_query, usage_query,
)
from plexus.control.reload import Reloader, write_atomic
from plexus.control.usage import Usage
from plexus.routing.cooldowns import Cooldowns


# ------------------------------------------------------------------ query parsing

def test_usage_query_defaults_and_every_filter():
    assert usage_query(b"") == ({}, 100, 0)
    f, limit, offset = usage_query(b"since=1700000000&until=2024-06-01T00:00:00Z&alias=a&provider=p&model=m"
                                   b"&key=k&dialect=openai&status=error&min_duration_ms=5&max_duration_ms=7.5"
                                   b"&limit=1000&offset=20")
    assert f == {"since": 1700000000.0, "until": datetime(2024, 6, 1, tzinfo=timezone.utc).timestamp(),
                 "alias": "a", "provider": "p", "model": "m", "key": "k", "dialect": "openai",
                 "status": "error", "min_duration_ms": 5.0, "max_duration_ms": 7.5}
    assert (limit, offset) == (1000, 20)


@pytest.mark.parametrize("query, names", [
    (b"limit=0", "limit"), (b"limit=1001", "limit"), (b"limit=x", "limit"), (b"offset=-1", "offset"),
    (b"since=yesterday", "since"), (b"since=-5", "since"), (b"until=1717171717000", "until"),
    (b"since=2000&until=1000", "since"), (b"status=ok", "status"), (b"min_duration_ms=abc", "min_duration_ms"),
    (b"min_duration_ms=9&max_duration_ms=3", "min_duration_ms"), (b"alias=", "alias"),
    (b"alais=x", "alais"), (b"alias=a&alias=b", "alias"), (b"max_duration_ms=nan", "max_duration_ms"),
])
def test_usage_query_bad_parameters_are_400_naming_them(query, names):
    with pytest.raises(ApiError) as e:
        usage_query(query)
    assert e.value.status == 400 and f"'{names}'" in e.value.message


def test_iso_times_with_zones_and_a_plus_decoded_as_space():
    utc = datetime(2024, 6, 1, 10, tzinfo=timezone.utc).timestamp()
    assert parse_time("since", "2024-06-01T12:00:00+02:00") == utc
    assert parse_time("since", "2024-06-01T12:00:00 02:00") == utc  # "+" unencoded in a URL
    assert parse_time("since", "2024-06-01T10:00:00") == utc  # no zone: UTC
    assert parse_time("since", "2024-06-01") == datetime(2024, 6, 1, tzinfo=timezone.utc).timestamp()
    assert usage_query(b"since=2024-06-01T12%3A00%3A00%2B02%3A00")[0]["since"] == utc


def test_summary_query():
    assert summary_query(b"group_by=provider&status=success") == ("provider", {"status": "success"})
    for q, word in ((b"", "group_by"), (b"group_by=colour", "group_by"), (b"group_by=alias&limit=5", "limit")):
        with pytest.raises(ApiError) as e:
            summary_query(q)
        assert e.value.status == 400 and word in e.value.message


def test_parse_query_and_debug_body():
    assert parse_query(b"a=1&b=", ("a", "b")) == {"a": "1", "b": ""}
    assert debug_settings(b'{"enabled": true}') == (True, None, None)
    assert debug_settings(b'{"enabled": false, "aliases": ["x"], "keys": null}') == (False, ["x"], None)
    for body in (b"nope", b"[]", b"{}", b'{"enabled": 1}', b'{"enabled": true, "aliases": "x"}',
                 b'{"enabled": true, "alias": ["x"]}', b'{"enabled": true, "keys": [""]}'):
        with pytest.raises(ApiError) as e:
            debug_settings(body)
        assert e.value.status == 400


# ------------------------------------------------------------------ /metrics access rules

NETS = (ipaddress.ip_network("10.0.0.0/8"),)


@pytest.mark.parametrize("ip, admin, key_ok, allow, want", [
    ("203.0.113.9", "adm", True, (), None),          # the admin key works from anywhere
    ("10.1.2.3", "adm", False, NETS, None),          # in the allow list: no key needed
    ("127.0.0.1", "adm", False, NETS, 401),          # the allow list replaces the loopback default
    ("203.0.113.9", "adm", False, (), 401),          # a key would help
    ("127.0.0.1", "", False, (), None),              # no admin key, no list: loopback only
    ("::1", "", False, (), None),
    ("::ffff:127.0.0.1", "", False, (), None),
    ("::ffff:10.0.0.1", "", False, NETS, None),
    ("203.0.113.9", "", False, (), 403),             # nothing could help
    ("", "", False, (), 403),
    ("127.0.0.1", "adm", False, (), 401),            # an admin key configured: loopback needs it too
])
def test_metrics_refusal(ip, admin, key_ok, allow, want):
    r = metrics_refusal(ip, admin, key_ok, allow)
    assert (r.status if r else None) == want


# ------------------------------------------------------------------ EventHub

def usage(i: int = 1, alias: str = "a") -> Usage:
    u = Usage(f"req{i}", 1700000000.0 + i, "127.0.0.1", "openai", "/v1/chat/completions")
    u.alias = alias
    u.finish(12.5)
    return u


async def test_hub_delivers_frames_and_times_out_with_empty_bytes():
    hub = EventHub()
    hub.publish(usage(0))  # no subscriber: nothing happens
    sub = hub.subscribe()
    assert await sub.get(0.01) == b""  # heartbeat time
    hub.publish(usage(1))
    hub.publish(usage(2))
    data = await sub.get(1)
    frames = data.split(b"\n\n")[:-1]
    assert [orjson.loads(f.split(b"data: ", 1)[1])["id"] for f in frames] == ["req1", "req2"]
    assert all(f.startswith(b"event: usage\ndata: ") for f in frames)
    waiter = asyncio.ensure_future(sub.get(5))
    await asyncio.sleep(0)
    hub.publish(usage(3))
    assert b'"req3"' in await asyncio.wait_for(waiter, 1)
    sub.close()
    sub.close()  # idempotent
    assert hub.subscribers == [] and await sub.get(0.01) is None


async def test_slow_subscriber_is_dropped_and_memory_stays_bounded():
    hub = EventHub()
    slow, fast = hub.subscribe(max_queue=3), hub.subscribe(max_queue=100)
    for i in range(3):
        hub.publish(usage(i))
    assert len(slow) == 3 and not slow.dropped
    hub.publish(usage(3))  # the 4th frame does not fit: dropped, queue freed
    assert slow.dropped and len(slow) == 0 and hub.subscribers == [fast] and hub.drops == 1
    assert await slow.get(1) is None
    for i in range(4, 50):
        hub.publish(usage(i))
    assert len(fast) == 50 and len(slow) == 0
    with pytest.raises(ValueError):
        hub.subscribe(0)


# ------------------------------------------------------------------ debug capture

def test_debug_off_filters_and_ring():
    log = DebugLog(max_entries=2)
    assert log.begin("r0", "a", None) is None  # off
    log.configure(True, aliases=["a"], keys=["team"])
    assert log.begin("r1", "b", "team") is None and log.begin("r1", "a", "other") is None
    assert log.begin("r1", "a", None) is None  # no key while a key filter is set
    for i in range(3):
        c = log.begin(f"r{i}", "a", "team")
        c.client_request(b"POST", b"/v1/chat/completions", [(b"content-type", b"application/json")], b"{}")
        c.finish(usage(i))
        c.finish(usage(i))  # stored once
    assert [e["id"] for e in log.list()] == ["r2", "r1"]  # newest first, a ring of 2
    assert log.get("r0") is None and log.get("r2") is not None
    log.configure(True)
    assert log.settings() == {"enabled": True, "aliases": None, "keys": None, "max_entries": 2, "count": 2}
    log.resize(1)
    assert [e["id"] for e in log.list()] == ["r2"]
    assert log.clear() == 1 and log.list() == []
    log.resize(0)  # debug.max_entries: 0 keeps none
    assert log.begin("r9", "a", "team") is None


PROVIDER_KEY = "sk-provider-secret-0123456789"
CLIENT_KEY = "client-secret-abcdefgh"
ROTATED_KEY = "sk-old-rotated-key-99999999"


def test_capture_masks_every_secret_form():
    log = DebugLog()
    log.configure(True)
    c = log.begin("r1", "a", "team")
    c.client_request(b"POST", f"/v1beta/models/a:generateContent?alt=sse&key={CLIENT_KEY}".encode(),
                     [(b"authorization", f"Bearer {CLIENT_KEY}".encode()), (b"x-admin-key", b"adminadmin"),
                      (b"x-goog-api-key", CLIENT_KEY.encode()), (b"user-agent", b"t")],
                     f'{{"note": "my key is {CLIENT_KEY} and {PROVIDER_KEY}"}}'.encode())
    c.upstream_request("p1", f"https://api.example/v1/chat?key={ROTATED_KEY}&x=1",
                       [(b"authorization", f"Bearer {ROTATED_KEY}".encode()), (b"x-api-key", PROVIDER_KEY.encode()),
                        (b"proxy-authorization", b"Basic dXNlcjpwYXNz"), (b"x-org", b"org-secret-value")],
                       b'{"echo": "' + ROTATED_KEY.encode() + b'"}')
    c.upstream_response(200, [(b"content-type", b"text/event-stream")], b"data: one " + PROVIDER_KEY.encode())
    c.upstream_response(200, [(b"content-type", b"text/event-stream")], b"\n\ndata: two\n\n")
    c.client_response(200, {"content-type": "text/event-stream"}, b"data: one\n\n")
    c.client_response(200, {"content-type": "text/event-stream"}, b"data: two\n\n")
    u = usage(1)
    u.error = f"upstream said: bad key {PROVIDER_KEY}"
    c.finish(u)

    out = c.render([PROVIDER_KEY, "x"], {"X-Org"})
    text = orjson.dumps(out).decode()
    for secret in (PROVIDER_KEY, CLIENT_KEY, ROTATED_KEY, "adminadmin", "dXNlcjpwYXNz", "org-secret-value"):
        assert secret not in text, secret
    cr = out["client_request"]
    assert cr["target"] == f"/v1beta/models/a:generateContent?alt=sse&key={MASK}"
    assert dict(map(tuple, cr["headers"])) == {"authorization": f"Bearer {MASK}", "x-admin-key": MASK,
                                               "x-goog-api-key": MASK, "user-agent": "t"}
    assert cr["body"] == f'{{"note": "my key is {MASK} and {MASK}"}}'
    up = out["upstream"][0]
    assert up["provider"] == "p1" and up["request"]["url"] == f"https://api.example/v1/chat?key={MASK}&x=1"
    assert dict(map(tuple, up["request"]["headers"]))["proxy-authorization"] == f"Basic {MASK}"
    assert up["response"] == {"status": 200, "headers": [["content-type", "text/event-stream"]],
                              "body": f"data: one {MASK}\n\ndata: two\n\n",
                              "body_bytes": len(f"data: one {PROVIDER_KEY}\n\ndata: two\n\n"),
                              "body_truncated": False}
    assert out["client_response"]["body"] == "data: one\n\ndata: two\n\n"
    assert out["usage"]["error"] == f"upstream said: bad key {MASK}"
    assert "&x=1" in up["request"]["url"]  # a short "secret" ("x") is not replaced in text


def test_capture_caps_bodies_and_cuts_a_secret_at_the_cap():
    log = DebugLog(body_cap=64)
    log.configure(True)
    c = log.begin("r1", None, None)
    body = b"a" * 60 + PROVIDER_KEY.encode()  # the key straddles the cap
    c.client_request(b"POST", b"/v1/messages", [], body)
    c.client_response(200, [], b"x" * 40)
    c.client_response(200, [], b"y" * 40)
    c.finish(usage(1))
    out = c.render([PROVIDER_KEY])
    cr = out["client_request"]
    assert cr["body_truncated"] and cr["body_bytes"] == len(body) and "note" in cr
    assert cr["body"] == "a" * 60 + MASK and PROVIDER_KEY[:4] not in cr["body"]
    assert out["client_response"]["body"] == "x" * 40 + "y" * 24 and out["client_response"]["body_bytes"] == 80
    assert out["response_bytes"] == 80 and out["request_bytes"] == len(body)


def test_capture_keeps_the_first_non_empty_headers():
    log = DebugLog()
    log.configure(True)
    c = log.begin("r1", "a", None)
    c.client_response(200, [], b"a")
    c.client_response(200, [(b"content-type", b"text/plain")], b"b")
    c.client_response(200, (), b"c")
    c.finish(usage(1))
    out = c.render()
    assert out["client_response"]["headers"] == [["content-type", "text/plain"]]
    assert out["client_response"]["body"] == "abc" and out["upstream"] == [] and out["client_request"] is None


def test_mask_url():
    assert mask_url("/x?key=abc&Key=def#f") == f"/x?key={MASK}&Key={MASK}#f"
    assert mask_url("/x?monkey=1&key=") == f"/x?monkey=1&key={MASK}"


# ------------------------------------------------------------------ Cooldowns.clear

def test_cooldowns_clear_all_provider_and_model():
    c = Cooldowns((5,))
    for key in (("p", "m1"), ("p", "m2"), ("q", "m1")):
        c.failure(key, 0.0)
    entries = c.entries
    assert c.clear("p", "m1") == 1 and c.clear("p", "m1") == 0
    assert c.clear("nope") == 0
    assert c.clear("p") == 1 and list(c.entries) == [("q", "m1")]
    assert c.clear() == 1 and c.entries == {} and c.entries is entries  # the same dict (Router.plan holds it)
    with pytest.raises(ValueError):
        c.clear(model="m1")


# ------------------------------------------------------------------ config watcher

GOOD = """\
admin_key: adm-secret-1234
usage: {{enabled: false}}
providers:
  p1: {{type: OpenAI, api_base_url: "http://127.0.0.1:9/v1", api_key: sk-provider-secret-123, models: [m1]}}
models:
  {alias}: {{targets: [{{provider: p1, model: m1}}]}}
"""


class FakeGateway:
    def __init__(self, config) -> None:
        self.config = config
        self.applied = []
        self.fail = None

    def apply(self, config) -> None:
        if self.fail is not None:
            raise self.fail
        self.config = config
        self.applied.append(config)


def load(path) -> FakeGateway:
    config, details = validate_text(open(path).read(), str(path))
    assert not details
    return FakeGateway(config)


async def wait_for(pred, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_watcher_applies_an_edit_once_and_keeps_serving_after_a_bad_one(tmp_path, caplog):
    path = tmp_path / "plexus.yaml"
    path.write_text(GOOD.format(alias="first"))
    gw = load(path)
    r = Reloader(gw, str(path), asyncio.get_running_loop(), interval=0.03, settle=0.06)
    r.start()
    try:
        assert await r.applied_text() == GOOD.format(alias="first")
        assert r.status()["source"] == "startup"
        path.write_text(GOOD.format(alias="second"))
        await wait_for(lambda: gw.applied)
        assert list(gw.config.aliases) == ["second"] and r.status()["source"] == "file"
        await asyncio.sleep(0.3)
        assert len(gw.applied) == 1  # one change, one apply

        with caplog.at_level(logging.ERROR, logger="plexus.config"):
            path.write_text(GOOD.format(alias="third").replace("models: [m1]", "models: [m1], colour: red")
                            + "bogus: 1\n")
            await wait_for(lambda: r.status()["last_error"] is not None)
        err = r.status()["last_error"]
        assert err["source"] == "file" and {d["path"] for d in err["details"]} >= {"bogus", "providers.p1.colour"}
        assert list(gw.config.aliases) == ["second"] and len(gw.applied) == 1  # old config keeps serving
        logged = [rec for rec in caplog.records if rec.levelno == logging.ERROR]
        assert len(logged) == 1 and "bogus" in logged[0].getMessage() and "NOT applied" in logged[0].getMessage()
        assert r.status()["last_check"] is not None

        path.write_text(GOOD.format(alias="second"))  # undone: the applied text again
        await wait_for(lambda: r.status()["last_error"] is None)
        assert len(gw.applied) == 1

        gw.fail = ConfigError(str(path), "providers.p1.ca_file", "no readable file")
        path.write_text(GOOD.format(alias="fourth"))
        await wait_for(lambda: r.status()["last_error"] is not None)
        assert r.status()["last_error"]["details"] == [{"path": "providers.p1.ca_file", "message": "no readable file"}]
        assert list(gw.config.aliases) == ["second"]
    finally:
        r.stop()


async def test_watcher_waits_for_the_file_to_settle(tmp_path):
    path = tmp_path / "plexus.yaml"
    path.write_text(GOOD.format(alias="first"))
    gw = load(path)
    r = Reloader(gw, str(path), asyncio.get_running_loop(), interval=0.02, settle=0.25)
    r.start()
    try:
        await r.applied_text()
        half = GOOD.format(alias="second")
        with open(path, "w") as f:  # an editor writing in two steps: the half file must never be read
            f.write(half[:40])
            f.flush()
            await asyncio.sleep(0.1)
            f.write(half[40:])
        await wait_for(lambda: gw.applied)
        assert list(gw.config.aliases) == ["second"] and r.status()["last_error"] is None
    finally:
        r.stop()


async def test_post_writes_atomically_keeps_bak_and_the_watcher_does_not_reload_it(tmp_path):
    path = tmp_path / "plexus.yaml"
    path.write_text(GOOD.format(alias="first"))
    os.chmod(path, 0o640)
    gw = load(path)
    r = Reloader(gw, str(path), asyncio.get_running_loop(), interval=0.02, settle=0.04)
    r.start()
    try:
        await r.applied_text()
        assert await r.post("bogus: [") and path.read_text() == GOOD.format(alias="first")
        assert r.status()["last_error"]["source"] == "api"
        assert await r.post(GOOD.format(alias="second")) == []
        assert path.read_text() == GOOD.format(alias="second")
        assert (tmp_path / "plexus.yaml.bak").read_text() == GOOD.format(alias="first")
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o640)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["plexus.yaml", "plexus.yaml.bak"]  # no temp left
        assert r.status()["source"] == "api" and r.status()["last_error"] is None
        assert await r.applied_text() == GOOD.format(alias="second")
        await asyncio.sleep(0.3)
        assert len(gw.applied) == 1  # the watcher saw its own write and did nothing

        gw.fail = ConfigError(str(path), "providers.p1.ca_file", "no readable file")
        details = await r.post(GOOD.format(alias="third"))
        assert details == [{"path": "providers.p1.ca_file", "message": "no readable file"}]
        assert path.read_text() == GOOD.format(alias="second")  # restored
        assert list(gw.config.aliases) == ["second"]
    finally:
        r.stop()


def test_write_atomic_through_a_symlink(tmp_path):
    real = tmp_path / "real.yaml"
    real.write_text("old")
    link = tmp_path / "link.yaml"
    link.symlink_to(real)
    assert write_atomic(str(link), b"new") == b"old"
    assert link.is_symlink() and real.read_text() == "new" and (tmp_path / "real.yaml.bak").read_text() == "old"
