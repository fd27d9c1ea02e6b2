"""IR → Gemini client bytes: the stream encoder and render_response, and round trips.

Theory: the encoder is checked byte for byte, then validated by google-genai's own parsing (its
pydantic types, and the real client reading a streamed chat through an in-memory transport, then
sending the history back), and its output is fed back into the decoder (round trip through the
IR must preserve content). Any Sink call sequence must give valid client bytes.
"""

from __future__ import annotations

import json

import httpx
import orjson
import pytest
from hypothesis import given, settings, strategies as st

from plexus import ir
from plexus.dialects.gemini import decode, encode
from plexus.dialects.signatures import wrap_sig
from plexus.errors import GatewayError
from test_gemini_stream import ctx, decode_chunks, fixture, sse_payloads


# ================================================================ encoder


def drive(enc, calls):
    for name, *args in calls:
        getattr(enc, name)(*args)
    return enc.take()


META = b',"modelVersion":"up-model","responseId":"rid-1"}'


def ev(parts: bytes) -> bytes:
    return b'data: {"candidates":[{"content":{"parts":[' + parts + b'],"role":"model"},"index":0}]' + META + b"\r\n\r\n"


TEXT_CALLS = [("start", "rid-1", "up-model", ir.Usage(input_tokens=5)), ("text", "Hel"), ("text", ""),
              ("text", 'lo "you"'), ("finish", "end_turn"),
              ("usage", ir.Usage(output_tokens=3)), ("end",)]
TEXT_FINAL = (b'data: {"candidates":[{"content":{"parts":[{"text":""}],"role":"model"},"finishReason":"STOP",'
              b'"index":0}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":3,"totalTokenCount":8}'
              + META + b"\r\n\r\n")


def test_encoder_text_exact_bytes():
    enc = encode.StreamEncoder(ctx())
    out = drive(enc, TEXT_CALLS)
    assert out == ev(b'{"text":"Hel"}') + ev(b'{"text":"lo \\"you\\""}') + TEXT_FINAL
    assert enc.close() == b"" and enc.take() == b""


def test_encoder_array_mode_exact_bytes_and_valid_json():
    enc = encode.StreamEncoder(ctx(sse=False))
    out = drive(enc, TEXT_CALLS)
    e1 = ev(b'{"text":"Hel"}')[6:-4]
    e2 = ev(b'{"text":"lo \\"you\\""}')[6:-4]
    assert out == b"[" + e1 + b"\n,\r\n" + e2 + b"\n,\r\n" + TEXT_FINAL[6:-4] + b"\n]"
    assert [x["candidates"][0]["content"]["parts"][0]["text"] for x in json.loads(out)] == ["Hel", 'lo "you"', ""]


def test_encoder_defaults_from_context():
    enc = encode.StreamEncoder(ctx())
    out = drive(enc, [("start", None, None, None), ("text", "x")])
    assert out == (b'data: {"candidates":[{"content":{"parts":[{"text":"x"}],"role":"model"},"index":0}],'
                   b'"modelVersion":"alias-model","responseId":"seed123"}\r\n\r\n')


THINK_TOOL_CALLS = [
    ("start", "rid-1", "up-model", None),
    ("thinking", "Hmm"), ("signature", "ErUBanthropicSig=="), ("block_end",),
    ("thinking", ""), ("signature", wrap_sig("Z2VtaW5pLXNpZw==")), ("block_end",),
    ("redacted_thinking", "opaque"),
    ("tool_start", 1, "toolu_B", "b", None), ("tool_start", 0, "call_A", "a", "c2lnQQ=="),
    ("tool_args", 0, '{"x":'), ("tool_args", 1, '{"y": [1,'), ("tool_args", 0, " 1}"),
    ("tool_args", 1, " 2]}"), ("tool_start", 2, "call_C", "c", None), ("tool_args", 2, "not json"),
    ("block_end",),
    ("finish", "tool_use"), ("usage", ir.Usage(input_tokens=10, cache_read_tokens=2, output_tokens=9,
                                               reasoning_tokens=4)),
    ("end",),
]


def test_encoder_thinking_signatures_and_buffered_tools():
    enc = encode.StreamEncoder(ctx())
    out = drive(enc, THINK_TOOL_CALLS)
    anth = encode.tag_anthropic("ErUBanthropicSig==").encode()
    red = encode.tag_anthropic("opaque", redacted=True).encode()
    final = (b'data: {"candidates":[{"content":{"parts":['
             b'{"functionCall":{"id":"call_A","name":"a","args":{"x":1}},"thoughtSignature":"c2lnQQ=="},'
             b'{"functionCall":{"id":"toolu_B","name":"b","args":{"y":[1,2]}}}'
             b'],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":12,'
             b'"candidatesTokenCount":5,"totalTokenCount":21,"thoughtsTokenCount":4,"cachedContentTokenCount":2}'
             + META + b"\r\n\r\n")
    assert out == (ev(b'{"text":"Hmm","thought":true}')
                   + ev(b'{"text":"","thought":true,"thoughtSignature":"' + anth + b'"}')
                   + ev(b'{"text":"","thought":true,"thoughtSignature":"Z2VtaW5pLXNpZw=="}')
                   + ev(b'{"text":"","thought":true,"thoughtSignature":"' + red + b'"}')
                   + ev(b'{"functionCall":{"id":"call_C","name":"c","args":{}}}')
                   + final)
    assert encode.read_sig(anth.decode()) == ("anthropic", "ErUBanthropicSig==", False)
    assert encode.read_sig(red.decode()) == ("anthropic", "opaque", True)
    assert encode.read_sig("Z2VtaW5pLXNpZw==") == ("gemini", "Z2VtaW5pLXNpZw==", False)


def test_encoder_signature_from_a_gemini_upstream_goes_out_raw():
    enc = encode.StreamEncoder(ctx(extra={"upstream": "gemini"}))
    out = drive(enc, [("start", "rid-1", "up-model", None), ("thinking", "t"), ("signature", "RAW+/sig=")])
    assert out == ev(b'{"text":"t","thought":true}') + ev(b'{"text":"","thought":true,"thoughtSignature":"RAW+/sig="}')
    enc = encode.StreamEncoder(ctx())  # another upstream: an untagged signature is Anthropic's
    out = drive(enc, [("start", "rid-1", "up-model", None), ("signature", "RAW+/sig=")])
    assert encode.read_sig(sse_payloads(out)[0]["candidates"][0]["content"]["parts"][0]["thoughtSignature"]) == (
        "anthropic", "RAW+/sig=", False)


def test_tagged_signature_survives_the_sdk_urlsafe_reencoding():
    from google.genai import types
    for sig in ("ErUBCkYIBxgCKkD+/abc==", "x", "EqQBCkgIARABGAIiQL+/+/8="):
        tagged = encode.tag_anthropic(sig)
        back = types.Part.model_validate({"text": "", "thought": True, "thoughtSignature": tagged})
        again = back.model_dump(mode="json", by_alias=True, exclude_none=True)["thoughtSignature"]
        assert encode.read_sig(again) == ("anthropic", sig, False)


@pytest.mark.parametrize("sse", [True, False])
def test_encoder_error_and_close(sse):
    enc = encode.StreamEncoder(ctx(sse=sse))
    drive(enc, [("start", "rid-1", "up-model", None), ("text", "partial")])
    enc.error(GatewayError(529, "Overloaded", "overloaded"))
    out = enc.take()
    err = b'{"error":{"code":529,"message":"Overloaded","status":"UNAVAILABLE"}}'
    if sse:
        assert out == b"data: " + err + b"\r\n\r\n"
    else:
        assert out == b"\n,\r\n" + err + b"\n]"
    enc.end()
    assert enc.take() == b"" and enc.close() == b""


@pytest.mark.parametrize("sse", [True, False])
def test_encoder_close_without_end_is_an_error(sse):
    enc = encode.StreamEncoder(ctx(sse=sse))
    drive(enc, [("start", "rid-1", "up-model", None), ("text", "cut")])
    out = enc.close()
    assert b'"code":502' in out and b'"status":"UNAVAILABLE"' in out and b"finishReason" not in out
    if not sse:
        assert out.endswith(b"\n]")
    assert enc.close() == b""


def test_encoder_error_before_anything_in_array_mode_is_valid_json():
    enc = encode.StreamEncoder(ctx(sse=False))
    enc.start(None, None, None)
    out = enc.close()
    assert json.loads(out)[0]["error"]["code"] == 502


_delta = st.one_of(
    st.tuples(st.sampled_from(["text", "thinking", "signature", "redacted_thinking"]), st.text(max_size=6)),
    st.tuples(st.just("tool_start"), st.integers(0, 2), st.text(max_size=3), st.text(max_size=3),
              st.none() | st.just("c2ln")),
    st.tuples(st.just("tool_args"), st.integers(0, 2), st.sampled_from(['{"a":', "1}", "[", "", "{}"])),
    st.tuples(st.just("block_end")),
    st.tuples(st.just("usage"), st.builds(ir.Usage, st.none() | st.integers(0, 9), st.none() | st.integers(0, 9))),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(_delta, max_size=12), st.sampled_from(["end", "error", "cut"]), st.booleans(),
       st.sampled_from(ir.STOP_REASONS))
def test_encoder_any_call_sequence_gives_valid_client_bytes(deltas, ending, sse, reason):
    from google.genai import types
    enc = encode.StreamEncoder(ctx(sse=sse))
    enc.start("rid", None, None)
    for name, *args in deltas:
        getattr(enc, name)(*args)
    if ending == "end":
        enc.finish(reason)
        enc.end()
    elif ending == "error":
        enc.error(GatewayError(429, "slow down", "rate_limit"))
    out = enc.take() + enc.close()
    objs = sse_payloads(out) if sse else json.loads(out)
    assert out.endswith(b"\r\n\r\n" if sse else b"\n]")
    for o in objs[:-1]:
        r = types.GenerateContentResponse.model_validate(o)
        assert r.candidates[0].content.parts and r.candidates[0].finish_reason is None
    last = objs[-1]
    if ending == "end":
        assert types.GenerateContentResponse.model_validate(last).candidates[0].finish_reason
    else:
        assert last["error"]["code"] == (429 if ending == "error" else 502)


@pytest.mark.parametrize("calls", [TEXT_CALLS, THINK_TOOL_CALLS], ids=["text", "think_tools"])
def test_encoder_output_validates_with_sdk_types(calls):
    from google.genai import types
    out = drive(encode.StreamEncoder(ctx()), calls)
    for p in sse_payloads(out):
        r = types.GenerateContentResponse.model_validate(p)
        assert r.candidates and r.candidates[0].content.parts
        assert all(part != types.Part() for part in r.candidates[0].content.parts)


def _genai(body: bytes, content_type="text/event-stream"):
    from google import genai
    from google.genai import types
    sent = []

    def handler(request):
        sent.append(json.loads(request.content))
        return httpx.Response(200, content=body, headers={"content-type": content_type})
    client = genai.Client(api_key="k", http_options=types.HttpOptions(
        base_url="http://plexus.test", api_version="v1beta",
        httpx_client=httpx.Client(transport=httpx.MockTransport(handler))))
    return client, sent


def test_sdk_stream_chat_reads_encoder_output():
    from google.genai import types
    out = drive(encode.StreamEncoder(ctx()), THINK_TOOL_CALLS[:1] + [("text", "Hi ")] + THINK_TOOL_CALLS[1:])
    client, sent = _genai(out)
    chat = client.chats.create(model="alias", config=types.GenerateContentConfig(
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True)))
    chunks = list(chat.send_message_stream("hello"))
    calls = [fc for c in chunks for fc in (c.function_calls or [])]
    assert [(c.id, c.name, c.args) for c in calls] == [("call_C", "c", {}), ("call_A", "a", {"x": 1}),
                                                        ("toolu_B", "b", {"y": [1, 2]})]
    assert chunks[-1].usage_metadata.total_token_count == 21
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    history = chat.get_history(curated=True)
    assert len(history) == 1 + len(chunks)   # the turn was accepted as valid
    # the SDK sends the history back: thought signatures come back as base64 it re-encoded
    list(chat.send_message_stream("next"))
    model_parts = [p for c in sent[1]["contents"] if c["role"] == "model" for p in c["parts"]]
    sigs = [p["thoughtSignature"] for p in model_parts if "thoughtSignature" in p]
    assert [encode.read_sig(s) for s in sigs][:2] == [("anthropic", "ErUBanthropicSig==", False),
                                                      ("gemini", "Z2VtaW5pLXNpZw==", False)]
    # ... and the parser puts the streamed turn (one content per chunk) back together
    from plexus.dialects.gemini import request
    turn = request.parse_request(sent[1], model="alias").messages[1]
    assert turn.role == "assistant" and turn.parts == [
        ir.Text("Hi "),
        ir.Thinking("Hmm", signature="ErUBanthropicSig==", source="anthropic"),
        ir.Thinking("", signature="Z2VtaW5pLXNpZw==", source="gemini"),
        ir.Thinking("opaque", redacted=True, source="anthropic"),
        ir.ToolCall("call_C", "c", "{}"),
        ir.ToolCall("call_A", "a", '{"x":1}', signature="c2lnQQ=="),
        ir.ToolCall("toolu_B", "b", '{"y":[1,2]}'),
    ]


def test_sdk_non_stream_reads_render_response():
    resp = ir.Response(id="r-9", model="up-model", parts=[
        ir.Thinking("Let me see", signature="sigG", source="gemini"),
        ir.Text("Answer", signature="c2ln"),
        ir.ToolCall("call_1", "lookup", '{"q": "x"}', signature="c2lnMQ=="),
    ], stop_reason="tool_use", usage=ir.Usage(input_tokens=3, output_tokens=4))
    body = encode.render_response(resp, ctx())
    assert orjson.loads(body) == {
        "candidates": [{"content": {"parts": [
            {"text": "Let me see", "thought": True, "thoughtSignature": "sigG"},
            {"text": "Answer", "thoughtSignature": "c2ln"},
            {"functionCall": {"id": "call_1", "name": "lookup", "args": {"q": "x"}}, "thoughtSignature": "c2lnMQ=="}],
            "role": "model"}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4, "totalTokenCount": 7},
        "modelVersion": "up-model", "responseId": "r-9"}
    client, _ = _genai(body, "application/json")
    r = client.models.generate_content(model="alias", contents="q")
    assert r.text == "Answer" and r.function_calls[0].args == {"q": "x"}
    # and back through the decoder
    back = decode.parse_response(body)
    assert back.parts == [ir.Thinking("Let me see", signature="sigG", source="gemini"),
                          ir.Text("Answer", signature="c2ln"),
                          ir.ToolCall("call_1", "lookup", '{"q":"x"}', signature="c2lnMQ==")]
    assert back.stop_reason == "tool_use" and back.usage.input_tokens == 3 and back.usage.output_tokens == 4


def test_render_response_empty_and_refusal():
    body = orjson.loads(encode.render_response(ir.Response(id=None, model="", parts=[], stop_reason="refusal"), ctx()))
    assert body["candidates"][0] == {"content": {"parts": [{"text": ""}], "role": "model"},
                                     "finishReason": "SAFETY", "index": 0}
    assert body["modelVersion"] == "alias-model" and body["responseId"] == "seed123"


# ================================================================ round trips through the IR


@pytest.mark.parametrize("name", ["text.sse", "thinking.sse", "thought_signature.sse", "parallel_tools.sse",
                                  "long_text.sse", "blocked.sse"])
@pytest.mark.parametrize("sse", [True, False])
def test_decode_encode_decode_round_trip(name, sse):
    """Gemini upstream → IR → Gemini client bytes → IR again: the content survives."""
    first = decode_chunks([fixture(name)])
    enc = encode.StreamEncoder(ctx(sse=sse, extra={"upstream": "gemini"}))
    dec = decode.StreamDecoder(enc)
    dec.feed(fixture(name))
    dec.close()
    out = enc.take()
    second = decode_chunks([out])

    def content(calls):
        keep = []
        for c in calls:
            if c[0] in ("text", "thinking") and c[1]:
                keep.append(c)
            elif c[0] == "signature":
                keep.append(c)
            elif c[0] == "tool_start":
                keep.append(c[:4] + (c[4],))
            elif c[0] == "tool_args":
                keep.append(("tool_args", orjson.loads(c[2])))
            elif c[0] in ("finish", "end"):
                keep.append(c)
        return keep
    assert content(second) == content(first)
    last = [c for c in first if c[0] == "usage"][-1]
    assert [c for c in second if c[0] == "usage"][-1] == last[:2] + (last[2] or 0,) + last[3:]
    assert second[0][1:] == first[0][1:]
