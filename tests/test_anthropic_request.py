"""Anthropic Messages requests: parse_request (client body -> IR) and build_request (IR -> provider).

A Claude Code 2.1-shaped body must parse, rebuild for an Anthropic provider without losing anything,
and map to the nearest equivalent for the IR.  IR built by hand (as other dialects produce it) must
become a body the Anthropic API accepts: alternation, tool results first, signatures only where
they are Anthropic's, thinking rules, defaults.  Every built body is validated with the anthropic
SDK's own request TypedDict (pydantic TypeAdapter).
"""

from __future__ import annotations

import copy
import functools
from types import SimpleNamespace

import orjson
import pytest

from anthropic_helpers import claude_code_body
from plexus import ir
from plexus.dialects.anthropic.build import build_request
from plexus.dialects.anthropic.request import parse_request
from plexus.dialects.registry import DIALECTS
from plexus.ir import budget_effort
from plexus.dialects.signatures import wrap_sig
from plexus.errors import GatewayError

PROVIDER = SimpleNamespace(name="anth", type="anthropic", max_tokens=4096, stream_usage=False)
SIG = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds7ZIbZGp8Xp=="


@functools.cache
def _adapters():
    from anthropic.types import ContentBlockParam, ToolUnionParam
    from anthropic.types.message_create_params import MessageCreateParamsNonStreaming, MessageCreateParamsStreaming
    from pydantic import TypeAdapter

    return (TypeAdapter(MessageCreateParamsStreaming), TypeAdapter(MessageCreateParamsNonStreaming),
            TypeAdapter(ContentBlockParam), TypeAdapter(ToolUnionParam))


def build(req, provider=PROVIDER, model="claude-up", validate=True) -> dict:
    """build_request, then validate the body with the SDK's request types (pydantic validates
    `Iterable` fields lazily, so content blocks and tools are validated one by one)."""
    body = build_request(req, model, provider)
    assert DIALECTS["anthropic"].upstream_path(model, req.stream, True) == "/messages"
    out = orjson.loads(body)
    if validate:
        s, ns, block, tool = _adapters()
        (s if out.get("stream") else ns).validate_python(out)
        for m in out["messages"]:
            assert m["role"] in ("user", "assistant", "system") and m["content"]
            if isinstance(m["content"], list):
                for b in m["content"]:
                    if b["type"] != "brand_new_block":
                        block.validate_python(b)
        for t in out.get("tools", ()):
            tool.validate_python(t)
    return out


# ---------------------------------------------------------------- parse

def test_parse_claude_code_body():
    req = parse_request(claude_code_body())
    assert req.model == "claude-opus-4-6" and req.max_tokens == 32000 and req.stream is True
    assert req.system == [
        ir.Text("You are Claude Code, Anthropic's official CLI for Claude.", {"type": "ephemeral"}),
        ir.Text("Environment: linux", {"type": "ephemeral", "ttl": "1h"})]
    roles = [m.role for m in req.messages]
    assert roles == ["user", "assistant", "user", "system", "assistant", "user"]
    u0, a1, u2, s3, a4, u5 = req.messages
    assert u0.parts[1] == ir.Text("Fix the bug in main.py", {"type": "ephemeral"})
    assert a1.parts[0] == ir.Thinking("Let me look at main.py.", SIG, source="anthropic")
    tc = a1.parts[2]
    assert (tc.id, tc.name, orjson.loads(tc.arguments), tc.extra) == (
        "toolu_01A", "Read", {"file_path": "/x/main.py"}, {"caller": {"type": "direct"}})
    assert u2.parts[0] == ir.ToolResult("toolu_01A", [ir.Text("print(1)")])
    assert s3.parts == [ir.Text("The user switched to plan mode.")]
    assert a4.parts[0] == ir.Thinking("EmwKAhgB", redacted=True, source="anthropic")
    assert u5.parts == [ir.ToolResult("toolu_01B", "main.py", cache_control={"type": "ephemeral"})]
    read, bash = req.tools
    assert read.parameters["$schema"].startswith("http") and read.parameters["additionalProperties"] is False
    assert bash.extra == {"defer_loading": True} and bash.cache_control == {"type": "ephemeral"}
    assert req.tool_choice == "auto" and req.parallel_tool_calls is None
    assert req.user == '{"device_id":"abc","session_id":"s1"}'
    assert req.thinking is True and req.reasoning_effort == "xhigh" and req.thinking_budget is None
    assert req.temperature == 1


def test_claude_code_body_rebuilds_for_anthropic_without_loss():
    body = claude_code_body()
    original = copy.deepcopy(body)
    out = build(parse_request(body), model="claude-opus-4-6")
    assert body == original, "the client's body must not be mutated"
    # the system message stays in place (Anthropic-dialect clients send what the API accepts);
    # the only difference: is_error false is the default and is not written
    del original["messages"][5]["content"][0]["is_error"]
    assert out == original


def test_parse_does_not_need_max_tokens_and_builder_fills_provider_default():
    req = parse_request({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert req.max_tokens is None and req.stream is False
    out = build(req)
    assert out["max_tokens"] == 4096 and "stream" not in out
    assert build(req, SimpleNamespace(max_tokens=0))["max_tokens"] == 4096
    assert build(req, SimpleNamespace(max_tokens=1000))["max_tokens"] == 1000


@pytest.mark.parametrize("thinking,oc,want", [
    ({"type": "enabled", "budget_tokens": 5000}, None, (True, 5000, None)),
    ({"type": "enabled", "budget_tokens": 5000}, {"effort": "low"}, (True, 5000, "low")),
    ({"type": "disabled"}, None, (False, None, "none")),
    ({"type": "adaptive"}, None, (True, None, "medium")),
    ({"type": "adaptive"}, {"effort": "high"}, (True, None, "high")),
    ({"type": "adaptive"}, {"effort": "max"}, (True, None, "xhigh")),
    ({"type": "adaptive", "display": "omitted"}, {"effort": "xhigh"}, (True, None, "xhigh")),
    (None, {"effort": "low"}, (None, None, "low")),
    (None, None, (None, None, None)),
])
def test_parse_thinking(thinking, oc, want):
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    if thinking is not None:
        body["thinking"] = thinking
    if oc is not None:
        body["output_config"] = oc
    req = parse_request(body)
    assert (req.thinking, req.thinking_budget, req.reasoning_effort) == want


@pytest.mark.parametrize("tc,want", [
    ({"type": "auto"}, ("auto", None, None)),
    ({"type": "any"}, ("required", None, None)),
    ({"type": "none"}, ("none", None, None)),
    ({"type": "tool", "name": "f"}, ("tool", "f", None)),
    ({"type": "auto", "disable_parallel_tool_use": True}, ("auto", None, False)),
    ({"type": "any", "disable_parallel_tool_use": False}, ("required", None, True)),
])
def test_parse_tool_choice(tc, want):
    req = parse_request({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": tc})
    assert (req.tool_choice, req.tool_choice_name, req.parallel_tool_calls) == want


def test_parse_sampling_stop_and_format():
    req = parse_request({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 0.5,
                         "top_p": 0.9, "top_k": 40, "stop_sequences": ["END"],
                         "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}})
    assert (req.temperature, req.top_p, req.top_k, req.stop) == (0.5, 0.9, 40, ["END"])
    assert req.response_format == {"type": "json_schema", "name": "output", "schema": {"type": "object"},
                                   "strict": True}
    beta = parse_request({"model": "m", "messages": [{"role": "user", "content": "x"}],
                          "output_format": {"type": "json_schema", "schema": {"type": "object"}}})
    assert beta.response_format["schema"] == {"type": "object"}


def test_parse_model_and_stream_overrides():
    req = parse_request({"messages": [{"role": "user", "content": "x"}], "stream": False}, model="u", stream=True)
    assert req.model == "u" and req.stream is True


def test_parse_images_documents_and_dropped_blocks():
    req = parse_request({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
        {"type": "image", "source": {"type": "url", "url": "https://x/y.jpg"}, "cache_control": {"type": "ephemeral"}},
        {"type": "image", "source": {"type": "file", "file_id": "file_1"}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc body"},
         "title": "Notes"},
        {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "a"},
                                                                       {"type": "text", "text": "b"}]}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}},
        {"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}},
        {"type": "search_result", "source": "s", "title": "t", "content": [{"type": "text", "text": "found"}]},
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}},
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
        {"type": "container_upload", "file_id": "f"},
        {"type": "brand_new_block", "x": 1},
    ]}]})
    assert req.messages[0].parts == [
        ir.Image("image/png", "iVBOR"), ir.Image(url="https://x/y.jpg", cache_control={"type": "ephemeral"}),
        ir.Text("Notes\ndoc body"), ir.Text("a\nb"), ir.Image("application/pdf", "JVBER"),
        ir.Image("application/pdf", url="https://x/a.pdf"), ir.Text("found")]
    # the original blocks go to an Anthropic provider untouched
    out = build(req)
    assert out["messages"][0]["content"][-1] == {"type": "brand_new_block", "x": 1}
    assert len(out["messages"][0]["content"]) == 12


def test_parse_gemini_signatures_fold_back_onto_their_parts():
    g = wrap_sig
    req = parse_request({"model": "m", "messages": [{"role": "assistant", "content": [
        {"type": "thinking", "thinking": "thought", "signature": g("G0")},
        {"type": "thinking", "thinking": "", "signature": g("G1")},
        {"type": "tool_use", "id": "c1", "name": "f", "input": {}},
        {"type": "thinking", "thinking": "", "signature": g("G2")},
        {"type": "text", "text": "answer"},
        {"type": "thinking", "thinking": "", "signature": g("G3")},
        {"type": "thinking", "thinking": "", "signature": ""},
    ]}]})
    p = req.messages[0].parts
    assert p[0] == ir.Thinking("thought", "G0", source="gemini")
    assert p[1] == ir.ToolCall("c1", "f", "{}", signature="G1")
    assert p[2] == ir.Text("answer", signature="G2")
    assert p[3] == ir.Thinking("", "G3", source="gemini")
    assert p[4] == ir.Thinking("", None, source=None)


def test_parse_server_tools_dropped_but_kept_for_anthropic():
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
        {"name": "f", "input_schema": {"type": "object"}, "strict": True},
        {"type": "bash_20250124", "name": "bash"},
        {"type": "custom", "name": "g", "input_schema": {"type": "object"}}]}
    req = parse_request(body)
    assert [t.name for t in req.tools] == ["f", "g"]
    assert req.tools[0].extra == {"strict": True} and req.tools[1].extra == {"type": "custom"}
    assert build(req)["tools"] == body["tools"]


@pytest.mark.parametrize("body,param", [
    ([], None),
    ({"messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "", "messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "m"}, "messages"),
    ({"model": "m", "messages": []}, "messages"),
    ({"model": "m", "messages": ["hi"]}, "messages[0]"),
    ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"text": "x"}]}]}, "messages[0].content[0].type"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
     "messages[0].content[0].text"),
    ({"model": "m", "messages": [{"role": "assistant", "content": [{"type": "tool_use", "name": "f"}]}]},
     "messages[0].content[0]"),
    ({"model": "m", "messages": [{"role": "assistant", "content": [
        {"type": "tool_use", "id": "a", "name": "f", "input": "x"}]}]}, "messages[0].content[0].input"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "tool_result"}]}]},
     "messages[0].content[0].tool_use_id"),
    ({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png"}}]}]},
     "messages[0].content[0].source.data"),
    ({"model": "m", "messages": [{"role": "system", "content": [{"type": "image"}]}]}, "messages[0].content[0]"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": "10"}, "max_tokens"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": True}, "max_tokens"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "temperature"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "top_k": 1.5}, "top_k"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop_sequences": "END"}, "stop_sequences"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "system": 3}, "system"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": {}}, "tools"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"input_schema": {}}]},
     "tools[0].name"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "some"}},
     "tool_choice.type"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "tool"}},
     "tool_choice.name"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "thinking": {"type": "enabled"}},
     "thinking.budget_tokens"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "thinking": "on"}, "thinking"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "metadata": "u"}, "metadata"),
])
def test_parse_invalid(body, param):
    with pytest.raises(GatewayError) as e:
        parse_request(body)
    assert e.value.status == 400 and e.value.kind == "invalid_request"
    assert e.value.param == param
    assert e.value.message


# ---------------------------------------------------------------- build from foreign IR

def R(**kw) -> ir.Request:
    kw.setdefault("model", "alias")
    kw.setdefault("messages", [ir.Message("user", [ir.Text("hi")])])
    return ir.Request(**kw)


def test_build_alternation_tool_results_and_system_messages():
    req = R(system=[ir.Text("sys")], messages=[
        ir.Message("system", [ir.Text("leading")]),
        ir.Message("user", [ir.Text("q")]),
        ir.Message("user", [ir.Text("")]),
        ir.Message("assistant", [ir.Text(""), ir.ToolCall("call_1", "f", '{"a":1}'),
                                 ir.ToolCall("functions.g:1", "g", "not json")]),
        ir.Message("user", [ir.ToolResult("call_1", "r1")]),
        ir.Message("user", [ir.Text("note")]),
        ir.Message("user", [ir.ToolResult("functions.g:1", [ir.Text("r2"), ir.Image("image/png", "AAA")],
                                          is_error=True)]),
        ir.Message("system", [ir.Text("mid")]),
        ir.Message("assistant", [ir.Thinking("", None)]),
        ir.Message("assistant", [ir.Text("done")]),
    ])
    out = build(req)
    assert out["system"] == [{"type": "text", "text": "sys"}, {"type": "text", "text": "leading"},
                             {"type": "text", "text": "mid"}]
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "q"}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}},
            {"type": "tool_use", "id": "functions_g_1", "name": "g", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "r1"},
            {"type": "tool_result", "tool_use_id": "functions_g_1", "is_error": True, "content": [
                {"type": "text", "text": "r2"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}}]},
            {"type": "text", "text": "note"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "done"}]},
    ]


def test_build_thinking_parts_only_anthropic_signed():
    req = R(messages=[ir.Message("user", [ir.Text("q")]), ir.Message("assistant", [
        ir.Thinking("a", SIG, source="anthropic"),
        ir.Thinking("b", "GSIG", source="gemini"),
        ir.Thinking("c", None),
        ir.Thinking("d", wrap_sig("X")),
        ir.Thinking("RED", redacted=True, source="anthropic"),
        ir.Text("t", signature="GT"),
        ir.ToolCall("c1", "f", "{}", signature="GS")])])
    content = build(req)["messages"][1]["content"]
    assert content == [{"type": "thinking", "thinking": "a", "signature": SIG},
                       {"type": "redacted_thinking", "data": "RED"},
                       {"type": "text", "text": "t"},
                       {"type": "tool_use", "id": "c1", "name": "f", "input": {}}]


def test_build_images_and_pdf():
    req = R(messages=[ir.Message("user", [
        ir.Image(url="data:image/jpeg;base64,/9j/"), ir.Image(url="https://x/a.png"),
        ir.Image("application/pdf", "JVBER", cache_control={"type": "ephemeral"}), ir.Image()])])
    assert build(req)["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/"}},
        {"type": "image", "source": {"type": "url", "url": "https://x/a.png"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"},
         "cache_control": {"type": "ephemeral"}}]


def test_build_tools_and_tool_choice():
    tools = [ir.Tool("f", "does f", {"type": "object", "properties": {"a": {"type": "string"}}},
                     cache_control={"type": "ephemeral"}),
             ir.Tool("g", None, {})]
    out = build(R(tools=tools, tool_choice="required", parallel_tool_calls=False))
    assert out["tools"] == [
        {"name": "f", "description": "does f", "input_schema": {"type": "object", "properties": {"a": {"type": "string"}}},
         "cache_control": {"type": "ephemeral"}},
        {"name": "g", "input_schema": {"type": "object"}}]
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert build(R(tools=tools, tool_choice="tool", tool_choice_name="g"))["tool_choice"] == {"type": "tool", "name": "g"}
    assert build(R(tools=tools, tool_choice="none"))["tool_choice"] == {"type": "none"}
    assert build(R(tools=tools, parallel_tool_calls=False))["tool_choice"] == {"type": "auto",
                                                                               "disable_parallel_tool_use": True}
    assert "tool_choice" not in build(R(tools=tools))
    # extras of another dialect's IR are not sent to Anthropic
    foreign = R(tools=[ir.Tool("f", None, {"type": "object"}, extra={"strict": True, "x_other": 1})],
                messages=[ir.Message("user", [ir.Text("q")]),
                          ir.Message("assistant", [ir.ToolCall("c", "f", "{}", extra={"index": 0})])])
    out = build(foreign)
    assert out["tools"] == [{"name": "f", "input_schema": {"type": "object"}}]
    assert out["messages"][1]["content"] == [{"type": "tool_use", "id": "c", "name": "f", "input": {}}]
    assert "tool_choice" not in build(R(tool_choice="auto"))       # no tools: no tool_choice


@pytest.mark.parametrize("kw,want_budget,want_max", [
    ({"reasoning_effort": "minimal"}, 1024, 4096),
    ({"reasoning_effort": "low"}, 2048, 4096),
    ({"reasoning_effort": "medium"}, 8192, 8192 + 4096),
    ({"reasoning_effort": "high", "max_tokens": 30000}, 24576, 30000),
    ({"reasoning_effort": "xhigh", "max_tokens": 1000}, 32768, 33768),
    ({"thinking": True}, 8192, 8192 + 4096),
    ({"thinking_budget": 500}, 1024, 4096),
    ({"thinking_budget": 3000, "reasoning_effort": "high"}, 3000, 4096),
    ({"thinking_budget": -1}, 8192, 8192 + 4096),
    ({"thinking_budget": 0}, None, 4096),
    ({"reasoning_effort": "none"}, None, 4096),
    ({"thinking": False, "reasoning_effort": "high"}, None, 4096),
    ({}, None, 4096),
])
def test_build_thinking_budget(kw, want_budget, want_max):
    out = build(R(**kw))
    got = out.get("thinking")
    assert got == ({"type": "enabled", "budget_tokens": want_budget} if want_budget else None)
    assert out["max_tokens"] == want_max


def test_build_thinking_sampling_rules():
    out = build(R(reasoning_effort="low", temperature=0.3, top_p=0.5, top_k=5))
    assert "thinking" in out and not {"temperature", "top_p", "top_k"} & out.keys()
    out = build(R(reasoning_effort="low", temperature=1.0, top_p=0.97))
    assert (out["temperature"], out["top_p"]) == (1.0, 0.97)
    out = build(R(temperature=1.7, top_p=0.5, top_k=5))
    assert (out["temperature"], out["top_p"], out["top_k"]) == (1.0, 0.5, 5)


def test_build_thinking_dropped_for_forced_tools_and_foreign_tool_turns():
    tools = [ir.Tool("f", None, {"type": "object"})]
    assert "thinking" not in build(R(reasoning_effort="high", tools=tools, tool_choice="required"))
    assert "thinking" in build(R(reasoning_effort="high", tools=tools, tool_choice="auto"))
    loop = [ir.Message("user", [ir.Text("q")]),
            ir.Message("assistant", [ir.ToolCall("c", "f", "{}")]),
            ir.Message("user", [ir.ToolResult("c", "ok")])]
    assert "thinking" not in build(R(reasoning_effort="high", tools=tools, messages=loop))
    signed = [loop[0], ir.Message("assistant", [ir.Thinking("t", SIG, source="anthropic"), ir.ToolCall("c", "f", "{}")]),
              loop[2]]
    assert "thinking" in build(R(reasoning_effort="high", tools=tools, messages=signed))
    # the turn is everything since the last real user message: a later tool step needs no thinking
    steps = signed + [ir.Message("assistant", [ir.Text(""), ir.ToolCall("d", "f", "{}")]),
                      ir.Message("user", [ir.ToolResult("d", "ok")])]
    assert "thinking" in build(R(reasoning_effort="high", tools=tools, messages=steps))
    # a new real user message starts a new turn
    assert "thinking" in build(R(reasoning_effort="high", tools=tools,
                                 messages=loop + [ir.Message("assistant", [ir.Text("ok")]),
                                                  ir.Message("user", [ir.Text("next")])]))


def _cc_loop(first_block: dict) -> dict:
    return {"model": "m", "max_tokens": 32000, "thinking": {"type": "adaptive"},
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": "q"},
                         {"role": "assistant", "content": [first_block,
                                                           {"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "r"}]}]}


def test_build_anthropic_client_thinking_kept_unless_we_dropped_its_lead():
    # adaptive thinking may skip thinking: what the client sends is what the API accepts
    assert build(parse_request(_cc_loop({"type": "text", "text": "Let me look."})))["thinking"] == {"type": "adaptive"}
    assert build(parse_request(_cc_loop({"type": "thinking", "thinking": "t", "signature": SIG})))["thinking"]
    # a turn that started with another provider's thinking: the block is dropped, so is thinking
    for block in ({"type": "thinking", "thinking": "t", "signature": wrap_sig("G")},
                  {"type": "thinking", "thinking": "", "signature": wrap_sig("G")},
                  {"type": "thinking", "thinking": "unsigned", "signature": ""}):
        out = build(parse_request(_cc_loop(block)))
        assert "thinking" not in out
        assert out["messages"][1]["content"] == [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]


def test_build_provider_without_reasoning():
    p = SimpleNamespace(max_tokens=2000, reasoning=False)
    out = build(R(reasoning_effort="high", temperature=0.2), p)
    assert "thinking" not in out and out["temperature"] == 0.2 and out["max_tokens"] == 2000
    cc = claude_code_body()
    out = build(parse_request(cc), p)
    assert "thinking" not in out and "output_config" not in out


def test_build_misc_fields():
    out = build(R(stop=["END", "\n", " "], user="u-1", stream=True,
                  response_format={"type": "json_schema", "name": "x", "schema": {"type": "object"}}))
    assert out["stop_sequences"] == ["END"] and out["metadata"] == {"user_id": "u-1"} and out["stream"] is True
    assert out["output_config"] == {"format": {"type": "json_schema", "schema": {"type": "object"}}}
    out = build(R(system=[ir.Text("s")], response_format={"type": "json_object"}))
    assert out["system"][0] == {"type": "text", "text": "s"} and "JSON object" in out["system"][1]["text"]
    assert build(R(system=[ir.Text("only")]))["system"] == "only"


def test_build_n_greater_than_one_is_invalid():
    with pytest.raises(GatewayError) as e:
        build_request(R(n=2), "m", PROVIDER)
    assert e.value.status == 400 and "n>1" in e.value.message
    build(R(n=1))


def test_build_anthropic_raw_content_filters_foreign_thinking():
    body = {"model": "m", "messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "g", "signature": wrap_sig("G")},
            {"type": "thinking", "thinking": "u", "signature": ""},
            {"type": "text", "text": "a", "citations": [{"type": "char_location", "cited_text": "x",
                                                          "document_index": 0, "start_char_index": 0,
                                                          "end_char_index": 1, "document_title": None}]},
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}}]},
        {"role": "user", "content": "more"}]}
    out = build(parse_request(body))
    assert out["messages"][1]["content"] == body["messages"][1]["content"][2:]


def test_budget_effort_rule():
    assert [budget_effort(b) for b in (1024, 2048, 2049, 8192, 8193, 32768)] == [
        "low", "low", "medium", "medium", "high", "high"]


def test_round_trip_parse_build_parse_preserves_ir():
    req = parse_request(claude_code_body())
    again = parse_request(orjson.loads(build_request(req, "claude-opus-4-6", PROVIDER)))
    assert again.messages == req.messages and again.system == req.system and again.tools == req.tools
    assert (again.thinking, again.reasoning_effort, again.user, again.max_tokens) == (
        req.thinking, req.reasoning_effort, req.user, req.max_tokens)
