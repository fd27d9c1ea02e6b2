"""End-to-end: what leaves the gateway toward the provider, and how (issue: the upstream path).

Runs against both the plain-HTTP and the HTTPS fake upstream (conftest parametrizes `fake`):
- keep-alive: many SDK calls, streaming and not, for all three provider types, reuse a handful
  of upstream connections; over TLS every connection did one handshake and chose http/1.1;
- the forwarding table: exactly the documented client headers and query parameters reach the
  provider (tests/test_registry.py holds API.md's table equal to the registry's);
- byte-exact relay: the provider receives the client's bytes with only the model value changed;
- the non-stream body cap; upstream failures logged at warning level.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from fake_upstream import (CLIENT_KEY, DEFAULT_TEXT, USAGE_OUT, Reply, anthropic_stream, openai_chunk,
                           openai_stream, sse_data)

MSGS = [{"role": "user", "content": "hi"}]


def test_upstream_connections_are_reused_over_many_calls(fake, plexus, openai_client, anthropic_client,
                                                         genai_client):
    conns, handshakes = fake.connections_opened, len(fake.tls_handshakes)
    for _ in range(5):
        assert openai_client.chat.completions.create(model="gpt", messages=MSGS).choices[0].message.content
        text = "".join(c.choices[0].delta.content or "" for c in
                       openai_client.chat.completions.create(model="gpt", messages=MSGS, stream=True) if c.choices)
        assert text
        assert anthropic_client.messages.create(model="claude", max_tokens=50, messages=MSGS).content[0].text
        with anthropic_client.messages.stream(model="claude", max_tokens=50, messages=MSGS) as s:
            assert s.get_final_message().content[0].text
        assert genai_client.models.generate_content(model="gem", contents="hi").text
        assert "".join(c.text or "" for c in genai_client.models.generate_content_stream(model="gem", contents="hi"))
        # translated directions share the same pools
        assert anthropic_client.messages.create(model="gpt", max_tokens=50, messages=MSGS).content[0].text
    opened = fake.connections_opened - conns
    assert opened <= 3, f"{opened} upstream connections for 35 sequential calls (one pool per provider)"
    if fake.ssl_context is not None:
        new = fake.tls_handshakes[handshakes:]
        assert len(new) == opened and all(p == "http/1.1" for p in new), new


# ---------------------------------------------------------------- what crosses to the provider

BASE_HEADERS = {"host", "content-length", "content-type", "x-request-id"}  # (the gateway's request id)
NOISE = {"openai-organization": "org-client", "openai-project": "proj-client", "cookie": "a=b",
         "x-goog-api-key": CLIENT_KEY, "user-agent": "client-agent/1", "x-stainless-lang": "python",
         "x-forwarded-for": "10.1.1.1", "anthropic-dangerous-direct-browser-access": "true",
         "x-custom": "client"}


def _names(req) -> set[str]:
    return {k for k, _ in req.headers.items()}


def test_openai_provider_gets_only_its_auth_and_config_headers(fake, http):
    r = http.post("/v1/chat/completions?key=client-q&foo=1", json={"model": "gpt", "messages": MSGS},
                  headers={"authorization": f"Bearer {CLIENT_KEY}", "anthropic-beta": "x", **NOISE})
    assert r.status_code == 200
    req = fake.last
    assert _names(req) == BASE_HEADERS | {"authorization", "x-provider-extra"}
    assert req.headers["authorization"] == "Bearer sk-up-openai" and req.raw_query == ""


def test_anthropic_provider_gets_version_beta_and_beta_query(fake, http):
    r = http.post("/v1/messages?beta=true&key=client-q&foo=1",
                  json={"model": "claude", "max_tokens": 10, "messages": MSGS},
                  headers={"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01",
                           "anthropic-beta": "interleaved-thinking-2025-05-14", **NOISE})
    assert r.status_code == 200
    req = fake.last
    assert _names(req) == BASE_HEADERS | {"x-api-key", "anthropic-version", "anthropic-beta"}
    assert req.headers["x-api-key"] == "sk-up-anthropic"
    assert req.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert req.raw_query == "beta=true"


def test_gemini_provider_never_gets_the_client_key(fake, http):
    r = http.post(f"/v1beta/models/gem:generateContent?key={CLIENT_KEY}&foo=1",
                  json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}, headers=NOISE)
    assert r.status_code == 200
    req = fake.last
    assert _names(req) == BASE_HEADERS | {"x-goog-api-key"}
    assert req.headers["x-goog-api-key"] == "g-up-key" and req.raw_query == ""
    r = http.post(f"/v1beta/models/gem:streamGenerateContent?alt=sse&key={CLIENT_KEY}",
                  json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    assert r.status_code == 200 and fake.last.raw_query == "alt=sse"


# ---------------------------------------------------------------- byte-exact relay

ODD_OPENAI = (b'{ "messages" : [ {"role":"user","content":"say \\"model\\": \\u00e9\\ud83d\\ude00"} ],\n'
              b'  "n": 1, "seed": 123456789012345678901234567890, "temperature": 0.70000,\n'
              b'  "metadata": {"model": "gpt"}, "x_unknown": [1.5E+300, -0.0, 1E-7, {"model": "gpt"}],\r\n'
              b'  "model"  :  "gpt" , "stream" : false }')
ODD_ANTHROPIC = (b'{"max_tokens":1e1,"messages":[{"role":"user","content":"\\/\\\\ model"}],\n'
                 b'"model":"claude","tools":[{"name":"t","input_schema":{"type":"object",'
                 b'"properties":{"model":{"type":"string"}}}}],"zz":18446744073709551617}')


@pytest.mark.parametrize("path,raw,alias,target", [
    ("/v1/chat/completions", ODD_OPENAI, b'"gpt"', b'"up-gpt"'),
    ("/v1/messages", ODD_ANTHROPIC, b'"claude"', b'"up-claude"'),
])
def test_relay_is_byte_exact_but_for_the_model(fake, http, path, raw, alias, target):
    r = http.post(path, content=raw, headers={"content-type": "application/json",
                                              "anthropic-version": "2023-06-01"})
    assert r.status_code == 200, r.text
    i = raw.rindex(alias)
    assert fake.last.body == raw[:i] + target + raw[i + len(alias):]


def test_gemini_relay_body_is_untouched(fake, http):
    raw = b'{"contents":[{"role":"user","parts":[{"text":"x"}]}],"generationConfig":{"seed":18446744073709551617}}'
    r = http.post("/v1beta/models/gem:generateContent", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 200 and fake.last.body == raw


# ---------------------------------------------------------------- limits and logs

def test_non_stream_body_over_the_cap_is_502(fake, http):
    fake.script(Reply(json={"choices": [], "pad": "x" * 10_000}))
    r = http.post("/v1/chat/completions", json={"model": "small", "messages": MSGS})
    assert r.status_code == 502 and "larger than" in r.json()["error"]["message"]
    fake.script(Reply(json={"choices": [], "pad": "x" * 1000}))
    r = http.post("/v1/chat/completions", json={"model": "small", "messages": MSGS})
    assert r.status_code == 200


def test_upstream_failures_are_logged_at_warning(fake, plexus, http):
    start = plexus.stderr_size()
    assert http.post("/v1/chat/completions", json={"model": "dead", "messages": MSGS}).status_code == 502
    fake.script(Reply(503, json={"error": {"message": "overloaded", "type": "server_error"}}))
    assert http.post("/v1/chat/completions", json={"model": "gpt", "messages": MSGS}).status_code == 503
    chunks = [sse_data(openai_chunk("up-gpt", {"role": "assistant", "content": "par"}))]
    fake.script(Reply.sse(chunks, cut=True))
    with http.stream("POST", "/v1/chat/completions",
                     json={"model": "gpt", "messages": MSGS, "stream": True}) as r:
        body = r.read()
    assert body.rstrip().splitlines()[-1].startswith(b'data: {"error"')  # the cut is an error event
    deadline = time.monotonic() + 5
    while True:
        log = plexus.stderr(start)
        if log.count("upstream failure") >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert re.search(r"WARNING .*upstream failure: provider=f_dead model=dead status=502 duration=\d", log), log
    assert re.search(r"upstream failure: provider=f_openai model=up-gpt status=503", log), log
    assert re.search(r"upstream failure: provider=f_openai model=up-gpt status=200 duration=.*: .*(ended early|incomplete)", log), log


# ---------------------------------------------------------------- streams that end without a marker

def _openai_no_done(space: bool | None):
    chunks = openai_stream("up-gpt", include_usage=True)
    if space is None:
        return chunks[:-1]  # finish chunk + usage chunk, then EOF (vLLM, llama.cpp, Ollama, OpenRouter)
    return chunks[:-1] + ([b"data: [DONE]\n\n"] if space else [b"data:[DONE]\n\n"])


@pytest.mark.parametrize("ending", [None, False])
def test_openai_sdk_accepts_streams_ended_the_compatible_servers_way(fake, openai_client, anthropic_client,
                                                                     ending):
    fake.script(Reply.sse(_openai_no_done(ending)))
    chunks = list(openai_client.chat.completions.create(model="gpt", messages=MSGS, stream=True,
                                                        stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == DEFAULT_TEXT
    assert chunks[-1].usage.completion_tokens == USAGE_OUT
    fake.script(Reply.sse(_openai_no_done(ending)))  # translated: Anthropic client, OpenAI provider
    with anthropic_client.messages.stream(model="gpt", max_tokens=50, messages=MSGS) as s:
        final = s.get_final_message()
    assert final.content[0].text == DEFAULT_TEXT and final.stop_reason == "end_turn"


def test_anthropic_stream_without_message_stop_is_complete(fake, openai_client, anthropic_client):
    fake.script(Reply.sse(anthropic_stream("up-claude")[:-1]))
    with anthropic_client.messages.stream(model="claude", max_tokens=50, messages=MSGS) as s:
        assert s.get_final_message().content[0].text == DEFAULT_TEXT
    fake.script(Reply.sse(anthropic_stream("up-claude")[:-1]))
    chunks = list(openai_client.chat.completions.create(model="claude", messages=MSGS, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == DEFAULT_TEXT
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_stream_cut_before_its_finish_is_an_error_for_the_sdk(fake, openai_client):
    import openai

    fake.script(Reply.sse(openai_stream("up-gpt")[:3]))  # role + two pieces, then EOF: no finish
    with pytest.raises(openai.APIError, match="ended early"):
        list(openai_client.chat.completions.create(model="gpt", messages=MSGS, stream=True))
