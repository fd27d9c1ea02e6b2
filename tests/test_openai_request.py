"""OpenAI dialect requests: parse (client body → IR) and build (IR → provider body).

Theory: each mapping decision documented in plexus/dialects/openai/request.py is pinned field by
field; every malformed input is a 400 naming the param; parse → build → parse is the identity on
the IR and build gives back the client's messages and tools.
"""

from __future__ import annotations

import hashlib
from functools import partial

import orjson
import pytest

from stub_provider import StubProvider
from plexus import ir
from plexus.dialects.openai.build import build_request
from plexus.dialects.openai.request import parse_request
from plexus.dialects.registry import DIALECTS
from plexus.errors import GatewayError


Prov = partial(StubProvider, host="127.0.0.1")  # a self-hosted server by default


def build(req: ir.Request, prov=Prov(), model="up-model") -> dict:
    body = build_request(req, model, prov)
    assert DIALECTS["openai"].upstream_path(model, req.stream, True) == "/chat/completions"
    return orjson.loads(body)


def bad(body: dict, param: str | None, fragment: str) -> None:
    with pytest.raises(GatewayError) as ei:
        parse_request(body)
    e = ei.value
    assert e.status == 400 and e.kind == "invalid_request"
    assert e.param == param
    assert fragment in e.message


U1 = {"role": "user", "content": "hi"}


# ------------------------------------------------------------------ parse

def test_parse_full_conversation():
    body = {
        "model": "gpt", "stream": True, "stream_options": {"include_usage": True},
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "system", "content": [{"type": "text", "text": "Rule 2",
                                            "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/AAA=", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/cat.png"}}]},
            {"role": "assistant", "content": None, "reasoning_content": "look at it",
             "tool_calls": [
                 {"id": "call_1", "type": "function", "function": {"name": "zoom", "arguments": '{"x":1}'}},
                 {"id": "fc_2__thought__GSIG", "type": "function",
                  "function": {"name": "crop", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "zoomed"},
            {"role": "tool", "tool_call_id": "fc_2__thought__GSIG",
             "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "system", "content": "late system"},
            {"role": "assistant", "content": [{"type": "text", "text": "A cat."},
                                              {"type": "refusal", "refusal": "No more."}]},
            {"role": "user", "content": "thanks", "name": "bob"},
        ],
    }
    req = parse_request(body)
    assert req.model == "gpt" and req.stream and req.include_usage
    assert req.system == [ir.Text("Be brief."), ir.Text("Rule 2", {"type": "ephemeral"})]
    m = req.messages
    assert [x.role for x in m] == ["user", "assistant", "user", "user", "system", "assistant", "user"]
    assert m[0].parts == [ir.Text("What is this?"), ir.Image("image/jpeg", "/9j/AAA="),
                          ir.Image(url="https://x.test/cat.png")]
    assert m[1].parts == [ir.Thinking("look at it"), ir.ToolCall("call_1", "zoom", '{"x":1}'),
                          ir.ToolCall("fc_2", "crop", "{}", signature="GSIG")]
    assert m[2].parts == [ir.ToolResult("call_1", "zoomed", name="zoom")]
    assert m[3].parts == [ir.ToolResult("fc_2", [ir.Text("a"), ir.Text("b")], name="crop")]
    assert m[4].parts == [ir.Text("late system")]
    assert m[5].parts == [ir.Text("A cat."), ir.Text("No more.")]
    assert m[6].parts == [ir.Text("thanks")]
    assert req.extra == {}


def test_parse_thinking_blocks_win_and_sources():
    req = parse_request({"model": "m", "messages": [U1, {
        "role": "assistant", "content": "done", "reasoning_content": "ignored when blocks exist",
        "thinking_blocks": [
            {"type": "thinking", "thinking": "t1", "signature": "EqAnthropicSig=="},
            {"type": "redacted_thinking", "data": "RED"},
            {"type": "thinking", "thinking": "", "signature": "plexus-gemini:G1"},
            {"type": "thinking", "thinking": "unsigned"}]}]})
    assert req.messages[1].parts == [
        ir.Thinking("t1", "EqAnthropicSig==", source="anthropic"),
        ir.Thinking("RED", redacted=True, source="anthropic"),
        ir.Thinking("", "G1", source="gemini"),
        ir.Thinking("unsigned"),
        ir.Text("done")]


@pytest.mark.parametrize("blocks,rc,expected", [
    # appended deltas, never merged by index: fragments join the block their signature seals
    ([{"type": "thinking", "thinking": "a"}, {"type": "thinking", "thinking": "b"},
      {"type": "thinking", "thinking": "", "signature": "S"}, {"type": "thinking", "thinking": "c"}], None,
     [ir.Thinking("ab", "S", source="anthropic"), ir.Thinking("c")]),
    ([{"type": "thinking", "thinking": "u"}, {"type": "thinking", "thinking": "s", "signature": "S"}], None,
     [ir.Thinking("u"), ir.Thinking("s", "S", source="anthropic")]),
    ([{"type": "thinking", "thinking": "a"}, {"type": "redacted_thinking", "data": "R"}], None,
     [ir.Thinking("a"), ir.Thinking("R", redacted=True, source="anthropic")]),
    # accumulated by index (the SDK helper): an unsigned block stays its own block
    ([{"index": 0, "type": "thinking", "thinking": "u"},
      {"index": 1, "type": "thinking", "thinking": "s", "signature": "S"}], "us",
     [ir.Thinking("u"), ir.Thinking("s", "S", source="anthropic")]),
    # reasoning_content and a lone signature kept apart by the client
    ([{"type": "thinking", "thinking": "", "signature": "plexus-gemini:G"}], "full text",
     [ir.Thinking("full text", "G", source="gemini")]),
])
def test_parse_thinking_block_fragments(blocks, rc, expected):
    msg = {"role": "assistant", "content": "ok", "thinking_blocks": blocks}
    if rc:
        msg["reasoning_content"] = rc
    req = parse_request({"model": "m", "messages": [U1, msg]})
    assert req.messages[1].parts == [*expected, ir.Text("ok")]


def test_parse_params_and_passthrough():
    req = parse_request({
        "model": "m", "messages": [U1], "max_tokens": 10, "max_completion_tokens": 20,
        "temperature": 0.5, "top_p": 1, "stop": "END", "user": "u1", "n": 2,
        "response_format": {"type": "json_schema", "json_schema": {"name": "Out", "schema": {"type": "object"},
                                                                   "strict": True}},
        "reasoning_effort": "low", "parallel_tool_calls": False,
        "tools": [{"type": "function", "function": {"name": "f", "description": "d",
                                                    "parameters": {"type": "object"}, "strict": True}},
                  {"type": "function", "function": {"name": "g"}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "seed": 7, "presence_penalty": 0.1, "logprobs": True, "metadata": {"k": "v"}, "top_k": 40,
        "vendor_param": {"a": 1},
    })
    assert req.max_tokens == 20 and req.extra["openai_max_completion_tokens"] is True
    assert (req.temperature, req.top_p, req.stop, req.user, req.n) == (0.5, 1, ["END"], "u1", 2)
    assert req.response_format == {"type": "json_schema", "name": "Out", "schema": {"type": "object"},
                                   "strict": True}
    assert req.reasoning_effort == "low" and req.thinking is True
    assert req.parallel_tool_calls is False
    assert req.tools == [ir.Tool("f", "d", {"type": "object"}, extra={"strict": True}),
                         ir.Tool("g", None, {"type": "object", "properties": {}})]
    assert (req.tool_choice, req.tool_choice_name) == ("tool", "f")
    assert req.metadata == {"k": "v"} and req.top_k == 40
    assert (req.seed, req.presence_penalty, req.frequency_penalty) == (7, 0.1, None)
    assert req.extra["openai"] == {"logprobs": True, "metadata": {"k": "v"}, "top_k": 40,
                                   "vendor_param": {"a": 1}}
    assert not req.stream


def test_parse_url_model_and_stream_override_and_effort_none():
    req = parse_request({"messages": [U1], "stream": True, "reasoning_effort": "none",
                         "response_format": {"type": "text"}, "tool_choice": "required"},
                        model="from-url", stream=False)
    assert req.model == "from-url" and req.stream is False
    assert req.thinking is False and req.reasoning_effort == "none"
    assert req.response_format is None and req.tool_choice == "required"
    req = parse_request({"model": "m", "messages": [U1], "thinking": {"type": "enabled", "budget_tokens": 5000},
                         "response_format": {"type": "json_object"}})
    assert req.thinking is True and req.thinking_budget == 5000
    assert req.response_format == {"type": "json_object"}
    assert req.extra["openai"] == {"thinking": {"type": "enabled", "budget_tokens": 5000}}


@pytest.mark.parametrize("body,param,fragment", [
    ({"messages": [U1]}, "model", "`model` is required"),
    ({"model": 3, "messages": [U1]}, "model", "non-empty string"),
    ({"model": "m"}, "messages", "non-empty array"),
    ({"model": "m", "messages": []}, "messages", "non-empty array"),
    ({"model": "m", "messages": ["hi"]}, "messages[0]", "must be an object"),
    ({"model": "m", "messages": [{"role": "bot", "content": "x"}]}, "messages[0].role", "'bot'"),
    ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content", "string or an array"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
     "messages[0].content[0]", "audio input"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "file", "file": {}}]}]},
     "messages[0].content[0]", "file content parts"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
     "messages[0].content[0].text", "must be a string"),
    ({"model": "m", "messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://a"}}]}]},
     "messages[0].content[0]", "allowed: text)"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]},
     "messages[0].content[0].image_url.url", "http(s) URL"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,abc"}}]}]},
     "messages[0].content[0].image_url.url", "base64"),
    ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id", "non-empty"),
    ({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"arguments": "{}"}}]}]},
     "messages[0].tool_calls[0].function.name", "non-empty"),
    ({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}]},
     "messages[0].tool_calls[0].id", "non-empty"),
    ({"model": "m", "messages": [{"role": "assistant", "content": [{"type": "image_url"}]}]},
     "messages[0].content[0]", "text or refusal"),
    ({"model": "m", "messages": [{"role": "assistant", "thinking_blocks": [{"type": "x"}]}]},
     "messages[0].thinking_blocks[0].type", "thinking or redacted_thinking"),
    ({"model": "m", "messages": [{"role": "function", "name": "f", "content": "x"}]},
     "messages[0].role", "legacy `function` role"),
    ({"model": "m", "messages": [{"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}]},
     "messages[0].function_call", "use tool_calls"),
    ({"model": "m", "messages": [U1], "functions": [{"name": "f"}]}, "functions", "use `tools`"),
    ({"model": "m", "messages": [U1], "function_call": "auto"}, "function_call", "use `tools`"),
    ({"model": "m", "messages": [U1], "tools": {}}, "tools", "must be an array"),
    ({"model": "m", "messages": [U1], "tools": [{"type": "custom", "custom": {"name": "x"}}]},
     "tools[0].type", "only tools of type"),
    ({"model": "m", "messages": [U1], "tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
     "tools[0].function.parameters", "JSON Schema"),
    ({"model": "m", "messages": [U1], "tool_choice": "any"}, "tool_choice", '"required"'),
    ({"model": "m", "messages": [U1], "tool_choice": {"type": "allowed_tools"}}, "tool_choice", '"auto"'),
    ({"model": "m", "messages": [U1], "max_tokens": 0}, "max_tokens", "positive integer"),
    ({"model": "m", "messages": [U1], "max_completion_tokens": "5"}, "max_completion_tokens", "positive integer"),
    ({"model": "m", "messages": [U1], "temperature": "hot"}, "temperature", "a number"),
    ({"model": "m", "messages": [U1], "temperature": True}, "temperature", "a number"),
    ({"model": "m", "messages": [U1], "stop": [1]}, "stop", "array of strings"),
    ({"model": "m", "messages": [U1], "n": 0}, "n", "positive integer"),
    ({"model": "m", "messages": [U1], "user": 5}, "user", "a string"),
    ({"model": "m", "messages": [U1], "reasoning_effort": "huge"}, "reasoning_effort", "must be one of"),
    ({"model": "m", "messages": [U1], "response_format": {"type": "yaml"}}, "response_format.type", "json_object"),
    ({"model": "m", "messages": [U1], "response_format": {"type": "json_schema"}},
     "response_format.json_schema", "schema"),
    ({"model": "m", "messages": [U1], "stream": "yes"}, "stream", "boolean"),
    ({"model": "m", "messages": [U1], "stream_options": []}, "stream_options", "an object"),
    ({"model": "m", "messages": [U1], "parallel_tool_calls": 1}, "parallel_tool_calls", "boolean"),
    ({"model": "m", "messages": [U1], "thinking": {"type": "on"}}, "thinking.type", "enabled"),
])
def test_parse_rejects_clearly(body, param, fragment):
    bad(body, param, fragment)


def test_parse_rejects_non_object_body():
    with pytest.raises(GatewayError) as ei:
        parse_request([1])
    assert ei.value.status == 400


# ------------------------------------------------------------------ build

def test_build_messages_mapping():
    req = ir.Request(model="alias", system=[ir.Text("S1", {"type": "ephemeral"}), ir.Text("S2")], messages=[
        ir.Message("user", [ir.Text("look"), ir.Image("image/png", "iVBOR"), ir.Image(url="https://x/y.jpg")]),
        ir.Message("assistant", [ir.Thinking("plan", "sig", source="anthropic"), ir.Text("Sure"),
                                 ir.Text(" thing"), ir.ToolCall("t1", "f", '{"a":1}', signature="G"),
                                 ir.ToolCall("t2", "g", "{}")]),
        ir.Message("user", [ir.ToolResult("t1", "r1", is_error=True),
                            ir.ToolResult("t2", [ir.Text("x"), ir.Image("image/gif", "R0lG"), ir.Text("y")]),
                            ir.Text("next?")]),
        ir.Message("system", [ir.Text("mid")]),
        ir.Message("assistant", [ir.Thinking("only thinking")]),     # nothing left → skipped
        ir.Message("assistant", [ir.Text("ok")]),
        ir.Message("user", [ir.Text("bye")]),
    ])
    body = build(req)
    assert body["model"] == "up-model"
    assert body["messages"] == [
        {"role": "system", "content": "S1\n\nS2"},
        {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                                     {"type": "image_url", "image_url": {"url": "https://x/y.jpg"}}]},
        {"role": "assistant", "content": "Sure thing", "reasoning_content": "plan",
         "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
                        {"id": "t2", "type": "function", "function": {"name": "g", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "r1"},
        {"role": "tool", "tool_call_id": "t2", "content": "x\ny"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/gif;base64,R0lG"}},
                                     {"type": "text", "text": "next?"}]},
        {"role": "system", "content": "mid"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "bye"},
    ]


@pytest.mark.parametrize("prov,sent", [
    (Prov(), True),
    (Prov(host="api.openai.com"), False),
    (Prov(host="myres.openai.azure.com"), False),
    (Prov(reasoning=False), False),
])
def test_build_reasoning_content_only_where_accepted(prov, sent):
    req = ir.Request(model="a", messages=[
        ir.Message("user", [ir.Text("q")]),
        ir.Message("assistant", [ir.Thinking("why"), ir.ToolCall("c", "f", "{}")]),
        ir.Message("user", [ir.ToolResult("c", "r")])])
    msg = build(req, prov)["messages"][1]
    assert ("reasoning_content" in msg) is sent
    assert msg["content"] is None


def test_build_params():
    req = ir.Request(model="a", messages=[ir.Message("user", [ir.Text("q")])], max_tokens=100,
                     temperature=0.2, top_p=0.9, top_k=5, stop=["x", "y"], n=1, stream=True,
                     metadata={"user_id": "u-9"},
                     tools=[ir.Tool("f", "d", {"type": "object"}, extra={"strict": True}),
                            ir.Tool("g", None, {"type": "object"}, extra={"defer_loading": True})],
                     tool_choice="tool", tool_choice_name="f", parallel_tool_calls=True,
                     response_format={"type": "json_schema", "name": "N", "schema": {"type": "object"},
                                      "strict": None})
    body = build(req)
    long_id = '{"device_id": "' + "7f" * 40 + '", "session_id": "0b1e"}'
    assert build(ir.Request(model="a", messages=[], metadata={"user_id": long_id}))["user"] == \
        hashlib.sha256(long_id.encode()).hexdigest()
    assert body["max_tokens"] == 100 and "max_completion_tokens" not in body
    assert (body["temperature"], body["top_p"], body["stop"], body["n"]) == (0.2, 0.9, ["x", "y"], 1)
    assert "top_k" not in body and "metadata" not in body
    assert body["user"] == "u-9"
    assert body["tools"] == [
        {"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"},
                                          "strict": True}},
        {"type": "function", "function": {"name": "g", "parameters": {"type": "object"}}}]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert body["parallel_tool_calls"] is True
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "N", "schema": {"type": "object"}}}
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert "reasoning_effort" not in body


def test_build_no_tools_means_no_tool_choice_and_stream_usage_switch():
    req = ir.Request(model="a", messages=[ir.Message("user", [ir.Text("q")])], tool_choice="auto",
                     parallel_tool_calls=False, stream=True)
    body = build(req, Prov(stream_usage=False))
    assert "tool_choice" not in body and "parallel_tool_calls" not in body
    assert "stream_options" not in body
    req.include_usage = True
    assert build(req, Prov(stream_usage=False))["stream_options"] == {"include_usage": True}
    req.stream = False
    assert "stream" not in build(req) and "stream_options" not in build(req)


@pytest.mark.parametrize("kw,prov,expect", [
    (dict(reasoning_effort="high"), Prov(), {"reasoning_effort": "high", "max_tokens": 64}),
    (dict(thinking=True, thinking_budget=1024), Prov(), {"reasoning_effort": "low", "max_tokens": 64}),
    (dict(thinking=True, thinking_budget=2048), Prov(), {"reasoning_effort": "low", "max_tokens": 64}),
    (dict(thinking=True, thinking_budget=2049), Prov(), {"reasoning_effort": "medium", "max_tokens": 64}),
    (dict(thinking=True, thinking_budget=8192), Prov(), {"reasoning_effort": "medium", "max_tokens": 64}),
    (dict(thinking=True, thinking_budget=8193), Prov(), {"reasoning_effort": "high", "max_tokens": 64}),
    (dict(reasoning_effort="xhigh"), Prov(host="api.openai.com"),
     {"reasoning_effort": "xhigh", "max_completion_tokens": 64}),
    (dict(thinking=False), Prov(), {"reasoning_effort": "none", "max_tokens": 64}),
    (dict(thinking=True), Prov(), {"max_tokens": 64}),
    (dict(reasoning_effort="high"), Prov(reasoning=False), {"max_tokens": 64}),
    (dict(), Prov(host="api.openai.com"), {"max_completion_tokens": 64}),
    (dict(extra={"openai_max_completion_tokens": True}), Prov(), {"max_completion_tokens": 64}),
])
def test_build_reasoning_and_max_tokens_field(kw, prov, expect):
    req = ir.Request(model="a", messages=[ir.Message("user", [ir.Text("q")])], max_tokens=64, **kw)
    body = build(req, prov)
    got = {k: body[k] for k in ("reasoning_effort", "max_tokens", "max_completion_tokens") if k in body}
    assert got == expect


def test_build_default_max_tokens_from_provider():
    req = ir.Request(model="a", messages=[ir.Message("user", [ir.Text("q")])])
    assert "max_tokens" not in build(req)
    assert build(req, Prov(max_tokens=333))["max_tokens"] == 333


def test_build_passthrough_only_fills_gaps_and_respects_reasoning_switch():
    req = parse_request({"model": "m", "messages": [U1], "seed": 1, "logprobs": True, "top_k": 3,
                         "thinking": {"type": "enabled"}, "reasoning": {"effort": "low"}, "metadata": {"a": "b"}})
    body = build(req)
    assert (body["seed"], body["logprobs"], body["top_k"], body["metadata"]) == (1, True, 3, {"a": "b"})
    assert body["thinking"] == {"type": "enabled"} and body["reasoning"] == {"effort": "low"}
    assert "reasoning_effort" not in body          # the client's own thinking switch is forwarded instead
    body = build(req, Prov(reasoning=False))
    assert "thinking" not in body and "reasoning" not in body and body["seed"] == 1


def test_parse_build_parse_round_trip():
    body = {"model": "m", "messages": [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "a"},
                                     {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklG"}}]},
        {"role": "assistant", "content": "calling", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"q\": 1}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "res"},
        {"role": "user", "content": "more"}],
        "tools": [{"type": "function", "function": {"name": "f", "description": "F",
                                                    "parameters": {"type": "object", "properties": {}}}}],
        "tool_choice": "auto", "max_tokens": 50, "temperature": 0.3, "stop": ["\n"], "seed": 3}
    req = parse_request(body)
    again = parse_request(build(req, model="m"))
    assert again == req
    rebuilt = build(again, model="m")
    assert rebuilt["messages"] == body["messages"]
    assert rebuilt["tools"] == body["tools"]


@pytest.mark.parametrize("body,param", [
    ({"model": "m", "messages": [{"role": {}}]}, "messages[0].role"),
    ({"model": "m", "messages": [{"role": ["user"], "content": "x"}]}, "messages[0].role"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "reasoning_effort": []}, "reasoning_effort"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "reasoning_effort": {}}, "reasoning_effort"),
])
def test_unhashable_enum_values_are_a_400(body, param):
    """A list or object where a name is expected is the client's error (400), not a TypeError."""
    with pytest.raises(GatewayError) as ei:
        parse_request(body)
    assert ei.value.status == 400 and ei.value.param == param
