"""The OpenAI Responses API (`POST /v1/responses`) end to end: errors, the relay and the usage
records. The official openai SDK (and raw httpx) against a real Plexus process and the scripted
fake upstream (tests/responses_world.py); `relay` is the alias whose OpenAI provider has
`responses: true`, so a Responses request is relayed to it byte for byte (only the model changed).

Checked: errors in the Responses shape (status, retry-after) from every provider type and the
relay; state Plexus does not keep (previous_response_id) refused when translated, relayed
otherwise; a cut upstream stream, or a provider's error event mid-stream, never looks finished;
the relay's bytes both ways, streamed or not, and a request holding another provider's reasoning
translated instead; the usage records, translated and relayed, including a relayed stream's
incomplete, error and failed ends. Answers, streams, tools and reasoning are
tests/test_e2e_responses.py.
"""

from __future__ import annotations

import openai
import pytest

from fake_upstream import (Reply, anthropic_error, gemini_error, openai_error, responses_object, responses_stream,
                           responses_usage, sse_event)
from matrix_cases import ANTHROPIC_SIG, Answer
from responses_world import (PROVIDER, RECORD_WANT, STREAM, TEXT, THINKING, TRANSLATED, UP_MODEL, USAGE_WANT,
                             check_stream, dump_items, norm, scripted, sse_events, stream_raw, usage_of,
                             world_fixtures)


world, w = world_fixtures("responses_errors")


# ================================================================ errors

RATE_LIMITED = {
    "openai": openai_error("Rate limit reached for requests", "requests", "rate_limit_exceeded"),
    "anthropic": anthropic_error("rate_limit_error", "Number of requests has exceeded your rate limit"),
    "gemini": gemini_error(429, "Resource has been exhausted (e.g. check quota).", "RESOURCE_EXHAUSTED"),
}
BAD_REQUEST = {
    "openai": openai_error("Invalid value for 'temperature'.", "invalid_request_error"),
    "anthropic": anthropic_error("invalid_request_error", "messages.0.content: bad"),
    "gemini": gemini_error(400, "Invalid JSON payload received.", "INVALID_ARGUMENT"),
}
ALL = pytest.mark.parametrize("alias", [*PROVIDER, "relay"])


@STREAM
@ALL
def test_upstream_429_keeps_status_and_retry_after(w, alias, stream):
    w.fake.script(Reply(429, json=RATE_LIMITED[PROVIDER.get(alias, "openai")], headers={"retry-after": "7"}))
    with pytest.raises(openai.RateLimitError) as ei:
        if stream:
            list(w.client.responses.create(model=alias, input="hi", stream=True))
        else:
            w.client.responses.create(model=alias, input="hi")
    e = ei.value
    assert e.status_code == 429 and e.response.headers["retry-after"] == "7"
    err = e.response.json()["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert {"message", "type"} <= err.keys()


@ALL
def test_upstream_400_stays_400(w, alias):
    w.fake.script(Reply(400, json=BAD_REQUEST[PROVIDER.get(alias, "openai")]))
    with pytest.raises(openai.BadRequestError) as ei:
        w.client.responses.create(model=alias, input="hi")
    assert ei.value.status_code == 400 and ei.value.response.json()["error"]["message"]
    assert len(w.fake.requests) == 1


@TRANSLATED
def test_previous_response_id_is_refused_when_translated(w, alias):
    with pytest.raises(openai.BadRequestError) as ei:
        w.client.responses.create(model=alias, input="hi", previous_response_id="resp_abc123")
    err = ei.value.response.json()["error"]
    assert "previous_response_id" in err["message"] or err.get("param") == "previous_response_id"
    assert w.fake.requests == []


def test_previous_response_id_is_relayed(w):
    r = w.client.responses.create(model="relay", input="hi", previous_response_id="resp_abc123")
    assert r.output_text
    assert w.fake.last.json["previous_response_id"] == "resp_abc123"


@TRANSLATED
def test_missing_input_is_400(w, alias):
    r = w.http.post("/v1/responses", json={"model": alias, "instructions": "Be terse."})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] and r.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        w.client.responses.create(model=alias)
    assert w.fake.requests == []


def _cut(alias: str):
    """A stream that breaks off mid-answer (the connection closes without its end)."""
    def make(req) -> Reply:
        if alias == "relay":
            return Reply.sse(responses_stream("up-relay")[:6], cut=True)
        provider = PROVIDER[alias]
        r = scripted(provider, Answer("A long answer that never ends"), usage=False)(req)
        keep = {"openai": 3, "anthropic": 4, "gemini": 1}[provider]   # some text, no finish
        return Reply.sse(r.chunks[:keep], cut=True)
    return make


@ALL
def test_cut_upstream_stream_is_no_clean_finish(w, alias):
    w.fake.script(_cut(alias))
    types, raised = [], None
    try:
        for e in w.client.responses.create(model=alias, input="hi", stream=True):
            types.append(e.type)
    except openai.APIError as e:
        raised = e
    assert types and types[0] == "response.created"
    assert "response.completed" not in types and "response.incomplete" not in types
    assert raised is not None or types[-1] in ("response.failed", "error"), types


@TRANSLATED
def test_cut_stream_raw_events_end_in_failure(w, alias):
    w.fake.script(_cut(alias))
    r = stream_raw(w, {"model": alias, "input": "hi"})
    events = sse_events(r.content)
    types = [e["type"] for e in events]
    assert types[-1] in ("response.failed", "error"), types
    assert "response.completed" not in types
    if types[-1] == "response.failed":
        final = check_stream(events)
        assert final["status"] == "failed" and final["error"]["message"]


# ================================================================ the relay (responses: true)

@STREAM
def test_relay_stream_and_whole(w, stream):
    """Relayed: the SDK reads the provider's own answer (the fake's OpenAI-shaped events)."""
    if stream:
        with w.client.responses.stream(model="relay", input="hi") as s:
            events = list(s)
            final = s.get_final_response()
        assert [e.sequence_number for e in events] == list(range(len(events)))
    else:
        final = w.client.responses.create(model="relay", input="hi")
    assert norm(final) == norm(responses_object("up-relay"))
    assert final.id == "resp_fake0123456789"
    assert w.fake.last.path == "/openai/v1/responses"


ODD = (b'{ "input" : [ {"role":"user","content":"say \\"model\\": \\u00e9\\ud83d\\ude00"} ],\n'
       b'  "metadata": {"model": "relay"}, "temperature": 0.70000, "x_unknown": [1.5E+300, -0.0],\r\n'
       b'  "model"  :  "relay" , "store" : false }')


def test_relay_is_byte_exact_both_ways(w):
    answer = (b'{\n  "id": "resp_odd",\n  "object": "response",\n  "status": "completed",\n'
              b'  "model": "up-relay",  "output": [{"type":"message","id":"msg_1","role":"assistant",'
              b'"status":"completed","content":[{"type":"output_text","text":"\\u00e9t\\u00e9","annotations":[]}]}],\n'
              b'  "usage": {"input_tokens": 3, "input_tokens_details": {"cached_tokens": 0},'
              b' "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 5},'
              b' "x_future": 1.50 }')
    w.fake.script(Reply(body=answer, content_type="application/json"))
    r = w.http.post("/v1/responses", content=ODD, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.content == answer
    rec = w.fake.last
    assert rec.path == "/openai/v1/responses"
    assert rec.headers["authorization"] == "Bearer sk-up-relay"
    i = ODD.rindex(b'"relay"')
    assert rec.body == ODD[:i] + b'"up-relay"' + ODD[i + len(b'"relay"'):]


def test_relay_stream_is_byte_exact(w):
    chunks = responses_stream("up-relay", pieces=("été", " ", "🌞"), usage=responses_usage(9, 3))
    w.fake.script(Reply.sse(chunks))
    body = b'{"model":"relay","stream":true,"input":"hi","include":["reasoning.encrypted_content"]}'
    r = w.http.post("/v1/responses", content=body,
                    headers={"content-type": "application/json", "accept": "text/event-stream"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.content == b"".join(chunks)
    assert w.fake.last.body == body.replace(b'"relay"', b'"up-relay"')
    final = check_stream(sse_events(r.content))
    assert final["output"][0]["content"][0]["text"] == "été 🌞"


def test_relay_with_plexus_reasoning_is_translated(w):
    """A request holding another provider's signature (a Plexus reasoning item) cannot go to
    OpenAI's Responses API as is: it is translated for the provider's Chat Completions."""
    w.fake.script(scripted("anthropic", THINKING))
    r1 = w.client.responses.create(model="claude", input="q", reasoning={"effort": "high"},
                                   include=["reasoning.encrypted_content"])
    assert r1.output[0].encrypted_content.startswith("plexus:")
    r2 = w.client.responses.create(model="relay", input=[{"role": "user", "content": "q"}, *dump_items(r1),
                                                         {"role": "user", "content": "next"}])
    assert r2.output_text == "Hello from the fake upstream."
    rec = w.fake.last
    assert rec.path == "/openai/v1/chat/completions" and b"plexus:" not in rec.body
    assert ANTHROPIC_SIG.encode() not in rec.body


# ================================================================ usage records

@STREAM
@TRANSLATED
def test_usage_record_translated(w, alias, stream):
    provider = PROVIDER[alias]
    w.fake.script(scripted(provider, TEXT))
    if stream:
        with w.client.responses.with_streaming_response.create(model=alias, input="hi", stream=True) as r:
            events = list(r.parse())
            rid = r.headers["x-plexus-request-id"]
        assert usage_of(events[-1].response) == USAGE_WANT[provider]
    else:
        r = w.client.responses.with_raw_response.create(model=alias, input="hi")
        assert usage_of(r.parse()) == USAGE_WANT[provider]
        rid = r.headers["x-plexus-request-id"]
    rec = w.record(rid)
    want = RECORD_WANT[provider]
    assert {k: rec[k] for k in want} == want
    assert (rec["status"], rec["http_status"], rec["dialect"], rec["provider_type"]) == \
        ("success", 200, "responses", provider)
    assert (rec["alias"], rec["model"], rec["stream"], rec["passthrough"]) == (alias, UP_MODEL[alias], stream, False)
    assert rec["finish_reason"] == "end_turn"


@STREAM
def test_usage_record_relayed(w, stream):
    usage = responses_usage(100, 30, cached=40, reasoning=10)
    w.fake.script(Reply.sse(responses_stream("up-relay", usage=usage)) if stream
                  else Reply(json=responses_object("up-relay", usage=usage)))
    if stream:
        with w.client.responses.with_streaming_response.create(model="relay", input="hi", stream=True) as r:
            assert list(r.parse())[-1].type == "response.completed"
            rid = r.headers["x-plexus-request-id"]
    else:
        r = w.client.responses.with_raw_response.create(model="relay", input="hi")
        assert r.parse().usage.input_tokens == 100
        rid = r.headers["x-plexus-request-id"]
    rec = w.record(rid)
    assert {k: rec[k] for k in RECORD_WANT["openai"]} == RECORD_WANT["openai"]
    assert (rec["status"], rec["dialect"], rec["provider_type"], rec["provider"]) == \
        ("success", "responses", "openai", "p_relay")
    assert (rec["stream"], rec["passthrough"], rec["finish_reason"]) == (stream, True, "end_turn")


# ================================================================ errors mid-stream, and relayed streams' records

@TRANSLATED
def test_upstream_error_event_mid_stream(w, alias):
    """The provider's own error event after some text: the client's stream fails, never completes."""
    provider = PROVIDER[alias]

    def make(req) -> Reply:
        r = scripted(provider, Answer("Some text that stops"), usage=False)(req)
        keep = {"openai": 2, "anthropic": 4, "gemini": 1}[provider]
        err = {"openai": b'data: {"error":{"message":"overloaded","type":"server_error"}}\n\n',
               "anthropic": sse_event("error", anthropic_error("overloaded_error", "Overloaded")),
               "gemini": b'data: {"error":{"code":503,"message":"overloaded","status":"UNAVAILABLE"}}\r\n\r\n'}
        return Reply.sse(r.chunks[:keep] + [err[provider]])
    w.fake.script(make)
    events = sse_events(stream_raw(w, {"model": alias, "input": "hi"}).content)
    types = [e["type"] for e in events]
    assert types[-1] in ("response.failed", "error") and "response.completed" not in types, types
    if types[-1] == "response.failed":
        assert "overload" in events[-1]["response"]["error"]["message"].lower()


def _relayed_stream_record(w, chunks: list[bytes]) -> dict:
    """Relay `chunks` to the client (who must get them as sent); the request's usage record."""
    w.fake.script(Reply.sse(chunks))
    r = stream_raw(w, {"model": "relay", "input": "hi"})
    assert r.content == b"".join(chunks)
    return w.record(r.headers["x-plexus-request-id"])


def _relayed_end(event: str, seq: int, obj: dict) -> bytes:
    return sse_event(event, {"type": event, "sequence_number": seq, **obj})


@STREAM
def test_relayed_incomplete_is_a_max_tokens_finish(w, stream):
    obj = responses_object("up-relay", status="incomplete", incomplete="max_output_tokens")
    if stream:
        chunks = responses_stream("up-relay")[:-1]
        rec = _relayed_stream_record(w, chunks + [_relayed_end("response.incomplete", len(chunks), {"response": obj})])
    else:
        w.fake.script(Reply(json=obj))
        r = w.client.responses.with_raw_response.create(model="relay", input="hi", max_output_tokens=16)
        assert r.parse().incomplete_details.reason == "max_output_tokens"
        rec = w.record(r.headers["x-plexus-request-id"])
    assert (rec["status"], rec["finish_reason"], rec["input_tokens"]) == ("success", "max_tokens", 12)


def test_relayed_error_event_is_an_error_record(w):
    chunks = responses_stream("up-relay")[:4]
    chunks.append(_relayed_end("error", 4, {"code": "rate_limit_exceeded", "message": "Slow down.", "param": None}))
    rec = _relayed_stream_record(w, chunks)
    assert rec["status"] == "error_stream" and "Slow down." in rec["error"]


def test_relayed_response_failed_is_an_error_record(w):
    chunks = responses_stream("up-relay")[:5]
    obj = responses_object("up-relay", [], status="failed", usage=None)
    obj["error"] = {"code": "server_error", "message": "The model failed."}
    rec = _relayed_stream_record(w, chunks + [_relayed_end("response.failed", 5, {"response": obj})])
    assert rec["status"] == "error_stream" and "The model failed." in (rec["error"] or "")
    assert rec["finish_reason"] == "error"


def test_cut_relayed_stream_keeps_sequence_numbers_increasing(w):
    w.fake.script(_cut("relay"))
    events = sse_events(stream_raw(w, {"model": "relay", "input": "hi"}).content)
    seq = [e["sequence_number"] for e in events]
    assert events[-1]["type"] == "error" and all(b > a for a, b in zip(seq, seq[1:])), seq
