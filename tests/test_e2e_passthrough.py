"""End-to-end: a real Plexus process in passthrough (client dialect == provider type), plus its
GET endpoints, driven by raw httpx and by the official SDKs.

Theory (the spec under test): the upstream receives the client's JSON with ONLY `model` replaced
by the target model (Gemini: the model in the URL path, body untouched), unknown fields kept; the
provider's auth replaces the client's, which never reaches the upstream; the response status and
body bytes are relayed as sent, with x-plexus-alias / x-plexus-target added; streams are relayed
event by event as they arrive (checked with a hold gate, not with timing).
"""

from __future__ import annotations

import threading

import pytest

from fake_upstream import (CLIENT_KEY, DEFAULT_PIECES, DEFAULT_TEXT, Reply, anthropic_stream,
                           assert_no_secrets, dumps, gemini_sse, openai_stream, parse_sse)

MSGS = [{"role": "user", "content": "hi"}]
OPENAI_AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}
ANTHROPIC_AUTH = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}
from conftest import ALIASES  # the test config


def assert_client_auth_gone(req):
    """The client's credentials reach the upstream nowhere: no header value, no ?key=."""
    for name, value in req.headers.items():
        assert CLIENT_KEY not in value, f"client key forwarded in header {name}"
    assert "key" not in req.query and CLIENT_KEY not in req.target
    assert CLIENT_KEY.encode() not in req.body


def assert_plexus_headers(resp, alias, target):
    assert resp.headers.get("x-plexus-alias") == alias
    assert resp.headers.get("x-plexus-target") == target


# ---------------------------------------------------------------- GET endpoints
def test_health(http):
    r = http.get("/health")
    assert r.status_code == 200 and r.content.strip() == b"OK"


def test_models_openai_shape(http):
    r = http.get("/v1/models", headers=OPENAI_AUTH)
    assert r.status_code == 200
    assert_no_secrets(r.content)
    body = r.json()
    assert body["object"] == "list"
    assert sorted(m["id"] for m in body["data"]) == sorted(ALIASES)
    for m in body["data"]:
        assert m["object"] == "model" and m["owned_by"] == "plexus" and isinstance(m["created"], int)


def test_models_anthropic_shape(http):
    r = http.get("/v1/models", headers=ANTHROPIC_AUTH)
    assert r.status_code == 200
    body = r.json()
    ids = [m["id"] for m in body["data"]]
    assert sorted(ids) == sorted(ALIASES)
    for m in body["data"]:
        assert m["type"] == "model" and isinstance(m["display_name"], str) and isinstance(m["created_at"], str)
    assert body["has_more"] is False and body["first_id"] == ids[0] and body["last_id"] == ids[-1]


def test_models_via_sdks(openai_client, anthropic_client):
    assert sorted(m.id for m in openai_client.models.list()) == sorted(ALIASES)
    assert sorted(m.id for m in anthropic_client.models.list()) == sorted(ALIASES)


# ---------------------------------------------------------------- OpenAI passthrough
def test_openai_request_rewrite_auth_and_byte_relay(fake, http):
    body = {"model": "gpt", "messages": MSGS, "temperature": 0.25, "x_unknown": {"nested": [1, None, "é"]},
            "metadata": {"k": "v"}}
    exact = b'{"id":"chatcmpl-x", "object":"chat.completion","model":"up-gpt",  "choices":[],"weird":true}'
    fake.script(Reply(body=exact, headers={"x-upstream": "1"}))
    r = http.post("/v1/chat/completions", json=body, headers=OPENAI_AUTH)
    assert r.status_code == 200
    assert r.content == exact, "non-stream body must be relayed byte for byte"
    assert_plexus_headers(r, "gpt", "f_openai/up-gpt")
    req = fake.last
    assert req.method == "POST" and req.path == "/v1/chat/completions"
    assert req.json == {**body, "model": "up-gpt"}
    assert list(req.json) == list(body), "key order kept"
    assert req.headers["authorization"] == "Bearer sk-up-openai"
    assert req.headers.get("x-provider-extra") == "from-config"
    assert_client_auth_gone(req)


def test_openai_sdk_create(fake, openai_client):
    raw = openai_client.chat.completions.with_raw_response.create(model="gpt", messages=MSGS)
    r = raw.parse()
    assert r.model == "up-gpt" and r.choices[0].message.content == DEFAULT_TEXT and r.usage.total_tokens == 18
    assert_plexus_headers(raw, "gpt", "f_openai/up-gpt")
    assert fake.last.json["model"] == "up-gpt" and fake.last.json["messages"] == MSGS
    assert_client_auth_gone(fake.last)


def test_openai_sdk_stream(fake, openai_client):
    s = openai_client.chat.completions.create(model="gpt", messages=MSGS, stream=True,
                                              stream_options={"include_usage": True})
    chunks = list(s)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == DEFAULT_TEXT
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 18
    assert all(c.model == "up-gpt" for c in chunks)
    sent = fake.last.json
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


def test_openai_sdk_stream_helper(openai_client):
    with openai_client.chat.completions.stream(model="gpt", messages=MSGS) as s:
        deltas = [e.delta for e in s if e.type == "content.delta"]
        final = s.get_final_completion()
    assert "".join(deltas) == DEFAULT_TEXT and final.choices[0].message.content == DEFAULT_TEXT


def test_openai_stream_bytes_relayed(fake, http):
    chunks = openai_stream("up-gpt", include_usage=True)
    fake.script(Reply.sse(chunks))
    # (the client asks for usage itself: without it Plexus asks and strips, test_e2e_usage.py)
    body = {"model": "gpt", "messages": MSGS, "stream": True, "stream_options": {"include_usage": True}}
    with http.stream("POST", "/v1/chat/completions", json=body, headers=OPENAI_AUTH) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert_plexus_headers(r, "gpt", "f_openai/up-gpt")
        data = r.read()
    assert parse_sse(data) == parse_sse(b"".join(chunks))


def test_two_targets_both_used(fake, http):
    seen = set()
    for _ in range(24):
        r = http.post("/v1/chat/completions", json={"model": "two", "messages": MSGS})
        assert r.status_code == 200
        up = fake.last.json["model"]
        assert r.json()["model"] == up and r.headers.get("x-plexus-target") == f"f_openai/{up}"
        seen.add(up)
    assert seen == {"up-gpt", "up-gpt-2"}


def test_keyless_provider_sends_no_auth(fake, http):
    r = http.post("/v1/chat/completions", json={"model": "local", "messages": MSGS}, headers=OPENAI_AUTH)
    assert r.status_code == 200 and r.json()["model"] == "up-local"
    h = fake.last.headers
    assert "authorization" not in h and "x-api-key" not in h and "x-goog-api-key" not in h


# ---------------------------------------------------------------- Anthropic passthrough
@pytest.mark.parametrize("target", ["/v1/messages", "/v1/messages?beta=true"])
def test_anthropic_request_rewrite_and_auth(fake, http, target):
    body = {"model": "claude", "max_tokens": 50, "messages": MSGS, "x_unknown": {"a": [True]},
            "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}]}
    headers = {**ANTHROPIC_AUTH, "anthropic-version": "2024-01-01", "anthropic-beta": "tools-2099,x-y",
               "authorization": f"Bearer {CLIENT_KEY}"}
    r = http.post(target, json=body, headers=headers)
    assert r.status_code == 200 and r.json()["model"] == "up-claude"
    assert_plexus_headers(r, "claude", "f_anthropic/up-claude")
    req = fake.last
    assert req.path == "/v1/messages"
    assert req.json == {**body, "model": "up-claude"}
    assert req.headers["x-api-key"] == "sk-up-anthropic"
    assert req.headers["anthropic-version"] == "2024-01-01"
    assert req.headers.get("anthropic-beta") == "tools-2099,x-y"
    assert_client_auth_gone(req)


def test_anthropic_default_version(fake, http):
    r = http.post("/v1/messages", json={"model": "claude", "max_tokens": 5, "messages": MSGS},
                  headers={"x-api-key": CLIENT_KEY})
    assert r.status_code == 200
    assert fake.last.headers["anthropic-version"] == "2023-06-01"


def test_anthropic_sdk_create_and_stream(fake, anthropic_client):
    m = anthropic_client.messages.create(model="claude", max_tokens=20, messages=MSGS)
    assert m.model == "up-claude" and m.content[0].text == DEFAULT_TEXT
    assert fake.last.headers["x-api-key"] == "sk-up-anthropic"
    assert_client_auth_gone(fake.last)
    with anthropic_client.messages.stream(model="claude", max_tokens=20, messages=MSGS) as s:
        final = s.get_final_message()
    assert final.content[0].text == DEFAULT_TEXT and final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 6 and fake.last.json["stream"] is True


def test_anthropic_stream_bytes_relayed(fake, http):
    chunks = anthropic_stream("up-claude")
    fake.script(Reply.sse(chunks))
    with http.stream("POST", "/v1/messages", json={"model": "claude", "max_tokens": 5, "messages": MSGS,
                                                   "stream": True}, headers=ANTHROPIC_AUTH) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        data = r.read()
    assert parse_sse(data) == parse_sse(b"".join(chunks))


# ---------------------------------------------------------------- Gemini passthrough
GEM_BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "generationConfig": {"temperature": 0.5}, "x_unknown": {"z": 1}}


@pytest.mark.parametrize("version", ["v1beta", "v1"])
def test_gemini_path_rewrite_auth_and_byte_relay(fake, http, version):
    exact = b'{"candidates":[{"content":{"parts":[{"text":"x"}],"role":"model"}}],  "modelVersion":"up-gemini"}'
    fake.script(Reply(body=exact))
    raw = dumps(GEM_BODY)
    r = http.post(f"/{version}/models/gem:generateContent?key={CLIENT_KEY}", content=raw,
                  headers={"content-type": "application/json", "x-goog-api-key": CLIENT_KEY})
    assert r.status_code == 200 and r.content == exact
    assert_plexus_headers(r, "gem", "f_gemini/up-gemini")
    req = fake.last
    assert req.path == "/v1beta/models/up-gemini:generateContent"
    assert req.json == GEM_BODY, "Gemini body must be untouched"
    assert req.headers["x-goog-api-key"] == "g-up-key"
    assert "authorization" not in req.headers
    assert_client_auth_gone(req)


def test_gemini_stream_sse_and_array(fake, http):
    with http.stream("POST", "/v1beta/models/gem:streamGenerateContent?alt=sse", json=GEM_BODY,
                     headers={"x-goog-api-key": CLIENT_KEY}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        data = r.read()
    assert parse_sse(data) == parse_sse(b"".join(gemini_sse("up-gemini")))
    assert fake.last.path == "/v1beta/models/up-gemini:streamGenerateContent"
    assert fake.last.query.get("alt") == ["sse"] and "key" not in fake.last.query

    r = http.post("/v1beta/models/gem:streamGenerateContent", json=GEM_BODY, headers={"x-goog-api-key": CLIENT_KEY})
    assert r.status_code == 200
    arr = r.json()
    assert [o["candidates"][0]["content"]["parts"][0]["text"] for o in arr] == list(DEFAULT_PIECES)
    assert fake.last.query.get("alt") is None


@pytest.mark.parametrize("client", ["genai_client", "genai_client_v1beta"])
def test_genai_sdk(fake, request, client):
    c = request.getfixturevalue(client)
    r = c.models.generate_content(model="gem", contents="hi")
    assert r.text == DEFAULT_TEXT and r.model_version == "up-gemini"
    assert fake.last.path == "/v1beta/models/up-gemini:generateContent"
    assert fake.last.headers["x-goog-api-key"] == "g-up-key"
    assert_client_auth_gone(fake.last)
    parts = [ch.text for ch in c.models.generate_content_stream(model="gem", contents="hi")]
    assert parts == list(DEFAULT_PIECES)


# ---------------------------------------------------------------- streams relayed as they arrive
def _stream_call(dialect):
    if dialect == "openai":
        return ("/v1/chat/completions", {"model": "gpt", "messages": MSGS, "stream": True},
                OPENAI_AUTH, openai_stream("up-gpt"))
    if dialect == "anthropic":
        return ("/v1/messages", {"model": "claude", "max_tokens": 5, "messages": MSGS, "stream": True},
                ANTHROPIC_AUTH, anthropic_stream("up-claude"))
    return ("/v1beta/models/gem:streamGenerateContent?alt=sse", GEM_BODY, {"x-goog-api-key": CLIENT_KEY},
            gemini_sse("up-gemini"))


@pytest.mark.parametrize("dialect", ["openai", "anthropic", "gemini"])
def test_first_event_arrives_before_upstream_sends_second(fake, http, dialect):
    path, body, headers, chunks = _stream_call(dialect)
    hold = threading.Event()
    reply = Reply.sse(chunks, hold=hold, hold_after=1)
    fake.script(reply)
    try:
        with http.stream("POST", path, json=body, headers=headers) as r:
            assert r.status_code == 200
            it = r.iter_raw()
            got = b""
            while not parse_sse(got):
                got += next(it)
            # the fake is holding its second event until we say so: if this first event reached us,
            # Plexus relayed it without waiting for more upstream data
            assert reply.sent == 1 and not reply.hold_timed_out
            hold.set()
            got += b"".join(it)
    finally:
        hold.set()
    assert parse_sse(got) == parse_sse(b"".join(chunks))
