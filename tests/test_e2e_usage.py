"""Usage records end to end: every client dialect x provider type x stream mode, relayed and
translated, with the official SDKs against the session Plexus; the record is read back through
`GET /v0/management/usage` (found by the `x-plexus-request-id` response header).

The fake upstream answers with full usage reports (cached, cache-write and reasoning tokens), so
the tokens must come from the provider's report exactly, in the record's semantics (input counts
cached and cache-write tokens), with the cost from the test config's `pricing`."""

from __future__ import annotations

import time

import httpx
import pytest

from conftest import ADMIN_KEY, PRICES
from fake_upstream import (
    Reply, anthropic_message, anthropic_stream, gemini_response, gemini_stream_objs, openai_chunk,
    openai_completion, sse_data, sse_event,
)

# What each provider type reports, and what the record must say (input includes the cache).
OA_USAGE = {"prompt_tokens": 100, "completion_tokens": 30, "total_tokens": 130,
            "prompt_tokens_details": {"cached_tokens": 40, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 10, "audio_tokens": 0}}
OA_WANT = dict(input_tokens=100, output_tokens=30, cached_tokens=40, cache_write_tokens=None, reasoning_tokens=10)
AN_USAGE_START = {"input_tokens": 50, "cache_read_input_tokens": 20, "cache_creation_input_tokens": 10,
                  "output_tokens": 1}
AN_USAGE = {"input_tokens": 50, "cache_read_input_tokens": 20, "cache_creation_input_tokens": 10,
            "output_tokens": 30}
AN_WANT = dict(input_tokens=80, output_tokens=30, cached_tokens=20, cache_write_tokens=10, reasoning_tokens=None)
GE_USAGE = {"promptTokenCount": 90, "cachedContentTokenCount": 30, "candidatesTokenCount": 20,
            "thoughtsTokenCount": 5, "totalTokenCount": 115}
GE_WANT = dict(input_tokens=90, output_tokens=25, cached_tokens=30, cache_write_tokens=None, reasoning_tokens=5)

ALIAS = {"openai": "gpt", "anthropic": "claude", "gemini": "gem"}
PROVIDER = {"openai": ("f_openai", "up-gpt"), "anthropic": ("f_anthropic", "up-claude"),
            "gemini": ("f_gemini", "up-gemini")}
WANT = {"openai": OA_WANT, "anthropic": AN_WANT, "gemini": GE_WANT}
STOP = {"openai": "stop", "anthropic": "end_turn", "gemini": "STOP"}


def _reply(provider: str, stream: bool, model: str, gemini_sse: bool = True) -> Reply:
    if provider == "openai":
        if not stream:
            body = openai_completion(model)
            body["usage"] = OA_USAGE
            return Reply(json=body)

        def chunks(req):
            asked = ((req.json or {}).get("stream_options") or {}).get("include_usage") is True
            out = [sse_data({**openai_chunk(model, {"role": "assistant", "content": ""}), "usage": None})]
            out += [sse_data({**openai_chunk(model, {"content": p}), "usage": None}) for p in ("Hi", " there")]
            out.append(sse_data({**openai_chunk(model, {}, finish="stop"), "usage": None}))
            if asked:
                out.append(sse_data(openai_chunk(model, {}, no_choices=True, usage=OA_USAGE)))
            out.append(b"data: [DONE]\n\n")
            if not asked:  # what the real API sends without include_usage: no usage members at all
                out = [c.replace(b',"usage":null', b"") for c in out]
            return Reply.sse(out)
        return chunks
    if provider == "anthropic":
        if not stream:
            body = anthropic_message(model)
            body["usage"] = AN_USAGE
            return Reply(json=body)
        out = anthropic_stream(model, pieces=("Hi", " there"))
        start = {"id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": [],
                 "stop_reason": None, "stop_sequence": None, "usage": AN_USAGE_START}
        out[0] = sse_event("message_start", {"type": "message_start", "message": start})
        out[-2] = sse_event("message_delta", {"type": "message_delta",
                                              "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                              "usage": {"output_tokens": 30}})
        return Reply.sse(out)
    if not stream:
        body = gemini_response(model)
        body["usageMetadata"] = GE_USAGE
        return Reply(json=body)
    objs = gemini_stream_objs(model, pieces=("Hi", " there"))
    objs[-1]["usageMetadata"] = GE_USAGE
    if gemini_sse:
        return Reply.sse([sse_data(o) for o in objs])
    import json
    parts = [json.dumps(o).encode() for o in objs]
    return Reply.sse([b"[" + parts[0]] + [b",\r\n" + p for p in parts[1:]] + [b"]"],
                     content_type="application/json")


def _record(base_url: str, rid: str) -> dict:
    """The usage record of request ``rid`` (the writer thread persists within ~0.2 s)."""
    deadline = time.monotonic() + 5
    with httpx.Client(base_url=base_url, timeout=5, headers={"x-admin-key": ADMIN_KEY}) as c:
        while True:
            r = c.get("/v0/management/usage", params={"limit": 50})
            assert r.status_code == 200, r.text
            for row in r.json()["data"]:
                if row["id"] == rid:
                    return row
            assert time.monotonic() < deadline, f"no usage record {rid}"
            time.sleep(0.05)


def _call(client_dialect: str, alias: str, stream: bool, clients) -> str:
    """Make the call as the SDK user would; returns the x-plexus-request-id of the answer."""
    oa, an, ge = clients
    if client_dialect == "openai":
        msgs = [{"role": "user", "content": "hi"}]
        if stream:
            with oa.chat.completions.with_streaming_response.create(model=alias, messages=msgs, stream=True) as r:
                text = "".join(ch.choices[0].delta.content or "" for ch in r.parse() if ch.choices)
                assert text
                return r.headers["x-plexus-request-id"]
        r = oa.chat.completions.with_raw_response.create(model=alias, messages=msgs)
        assert r.parse().choices[0].message.content
        return r.headers["x-plexus-request-id"]
    if client_dialect == "anthropic":
        kw = dict(model=alias, max_tokens=64, messages=[{"role": "user", "content": "hi"}])
        if stream:
            with an.messages.with_streaming_response.create(stream=True, **kw) as r:
                events = list(r.parse())
                assert events[-1].type == "message_stop"
                return r.headers["x-plexus-request-id"]
        r = an.messages.with_raw_response.create(**kw)
        assert r.parse().content
        return r.headers["x-plexus-request-id"]
    seen = {}

    def hook(resp):
        seen["id"] = resp.headers.get("x-plexus-request-id")
    ge._api_client._httpx_client.event_hooks["response"] = [hook]
    try:
        if stream:
            text = "".join(ch.text or "" for ch in ge.models.generate_content_stream(model=alias, contents="hi"))
        else:
            text = ge.models.generate_content(model=alias, contents="hi").text
    finally:
        ge._api_client._httpx_client.event_hooks["response"] = []
    assert text
    return seen["id"]


def _expected_cost(provider: str, want: dict) -> float:
    p = PRICES[PROVIDER[provider][1]]
    inp, cached, written = want["input_tokens"], want["cached_tokens"] or 0, want["cache_write_tokens"] or 0
    return ((inp - cached - written) * p["input"] + cached * p["cached_input"] + written * p["cache_write"]
            + want["output_tokens"] * p["output"]) / 1e6


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize("client_dialect", ["openai", "anthropic", "gemini"])
def test_usage_record_tokens_cost_ttft(fake, base_url, openai_client, anthropic_client, genai_client,
                                       client_dialect, provider, stream):
    model = PROVIDER[provider][1]
    fake.script(_reply(provider, stream, model))
    rid = _call(client_dialect, ALIAS[provider], stream, (openai_client, anthropic_client, genai_client))
    rec = _record(base_url, rid)
    want = WANT[provider]
    assert {k: rec[k] for k in want} == want
    assert rec["status"] == "success" and rec["http_status"] == 200
    assert (rec["alias"], rec["provider"], rec["model"]) == (ALIAS[provider], *PROVIDER[provider])
    assert rec["provider_type"] == provider and rec["dialect"] == client_dialect
    assert rec["stream"] is stream and rec["passthrough"] is (client_dialect == provider)
    assert rec["attempts"] == 1 and rec["client_ip"] == "127.0.0.1"
    assert rec["cost"] == pytest.approx(_expected_cost(provider, want))
    assert rec["finish_reason"] == "end_turn"
    assert 0 < rec["ttft_ms"] <= rec["duration_ms"]
    assert rec["overhead_ms"] is not None and 0 <= rec["overhead_ms"] <= rec["duration_ms"]
    assert rec["tokens_per_second"] and rec["tokens_per_second"] > 0
    if not stream:
        assert rec["ttft_ms"] == rec["duration_ms"]


def test_relayed_openai_stream_gets_no_extra_usage_chunk(fake, base_url, http):
    """Plexus asks for usage upstream; the client, which did not, sees exactly what the provider
    would have sent it without stream_options."""
    fake.script(_reply("openai", True, "up-gpt"))
    body = {"model": "gpt", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200
    sent = fake.last.json
    assert sent["stream_options"] == {"include_usage": True}
    assert b'"usage"' not in r.content and r.content.endswith(b"data: [DONE]\n\n")
    assert r.content.count(b"data: ") == 5
    rec = _record(base_url, r.headers["x-plexus-request-id"])
    assert rec["input_tokens"] == 100 and rec["output_tokens"] == 30


def test_relayed_openai_stream_client_asked_usage_keeps_it(fake, base_url, http):
    fake.script(_reply("openai", True, "up-gpt"))
    body = {"model": "gpt", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "hi"}]}
    r = http.post("/v1/chat/completions", json=body)
    assert b'"choices":[],"usage":{"prompt_tokens":100' in r.content
    assert r.content.count(b'"usage":null') == 4
    rec = _record(base_url, r.headers["x-plexus-request-id"])
    assert rec["output_tokens"] == 30


def test_gemini_json_array_stream_usage(fake, base_url, http):
    fake.script(_reply("gemini", True, "up-gemini", gemini_sse=False))
    r = http.post("/v1beta/models/gem:streamGenerateContent", json={"contents": [{"parts": [{"text": "hi"}]}]},
                  headers={"x-goog-api-key": "k"})
    assert r.status_code == 200 and r.json()[-1]["usageMetadata"]["thoughtsTokenCount"] == 5
    rec = _record(base_url, r.headers["x-plexus-request-id"])
    assert {k: rec[k] for k in GE_WANT} == GE_WANT and rec["finish_reason"] == "end_turn"


def test_error_records(fake, base_url, http):
    """Every outcome has a record: an upstream error, an unknown alias, an unreachable provider."""
    fake.script(Reply(429, json={"error": {"message": "slow down", "type": "rate_limit_error"}},
                      headers={"retry-after": "7"}))
    r = http.post("/v1/chat/completions", json={"model": "gpt", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 429
    rec = _record(base_url, r.headers["x-plexus-request-id"])
    assert (rec["status"], rec["http_status"], rec["provider"], rec["attempts"]) == ("error", 429, "f_openai", 1)
    r = http.post("/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 404
    rec = _record(base_url, r.headers["x-plexus-request-id"])
    assert (rec["status"], rec["http_status"], rec["alias"], rec["provider"]) == ("error", 404, None, None)
    r = http.post("/v1/messages", json={"model": "dead", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 502
    rec = _record(base_url, r.headers["x-plexus-request-id"])
    assert (rec["status"], rec["provider"], rec["dialect"]) == ("error", "f_dead", "anthropic")
    assert rec["input_tokens"] is None and rec["cost"] is None


def test_cut_stream_is_error_stream(fake, base_url, http):
    chunks = [sse_data(openai_chunk("up-gpt", {"role": "assistant", "content": ""})),
              sse_data(openai_chunk("up-gpt", {"content": "par"}))]
    fake.script(Reply.sse(chunks))
    r = http.post("/v1/chat/completions", json={"model": "gpt", "stream": True,
                                                "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200 and b'"error"' in r.content
    rec = _record(base_url, r.headers["x-plexus-request-id"])
    assert rec["status"] == "error_stream" and rec["error"]


def test_server_rejecting_stream_options_gets_the_clients_own_request(fake, base_url, http):
    """An OpenAI-compatible server that refuses the stream_options Plexus added (400 naming them)
    gets the client's request once more, unchanged; the client sees only the stream."""
    fake.script(Reply(400, json={"error": {"message": "Unrecognized request argument supplied: stream_options",
                                           "type": "invalid_request_error"}}),
                _reply("openai", True, "up-gpt"))
    body = {"model": "gpt", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200 and r.content.endswith(b"data: [DONE]\n\n") and b'"usage"' not in r.content
    first, second = fake.requests[-2:]
    assert first.json["stream_options"] == {"include_usage": True}
    assert "stream_options" not in second.json and second.json["messages"] == body["messages"]
    rec = _record(base_url, r.headers["x-plexus-request-id"])
    assert rec["status"] == "success" and rec["attempts"] == 1 and rec["input_tokens"] is None


def test_other_400_is_not_resent(fake, http):
    fake.script(Reply(400, json={"error": {"message": "messages: too long", "type": "invalid_request_error"}}))
    body = {"model": "gpt", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 400 and len(fake.requests) == 1
