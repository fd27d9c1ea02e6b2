"""IR -> Anthropic client: StreamEncoder bytes and non-stream render_response / parse_response.

IR call sequences give exact expected bytes; every output is validated event by event with the
anthropic SDK's pydantic types and accumulated with the SDK's own stream accumulator; random call
sequences (hypothesis) must always give a well-formed block structure and conserve content.
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from anthropic_helpers import (CTX, M, SIG, _u, check_structure, fixture, run_encoder, sdk_events,
                               sdk_message)
from plexus import ir
from plexus.dialects.anthropic import decode, encode
from plexus.dialects.signatures import wrap_sig
from plexus.errors import GatewayError


# ---------------------------------------------------------------- encoder: exact bytes

def test_encoder_text_exact_bytes():
    out = run_encoder([
        ("start", "chatcmpl-abc", "gpt-x", ir.Usage(input_tokens=10)),
        ("text", "Hi"), ("text", " “there”\n"), ("finish", "end_turn", None),
        ("usage", ir.Usage(output_tokens=5, cache_read_tokens=3)), ("end",)])
    assert out == (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_0123abcd","type":"message",'
        b'"role":"assistant","model":"gpt-x","content":[],"stop_reason":null,"stop_sequence":null,"usage":'
        b'{"input_tokens":10,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":0}}}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":'
        b'{"type":"text","text":""}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":'
        b'{"type":"text_delta","text":"Hi"}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":'
        b'{"type":"text_delta","text":" \xe2\x80\x9cthere\xe2\x80\x9d\\n"}}\n\n'
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn",'
        b'"stop_sequence":null},"usage":{"input_tokens":10,"cache_read_input_tokens":3,"output_tokens":5}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    msg = sdk_message(out)
    assert msg.content[0].text == "Hi “there”\n"
    assert (msg.usage.input_tokens, msg.usage.output_tokens, msg.usage.cache_read_input_tokens) == (10, 5, 3)
    assert msg.stop_reason == "end_turn" and msg.id == "msg_0123abcd" and msg.model == "gpt-x"


def test_encoder_thinking_signature_then_tool_exact_bytes():
    out = run_encoder([
        ("start", "msg_keep", None, None),
        ("thinking", "Let me"), ("thinking", " think."), ("signature", "SIGabc"), ("block_end",),
        ("tool_start", 0, "toolu_1", "get_weather", None), ("tool_args", 0, '{"city":'),
        ("tool_args", 0, ' "Paris"}'), ("block_end",),
        ("usage", ir.Usage(output_tokens=9)), ("finish", "tool_use", None), ("end",)])
    assert out == (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_keep","type":"message",'
        b'"role":"assistant","model":"alias-model","content":[],"stop_reason":null,"stop_sequence":null,"usage":'
        b'{"input_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":0}}}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":'
        b'{"type":"thinking","thinking":"","signature":""}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":'
        b'{"type":"thinking_delta","thinking":"Let me"}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":'
        b'{"type":"thinking_delta","thinking":" think."}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":'
        b'{"type":"signature_delta","signature":"SIGabc"}}\n\n'
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":1,"content_block":'
        b'{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,"delta":'
        b'{"type":"input_json_delta","partial_json":"{\\"city\\":"}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,"delta":'
        b'{"type":"input_json_delta","partial_json":" \\"Paris\\"}"}}\n\n'
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":1}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"tool_use",'
        b'"stop_sequence":null},"usage":{"output_tokens":9}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    msg = sdk_message(out)
    assert msg.content[0].thinking == "Let me think." and msg.content[0].signature == "SIGabc"
    assert msg.content[1].input == {"city": "Paris"} and msg.content[1].name == "get_weather"


def test_encoder_interleaved_parallel_tools_become_separate_blocks():
    # OpenAI streams may interleave the arguments of calls 0 and 1
    calls = [
        ("start", None, None, None),
        ("tool_start", 0, "call_a", "f", None), ("tool_args", 0, '{"x"'),
        ("tool_start", 1, "call_b", "g", None), ("tool_args", 1, '{"y"'),
        ("tool_args", 0, ": 1}"), ("tool_args", 1, ": 2"), ("tool_args", 1, "}"),
        ("finish", "tool_use", None), ("end",)]
    enc = encode.StreamEncoder(CTX)
    taken = []
    for name, *args in calls:
        getattr(enc, name)(*args)
        taken.append(enc.take())
    # the open call's fragments stream at once; the other call's wait for its turn
    assert b'"partial_json":"{\\"x\\""' in taken[2]
    assert taken[4] == b"" and taken[6] == b"" and taken[7] == b""
    assert b'"partial_json":": 1}"' in taken[5]
    events = sdk_events(b"".join(taken) + enc.close())
    check_structure(events)
    blocks = [e for e in events if e["type"] == "content_block_start"]
    assert [b["content_block"]["id"] for b in blocks] == ["call_a", "call_b"]
    deltas = [(e["index"], e["delta"]["partial_json"]) for e in events if e["type"] == "content_block_delta"]
    assert deltas == [(0, '{"x"'), (0, ": 1}"), (1, '{"y": 2}')]
    msg = sdk_message(b"".join(taken))
    assert [c.input for c in msg.content] == [{"x": 1}, {"y": 2}]


def test_encoder_pending_tool_opens_at_block_end_and_keeps_streaming():
    out = run_encoder([
        ("start", None, None, None),
        ("tool_start", 0, "a", "f", None), ("tool_start", 1, "b", "g", None),
        ("tool_args", 1, '{"q":'), ("tool_args", 0, "{}"), ("block_end",),
        ("tool_args", 1, ' "z"}'), ("block_end",), ("finish", "tool_use", None), ("end",)])
    events = sdk_events(out)
    check_structure(events)
    deltas = [(e["index"], e["delta"]["partial_json"]) for e in events if e["type"] == "content_block_delta"]
    assert deltas == [(0, "{}"), (1, '{"q":'), (1, ' "z"}')]


def test_encoder_text_does_not_wait_for_pending_tools():
    enc = encode.StreamEncoder(CTX)
    enc.start(None, None, None)
    enc.tool_start(0, "a", "f")
    enc.tool_start(1, "b", "g")
    enc.tool_args(1, "{}")
    enc.take()
    enc.text("now")
    assert b'"text":"now"' in enc.take()
    enc.finish("end_turn")
    enc.end()
    events = sdk_events(enc.take())
    assert events[-2]["delta"]["stop_reason"] == "tool_use"   # tools were sent


def test_encoder_gemini_signatures_are_wrapped():
    ctx = ir.Context(model="m", id_seed="s", created=0, extra={"upstream": "gemini"})
    out = run_encoder([
        ("start", None, "gemini-3-pro", None),
        ("thinking", "hmm"), ("signature", "GSIG1"),
        ("tool_start", 0, "call_1", "f", "GSIG2"), ("tool_args", 0, "{}"), ("block_end",),
        ("tool_start", 1, "call_2", "f", "GSIG3"), ("tool_args", 1, '{"a":1}'), ("block_end",),
        ("finish", "end_turn", None), ("end",)], ctx)
    check_structure(sdk_events(out))
    msg = sdk_message(out)
    kinds = [(c.type, getattr(c, "signature", None)) for c in msg.content]
    assert kinds == [("thinking", wrap_sig("GSIG1")), ("thinking", wrap_sig("GSIG2")), ("tool_use", None),
                     ("thinking", wrap_sig("GSIG3")), ("tool_use", None)]
    assert msg.content[1].thinking == "" and msg.content[4].input == {"a": 1}
    assert msg.stop_reason == "tool_use"      # Gemini says STOP for function calls
    # without the upstream hint a thinking signature is an Anthropic one: verbatim
    out = run_encoder([("start", None, None, None), ("thinking", "x"), ("signature", "ASIG"), ("end",)])
    assert sdk_message(out).content[0].signature == "ASIG"


def test_encoder_signature_rules():
    # signature with no thinking open opens one; thinking after a signature opens a new block
    out = run_encoder([
        ("start", None, None, None), ("text", "a"), ("signature", "S1"), ("thinking", "b"),
        ("signature", "S2"), ("signature", "S3"), ("redacted_thinking", "RD"), ("text", "c"),
        ("finish", "end_turn", None), ("end",)])
    events = sdk_events(out)
    check_structure(events)
    msg = sdk_message(out)
    got = [(c.type, getattr(c, "thinking", None) or getattr(c, "text", None) or getattr(c, "data", None),
            getattr(c, "signature", None)) for c in msg.content]
    assert got == [("text", "a", None), ("thinking", None, "S1"), ("thinking", "b", "S2"),
                   ("thinking", None, "S3"), ("redacted_thinking", "RD", None), ("text", "c", None)]


def test_encoder_error_and_close():
    enc = encode.StreamEncoder(CTX)
    enc.start("msg_1", "m", None)
    enc.text("partial")
    enc.error(GatewayError(429, "slow down", "rate_limit"))
    out = enc.take()
    enc.text("more")
    enc.end()
    assert enc.take() == b"" and enc.close() == b""
    events = sdk_events(out)
    assert events[-1] == {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    assert [e["type"] for e in events] == ["message_start", "content_block_start", "content_block_delta", "error"]
    # close() without end(): an error event, never a clean finish
    enc = encode.StreamEncoder(CTX)
    enc.start(None, None, None)
    enc.text("cut")
    out = enc.take() + enc.close()
    events = sdk_events(out)
    assert events[-1]["type"] == "error" and events[-1]["error"]["type"] == "api_error"
    assert not any(e["type"] == "message_stop" for e in events)
    # error before anything: just the error event
    enc = encode.StreamEncoder(CTX)
    enc.error(GatewayError(529, "Overloaded", "overloaded"))
    assert sdk_events(enc.close()) == [{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}]


def test_encoder_end_without_finish_and_block_end_without_block():
    out = run_encoder([("start", None, None, None), ("block_end",), ("text", ""), ("block_end",),
                       ("block_end",), ("end",)])
    events = sdk_events(out)
    check_structure(events)
    assert [e["type"] for e in events] == ["message_start", "message_delta", "message_stop"]
    assert events[-2]["delta"]["stop_reason"] == "end_turn"


@pytest.mark.parametrize("ir_reason,client", [
    ("end_turn", "end_turn"), ("max_tokens", "max_tokens"), ("stop_sequence", "stop_sequence"),
    ("tool_use", "tool_use"), ("refusal", "refusal"), ("pause_turn", "pause_turn"), ("error", "end_turn")])
def test_encoder_stop_reasons(ir_reason, client):
    out = run_encoder([("start", None, None, None), ("text", "x"), ("finish", ir_reason, None), ("end",)])
    assert sdk_message(out).stop_reason == client


# ---------------------------------------------------------------- encoder: random call sequences

_text = st.text(max_size=6)
_op = st.one_of(
    st.tuples(st.just("text"), _text), st.tuples(st.just("thinking"), _text),
    st.tuples(st.just("signature"), st.text(min_size=1, max_size=4)),
    st.tuples(st.just("redacted_thinking"), st.text(min_size=1, max_size=4)),
    st.tuples(st.just("tool_start"), st.integers(0, 3), st.just("id"), st.just("fn"),
              st.one_of(st.none(), st.just("G"))),
    st.tuples(st.just("tool_args"), st.integers(0, 3), _text),
    st.tuples(st.just("block_end")),
    st.tuples(st.just("usage"), st.builds(ir.Usage, st.one_of(st.none(), st.integers(0, 9)),
                                          st.one_of(st.none(), st.integers(0, 9)))),
)


@settings(max_examples=400, deadline=None)
@given(ops=st.lists(_op, max_size=25), ending=st.sampled_from(["end", "error", "close", "finish_end"]))
def test_encoder_random_sequences_are_well_formed(ops, ending):
    calls = [("start", None, None, None)] + [tuple(o) for o in ops]
    if ending == "end":
        calls.append(("end",))
    elif ending == "finish_end":
        calls += [("finish", "end_turn", None), ("usage", ir.Usage(output_tokens=3)), ("end",)]
    elif ending == "error":
        calls.append(("error", GatewayError(500, "x", "api_error")))
    events = sdk_events(run_encoder(calls))
    check_structure(events)
    # text and thinking content are conserved exactly
    texts = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta"
                    and e["delta"]["type"] == "text_delta")
    assert texts == "".join(c[1] for c in calls if c[0] == "text")
    thinks = "".join(e["delta"]["thinking"] for e in events if e["type"] == "content_block_delta"
                     and e["delta"]["type"] == "thinking_delta")
    assert thinks == "".join(c[1] for c in calls if c[0] == "thinking")


@settings(max_examples=300, deadline=None)
@given(data=st.data(), n=st.integers(1, 4))
def test_encoder_interleaved_tools_conserve_arguments(data, n):
    # any interleaving of n calls' fragments (each call started before its fragments)
    frags = {i: data.draw(st.lists(st.text(min_size=1, max_size=5), max_size=5)) for i in range(n)}
    queue = {i: [("tool_start", i, f"id{i}", f"fn{i}", None)] + [("tool_args", i, f) for f in frags[i]]
             for i in range(n)}
    calls = [("start", None, None, None)]
    while any(queue.values()):
        i = data.draw(st.sampled_from([k for k, v in queue.items() if v]))
        calls.append(queue[i].pop(0))
    calls += [("finish", "tool_use", None), ("end",)]
    events = sdk_events(run_encoder(calls))
    check_structure(events)
    ids = {e["index"]: e["content_block"]["id"] for e in events if e["type"] == "content_block_start"}
    assert sorted(ids.values()) == [f"id{i}" for i in range(n)]
    got: dict[str, str] = {}
    for e in events:
        if e["type"] == "content_block_delta":
            got[ids[e["index"]]] = got.get(ids[e["index"]], "") + e["delta"]["partial_json"]
    for i in range(n):
        assert got.get(f"id{i}", "") == "".join(frags[i])


# ---------------------------------------------------------------- non-stream

def test_parse_response_fixture():
    r = decode.parse_response(fixture("message_tools_thinking.json"))
    assert r.id == "msg_01Aq9w938a90dw8q" and r.model == M and r.stop_reason == "tool_use"
    th, tx, tc, rd = r.parts
    assert th == ir.Thinking("Let me check the weather.", SIG, source="anthropic")
    assert tx == ir.Text("I'll check the weather.")
    assert (tc.id, tc.name, orjson.loads(tc.arguments)) == (
        "toolu_01A09q90qw90lq917835lq9", "get_weather", {"location": "San Francisco, CA", "unit": "celsius"})
    assert tc.extra == {"caller": {"type": "direct"}}
    assert rd == ir.Thinking("EmwKAhgBEgy3va3pzix", redacted=True, source="anthropic")
    assert _u(r.usage) == (2095, 503, 1800, 100, None)


@pytest.mark.parametrize("body", [b"nope", b"[]", b'{"type":"message"}', b'{"content":[{"type":"text"}]}',
                                  b'{"content":[{"type":"tool_use","id":1}]}'])
def test_parse_response_malformed_is_502(body):
    with pytest.raises(GatewayError) as e:
        decode.parse_response(body)
    assert e.value.status == 502 and e.value.kind == "bad_gateway"


def test_parse_response_error_body():
    with pytest.raises(GatewayError) as e:
        decode.parse_response(b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}')
    assert (e.value.status, e.value.kind, e.value.message) == (529, "overloaded", "Overloaded")


def test_render_response_exact_and_sdk_valid():
    from anthropic.types import Message

    resp = ir.Response("chatcmpl-9", "gpt-4o", [
        ir.Thinking("reasoning text"), ir.Text("Hello"), ir.ToolCall("call_1", "f", '{"a": [1, 2]}'),
        ir.ToolCall("call_2", "g", "not json", signature="GS"), ir.Text("tail", signature="GT")],
        stop_reason="tool_use", usage=ir.Usage(20, 7, 5, None))
    out = encode.render_response(resp, CTX)
    assert orjson.loads(out) == {
        "id": "msg_0123abcd", "type": "message", "role": "assistant", "model": "gpt-4o",
        "content": [
            {"type": "thinking", "thinking": "reasoning text", "signature": ""},
            {"type": "text", "text": "Hello"},
            {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": [1, 2]}},
            {"type": "thinking", "thinking": "", "signature": "plexus-gemini:GS"},
            {"type": "tool_use", "id": "call_2", "name": "g", "input": {}},
            {"type": "thinking", "thinking": "", "signature": "plexus-gemini:GT"},
            {"type": "text", "text": "tail"}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 20, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 5,
                  "output_tokens": 7}}
    Message.model_validate_json(out)


@pytest.mark.parametrize("name", ["message_tools_thinking.json", "message_text.json"])
def test_non_stream_round_trip(name):
    from anthropic.types import Message

    src = orjson.loads(fixture(name))
    r = decode.parse_response(fixture(name))
    out = orjson.loads(encode.render_response(r, CTX))
    Message.model_validate(out)
    assert out["id"] == src["id"] and out["model"] == src["model"]
    content = [{k: v for k, v in b.items() if k != "caller"} for b in src["content"]]  # extras not written
    assert out["content"] == content and out["stop_reason"] == src["stop_reason"]
    for k in ("input_tokens", "output_tokens"):
        assert out["usage"][k] == src["usage"][k]
    r2 = decode.parse_response(encode.render_response(r, CTX))
    for p in r.parts:
        if isinstance(p, ir.ToolCall):
            p.extra = None
    assert (r2.id, r2.model, r2.parts, r2.stop_reason, r2.stop_sequence) == (
        r.id, r.model, r.parts, r.stop_reason, r.stop_sequence)
    assert _u(r2.usage)[:4] == tuple(v or 0 for v in _u(r.usage)[:4])    # unknown cache figures -> 0


def test_render_response_gemini_thinking_and_redacted():
    resp = ir.Response(None, "", [ir.Thinking("t", "GSIG", source="gemini"),
                                  ir.Thinking("DATA", redacted=True, source="anthropic")], "end_turn")
    out = orjson.loads(encode.render_response(resp, CTX))
    assert out["content"] == [{"type": "thinking", "thinking": "t", "signature": "plexus-gemini:GSIG"},
                              {"type": "redacted_thinking", "data": "DATA"}]
    assert out["model"] == "alias-model"
