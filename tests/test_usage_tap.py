"""gateway/usage_tap.py: usage read from relayed answers without parsing every event, and the
OpenAI usage strip (split-invariant, removes exactly what include_usage added)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from plexus.control.usage import Usage
from plexus.gateway.usage_tap import (
    UsageStrip, body_usage, fill, stream_usage, wants_stream_usage, with_stream_usage,
)

FIX = Path(__file__).parent / "fixtures"


def _read(name: str) -> bytes:
    return (FIX / name).read_bytes()


def _without_usage(stream: bytes) -> bytes:
    """What the client would have got without stream_options.include_usage (built independently:
    event by event, by parsing)."""
    out = []
    for ev in stream.split(b"\n\n"):
        if not ev:
            continue
        if ev.startswith(b"data: {"):
            obj = orjson.loads(ev[6:])
            if obj.get("choices") == [] and isinstance(obj.get("usage"), dict):
                continue
            ev = ev.replace(b',"usage":null', b"")
        out.append(ev + b"\n\n")
    return b"".join(out)


def _strip(chunks) -> tuple[bytes, UsageStrip]:
    s = UsageStrip()
    out = b"".join(s.feed(c) for c in chunks) + s.close()
    return out, s


@pytest.mark.parametrize("name", ["openai/text.sse", "openai/parallel_tools.sse"])
def test_strip_every_split(name):
    data = _read(name)
    want = _without_usage(data)
    assert b'"usage"' not in want and want != data
    for i in range(len(data) + 1):
        out, s = _strip([data[:i], data[i:]])
        assert out == want, i
        assert b'"prompt_tokens"' in s.usage_event


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=6000), max_size=12))
def test_strip_any_split(cuts):
    data = _read("openai/text.sse")
    points = sorted({min(c, len(data)) for c in cuts})
    chunks, prev = [], 0
    for p in points + [len(data)]:
        chunks.append(data[prev:p])
        prev = p
    out, s = _strip(chunks)
    assert out == _without_usage(data)
    u, stop, _ = stream_usage("openai", b"", s.usage_event)
    assert (u.input_tokens, u.cache_read_tokens, u.output_tokens) == (15, 4, 12)


def test_strip_one_event_per_read_passes_events_through_at_once():
    data = _read("openai/text.sse")
    s = UsageStrip()
    events = [e + b"\n\n" for e in data.split(b"\n\n") if e]
    outs = [s.feed(e) for e in events]
    assert outs[1] == events[1].replace(b',"usage":null', b"")   # no holding back
    assert outs[-2] == b""                                         # the usage chunk
    assert outs[-1] == b"data: [DONE]\n\n"


def test_stream_usage_each_dialect():
    oa = _read("openai/text.sse")
    u, stop, cost = stream_usage("openai", oa[:300], oa[-1500:])
    assert (u.input_tokens, u.cache_read_tokens, u.output_tokens, u.reasoning_tokens) == (15, 4, 12, 0)
    assert stop is None or stop == "end_turn"
    an = _read("anthropic/text.sse")
    u, stop, _ = stream_usage("anthropic", an[:1200], an[-800:])
    rec = Usage("x", 0.0, "", "anthropic", "/v1/messages")
    fill(rec, u, stop)
    assert (rec.input_tokens, rec.cached_tokens, rec.cache_write_tokens, rec.output_tokens) == (2095 + 1800, 1800, 0, 15)
    assert rec.finish_reason == "end_turn"
    ge = _read("gemini/text.sse")
    u, stop, _ = stream_usage("gemini", ge[:200], ge[-1200:])
    rec = Usage("y", 0.0, "", "gemini", "/v1beta/models/x:streamGenerateContent")
    fill(rec, u, stop)
    assert (rec.input_tokens, rec.output_tokens, rec.finish_reason) == (9, 7, "end_turn")


def test_stream_usage_gemini_array_body():
    body = _read("gemini/array_text.json")
    u, stop, _ = stream_usage("gemini", body[:100], body[-2000:])
    assert u is not None and u.output_tokens is not None and stop == "end_turn"


def test_object_with_braces_in_strings():
    tail = (b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"note":"a } { \\" b"}}\n\n'
            b'data: [DONE]\n\n')
    u, _, _ = stream_usage("openai", b"", tail)
    assert (u.input_tokens, u.output_tokens) == (3, 2)


def test_reported_cost_openrouter():
    obj = {"choices": [{"finish_reason": "length", "message": {}}],
           "usage": {"prompt_tokens": 10, "completion_tokens": 5, "cost": 0.00042}}
    u, stop, cost = body_usage("openai", obj)
    assert (u.output_tokens, stop, cost) == (5, "max_tokens", 0.00042)


def test_body_usage_fixtures():
    u, stop, _ = body_usage("anthropic", orjson.loads(_read("anthropic/message_text.json")))
    assert u.output_tokens is not None and stop is not None
    u, stop, _ = body_usage("openai", orjson.loads(_read("openai/completion_tools.json")))
    assert u.output_tokens is not None and stop == "tool_use"
    assert body_usage("gemini", ["not", "a", "dict"]) == (None, None, None)


def test_with_stream_usage_inserts_and_keeps_the_rest():
    raw = b'{"model":"m","stream":true,"messages":[{"role":"user","content":"1e400 \\u00e9"}],"n":123456789012345678901234567890}'
    body = orjson.loads(raw.replace(b"1e400", b"x"))  # (the parse only tells what keys exist)
    assert wants_stream_usage(body)
    out = with_stream_usage(raw, body)
    assert out == b'{"stream_options":{"include_usage":true},' + raw[1:]
    body2 = {"model": "m", "stream": True, "stream_options": {"include_obfuscation": False}}
    out2 = orjson.loads(with_stream_usage(orjson.dumps(body2), body2))
    assert out2["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    assert not wants_stream_usage({"stream_options": {"include_usage": True}})


def _spaced(stream: bytes, crlf: bool) -> bytes:
    """The same stream as a compatible server with spaced JSON (and CRLF line ends) sends it."""
    out = []
    for ev in stream.split(b"\n\n"):
        if not ev:
            continue
        if ev.startswith(b"data: {"):
            ev = b"data: " + orjson.dumps(orjson.loads(ev[6:])).replace(b'":', b'": ').replace(b',"', b', "')
        out.append(ev + (b"\r\n\r\n" if crlf else b"\n\n"))
    return b"".join(out)


@pytest.mark.parametrize("crlf", [False, True])
def test_strip_spaced_json_and_crlf_every_split(crlf):
    data = _spaced(_read("openai/text.sse"), crlf)
    assert b'"usage": null' in data and b'"choices": []' in data
    sep = b"\r\n\r\n" if crlf else b"\n\n"
    want = b"".join(e + sep for e in data.split(sep) if e and b'"choices": []' not in e).replace(b', "usage": null', b"")
    assert b'"usage"' not in want
    for i in range(0, len(data) + 1, 7):
        out, s = _strip([data[:i], data[i:]])
        assert out == want, i
        assert b'"prompt_tokens": 19' in s.usage_event
    events = [e + sep for e in data.split(sep) if e]
    out, _ = _strip(events)
    assert out == want
