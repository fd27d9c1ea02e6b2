"""Anthropic provider streams -> IR: StreamDecoder, and the round trip decoder -> encoder -> decoder.

Every fixture in tests/fixtures/anthropic/*.sse has a hand-written sink call sequence that the
decoder must produce whatever the split: whole, every byte split point, one byte at a time,
hypothesis-chosen splits.  Round trip: fixture -> decoder -> encoder -> decoder preserves content,
and the encoder's bytes validate with the anthropic SDK.
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from anthropic_helpers import (CTX, FIX, M, SIG, check_structure, decode_chunks, fixture, json_paths, sdk_events,
                               sdk_message)
from plexus import ir
from plexus.dialects.anthropic import decode, encode


# ---------------------------------------------------------------- expected decoder output

REDACTED = "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpPkNRj2YfWXGmKDxH4mPnZ5sQ7vB5URj2pLmN8fQ=="
EXPECTED = {
    "text.sse": [
        ("start", "msg_01XFDUDYJgAACzvnptvVoYEL", M, (2095, 1, 1800, 0, None)),
        ("text", "Hello"), ("text", "! How can"), ("text", " I help you"),
        ("text", ' today? ✨ “quotes” \\ and "escapes"\n'),
        ("block_end",), ("usage", (2095, 15, 1800, 0, None)), ("finish", "end_turn", None), ("end",)],
    "long_text.sse": (
        [("start", "msg_01LongLongLongLongLong", M, (30, 1, None, None, None))]
        + [("text", f" word{k} and some more text to make it realistic,") for k in range(100)]
        + [("block_end",), ("usage", (None, 1024, None, None, None)), ("finish", "max_tokens", None), ("end",)]),
    "thinking_text.sse": [
        ("start", "msg_01ThinkThinkThink", M, (472, 2, None, None, None)),
        ("thinking", "I need to find the GCD of 1071 and 462 using the Euclidean algorithm.\n\n"),
        ("thinking", "1071 = 2 × 462 + 147"), ("thinking", "\n462 = 3 × 147 + 21\n147 = 7 × 21 + 0"),
        ("signature", SIG), ("block_end",),
        ("text", "The greatest common divisor of 1071 and 462 is **21**."), ("block_end",),
        ("usage", (None, 178, None, None, None)), ("finish", "end_turn", None), ("end",)],
    "redacted_thinking.sse": [
        ("start", "msg_01Redacted", "claude-opus-4-6", (100, 1, None, None, None)),
        ("redacted_thinking", REDACTED), ("block_end",),
        ("thinking", ""), ("signature", SIG), ("block_end",),
        ("text", "Done."), ("block_end",),
        ("usage", (None, 40, None, None, None)), ("finish", "end_turn", None), ("end",)],
    "tools_parallel.sse": [
        ("start", "msg_014p7gG3wDgGV9EUtLvnow3U", M, (472, 2, 0, 0, None)),
        ("text", "Okay, let me check the weather in both cities."), ("block_end",),
        ("tool_start", 1, "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather", None),
        ("tool_args", 1, '{"locat'), ("tool_args", 1, 'ion": "San Fra'), ("tool_args", 1, 'ncisco, CA"'),
        ("tool_args", 1, ', "unit": "fah'), ("tool_args", 1, 'renheit"}'), ("block_end",),
        ("tool_start", 2, "toolu_02AbCdEfGhIjKlMnOpQrStUv", "get_weather", None),
        ("tool_args", 2, '{"location": "Paris"}'), ("block_end",),
        ("tool_start", 3, "toolu_03NoArgs", "get_time", None), ("block_end",),
        ("usage", (None, 89, None, None, None)), ("finish", "tool_use", None), ("end",)],
    "error_overloaded.sse": [
        ("start", "msg_01Overloaded", M, (10, 1, None, None, None)), ("text", "Partial"),
        ("error", 529, "overloaded", "Overloaded")],
    "cut.sse": [
        ("start", "msg_01Cut", M, (10, 1, None, None, None)), ("text", "This stream is cu"),
        ("error", 502, "bad_gateway", "upstream stream ended early")],
    "server_tool.sse": [
        ("start", "msg_01WebSearch", M, (2679, 3, None, None, None)),
        ("text", "I'll search for that."), ("block_end",),
        ("text", "It is sunny."), ("block_end",),
        ("usage", (10682, 510, 0, 0, None)), ("finish", "end_turn", None), ("end",)],
    "stop_sequence_crlf.sse": [
        ("start", "msg_01StopSeq", M, (5, 1, None, None, None)), ("text", "one, two"), ("block_end",),
        ("usage", (None, 4, None, None, None)), ("finish", "stop_sequence", "three"), ("end",)],
}
SMALL = sorted(k for k in EXPECTED if k != "long_text.sse")


def test_every_fixture_has_expectations():
    assert sorted(p.name for p in FIX.glob("*.sse")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_decoder_whole_and_one_byte_at_a_time(name):
    data = fixture(name)
    assert decode_chunks([data]) == EXPECTED[name]
    assert decode_chunks([data[i:i + 1] for i in range(len(data))]) == EXPECTED[name]


@pytest.mark.parametrize("name", SMALL)
def test_decoder_every_split_point(name):
    data = fixture(name)
    want = EXPECTED[name]
    for i in range(len(data) + 1):
        assert decode_chunks([data[:i], data[i:]]) == want, f"split at {i}"


def test_decoder_long_text_split_points():
    # 17 kB: every split in the first and last 1500 bytes (message_start, block boundaries, the end)
    # and every 7th byte in between keeps the test well under a second.
    data = fixture("long_text.sse")
    want = EXPECTED["long_text.sse"]
    n = len(data)
    for i in sorted(set(range(0, 1500)) | set(range(n - 1500, n + 1)) | set(range(0, n, 7))):
        assert decode_chunks([data[:i], data[i:]]) == want, f"split at {i}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(EXPECTED)), cuts=st.lists(st.floats(0, 1), max_size=12))
def test_decoder_hypothesis_splits(name, cuts):
    data = fixture(name)
    points = sorted({int(c * len(data)) for c in cuts})
    chunks, prev = [], 0
    for p in points:
        chunks.append(data[prev:p])
        prev = p
    chunks.append(data[prev:])
    assert decode_chunks(chunks) == EXPECTED[name]


def test_decoder_ignores_input_after_end_and_error():
    data = fixture("text.sse")
    assert decode_chunks([data, data]) == EXPECTED["text.sse"]
    err = fixture("error_overloaded.sse")
    assert decode_chunks([err, data]) == EXPECTED["error_overloaded.sse"]


@pytest.mark.parametrize("etype,status,kind", [
    ("overloaded_error", 529, "overloaded"), ("rate_limit_error", 429, "rate_limit"),
    ("api_error", 500, "api_error"), ("invalid_request_error", 400, "invalid_request"),
    ("authentication_error", 401, "authentication"), ("permission_error", 403, "permission"),
    ("not_found_error", 404, "not_found"), ("request_too_large", 413, "request_too_large"),
    ("billing_error", 402, "billing"), ("timeout_error", 504, "timeout"), ("something_new", 500, "api_error")])
def test_decoder_error_event_types(etype, status, kind):
    data = b'event: error\ndata: {"type":"error","error":{"type":"%s","message":"boom"}}\n\n' % etype.encode()
    assert decode_chunks([data]) == [("error", status, kind, "boom")]


@pytest.mark.parametrize("data", [
    b"data: {not json}\n\n",
    b'event: message_start\ndata: {"type":"message_start"}\n\n',
    b'data: {"type":"message_start","message":{"id":"m","model":"x","usage":{}}}\n\n'
    b'data: {"type":"content_block_start","index":0}\n\n',
    b'data: [1,2]\n\n',
])
def test_decoder_malformed_is_502(data):
    calls = decode_chunks([data])
    assert calls[-1][:3] == ("error", 502, "bad_gateway")
    assert sum(1 for c in calls if c[0] == "error") == 1


def test_decoder_stop_reason_mapping():
    def run(reason):
        data = (b'data: {"type":"message_start","message":{"id":"m","model":"x","usage":{}}}\n\n'
                b'data: {"type":"message_delta","delta":{"stop_reason":"%s","stop_sequence":null},'
                b'"usage":{"output_tokens":1,"output_tokens_details":{"thinking_tokens":7}}}\n\n'
                b'data: {"type":"message_stop"}\n\n') % reason.encode()
        calls = decode_chunks([data])
        assert calls[1] == ("usage", (None, 1, None, None, 7))
        return calls[2][1]
    for r in ("end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal", "pause_turn"):
        assert run(r) == r
    assert run("model_context_window_exceeded") == "max_tokens"
    assert run("brand_new_reason") == "end_turn"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_decoder_garbage_never_raises(chunks):
    calls = decode_chunks(chunks)
    # whatever came in: at most one start first, and exactly one terminal call (end or error) last
    assert calls and calls[-1][0] in ("end", "error")
    assert sum(1 for c in calls if c[0] in ("end", "error")) == 1


# ---------------------------------------------------------------- round trip through the IR

def _content(calls):
    """Calls without the usage figures (encoders fill defaults), plus the folded final usage."""
    out, u = [], ir.Usage()
    for c in calls:
        if c[0] == "usage" or c[0] == "start":
            v = c[-1]
            if v is not None:
                u.update(ir.Usage(*v))
            if c[0] == "start":
                out.append(("start",))
        else:
            out.append(c)
    fold = (u.input_tokens, u.output_tokens, u.cache_read_tokens or 0, u.cache_creation_tokens or 0)
    return out, fold


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_round_trip_through_ir(name):
    enc = encode.StreamEncoder(CTX)
    dec = decode.StreamDecoder(enc)
    data = fixture(name)
    out = []
    for i in range(0, len(data), 97):
        dec.feed(data[i:i + 97])
        out.append(enc.take())
    dec.close()
    client = b"".join(out) + enc.take() + enc.close()
    events = sdk_events(client)
    check_structure(events)
    again = decode_chunks([client])
    want = EXPECTED[name]
    if want[-1][0] == "error":
        # same message; the status survives as far as Anthropic error types can say it (502 -> api_error)
        assert again[-1][3] == want[-1][3] and again[-1][1] == {529: 529, 502: 500}[want[-1][1]]
        assert again[:-1] == [("start", *want[0][1:3], again[0][3])] + want[1:-1]
        return
    assert _content(again) == _content(want)
    msg = sdk_message(client)
    assert msg.id == want[0][1] and msg.model == want[0][2]


def test_round_trip_final_message_matches_fixture():
    msg = sdk_message(run_through("tools_parallel.sse"))
    assert [c.type for c in msg.content] == ["text", "tool_use", "tool_use", "tool_use"]
    assert msg.content[1].input == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert msg.content[2].input == {"location": "Paris"} and msg.content[3].input == {}
    assert msg.stop_reason == "tool_use" and msg.usage.output_tokens == 89 and msg.usage.input_tokens == 472
    msg = sdk_message(run_through("thinking_text.sse"))
    assert msg.content[0].signature == SIG and msg.content[1].text.endswith("**21**.")


def run_through(name):
    enc = encode.StreamEncoder(CTX)
    dec = decode.StreamDecoder(enc)
    dec.feed(fixture(name))
    dec.close()
    return enc.take() + enc.close()


def _set(obj, path, value):
    if not path:
        return value
    obj[path[0]] = _set(obj[path[0]], path[1:], value)
    return obj


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_decoder_values_of_the_wrong_type_are_502(data):
    """A real event with one value swapped for another type: a clean 502, never a TypeError, and
    whatever reaches the sink has the types the Sink protocol promises."""
    name = data.draw(st.sampled_from(sorted(EXPECTED)))
    blocks = fixture(name).replace(b"\r\n", b"\n").split(b"\n\n")
    k = data.draw(st.integers(0, len(blocks) - 1))
    head, _, payload = blocks[k].rpartition(b"data: ")
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return
    path = data.draw(st.sampled_from(list(json_paths(obj))))
    odd = data.draw(st.sampled_from([None, 1, -1, 2.5, True, "", "x", [], [1], {}, {"a": 1}]))
    blocks[k] = head + b"data: " + orjson.dumps(_set(obj, path, odd))
    calls = decode_chunks([b"\n\n".join(blocks)])
    assert calls[-1][0] in ("end", "error")
    for c in calls:
        if c[0] in ("text", "thinking", "signature", "redacted_thinking"):
            assert type(c[1]) is str
        elif c[0] == "tool_start":
            assert type(c[1]) is int and type(c[2]) is str and type(c[3]) is str
        elif c[0] == "tool_args":
            assert type(c[1]) is int and type(c[2]) is str
        elif c[0] == "start":
            assert c[1] is None or type(c[1]) is str
            assert c[2] is None or type(c[2]) is str
        elif c[0] in ("usage",):
            assert all(v is None or type(v) is int for v in c[1])
        elif c[0] == "finish":
            assert type(c[1]) is str and (c[2] is None or type(c[2]) is str)


@pytest.mark.parametrize("variant", ["no_event_lines", "comments", "no_space", "crlf_midway", "cr_only",
                                     "multiline_data", "trailing_fields"])
def test_decoder_sse_variants_take_the_general_path(variant):
    """Shapes off the fast path (bare data lines, comments, `data:` without a space, CRLF that
    starts mid-stream, CR line ends, JSON split over several data lines, id/retry lines) give
    the same calls, whatever the split."""
    data = fixture("tools_parallel.sse")
    if variant == "multiline_data":
        data = data.replace(b'","index":', b'",\ndata: "index":')
    elif variant == "trailing_fields":
        data = data.replace(b"}\n\n", b"}\nid: 7\nretry: 10\n\n")
    elif variant == "cr_only":
        data = data.replace(b"\n", b"\r")
    elif variant == "no_event_lines":
        data = b"\n".join(line for line in data.split(b"\n") if not line.startswith(b"event: "))
    elif variant == "comments":
        data = data.replace(b"\n\nevent: content_block_delta", b"\n\n: keep-alive\n\nevent: content_block_delta")
    elif variant == "no_space":
        data = data.replace(b"data: ", b"data:")
    else:
        k = len(data) // 2
        data = data[:k] + data[k:].replace(b"\n", b"\r\n")
    want = EXPECTED["tools_parallel.sse"]
    assert decode_chunks([data]) == want
    for i in range(0, len(data) + 1, 5):
        assert decode_chunks([data[:i], data[i:]]) == want, f"split at {i}"
