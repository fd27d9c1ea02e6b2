"""OpenAI dialect stream encoder: IR sink calls → client chat.completion.chunk SSE.

Theory: the encoder's bytes are checked exactly for each IR call sequence, then parsed back by
the official openai SDK (its SSE decoder, pydantic types and ChatCompletionStreamState
accumulator, through an in-memory httpx transport) and by our own decoder: a round trip through
the IR preserves text, thinking, signatures, tool calls, finish and usage.
"""

from __future__ import annotations

import openai
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletionChunk

from openai_support import FIXTURES, check_order, data, decode, events, sdk_client, transcode
from plexus import ir
from plexus.dialects.openai.encode import STREAM_CONTENT_TYPE, StreamEncoder
from plexus.errors import GatewayError

# ------------------------------------------------------------------ encoder: exact bytes

CTX = ir.Context(model="alias-model", id_seed="5eed", created=1700000000)


def chunk(delta: bytes, fr: bytes = b"null", *, cid=b"chatcmpl-up1", model=b"up-model", usage=b"") -> bytes:
    return (b'data: {"id":"' + cid + b'","object":"chat.completion.chunk","created":1700000000,"model":"'
            + model + b'","choices":[{"index":0,"delta":' + delta + b',"logprobs":null,"finish_reason":'
            + fr + b"}]" + usage + b"}\n\n")


def test_encoder_exact_text_stream():
    e = StreamEncoder(CTX)
    assert e.take() == b""
    e.start("chatcmpl-up1", "up-model", None)
    e.text("Hi")
    e.text("")            # empty deltas are not sent
    e.text(' "there"\n')
    e.block_end()
    e.finish("end_turn")
    e.end()
    assert e.take() == (
        chunk(b'{"role":"assistant","content":"","refusal":null}')
        + chunk(b'{"content":"Hi"}') + chunk(b'{"content":" \\"there\\"\\n"}')
        + chunk(b"{}", b'"stop"') + b"data: [DONE]\n\n")
    assert e.take() == b"" and e.close() == b""
    assert STREAM_CONTENT_TYPE == b"text/event-stream"


def test_encoder_ids_model_and_usage_chunk_after_late_usage():
    ctx = ir.Context(model="alias-model", id_seed="5eed", created=1700000000, include_usage=True)
    e = StreamEncoder(ctx)
    e.start(None, None, ir.Usage(input_tokens=10, cache_read_tokens=5))
    e.thinking("hm")
    e.finish("max_tokens")
    e.usage(ir.Usage(output_tokens=7, reasoning_tokens=3))      # after finish: still reported
    e.end()
    n = b',"usage":null'
    kw = dict(cid=b"chatcmpl-5eed", model=b"alias-model", usage=n)
    usage = (b'{"prompt_tokens":15,"completion_tokens":7,"total_tokens":22,"prompt_tokens_details":'
             b'{"cached_tokens":5,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":3,'
             b'"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}')
    assert e.take() == (
        chunk(b'{"role":"assistant","content":"","refusal":null}', **kw)
        + chunk(b'{"reasoning_content":"hm","thinking_blocks":[{"index":0,"type":"thinking","thinking":"hm"}]}', **kw)
        + chunk(b"{}", b'"length"', **kw)
        + b'data: {"id":"chatcmpl-5eed","object":"chat.completion.chunk","created":1700000000,'
          b'"model":"alias-model","choices":[],"usage":' + usage + b"}\n\n"
        + b"data: [DONE]\n\n")


def test_encoder_tool_indexes_renumbered_and_gemini_signature_in_id():
    e = StreamEncoder(CTX)
    e.start("msg_01", "m", None)
    e.tool_start(5, "call_a", "f", None)
    e.tool_start(2, "fc_b", "g", "SIG/+=")
    e.tool_args(2, '{"x":')
    e.tool_args(5, "{}")
    e.tool_args(2, "1}")
    e.tool_args(9, "{}")          # never started: dropped
    e.finish("tool_use")
    e.end()
    kw = dict(cid=b"chatcmpl-msg_01", model=b"m")
    assert e.take() == (
        chunk(b'{"role":"assistant","content":"","refusal":null}', **kw)
        + chunk(b'{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"f",'
                b'"arguments":""}}]}', **kw)
        + chunk(b'{"tool_calls":[{"index":1,"id":"fc_b__thought__SIG/+=","type":"function",'
                b'"function":{"name":"g","arguments":""}}]}', **kw)
        + chunk(b'{"tool_calls":[{"index":1,"function":{"arguments":"{\\"x\\":"}}]}', **kw)
        + chunk(b'{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}', **kw)
        + chunk(b'{"tool_calls":[{"index":1,"function":{"arguments":"1}"}}]}', **kw)
        + chunk(b"{}", b'"tool_calls"', **kw) + b"data: [DONE]\n\n")


def test_encoder_end_turn_with_tools_says_tool_calls_and_end_without_finish():
    e = StreamEncoder(CTX)
    e.start("chatcmpl-up1", "up-model", None)
    e.tool_start(0, "c", "f")
    e.end()                           # no finish(): a finish chunk is still sent
    out = e.take()
    assert out.endswith(chunk(b"{}", b'"tool_calls"') + b"data: [DONE]\n\n")


def test_encoder_thinking_blocks_are_numbered_and_sealed_by_signatures():
    e = StreamEncoder(CTX)
    e.start("chatcmpl-up1", "up-model", None)
    e.thinking("a")
    e.thinking("b")
    e.signature("S1")          # seals block 0
    e.thinking("c")            # block 1
    e.block_end()
    e.redacted_thinking("R")   # block 2
    e.signature("S3")          # a signature with no open block: its own block 3
    e.text("x")
    e.thinking("d")            # after text: block 4
    tb = b'"thinking_blocks":[{"index":%d,"type":"thinking","thinking":'
    assert e.take() == (
        chunk(b'{"role":"assistant","content":"","refusal":null}')
        + chunk(b'{"reasoning_content":"a",' + tb % 0 + b'"a"}]}')
        + chunk(b'{"reasoning_content":"b",' + tb % 0 + b'"b"}]}')
        + chunk(b"{" + tb % 0 + b'"","signature":"S1"}]}')
        + chunk(b'{"reasoning_content":"c",' + tb % 1 + b'"c"}]}')
        + chunk(b'{"thinking_blocks":[{"index":2,"type":"redacted_thinking","data":"R"}]}')
        + chunk(b"{" + tb % 3 + b'"","signature":"S3"}]}')
        + chunk(b'{"content":"x"}')
        + chunk(b'{"reasoning_content":"d",' + tb % 4 + b'"d"}]}'))


def test_encoder_gemini_signatures_tagged_once():
    e = StreamEncoder(ir.Context(model="m", id_seed="s", created=1, extra={"upstream": "gemini"}))
    e.start("chatcmpl-1", "m", None)
    e.signature("abc")
    e.signature("plexus-gemini:def")     # already tagged by the Gemini decoder: not wrapped twice
    out = e.take()
    assert b'"signature":"plexus-gemini:abc"' in out
    assert b'"signature":"plexus-gemini:def"' in out and b"plexus-gemini:plexus" not in out
    e2 = StreamEncoder(CTX)
    e2.start("chatcmpl-1", "m", None)
    e2.signature("EqQB+/==")
    assert b'"signature":"EqQB+/=="' in e2.take()


def test_sdk_stream_helper_accumulates_signed_thinking_and_it_parses_back():
    from plexus.dialects.openai.request import parse_request
    e = StreamEncoder(ir.Context(model="m", id_seed="s", created=1, include_usage=True))
    e.start("msg_1", "claude", ir.Usage(input_tokens=3))
    for s in ("Let me ", "think."):
        e.thinking(s)
    e.signature("SIG-A")
    e.block_end()
    e.redacted_thinking("REDACTED")
    e.thinking("More.")
    e.signature("SIG-B")
    e.text("Answer")
    e.finish("end_turn")
    e.end()
    client = sdk_client(e.take())
    with client.chat.completions.stream(model="m", messages=[{"role": "user", "content": "x"}]) as st_:
        for _ in st_:
            pass
        final = st_.get_final_completion()
    msg = final.choices[0].message.model_dump(exclude_none=True)
    assert msg["content"] == "Answer" and msg["reasoning_content"] == "Let me think.More."
    assert msg["thinking_blocks"] == [
        {"index": 0, "type": "thinking", "thinking": "Let me think.", "signature": "SIG-A"},
        {"index": 1, "type": "redacted_thinking", "data": "REDACTED"},
        {"index": 2, "type": "thinking", "thinking": "More.", "signature": "SIG-B"}]
    # the client sends the accumulated message back: the signed blocks come back whole
    req = parse_request({"model": "m", "messages": [{"role": "user", "content": "x"}, msg]})
    assert req.messages[1].parts == [
        ir.Thinking("Let me think.", "SIG-A", source="anthropic"),
        ir.Thinking("REDACTED", redacted=True, source="anthropic"),
        ir.Thinking("More.", "SIG-B", source="anthropic"), ir.Text("Answer")]


def test_encoder_error_and_close():
    e = StreamEncoder(CTX)
    e.start("chatcmpl-up1", "up-model", None)
    e.text("a")
    e.error(GatewayError(429, "slow down", "rate_limit"))
    e.text("ignored")
    e.finish("end_turn")
    e.end()
    out = e.take()
    assert out.endswith(b'data: {"error":{"message":"slow down","type":"rate_limit_error",'
                        b'"param":null,"code":null}}\n\n')
    assert b"[DONE]" not in out and b"ignored" not in out
    assert e.close() == b""

    e = StreamEncoder(CTX)
    e.start("chatcmpl-up1", "up-model", None)
    e.text("a")
    cut = e.close()                    # neither end nor error: never a clean finish
    assert cut.endswith(b'data: {"error":{"message":"upstream stream ended early","type":"server_error",'
                        b'"param":null,"code":null}}\n\n')
    assert b"[DONE]" not in cut and b"finish_reason\":\"stop" not in cut

    e = StreamEncoder(CTX)             # error before anything: just the error event
    e.error(ValueError("boom"))
    assert e.close() == b'data: {"error":{"message":"boom","type":"server_error","param":null,"code":null}}\n\n'


@pytest.mark.parametrize("name", FIXTURES)
@pytest.mark.parametrize("include_usage", [False, True])
def test_sdk_parses_every_transcoded_fixture(name, include_usage):
    ctx = ir.Context(model="alias", id_seed="seed", created=1700000001, include_usage=include_usage)
    body = transcode(data(name), ctx)
    evs = events(body)
    failed = decode([data(name)])[-1][0] == "error"
    for ev in evs[:-1]:
        ChatCompletionChunk.model_validate(orjson.loads(ev))
    client = sdk_client(body)
    stream = client.chat.completions.create(model="alias", messages=[{"role": "user", "content": "x"}],
                                            stream=True)
    if failed:
        with pytest.raises(openai.APIError):
            list(stream)
        assert b"[DONE]" not in body
        return
    chunks = list(stream)
    assert evs[-1] == b"[DONE]"
    if include_usage:
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert all(c.usage is None for c in chunks[:-1])
    else:
        assert all(c.usage is None for c in chunks)
    assert sum(1 for c in chunks for ch in c.choices if ch.finish_reason) == 1
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert {c.created for c in chunks} == {1700000001}


def test_sdk_stream_helper_accumulates_tool_calls():
    ctx = ir.Context(model="alias", id_seed="seed", created=1700000001, include_usage=True)
    body = transcode(data("interleaved_tools.sse"), ctx)
    client = sdk_client(body)
    with client.chat.completions.stream(model="alias", messages=[{"role": "user", "content": "x"}]) as s:
        for _ in s:
            pass
        final = s.get_final_completion()
    msg = final.choices[0].message
    assert msg.content == "Checking both."
    assert [(t.id, t.function.name, t.function.arguments) for t in msg.tool_calls] == [
        ("chatcmpl-tool-aaa", "read_file", '{"path": "a.txt"}'),
        ("chatcmpl-tool-bbb", "list_dir", '{"path": "/tmp"}')]
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.model == "Qwen/Qwen3-32B" and final.id == "chatcmpl-vllm-0f1e2d3c4b5a"


# ------------------------------------------------------------------ round trip through the IR

def content_of(calls: list[tuple]) -> dict:
    """What a client sees: text, thinking, signatures, tool calls (by order), finish, usage."""
    out = {"text": "", "thinking": "", "sigs": [], "redacted": [], "tools": {}, "order": [],
           "finish": None, "usage": ir.Usage(), "last": calls[-1][0]}
    for c in calls:
        k = c[0]
        if k == "text":
            out["text"] += c[1]
        elif k == "thinking":
            out["thinking"] += c[1]
        elif k == "signature":
            out["sigs"].append(c[1])
        elif k == "redacted_thinking":
            out["redacted"].append(c[1])
        elif k == "tool_start":
            out["order"].append(c[1])
            out["tools"][c[1]] = [c[2], c[3], ""]
        elif k == "tool_args":
            out["tools"][c[1]][2] += c[2]
        elif k == "finish":
            out["finish"] = c[1]
        elif k == "usage":
            out["usage"].update(c[1])
        elif k == "error":
            out["error"] = c[1:]
    out["tools"] = [tuple(out["tools"][i]) for i in out["order"]]
    del out["order"]
    return out


@pytest.mark.parametrize("name", FIXTURES)
def test_round_trip_preserves_content(name):
    raw = data(name)
    ctx = ir.Context(model="alias", id_seed="seed", created=1, include_usage=True)
    first = decode([raw])
    again = decode([transcode(raw, ctx)])
    a, b = content_of(first), content_of(again)
    if "error" in a:
        # the encoder reports the error in OpenAI terms; the kind survives
        assert b["error"][0] == a["error"][0] or a["error"][0] == "bad_gateway"
        a.pop("error"), b.pop("error")
        a["usage"] = b["usage"] = None
    if a["usage"] == ir.Usage():      # upstream sent none: the client still gets a (zero) usage chunk
        assert b["usage"] == ir.Usage(0, 0, 0, None, 0)
        a["usage"] = b["usage"]
    assert a == b
    assert again[0][1] == first[0][1] if (first[0][1] or "").startswith("chatcmpl-") else True


JSONISH = st.recursive(st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=5),
                       lambda ch: st.lists(ch, max_size=3) | st.dictionaries(st.text(max_size=3), ch, max_size=3),
                       max_leaves=4)
DELTA = st.fixed_dictionaries({}, optional={
    "content": JSONISH, "reasoning_content": JSONISH, "reasoning": JSONISH, "refusal": JSONISH,
    "role": JSONISH, "thinking_blocks": st.lists(st.fixed_dictionaries({}, optional={
        "type": st.sampled_from(["thinking", "redacted_thinking", "x"]), "signature": JSONISH,
        "data": JSONISH}), max_size=2),
    "tool_calls": st.lists(st.fixed_dictionaries({}, optional={
        "index": st.integers(0, 2) | JSONISH, "id": JSONISH,
        "function": st.fixed_dictionaries({}, optional={"name": JSONISH, "arguments": JSONISH})}), max_size=2)})
CHUNK = st.fixed_dictionaries({}, optional={
    "id": JSONISH, "model": JSONISH, "usage": JSONISH | st.fixed_dictionaries({"prompt_tokens": st.integers(0, 9)}, optional={
        "completion_tokens": st.integers(0, 9) | JSONISH,
        "prompt_tokens_details": st.fixed_dictionaries({}, optional={"cached_tokens": st.integers(0, 9) | JSONISH}),
        "completion_tokens_details": JSONISH}),
    "error": JSONISH,
    "choices": st.lists(st.fixed_dictionaries({"delta": DELTA}, optional={
        "index": st.integers(0, 1), "finish_reason": JSONISH | st.sampled_from(["stop", "tool_calls"])}),
        max_size=2)})


@settings(max_examples=120, deadline=None)
@given(st.lists(CHUNK, max_size=6), st.booleans(), st.booleans())
def test_fuzzed_chunks_always_give_valid_client_sse(chunks, done, include_usage):
    raw = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + (b"data: [DONE]\n\n" if done else b"")
    check_order(decode([raw]))
    body = transcode(raw, ir.Context(model="m", id_seed="s", created=1, include_usage=include_usage))
    evs = events(body)
    assert evs, body
    for ev in evs[:-1]:
        ChatCompletionChunk.model_validate(orjson.loads(ev))
    last = evs[-1]
    assert last == b"[DONE]" or set(orjson.loads(last)) == {"error"}
