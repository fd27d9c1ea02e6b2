"""OpenAI dialect non-stream responses: parse_response (provider chat.completion → IR) and
render_response (IR → client chat.completion).

Theory: every field mapping (content, reasoning variants, thinking_blocks and their signature
sources, tool calls with Gemini ids, finish reasons, usage with cache figures) is pinned; bad
upstream bodies are 502 (or the upstream's own error); rendered bodies validate with the openai
SDK types, read through the SDK client, and parse back to the same IR.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletion

from plexus import ir
from plexus.dialects.openai.decode import parse_response
from plexus.dialects.openai.encode import render_response
from plexus.dialects.openai.request import parse_request
from plexus.errors import GatewayError

FIX = Path(__file__).parent / "fixtures" / "openai"
U1 = {"role": "user", "content": "hi"}
CTX = ir.Context(model="alias-model", id_seed="5eed", created=1700000000)


def test_parse_response_openai_tool_calls_and_usage():
    resp = parse_response((FIX / "completion_tools.json").read_bytes())
    assert resp.id == "chatcmpl-CAbc123" and resp.model == "gpt-4.1-2025-04-14"
    assert resp.parts == [ir.Text("Let me check."),
                          ir.ToolCall("call_w1", "get_weather", '{"city":"Paris"}'),
                          ir.ToolCall("call_w2", "get_time", '{"tz":"CET"}')]
    assert resp.stop_reason == "tool_use"
    assert resp.usage == ir.Usage(input_tokens=62, output_tokens=50, cache_read_tokens=1024,
                                  reasoning_tokens=0)


def test_parse_response_reasoning_variants():
    base = {"id": "x", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "A"}}]}
    for key in ("reasoning_content", "reasoning"):
        b = orjson.loads(orjson.dumps(base))
        b["choices"][0]["message"][key] = "R"
        r = parse_response(orjson.dumps(b))
        assert r.parts == [ir.Thinking("R"), ir.Text("A")] and r.stop_reason == "max_tokens"
    b = orjson.loads(orjson.dumps(base))
    b["choices"][0]["message"].update(reasoning_content="R", thinking_blocks=[
        {"type": "thinking", "thinking": "R", "signature": "S1"}, {"type": "redacted_thinking", "data": "D"},
        {"type": "thinking", "thinking": "", "signature": "plexus-gemini:G"}], refusal="nope")
    b["choices"][0]["finish_reason"] = "content_filter"
    r = parse_response(orjson.dumps(b))
    assert r.parts == [ir.Thinking("R", "S1", source="anthropic"), ir.Thinking("D", redacted=True, source="anthropic"),
                       ir.Thinking("", "G", source="gemini"), ir.Text("A"), ir.Text("nope")]
    assert r.stop_reason == "refusal" and r.usage == ir.Usage()


@pytest.mark.parametrize("body,status,kind", [
    (b"not json", 502, "bad_gateway"),
    (b"[]", 502, "bad_gateway"),
    (b'{"choices": []}', 502, "bad_gateway"),
    (b'{"choices": [{"index": 0}]}', 502, "bad_gateway"),
    (b'{"choices": [{"message": {"tool_calls": [5]}}]}', 502, "bad_gateway"),
    (b'{"choices": [{"message": {}}], "usage": {"prompt_tokens": "many"}}', 502, "bad_gateway"),
    (b'{"error": {"message": "quota", "type": "insufficient_quota", "code": "insufficient_quota"}}', 402, "billing"),
    (b'{"error": {"message": "slow", "code": 429}}', 429, "rate_limit"),
    (b'{"error": {"message": "odd"}}', 502, "bad_gateway"),
])
def test_parse_response_errors(body, status, kind):
    with pytest.raises(GatewayError) as ei:
        parse_response(body)
    assert (ei.value.status, ei.value.kind) == (status, kind)


def test_render_response_exact_and_sdk_valid():
    resp = ir.Response(id="msg_01XYZ", model="claude-x", parts=[
        ir.Thinking("think", "SIGA", source="anthropic"), ir.Thinking("R", redacted=True),
        ir.Thinking("g", "GS", source="gemini"),
        ir.Text("Hello "), ir.Text("world", signature="TS"),
        ir.ToolCall("toolu_1", "f", '{"a":1}'), ir.ToolCall("fc1", "g", "{}", signature="S+/=")],
        stop_reason="end_turn",
        usage=ir.Usage(input_tokens=10, output_tokens=20, cache_read_tokens=5, cache_creation_tokens=3,
                       reasoning_tokens=4))
    out = orjson.loads(render_response(resp, CTX))
    assert out == {
        "id": "chatcmpl-msg_01XYZ", "object": "chat.completion", "created": 1700000000, "model": "claude-x",
        "choices": [{"index": 0, "message": {
            "role": "assistant", "content": "Hello world", "reasoning_content": "thinkg",
            "thinking_blocks": [
                {"type": "thinking", "thinking": "think", "signature": "SIGA"},
                {"type": "redacted_thinking", "data": "R"},
                {"type": "thinking", "thinking": "g", "signature": "plexus-gemini:GS"},
                {"type": "thinking", "thinking": "", "signature": "plexus-gemini:TS"}],
            "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
                {"id": "fc1__thought__S+/=", "type": "function", "function": {"name": "g", "arguments": "{}"}}],
            "refusal": None, "annotations": []},
            "logprobs": None, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 18, "completion_tokens": 20, "total_tokens": 38,
                  "prompt_tokens_details": {"cached_tokens": 5, "audio_tokens": 0, "cache_write_tokens": 3},
                  "completion_tokens_details": {"reasoning_tokens": 4, "audio_tokens": 0,
                                                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}}
    ChatCompletion.model_validate(out)


@pytest.mark.parametrize("stop,finish", [("end_turn", "stop"), ("stop_sequence", "stop"), ("pause_turn", "stop"),
                                         ("max_tokens", "length"), ("tool_use", "tool_calls"),
                                         ("refusal", "content_filter"), ("error", "stop")])
def test_render_finish_reasons(stop, finish):
    out = orjson.loads(render_response(ir.Response(id=None, model="", parts=[ir.Text("x")], stop_reason=stop), CTX))
    assert out["choices"][0]["finish_reason"] == finish
    assert out["id"] == "chatcmpl-5eed" and out["model"] == "alias-model"
    assert "thinking_blocks" not in out["choices"][0]["message"]


def test_render_only_tools_has_null_content():
    out = orjson.loads(render_response(ir.Response(id="chatcmpl-k", model="m", parts=[
        ir.Thinking("t"), ir.ToolCall("c", "f", "{}")], stop_reason="tool_use"), CTX))
    msg = out["choices"][0]["message"]
    assert out["id"] == "chatcmpl-k"
    assert msg["content"] is None and msg["reasoning_content"] == "t"
    assert msg["thinking_blocks"] == [{"type": "thinking", "thinking": "t"}]


def test_response_round_trip_through_sdk_client():
    raw = (FIX / "completion_tools.json").read_bytes()
    rendered = render_response(parse_response(raw), CTX)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "application/json"}, content=rendered)
    client = openai.OpenAI(api_key="k", base_url="http://test/v1", max_retries=0,
                           http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    c = client.chat.completions.create(model="alias", messages=[{"role": "user", "content": "x"}])
    assert c.choices[0].message.content == "Let me check."
    assert [t.function.name for t in c.choices[0].message.tool_calls] == ["get_weather", "get_time"]
    assert c.choices[0].finish_reason == "tool_calls"
    assert c.usage.prompt_tokens == 1086 and c.usage.prompt_tokens_details.cached_tokens == 1024
    assert parse_response(rendered).parts == parse_response(raw).parts


def test_render_lists_every_thinking_block_and_parses_back():
    resp = ir.Response(id="x", model="m", parts=[ir.Thinking("u"), ir.Thinking("s", "S", source="anthropic"),
                                                 ir.Text("a")])
    msg = orjson.loads(render_response(resp, CTX))["choices"][0]["message"]
    assert msg["reasoning_content"] == "us"
    assert msg["thinking_blocks"] == [{"type": "thinking", "thinking": "u"},
                                      {"type": "thinking", "thinking": "s", "signature": "S"}]
    back = parse_request({"model": "m", "messages": [U1, msg]}).messages[1].parts
    assert back == resp.parts
