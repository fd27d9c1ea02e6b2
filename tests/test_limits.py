"""Limits (API.md "Limits"): client connections, in-flight requests per gateway, per provider and
per inbound key, against a real Plexus process (tests/spawn.py) and the fake upstream.

Requests are kept in flight by streams the fake holds after their first chunk (`Reply.sse(...,
hold=gate)`): the client has the head, Plexus holds its slots until the gate opens or the client
goes away. What the limits count is read back from the gauges of GET /metrics, so every test can
check that the counts return to zero (no slot leaks on success, rejection or disconnect).

The unit part at the end: config validation, the over-limit connection's 503 in each dialect,
and `_same_provider` (a reload that changes only a provider's max_inflight keeps its runtime).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from prometheus_client.parser import text_string_to_metric_families

from fake_upstream import FakeUpstream, Reply, openai_stream
from spawn import start_plexus, usage_record, wait_for

ADMIN = "adm-limits-e2e-1"
AUTH = {"x-admin-key": ADMIN}
CAPPED, FREE = "sk-capped-key-0001", "sk-free-key-0001"
MSGS = [{"role": "user", "content": "hi"}]


def config(base: str, *, gateway: int = 0, p_a: int = 1, p_b: int = 1, capped: int = 1) -> str:
    return f"""\
admin_key: {ADMIN}
usage: {{path: usage.db}}
server: {{max_inflight: {gateway}}}
keys:
  capped: {{secret: {CAPPED}, max_inflight: {capped}}}
  free: {{secret: {FREE}}}
providers:
  p_oa: {{type: OpenAI, api_base_url: "{base}/v1", api_key: k1, models: [m1], responses: true}}
  p_an: {{type: Anthropic, api_base_url: "{base}/v1", api_key: k2, models: [c1]}}
  p_ge: {{type: Gemini, api_base_url: "{base}/v1beta", api_key: k3, models: [g1]}}
  p_a: {{type: OpenAI, api_base_url: "{base}/v1", api_key: k4, models: [a], max_inflight: {p_a}}}
  p_b: {{type: OpenAI, api_base_url: "{base}/v1", api_key: k5, models: [b], max_inflight: {p_b}}}
models:
  gpt: {{targets: [{{provider: p_oa, model: m1}}]}}
  claude: {{targets: [{{provider: p_an, model: c1}}]}}
  gem: {{targets: [{{provider: p_ge, model: g1}}]}}
  ab: {{selector: in_order, targets: [{{provider: p_a, model: a}}, {{provider: p_b, model: b}}]}}
  solo: {{targets: [{{provider: p_a, model: a}}]}}
"""


@pytest.fixture(scope="module")
def fake():
    with FakeUpstream() as f:
        yield f


@pytest.fixture(scope="module")
def px(fake, tmp_path_factory):
    with start_plexus(config(fake.base_url), tmp_path_factory.mktemp("limits")) as run:
        yield run


@pytest.fixture
def c(px, fake):
    fake.reset()
    with httpx.Client(base_url=px.url, timeout=10, trust_env=False) as client:
        yield client
    # whatever a test did, nothing it started is still counted
    wait_for(lambda: in_flight(px.url) == (0, {}, {}), 5, what="every in-flight count back to zero")


def in_flight(url: str) -> tuple[float, dict, dict]:
    """(requests in flight, {provider: attempts in flight > 0}, {key: requests in flight})."""
    with httpx.Client(base_url=url, timeout=5, trust_env=False) as m:
        r = m.get("/metrics", headers=AUTH)
    assert r.status_code == 200, r.text
    total, providers, keys = 0.0, {}, {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            if s.name == "plexus_inflight_requests":
                total = s.value
            elif s.name == "plexus_provider_inflight_requests" and s.value:
                providers[s.labels["provider"]] = s.value
            elif s.name == "plexus_key_inflight_requests":
                keys[s.labels["key"]] = s.value
    return total, providers, keys


def post_config(url: str, text: str) -> None:
    with httpx.Client(base_url=url, timeout=10, trust_env=False) as m:
        r = m.post("/v0/management/config", headers=AUTH, content=text)
    assert r.status_code == 200 and r.json()["status"] == "ok", r.text


class Held:
    """Streams kept in flight: each one's upstream reply waits after its first chunk."""

    def __init__(self, fake, client: httpx.Client) -> None:
        self.fake, self.client = fake, client
        self.gate = threading.Event()
        self.stack = contextlib.ExitStack()
        self.streams: list[httpx.Response] = []

    def open(self, model: str, upstream_model: str, key: str = FREE) -> httpx.Response:
        self.fake.script(Reply.sse(openai_stream(upstream_model), hold=self.gate, hold_after=1))
        r = self.stack.enter_context(self.client.stream(
            "POST", "/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
            json={"model": model, "messages": MSGS, "stream": True}))
        assert r.status_code == 200, r.read()
        self.streams.append(r)
        return r

    def __enter__(self) -> "Held":
        return self

    def __exit__(self, *exc) -> None:
        """Let the streams finish, read them to the end, and wait until Plexus has counted them
        out (its handler ends just after the last byte is written)."""
        self.gate.set()
        try:
            if exc[0] is None:
                for r in self.streams:
                    assert r.read().endswith(b"data: [DONE]\n\n")
                wait_for(lambda: in_flight(str(self.client.base_url))[0] == 0, 5, what="the held requests to end")
        finally:
            self.stack.close()


def chat(c: httpx.Client, model: str, key: str = FREE) -> httpx.Response:
    return c.post("/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                  json={"model": model, "messages": MSGS})


def sdk_errors(url: str, key: str) -> dict:
    """The error each official SDK raises for one non-stream call per dialect (no retries)."""
    out = {}
    oa = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=10)
    an = anthropic.Anthropic(base_url=url, api_key=key, max_retries=0, timeout=10)
    ge = genai.Client(api_key=key, http_options=genai_types.HttpOptions(base_url=url, timeout=10_000))
    calls = {
        "openai": lambda: oa.chat.completions.create(model="gpt", messages=MSGS),
        "responses": lambda: oa.responses.create(model="gpt", input="hi"),
        "anthropic": lambda: an.messages.create(model="claude", max_tokens=16, messages=MSGS),
        "gemini": lambda: ge.models.generate_content(model="gem", contents="hi"),
    }
    try:
        for name, call in calls.items():
            with pytest.raises((openai.APIStatusError, anthropic.APIStatusError, genai_errors.APIError)) as e:
                call()
            out[name] = e.value
    finally:
        oa.close()
        an.close()
    return out


def check_shapes(errs: dict, status: int, words: str) -> None:
    """Each SDK's error: the status, retry-after 1 and the dialect's own error shape."""
    oa, rs, an, ge = errs["openai"], errs["responses"], errs["anthropic"], errs["gemini"]
    for e in (oa, rs, an):
        assert e.status_code == status
        assert e.response.headers["retry-after"] == "1"
        assert words in e.response.text
    want_oa = openai.InternalServerError if status == 503 else openai.RateLimitError
    assert isinstance(oa, want_oa) and isinstance(rs, want_oa)
    for e in (oa, rs):
        body = e.response.json()["error"]
        assert body["type"] == ("server_error" if status == 503 else "rate_limit_error"), body
    want_an = anthropic.InternalServerError if status == 503 else anthropic.RateLimitError
    assert isinstance(an, want_an)
    assert an.response.json()["type"] == "error"
    assert an.response.json()["error"]["type"] == ("overloaded_error" if status == 503 else "rate_limit_error")
    assert ge.code == status
    assert ge.status == ("UNAVAILABLE" if status == 503 else "RESOURCE_EXHAUSTED")
    assert words in ge.message


# ----------------------------------------------------------------------------- per provider

def test_provider_limit_fails_over_then_503_when_all_full(px, fake, c):
    with Held(fake, c) as held:
        first = held.open("ab", "a")
        assert first.headers["x-plexus-target"] == "p_a/a"
        second = held.open("ab", "b")  # p_a is full: skipped like a cooling target
        assert second.headers["x-plexus-target"] == "p_b/b"
        assert second.headers["x-plexus-attempts"] == "1"  # no attempt was made at p_a
        assert in_flight(px.url) == (2, {"p_a": 1, "p_b": 1}, {})

        r = chat(c, "ab")  # both full: no upstream call, 503 with retry-after
        assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
        msg = r.json()["error"]["message"]
        assert "every target of model 'ab'" in msg and "p_a/a" in msg and "p_b/b" in msg, msg
        solo = chat(c, "solo")  # a lone target at its limit: 503 naming the provider's key
        assert solo.status_code == 503 and solo.headers["retry-after"] == "1"
        assert "providers.p_a.max_inflight" in solo.json()["error"]["message"]
        assert len(fake.requests) == 2

        rec = usage_record(px.url, ADMIN, r.headers["x-plexus-request-id"])
        assert (rec["status"], rec["http_status"], rec["attempts"]) == ("error", 503, 0)
        # no cooldown: a full provider is not a failing one
        rows = c.get("/v0/management/cooldowns", headers=AUTH).json()["data"]
        assert not [e for e in rows if e["cooling"] or e["failures"]], rows
    r = chat(c, "ab")  # slots free again: p_a first, as in_order says
    assert r.status_code == 200 and r.headers["x-plexus-target"] == "p_a/a"


def test_reload_changes_a_provider_limit_and_keeps_its_count(px, fake, c):
    with Held(fake, c) as held:
        held.open("solo", "a")
        assert chat(c, "solo").status_code == 503
        post_config(px.url, config(fake.base_url, p_a=2))
        try:
            held.open("solo", "a")  # the held one still counts: 1 of 2, so one more fits
            assert in_flight(px.url)[1] == {"p_a": 2}
            r = chat(c, "solo")
            assert r.status_code == 503 and "limit of 2 requests" in r.json()["error"]["message"], r.text
        finally:
            post_config(px.url, config(fake.base_url))


# ----------------------------------------------------------------------------- gateway-wide

def test_gateway_limit_503_in_every_dialect_after_a_reload(px, fake, c):
    post_config(px.url, config(fake.base_url, gateway=2))
    try:
        with Held(fake, c) as held:
            held.open("gpt", "m1")
            held.open("ab", "a")
            errs = sdk_errors(px.url, FREE)
            check_shapes(errs, 503, "server.max_inflight")
            assert len(fake.requests) == 2  # rejected before any upstream call
            rid = errs["openai"].response.headers["x-plexus-request-id"]
            rec = usage_record(px.url, ADMIN, rid)
            assert (rec["status"], rec["http_status"], rec["key"]) == ("error", 503, "free")
        assert chat(c, "gpt").status_code == 200
    finally:
        post_config(px.url, config(fake.base_url))
    with Held(fake, c) as held:  # the limit is gone with the reload: three at once are fine
        for _ in range(3):
            held.open("gpt", "m1")


# ----------------------------------------------------------------------------- per key

def test_key_limit_429_in_every_dialect(px, fake, c):
    with Held(fake, c) as held:
        held.open("gpt", "m1", key=CAPPED)
        assert in_flight(px.url)[2] == {"capped": 1}
        errs = sdk_errors(px.url, CAPPED)
        check_shapes(errs, 429, "API key 'capped'")
        for e in errs.values():
            text = e.response.text if hasattr(e, "response") and hasattr(e.response, "text") else str(e)
            assert CAPPED not in text and CAPPED not in str(e)
        assert "keys.capped.max_inflight" in errs["openai"].response.json()["error"]["message"]
        assert chat(c, "gpt", FREE).status_code == 200  # another key is not limited by it
        assert len(fake.requests) == 2
    assert chat(c, "gpt", CAPPED).status_code == 200


def test_disconnect_mid_stream_frees_every_slot(px, fake, c):
    gate = threading.Event()
    try:
        fake.script(Reply.sse(openai_stream("a"), hold=gate, hold_after=1))
        with c.stream("POST", "/v1/chat/completions", headers={"authorization": f"Bearer {CAPPED}"},
                      json={"model": "solo", "messages": MSGS, "stream": True}) as r:
            assert r.status_code == 200
            chunks = r.iter_raw()  # (kept: a dropped generator would close the response now)
            assert next(chunks).startswith(b"data: ")
            assert in_flight(px.url) == (1, {"p_a": 1}, {"capped": 1})
        # the client went away mid-stream (httpx closes an unread response's connection)
        wait_for(lambda: in_flight(px.url) == (0, {}, {}), 5, what="the slots of the cancelled request")
        assert chat(c, "solo", CAPPED).status_code == 200
    finally:
        gate.set()


def test_rejections_hold_no_slot(px, fake, c):
    with Held(fake, c) as held:
        held.open("solo", "a", key=CAPPED)
        for _ in range(5):
            assert chat(c, "solo", CAPPED).status_code == 429
            assert chat(c, "solo", FREE).status_code == 503
        assert in_flight(px.url) == (1, {"p_a": 1}, {"capped": 1})


# ----------------------------------------------------------------------------- connections

def _raw(port: int, request: bytes | None, timeout: float = 5) -> tuple[int, dict, bytes]:
    """Send ``request`` on a new connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        if request is not None:
            s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ")[1]), {k.lower(): v for k, v in headers.items()}, body


def test_connection_limit_503_in_the_path_dialect_and_close(tmp_path, fake):
    text = config(fake.base_url).replace("server: {max_inflight: 0}",
                                         "server: {max_connections: 2, header_timeout: 0.5}")
    with start_plexus(text, tmp_path) as run:
        idle = []
        try:
            def two_open():  # the startup check's connection may not be gone yet: until two fit
                while len(idle) < 2:
                    s = socket.create_connection(("127.0.0.1", run.port), timeout=5)
                    s.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
                    if s.recv(65536).startswith(b"HTTP/1.1 200"):
                        idle.append(s)
                    else:
                        s.close()
                return True
            wait_for(two_open, 5, what="two connections")
            post = b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n%scontent-length: 2\r\n\r\n{}"
            cases = {
                b"/v1/chat/completions": ("openai", b""),
                b"/v1/responses": ("openai", b""),
                b"/v1/messages": ("anthropic", b""),
                b"/v1beta/models/gem:generateContent": ("gemini", b""),
                b"/nowhere": ("anthropic", b"anthropic-version: 2023-06-01\r\n"),  # registry.guess
            }
            for path, (shape, extra) in cases.items():
                status, headers, body = _raw(run.port, post % (path, extra))
                assert status == 503 and headers["retry-after"] == "1" and headers["connection"] == "close"
                obj = json.loads(body)
                if shape == "anthropic":
                    assert obj["type"] == "error" and obj["error"]["type"] == "overloaded_error", obj
                elif shape == "gemini":
                    assert obj["error"]["status"] == "UNAVAILABLE" and obj["error"]["code"] == 503, obj
                else:
                    assert obj["error"]["type"] == "server_error", obj
                assert "server.max_connections" in body.decode()
            status, headers, body = _raw(run.port, None)  # a silent client: answered after header_timeout
            assert status == 503 and "error" in json.loads(body)
            # the held connections still work, and one freed is one that fits
            idle[0].sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            assert idle[0].recv(65536).startswith(b"HTTP/1.1 200")
            idle.pop().close()
            wait_for(lambda: _raw(run.port, b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")[0]
                     == 200, 5, what="a freed connection slot")
        finally:
            for s in idle:
                s.close()


# ----------------------------------------------------------------------------- units

def test_config_reads_and_validates_the_limits():
    from plexus.config import ConfigError, parse_config

    base = {"providers": {"p": {"type": "OpenAI", "api_base_url": "http://x/v1", "models": ["m"]}},
            "models": {"a": {"targets": [{"provider": "p", "model": "m"}]}}}
    cfg = parse_config(base)
    assert (cfg.server.max_connections, cfg.server.max_inflight) == (10000, 0)
    assert cfg.providers["p"].max_inflight == 0
    cfg = parse_config({**base, "server": {"max_connections": 0, "max_inflight": 64},
                        "providers": {"p": {**base["providers"]["p"], "max_inflight": 8}},
                        "keys": {"k": {"secret": "s-123456789", "max_inflight": 2}, "j": {"secret": "s-987654321"}}})
    assert (cfg.server.max_connections, cfg.server.max_inflight, cfg.providers["p"].max_inflight) == (0, 64, 8)
    assert [(k.name, k.max_inflight) for k in cfg.keys] == [("k", 2), ("j", 0)]
    from plexus.app import server_limits  # what the listener applies (and re-applies on a reload)
    assert server_limits(cfg).max_connections == 0
    assert server_limits(parse_config(base)).max_connections == 10000
    bad = [({"server": {"max_inflight": -1}}, "server.max_inflight"),
           ({"server": {"max_connections": 1.5}}, "server.max_connections"),
           ({"server": {"max_inflight": "many"}}, "server.max_inflight"),
           ({"providers": {"p": {**base["providers"]["p"], "max_inflight": -2}}}, "providers.p.max_inflight"),
           ({"providers": {"p": {**base["providers"]["p"], "max_in_flight": 2}}}, "providers.p"),
           ({"keys": {"k": {"secret": "s-123456789", "max_inflight": True}}}, "keys.k.max_inflight")]
    for extra, where in bad:
        with pytest.raises(ConfigError) as e:
            parse_config({**base, **extra})
        assert where in str(e.value), (extra, str(e.value))


def test_overload_response_picks_the_dialect():
    from plexus.server.overload import overload_response

    def parse(raw: bytes):
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 ")
        assert b"\r\nretry-after: 1\r\n" in head and b"\r\nconnection: close" in head
        return json.loads(body)

    assert parse(overload_response(b""))["error"]["type"] == "server_error"
    assert parse(overload_response(b"POST /v1/mess"))["error"]["type"] == "server_error"  # line incomplete
    assert parse(overload_response(b"POST /v1/messages?beta=true HTTP/1.1\r\nhost: x\r\n"))["type"] == "error"
    assert parse(overload_response(b"POST /v1/models/g:streamGenerateContent HTTP/1.1\r\n"))["error"][
        "status"] == "UNAVAILABLE"
    assert parse(overload_response(b"GET /x HTTP/1.1\r\nAnthropic-Version: 1\r\n\r\n"))["type"] == "error"


def test_same_provider_ignores_only_max_inflight():
    import dataclasses

    from plexus.config import parse_config
    from plexus.gateway.handler import _same_provider

    p = parse_config({"providers": {"p": {"type": "OpenAI", "api_base_url": "http://x/v1", "models": ["m"]}},
                      "models": {"a": {"targets": [{"provider": "p", "model": "m"}]}}}).providers["p"]
    assert _same_provider(dataclasses.replace(p, max_inflight=3), p)
    assert not _same_provider(dataclasses.replace(p, max_inflight=3, read_timeout=1.0), p)
    assert not _same_provider(dataclasses.replace(p, api_key="other"), p)
