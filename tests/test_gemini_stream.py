"""Gemini provider responses → IR: the stream decoder and parse_response.

Theory: the decoder must give the same Sink call sequence however the upstream bytes are split
(every split point, one byte at a time, hypothesis-chosen splits), must follow the Sink call
order of plexus/ir.py, and must turn every bad input into sink.error (never an exception).
The fixtures in tests/fixtures/gemini are in the Gemini API's own byte format (CRLF SSE, the
pretty-printed JSON-array stream). The encoder side is in test_gemini_encode.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from plexus import ir
from plexus.dialects.common import STOPS
from plexus.dialects.gemini import decode, encode
from plexus.errors import GatewayError
from recording_sink import RecordingSink

FIX = Path(__file__).parent / "fixtures" / "gemini"
STREAMS = sorted(p.name for p in FIX.glob("*.sse")) + ["array_text.json"]


def fixture(name: str) -> bytes:
    return (FIX / name).read_bytes()


def U(inp=None, out=None, cache=None, reasoning=None):
    return ("usage", inp, out, cache, None, reasoning)


class Rec(RecordingSink):
    """A Sink that records its calls as plain tuples."""

    def start(self, id, model, usage):
        self.calls.append(("start", id, model))

    def redacted_thinking(self, data):
        self.calls.append(("redacted", data))

    def usage(self, u):
        self.calls.append(("usage", u.input_tokens, u.output_tokens, u.cache_read_tokens,
                           u.cache_creation_tokens, u.reasoning_tokens))

    def finish(self, stop_reason, stop_sequence=None):
        self.calls.append(("finish", stop_reason))


def decode_chunks(chunks) -> list:
    rec = Rec()
    d = decode.StreamDecoder(rec)
    for c in chunks:
        d.feed(c)
    d.close()
    check_order(rec.calls)
    return rec.calls


def check_order(calls):
    """The Sink call order of plexus/ir.py."""
    assert calls and calls[0][0] == "start", calls
    assert sum(c[0] == "start" for c in calls) == 1
    terminal = [i for i, c in enumerate(calls) if c[0] in ("end", "error")]
    assert len(terminal) == 1 and terminal[0] == len(calls) - 1, calls
    fin = [i for i, c in enumerate(calls) if c[0] == "finish"]
    assert len(fin) <= 1
    if fin:
        assert all(c[0] == "usage" for c in calls[fin[0] + 1:-1]), calls
    if calls[-1][0] == "end":
        assert fin, "end without finish"


def ctx(sse=True, **kw):
    return ir.Context(model="alias-model", id_seed="seed123", created=1700000000, gemini_sse=sse, **kw)


def sse_payloads(data: bytes) -> list[dict]:
    return [orjson.loads(e[6:]) for e in data.split(b"\r\n\r\n") if e]


# ================================================================ decoder: expected sequences

EXPECTED = {
    "text.sse": [
        ("start", "Kx5caOXxAdGvz7IP4q2J-Qg", "gemini-2.5-flash"),
        ("text", "Hello"), U(9, None, None, None),
        ("text", ", wörld! "),
        ("text", '日本語 🎉 "quoted"\nnew line'), ("finish", "end_turn"), U(9, 7, None, None),
        ("end",)],
    "thinking.sse": [
        ("start", "th-resp-9", "gemini-3-pro-preview"),
        ("thinking", "**Planning the answer**\n\nI need to add 2 and 2."), U(20, 54, None, 54),
        ("thinking", " The sum is 4."),
        ("text", "2 + 2 = "), ("text", "4."),
        ("thinking", ""), ("signature", "EpYCCpMCAdHtim9Vq0a1wLc+Gx/7kQ=="), ("block_end",),
        ("finish", "end_turn"), U(16, 60, 4, 54), ("end",)],
    "thought_signature.sse": [
        ("start", "th-resp-10", "gemini-3-pro-preview"),
        ("thinking", "Let me think."), U(20, 54, None, 54),
        ("signature", "c2lnLXRob3VnaHQ="), ("block_end",),
        ("thinking", ""), ("signature", "c2lnLXRleHQ="), ("block_end",),
        ("text", "Answer"), ("text", " done."),
        ("finish", "end_turn"), U(20, 57, None, 54), ("end",)],
    "parallel_tools.sse": [
        ("start", "tools-resp-3", "gemini-3-pro-preview"),
        ("thinking", "I should check both cities."), U(20, 54, None, 54),
        ("tool_start", 0, decode.call_id("tools-resp-3", 0), "get_weather", "c2lnLWNhbGwtMQ=="),
        ("tool_args", 0, '{"city":"Paris","units":"c"}'), ("block_end",),
        ("tool_start", 1, "fc-remote-2", "get_weather", "c2lnLWNhbGwtMg=="),
        ("tool_args", 1, '{"city":"Tōkyō"}'), ("block_end",),
        ("tool_start", 2, decode.call_id("tools-resp-3", 2), "get_time", None),
        ("tool_args", 2, "{}"), ("block_end",),
        ("finish", "tool_use"), U(45, 84, None, 54), ("end",)],
    "error.sse": [
        ("start", "err-resp-1", "gemini-2.5-flash"),
        ("text", "Partial"), U(9, None, None, None), ("text", " answer"),
        ("error", 503, "unavailable", "The model is overloaded. Please try again later.")],
    "cut.sse": [
        ("start", "cut-resp-1", "gemini-2.5-flash"),
        ("text", "This stream"), U(9, None, None, None), ("text", " is cut"),
        ("error", 502, "bad_gateway", "upstream stream ended early")],
    "blocked.sse": [
        ("start", "blk-1", "gemini-2.5-flash"),
        ("text", "Prompt blocked by Gemini: PROHIBITED_CONTENT"), ("finish", "refusal"),
        U(11, None, None, None), ("end",)],
    "array_text.json": [
        ("start", "arr-1", "gemini-2.5-flash"),
        ("text", "Array"), U(9, None, None, None), ("text", ' mode {not json} "x"'),
        ("text", "!"), ("finish", "end_turn"), U(9, 7, None, None), ("end",)],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_decoder_expected_calls(name):
    assert decode_chunks([fixture(name)]) == EXPECTED[name]


def test_long_text_decodes_every_piece():
    calls = decode_chunks([fixture("long_text.sse")])
    texts = [c[1] for c in calls if c[0] == "text"]
    assert len(texts) == 20 and texts[7] == "piece 7 — ünïcödé ✓ 🚀 “q” \\ end. "
    assert calls[-3:] == [("finish", "max_tokens"), U(9, 600, None, None), ("end",)]
    assert len(fixture("long_text.sse")) > 6000


@pytest.mark.parametrize("name", STREAMS)
def test_decoder_every_split_point(name):
    data = fixture(name)
    whole = decode_chunks([data])
    for i in range(1, len(data)):
        assert decode_chunks([data[:i], data[i:]]) == whole, i


@pytest.mark.parametrize("name", STREAMS)
def test_decoder_one_byte_at_a_time(name):
    data = fixture(name)
    assert decode_chunks([data[i:i + 1] for i in range(len(data))]) == decode_chunks([data])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(STREAMS), cuts=st.lists(st.integers(min_value=0, max_value=30000), max_size=12))
def test_decoder_hypothesis_splits(name, cuts):
    data = fixture(name)
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks, prev = [], 0
    for p in points + [len(data)]:
        chunks.append(data[prev:p])
        prev = p
    assert decode_chunks(chunks) == decode_chunks([data])


@pytest.mark.parametrize("variant", ["lf", "cr", "mixed_late", "mixed_early", "multiline_data", "comments",
                                     "no_space"])
@pytest.mark.parametrize("name", ["text.sse", "parallel_tools.sse", "cut.sse"])
def test_decoder_other_line_endings_give_the_same_calls(name, variant):
    """The CRLF fast path and the generic SSE framing it falls back to agree."""
    data = fixture(name)
    events = [e for e in data.split(b"\r\n\r\n") if e]
    if variant == "lf":
        other = data.replace(b"\r\n", b"\n")
    elif variant == "cr":
        other = data.replace(b"\r\n", b"\r")
    elif variant == "mixed_late":
        other = b"".join(e + (b"\n\n" if i == len(events) - 1 else b"\r\n\r\n") for i, e in enumerate(events))
    elif variant == "mixed_early":
        other = b"".join(e + (b"\r\n\n" if i == 0 else b"\r\n\r\n") for i, e in enumerate(events))
    elif variant == "multiline_data":  # a JSON payload split over two data lines
        other = b"".join(b"data: {\r\ndata: " + e[7:] + b"\r\n\r\n" for e in events)
    elif variant == "no_space":  # "data:{...}" is the same field as "data: {...}"
        other = data.replace(b"data: ", b"data:")
    else:
        other = b": keep-alive\r\n\r\n" + b"".join(b"event: message\r\n" + e + b"\r\n\r\n" for e in events)
    want = decode_chunks([data])
    assert decode_chunks([other]) == want
    for i in range(1, len(other), 7):
        assert decode_chunks([other[:i], other[i:]]) == want, i


def test_decoder_final_event_without_blank_line_is_delivered():
    data = fixture("text.sse")
    assert decode_chunks([data[:-4]]) == decode_chunks([data])
    assert decode_chunks([data[:-3]]) == decode_chunks([data])
    assert decode_chunks([data[:-2] + b"\n"]) == decode_chunks([data])


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_decoder_garbage_never_raises(data, as_sse):
    """Any bytes: the decoder never raises; it ends with sink.error or a valid end."""
    if as_sse:
        data = b"data: " + data + b"\r\n\r\n"
    decode_chunks([data])  # check_order runs inside


_json = st.recursive(st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=5),
                     lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=3), kids, max_size=3),
                     max_leaves=6)
_part = st.dictionaries(st.sampled_from(["text", "thought", "thoughtSignature", "functionCall", "inlineData"]),
                        _json | st.fixed_dictionaries({}, optional={"name": _json, "args": _json, "id": _json}),
                        max_size=3)
_event = st.dictionaries(
    st.sampled_from(["candidates", "usageMetadata", "promptFeedback", "responseId", "modelVersion", "error"]),
    _json | st.lists(st.fixed_dictionaries({}, optional={
        "content": _json | st.fixed_dictionaries({}, optional={"parts": _json | st.lists(_part, max_size=3)}),
        "finishReason": _json | st.sampled_from(["STOP", "SAFETY", "MAX_TOKENS"])}), max_size=2)
    | st.fixed_dictionaries({}, optional={k: _json for k in ("promptTokenCount", "candidatesTokenCount",
                                                              "blockReason", "code", "message")}),
    max_size=4)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_event, max_size=4), st.booleans())
def test_decoder_and_encoder_survive_malformed_events(events, sse):
    """Gemini-shaped events with wrong types: only sink.error/end, and the client bytes stay valid."""
    data = b"".join(b"data: " + orjson.dumps(e) + b"\r\n\r\n" for e in events)
    decode_chunks([data])
    enc = encode.StreamEncoder(ctx(sse=sse))
    dec = decode.StreamDecoder(enc)
    dec.feed(data)
    dec.close()
    out = enc.take() + enc.close()
    if sse:
        for ev in out.split(b"\r\n\r\n")[:-1]:
            assert ev.startswith(b"data: ") and isinstance(orjson.loads(ev[6:]), dict)
    else:
        assert isinstance(json.loads(out), list)
    for e in events:
        try:
            decode.parse_response(orjson.dumps(e))
        except GatewayError:
            pass


@pytest.mark.parametrize("payload, message", [
    (b"data: {not json\r\n\r\n", "Gemini stream sent invalid JSON"),
    (b"data: [1, 2]\r\n\r\n", "Gemini stream sent an unexpected event"),
    (b'data: {"candidates": [{"content": {"parts": ["x"]}}]}\r\n\r\n', "Gemini stream sent an unexpected part"),
    (b"", "upstream stream ended early"),
])
def test_decoder_bad_input_is_502(payload, message):
    calls = decode_chunks([payload])
    assert calls[-1] == ("error", 502, "bad_gateway", message)


def test_decoder_error_first_and_nothing_after():
    body = (b'data: {"error": {"code": 429, "message": "Resource has been exhausted", '
            b'"status": "RESOURCE_EXHAUSTED"}}\r\n\r\n' + fixture("text.sse"))
    assert decode_chunks([body]) == [("start", None, None),
                                     ("error", 429, "rate_limit", "Resource has been exhausted")]


def test_decoder_ignores_content_after_finish_but_keeps_usage():
    t = fixture("text.sse")
    extra = (b'data: {"candidates": [{"content": {"parts": [{"text": "late"}], "role": "model"}, '
             b'"index": 0}], "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 8, '
             b'"totalTokenCount": 17}}\r\n\r\n')
    calls = decode_chunks([t + extra])
    assert ("text", "late") not in calls
    assert calls[-2:] == [U(9, 8, None, None), ("end",)]


# ================================================================ non-stream parse_response


def test_parse_response_tools_thinking_signatures():
    r = decode.parse_response(fixture("response_tools.json"))
    assert r.id == "ns-tools-1" and r.model == "gemini-3-pro-preview"
    assert r.parts == [
        ir.Thinking("Weighing options.", source="gemini"),
        ir.Text("I'll look it up.", signature="c2lnLXRleHQ="),
        ir.ToolCall(decode.call_id("ns-tools-1", 0), "search", '{"q":"plexus"}', signature="c2lnLWNhbGw="),
        ir.ToolCall("given-id", "search", '{"q":"gateway"}'),
    ]
    assert r.stop_reason == "tool_use"
    assert r.usage == ir.Usage(input_tokens=20, output_tokens=32, cache_read_tokens=10, reasoning_tokens=20)


def test_stream_and_non_stream_derive_the_same_ids():
    """The same response read whole (non-stream) and streamed gives the same call ids."""
    objs = sse_payloads(fixture("parallel_tools.sse"))
    whole = {**objs[-1], "candidates": [{**objs[-1]["candidates"][0], "content": {"role": "model", "parts": [
        p for o in objs for p in o["candidates"][0]["content"]["parts"]]}}]}
    r = decode.parse_response(orjson.dumps(whole))
    streamed = [c[2] for c in decode_chunks([fixture("parallel_tools.sse")]) if c[0] == "tool_start"]
    assert [p.id for p in r.parts if isinstance(p, ir.ToolCall)] == streamed
    assert streamed[0].startswith("call_") and len(streamed[0]) == 5 + 24 and streamed[1] == "fc-remote-2"
    assert r.parts[0] == ir.Thinking("I should check both cities.", source="gemini")


def test_parse_response_blocked_prompt():
    r = decode.parse_response(fixture("response_blocked.json"))
    assert r.parts == [ir.Text("Prompt blocked by Gemini: SAFETY")]
    assert r.stop_reason == "refusal" and r.usage.input_tokens == 5


@pytest.mark.parametrize("finish, tool, want", [
    ("STOP", False, "end_turn"), ("STOP", True, "tool_use"), ("MAX_TOKENS", True, "max_tokens"),
    ("SAFETY", False, "refusal"), ("RECITATION", False, "refusal"), ("SPII", False, "refusal"),
    ("BLOCKLIST", False, "refusal"), ("PROHIBITED_CONTENT", False, "refusal"),
    ("LANGUAGE", False, "refusal"), ("MALFORMED_FUNCTION_CALL", False, "end_turn"),
    ("OTHER", False, "end_turn"), ("SOMETHING_NEW", False, "end_turn"), (None, True, "tool_use"),
])
def test_finish_reasons(finish, tool, want):
    assert STOPS["gemini"].to_ir(finish, tool) == want


@pytest.mark.parametrize("body, status, kind", [
    (b"not json", 502, "bad_gateway"),
    (b"[1]", 502, "bad_gateway"),
    (b'{"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}}', 400, "invalid_request"),
    (b'{"candidates": [{"content": {"parts": [7]}}]}', 502, "bad_gateway"),
])
def test_parse_response_errors(body, status, kind):
    with pytest.raises(GatewayError) as ei:
        decode.parse_response(body)
    assert (ei.value.status, ei.value.kind) == (status, kind)
