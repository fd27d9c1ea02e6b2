"""Responses API requests: model_and_stream and parse_request (client body -> IR), then the IR
built for each provider type.

Theory: every mapping listed in plexus/dialects/responses/request.py (and content.py, for content
parts) is pinned by a table row; every malformed body is a 400 invalid_request naming the param;
a Codex-shaped conversation (developer prompt as the first item, function + namespace + hosted
tools, reasoning items sent back with encrypted_content) parses and builds into a body each
provider's SDK types accept, with flat tool names, no hosted tool, and each provider's own
signatures restored from the reasoning items Plexus wrapped. Random bodies never raise anything
but a GatewayError.
"""

from __future__ import annotations

import base64
import copy
import functools

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from anthropic_helpers import json_paths
from stub_provider import StubProvider
from plexus import ir
from plexus.dialects import registry
from plexus.dialects.responses.names import flat_name, wrap_reasoning
from plexus.dialects.responses.request import model_and_stream, parse_request
from plexus.errors import GatewayError


Prov = StubProvider


ANTH_SIG = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds7ZIbZGp8Xp=="
GEM_SIG = base64.b64encode(b"gemini-signature").decode()
FERNET = "gAAAAABoS2l0ZXN0LW9wZW5haS1lbmNyeXB0ZWQtcmVhc29uaW5n"
B64 = lambda b: base64.b64encode(b).decode()  # noqa: E731


def parse(body: dict, **kw) -> ir.Request:
    return parse_request({"model": "m", **body}, **kw)


def one(item) -> ir.Request:
    return parse({"input": [item]})


def bad(body: dict, param: str | None, fragment: str, fn=None) -> None:
    with pytest.raises(GatewayError) as ei:
        (fn or parse_request)(body)
    e = ei.value
    assert (e.status, e.kind, e.param) == (400, "invalid_request", param), (e.param, e.message)
    assert fragment in e.message, e.message


def user(*parts):
    return {"type": "message", "role": "user", "content": list(parts)}


def text(s, t="input_text"):
    return {"type": t, "text": s}


def call(cid, name, args="{}", ns=None):
    d = {"type": "function_call", "call_id": cid, "name": name, "arguments": args}
    return {**d, "namespace": ns} if ns else d


def reasoning(enc, summary="thought about it"):
    return {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": summary}],
            "encrypted_content": enc}


# ------------------------------------------------------------------ model_and_stream

@pytest.mark.parametrize("body, expected", [
    ({"model": "m", "input": "hi"}, ("m", False)),
    ({"model": "m", "input": [], "stream": True}, ("m", True)),
    ({"model": "m", "input": "hi", "stream": None}, ("m", False)),
])
def test_model_and_stream(body, expected):
    assert model_and_stream(body, None, None) == expected


@pytest.mark.parametrize("body, param, fragment", [
    ({"input": "hi"}, "model", "`model` is required"),
    ({"model": 3, "input": "hi"}, "model", "non-empty string"),
    ({"model": "m", "input": "hi", "stream": "yes"}, "stream", "`stream` must be a boolean"),
    ({"model": "m"}, "input", "`input` is required"),
    ({"model": "m", "input": {"role": "user"}}, "input", "string or an array"),
    ({"model": "m", "input": 7}, "input", "string or an array"),
])
def test_model_and_stream_400(body, param, fragment):
    bad(body, param, fragment, fn=lambda b: model_and_stream(b, None, None))


# ------------------------------------------------------------------ messages and content

def test_instructions_leading_developer_and_later_system():
    req = parse({"instructions": "Be Codex.", "input": [
        {"role": "developer", "content": "base prompt"},
        {"type": "message", "role": "system", "content": [text("rule")]},
        user(text("hi")),
        {"role": "developer", "content": [text("mid")]},
        {"role": "assistant", "content": "ok"}]})
    assert req.system == [ir.Text("Be Codex."), ir.Text("base prompt"), ir.Text("rule")]
    assert req.messages == [ir.Message("user", [ir.Text("hi")]), ir.Message("system", [ir.Text("mid")]),
                            ir.Message("assistant", [ir.Text("ok")])]


def test_input_string_is_one_user_message():
    req = parse({"input": "hello", "stream": True})
    assert req.messages == [ir.Message("user", [ir.Text("hello")])] and req.stream and req.include_usage
    assert parse({"input": "x"}, stream=False).stream is False


PDF = B64(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3 binary")
TXT = B64("print('héllo')\n".encode())


@pytest.mark.parametrize("part, expected", [
    (text("a"), ir.Text("a")),
    (text("b", "output_text"), ir.Text("b")),
    ({"type": "refusal", "refusal": "no"}, ir.Text("no")),
    ({"type": "input_image", "image_url": "data:image/png;base64,iVBO", "detail": "high"},
     ir.Image("image/png", "iVBO")),
    ({"type": "input_image", "image_url": "https://x.test/cat.jpg", "detail": "auto"}, ir.Image(url="https://x.test/cat.jpg")),
    ({"type": "input_file", "filename": "a.pdf", "file_data": f"data:application/pdf;base64,{PDF}"},
     ir.Image("application/pdf", PDF)),
    ({"type": "input_file", "filename": "report.pdf", "file_data": PDF}, ir.Image("application/pdf", PDF)),
    ({"type": "input_file", "file_data": PDF}, ir.Image("application/pdf", PDF)),
    ({"type": "input_file", "filename": "pic.PNG", "file_data": "iVBO"}, ir.Image("image/png", "iVBO")),
    ({"type": "input_file", "filename": "main.py", "file_data": TXT}, ir.Text("main.py\nprint('héllo')\n")),
    ({"type": "input_file", "file_data": f"data:text/plain;charset=utf-8;base64,{TXT}"}, ir.Text("print('héllo')\n")),
    ({"type": "input_file", "filename": "notes.txt", "file_data": B64(b"\xff\xfe\x00")},
     ir.Image("text/plain", B64(b"\xff\xfe\x00"))),
    ({"type": "input_file", "file_url": "https://x.test/doc.pdf?v=2"}, ir.Image("application/pdf", url="https://x.test/doc.pdf?v=2")),
    ({"type": "input_file", "file_url": "https://x.test/doc", "filename": "s.docx"},
     ir.Image("application/vnd.openxmlformats-officedocument.wordprocessingml.document", url="https://x.test/doc")),
])
def test_user_content_parts(part, expected):
    assert one(user(part)).messages == [ir.Message("user", [expected])]


@pytest.mark.parametrize("item, param, fragment", [
    ("hi", "input[0]", "must be an object"),
    ({"role": "tool", "content": "x"}, "input[0].role", "user, assistant, system or developer"),
    ({"type": "message", "content": "x"}, "input[0].role", "must be user"),
    ({"role": "user", "content": 5}, "input[0].content", "string or an array"),
    (user({"type": "input_audio"}), "input[0].content[0]", "unsupported content part type 'input_audio'"),
    (user({"type": "input_text", "text": 3}), "input[0].content[0].text", "must be a string"),
    (user({"type": "input_image", "file_id": "file-1"}), "input[0].content[0].file_id", "Plexus keeps no files"),
    (user({"type": "input_image", "image_url": "ftp://x"}), "input[0].content[0].image_url", "http(s) URL"),
    (user({"type": "input_image", "image_url": "data:image/png,raw"}), "input[0].content[0].image_url", "base64"),
    (user({"type": "input_file", "file_id": "file-1"}), "input[0].content[0].file_id", "Plexus keeps no files"),
    (user({"type": "input_file", "filename": "a.pdf"}), "input[0].content[0]", "file_data or file_url"),
    (user({"type": "input_file", "file_url": "file:///etc/passwd"}), "input[0].content[0].file_url", "http(s)"),
    ({"role": "assistant", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]},
     "input[0].content[0]", "assistant messages take text only"),
    ({"role": "developer", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]},
     "input[0].content[0]", "system messages take text only"),
    ({"type": "item_reference", "id": "msg_1"}, "input[0]", "item_reference is not supported"),
    ({"id": "msg_1"}, "input[0]", "item_reference is not supported"),
    ({"content": "x"}, "input[0].type", "needs a `type`"),
    ({"type": "brand_new_item"}, "input[0].type", "unsupported item type 'brand_new_item'"),
    ({"type": "function_call", "name": "f", "arguments": "{}"}, "input[0].call_id", "non-empty string"),
    ({"type": "function_call", "call_id": "c", "arguments": "{}"}, "input[0].name", "non-empty string"),
    ({"type": "function_call", "call_id": "c", "name": "f", "arguments": 3}, "input[0].arguments", "JSON string"),
    ({"type": "custom_tool_call", "call_id": "c", "name": "f", "input": {}}, "input[0].input", "must be a string"),
    ({"type": "function_call_output", "output": "x"}, "input[0].call_id", "non-empty string"),
    ({"type": "function_call_output", "call_id": "c", "output": 5}, "input[0].output", "string or an array"),
    ({"type": "additional_tools", "role": "developer", "tools": {}}, "input[0].tools", "must be an array"),
])
def test_item_400(item, param, fragment):
    bad({"model": "m", "input": [item]}, param, fragment)


# ------------------------------------------------------------------ assistant turns, tool calls, reasoning

def test_consecutive_assistant_output_is_one_turn_and_outputs_one_user_message():
    req = parse({"input": [
        user(text("go")),
        reasoning(FERNET),
        {"type": "message", "role": "assistant", "content": [text("Looking.", "output_text")], "phase": "commentary"},
        {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search"}},
        call("c1", "search", '{"q": "x"}', ns="mcp__docs"),
        {"type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": "*** Begin Patch"},
        {"type": "function_call_output", "call_id": "c1", "output": "found"},
        {"type": "custom_tool_call_output", "call_id": "c2", "output": [text("done"), {
            "type": "input_image", "image_url": "data:image/png;base64,iVBO"}]},
        {"type": "function_call_output", "call_id": "c9", "name": "lost", "namespace": "ns", "output": None},
        user(text("thanks"))]})
    assert req.messages == [
        ir.Message("user", [ir.Text("go")]),
        ir.Message("assistant", [ir.Text("Looking."), ir.ToolCall("c1", "mcp__docs__search", '{"q": "x"}'),
                                 ir.ToolCall("c2", "apply_patch", '{"input":"*** Begin Patch"}')]),
        ir.Message("user", [ir.ToolResult("c1", "found", name="mcp__docs__search"),
                            ir.ToolResult("c2", [ir.Text("done"), ir.Image("image/png", "iVBO")], name="apply_patch"),
                            ir.ToolResult("c9", "", name="ns__lost")]),
        ir.Message("user", [ir.Text("thanks")])]
    assert req.extra["tool_names"] == {"mcp__docs__search": ("mcp__docs", "search")}   # (outputs name no tool)


def test_function_call_arguments_forms():
    assert one(call("c", "f", None)).messages[0].parts[0].arguments == "{}"
    assert one({"type": "function_call", "call_id": "c", "name": "f"}).messages[0].parts[0].arguments == "{}"
    assert one(call("c", "f", {"a": 1})).messages[0].parts[0].arguments == '{"a":1}'


W_ANTH = wrap_reasoning("anthropic", ANTH_SIG, "I should search.")
W_RED = wrap_reasoning("anthropic", None, "opaque-data", redacted=True)
W_GEM = wrap_reasoning("gemini", GEM_SIG)
W_GEM_TEXT = wrap_reasoning("gemini", GEM_SIG, "pondering")
W_OPENAI_COMPAT = wrap_reasoning("openai", None, "reasoning_content text")
C1 = call("c1", "f")
A1 = {"role": "assistant", "content": [text("answer", "output_text"), text("more", "output_text")]}
U1 = user(text("next"))


@pytest.mark.parametrize("items, parts", [
    ([reasoning(W_ANTH), C1], [ir.Thinking("I should search.", ANTH_SIG, source="anthropic"), ir.ToolCall("c1", "f", "{}")]),
    ([reasoning(W_RED)], [ir.Thinking("opaque-data", None, redacted=True, source="anthropic")]),
    ([reasoning(W_GEM_TEXT), C1], [ir.Thinking("pondering", GEM_SIG, source="gemini"), ir.ToolCall("c1", "f", "{}")]),
    ([reasoning(W_OPENAI_COMPAT), C1], [ir.Thinking("reasoning_content text", None, source="openai"),
                                        ir.ToolCall("c1", "f", "{}")]),
    ([reasoning(W_GEM), C1], [ir.ToolCall("c1", "f", "{}", signature=GEM_SIG)]),
    ([reasoning(W_GEM), A1], [ir.Text("answer", signature=GEM_SIG), ir.Text("more")]),
    ([reasoning(W_GEM), reasoning(W_GEM), C1], [ir.Thinking("", GEM_SIG, source="gemini"),
                                                 ir.ToolCall("c1", "f", "{}", signature=GEM_SIG)]),
    ([reasoning(W_GEM), reasoning(W_ANTH)], [ir.Thinking("", GEM_SIG, source="gemini"),
                                              ir.Thinking("I should search.", ANTH_SIG, source="anthropic")]),
    ([C1, reasoning(W_GEM)], [ir.ToolCall("c1", "f", "{}"), ir.Thinking("", GEM_SIG, source="gemini")]),
    ([reasoning(FERNET), reasoning(None), {"type": "reasoning", "id": "r", "summary": []}, C1],
     [ir.ToolCall("c1", "f", "{}")]),
    ([reasoning("plexus:not-base64!"), C1], [ir.ToolCall("c1", "f", "{}")]),
])
def test_reasoning_items(items, parts):
    assert parse({"input": [U1, *items]}).messages[1:] == [ir.Message("assistant", parts)]


def test_held_gemini_signature_before_a_user_item_stays_a_thinking():
    req = parse({"input": [reasoning(W_GEM), {"type": "function_call_output", "call_id": "x", "output": "o"}]})
    assert req.messages == [ir.Message("assistant", [ir.Thinking("", GEM_SIG, source="gemini")]),
                            ir.Message("user", [ir.ToolResult("x", "o")])]


@pytest.mark.parametrize("kind", sorted([
    "web_search_call", "file_search_call", "computer_call", "computer_call_output", "code_interpreter_call",
    "image_generation_call", "local_shell_call", "local_shell_call_output", "shell_call", "shell_call_output",
    "apply_patch_call", "apply_patch_call_output", "mcp_list_tools", "mcp_approval_request",
    "mcp_approval_response", "mcp_call", "tool_search_call", "tool_search_output", "program",
    "program_output", "compaction", "compaction_trigger", "configuration_update"]))
def test_hosted_and_stateful_items_are_dropped(kind):
    req = parse({"input": [U1, {"type": kind, "id": "x", "call_id": "y"}, A1]})
    assert [m.role for m in req.messages] == ["user", "assistant"]


# ------------------------------------------------------------------ tools and tool_choice

GRAMMAR = "start: begin_patch hunk+ end_patch"
TOOLS = [
    {"type": "function", "name": "shell", "description": "Run a command", "strict": False,
     "parameters": {"type": "object", "properties": {"command": {"type": "array"}}, "required": ["command"]}},
    {"type": "function", "name": "noargs", "parameters": None, "strict": True},
    {"type": "function", "name": "bad name!", "parameters": {"type": "object"}, "strict": None},
    {"type": "namespace", "name": "mcp__docs", "description": "The docs server.", "tools": [
        {"type": "function", "name": "search", "description": "Search the docs", "parameters": {"type": "object"}},
        {"type": "custom", "name": "query"}]},
    {"type": "namespace", "name": "functions", "description": "Tools in the functions namespace.", "tools": [
        {"type": "function", "name": "wait"}]},
    {"type": "custom", "name": "apply_patch", "description": "Patch files",
     "format": {"type": "grammar", "syntax": "lark", "definition": GRAMMAR}},
    {"type": "custom", "name": "freeform", "format": {"type": "text"}},
    {"type": "web_search", "external_web_access": False}, {"type": "web_search_preview"},
    {"type": "mcp", "server_label": "x"}, {"type": "mcp", "server_label": "y"}, {"type": "local_shell"},
    {"type": "image_generation"}, {"type": "file_search", "vector_store_ids": []}, {"type": "tool_search"},
]
EMPTY = {"type": "object", "properties": {}}


def _custom(desc=None):
    inp = {"type": "string", **({"description": desc} if desc else {})}
    return {"type": "object", "properties": {"input": inp}, "required": ["input"]}


def test_tools():
    req = parse({"input": "x", "tools": TOOLS})
    odd = flat_name(None, "bad name!")
    assert odd != "bad name!" and odd.startswith("bad_name_")
    assert req.tools == [
        ir.Tool("shell", "Run a command", TOOLS[0]["parameters"], extra={"strict": False}),
        ir.Tool("noargs", None, EMPTY, extra={"strict": True}),
        ir.Tool(odd, None, {"type": "object"}),
        ir.Tool("mcp__docs__search", "The docs server.\n\nSearch the docs", {"type": "object"}),
        ir.Tool("mcp__docs__query", "The docs server.", _custom()),
        ir.Tool("functions__wait", None, EMPTY),
        ir.Tool("apply_patch", "Patch files", _custom(f"Input matching this lark grammar:\n{GRAMMAR}")),
        ir.Tool("freeform", None, _custom()),
    ]
    assert req.extra["custom_tools"] == {"mcp__docs__query", "apply_patch", "freeform"}
    assert req.extra["dropped_tools"] == ["web_search", "web_search_preview", "mcp", "local_shell",
                                          "image_generation", "file_search", "tool_search"]
    assert req.extra["tool_names"] == {odd: (None, "bad name!"), "mcp__docs__search": ("mcp__docs", "search"),
                                       "mcp__docs__query": ("mcp__docs", "query"),
                                       "functions__wait": ("functions", "wait")}
    ctx = req.extra["ctx"]
    assert ctx["tool_names"] is req.extra["tool_names"] and ctx["custom_tools"] is req.extra["custom_tools"]
    assert ctx["responses_echo"] == {"tools": TOOLS}
    assert "dropped_tools" not in parse({"input": "x", "tools": TOOLS[:2]}).extra


def test_additional_tools_join_tools_once():
    req = parse({"input": [U1, {"type": "additional_tools", "role": "developer", "tools": [TOOLS[0], TOOLS[5]]}],
                 "tools": [TOOLS[0]]})
    assert [t.name for t in req.tools] == ["shell", "apply_patch"] and req.extra["custom_tools"] == {"apply_patch"}


@pytest.mark.parametrize("tools, param, fragment", [
    ({"type": "function"}, "tools", "must be an array"),
    ([{"name": "f"}], "tools[0].type", "string `type`"),
    (["f"], "tools[0].type", "string `type`"),
    ([{"type": "function", "name": ""}], "tools[0].name", "non-empty string"),
    ([{"type": "function", "name": "f", "parameters": []}], "tools[0].parameters", "JSON Schema object"),
    ([{"type": "namespace", "name": "n", "tools": {}}], "tools[0].tools", "must be an array"),
    ([{"type": "namespace", "tools": []}], "tools[0].name", "non-empty string"),
    ([{"type": "namespace", "name": "n", "tools": [{"type": "web_search"}]}], "tools[0].tools[0].type",
     "function and custom tools"),
    ([{"type": "custom"}], "tools[0].name", "non-empty string"),
])
def test_tools_400(tools, param, fragment):
    bad({"model": "m", "input": "x", "tools": tools}, param, fragment)


@pytest.mark.parametrize("tc, choice, name", [
    ("auto", "auto", None), ("none", "none", None), ("required", "required", None),
    ({"type": "function", "name": "shell"}, "tool", "shell"),
    ({"type": "function", "name": "search", "namespace": "mcp__docs"}, "tool", "mcp__docs__search"),
    ({"type": "custom", "name": "apply_patch"}, "tool", "apply_patch"),
    ({"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "shell"}]}, "required", None),
    ({"type": "allowed_tools", "mode": "auto", "tools": []}, "auto", None),
    ({"type": "web_search_preview"}, "auto", None), ({"type": "mcp", "server_label": "x"}, "auto", None),
    ({"type": "shell"}, "auto", None), ({"type": "image_generation"}, "auto", None),
])
def test_tool_choice(tc, choice, name):
    req = parse({"input": "x", "tool_choice": tc})
    assert (req.tool_choice, req.tool_choice_name) == (choice, name)


@pytest.mark.parametrize("tc, param", [
    ("any", "tool_choice"), (5, "tool_choice"), ({"name": "f"}, "tool_choice"),
    ({"type": "function"}, "tool_choice.name"), ({"type": "allowed_tools", "mode": "any"}, "tool_choice.mode"),
])
def test_tool_choice_400(tc, param):
    bad({"model": "m", "input": "x", "tool_choice": tc}, param, "")


# ------------------------------------------------------------------ parameters

@pytest.mark.parametrize("fields, attrs", [
    ({"max_output_tokens": 500, "temperature": 0.2, "top_p": 1, "parallel_tool_calls": False},
     {"max_tokens": 500, "temperature": 0.2, "top_p": 1, "parallel_tool_calls": False}),
    ({"max_output_tokens": None, "temperature": None, "tool_choice": None, "reasoning": None, "text": None},
     {"max_tokens": None, "temperature": None, "tool_choice": None, "reasoning_effort": None}),
    ({"user": "u1", "safety_identifier": "s1"}, {"user": "u1"}),
    ({"safety_identifier": "s1"}, {"user": "s1"}),
    ({"metadata": {"user_id": "abc", "k": "v"}}, {"metadata": {"user_id": "abc", "k": "v"}}),
    ({"metadata": "nope"}, {"metadata": None}),
    ({"reasoning": {"effort": "high", "summary": "detailed"}}, {"reasoning_effort": "high", "thinking": True}),
    ({"reasoning": {"effort": "none"}}, {"reasoning_effort": "none", "thinking": False}),
    ({"reasoning": {"effort": "max"}}, {"reasoning_effort": "max", "thinking": True}),
    ({"reasoning": {"summary": "auto"}}, {"reasoning_effort": None, "thinking": None}),
    ({"reasoning": {"effort": None, "generate_summary": "concise", "context": "auto"}}, {"thinking": None}),
    ({"text": {"format": {"type": "text"}, "verbosity": "low"}}, {"response_format": None}),
    ({"text": {"format": {"type": "json_object"}}}, {"response_format": {"type": "json_object"}}),
    ({"text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True,
                          "description": "the answer"}}},
     {"response_format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True,
                          "description": "the answer"}}),
    ({"text": {"format": {"type": "json_schema", "schema": {}}}},
     {"response_format": {"type": "json_schema", "name": "response", "schema": {}, "strict": None}}),
])
def test_parameters(fields, attrs):
    req = parse({"input": "x", **fields})
    assert {k: getattr(req, k) for k in attrs} == attrs


def test_openai_passthrough_and_accepted_fields():
    req = parse({"input": "x", "prompt_cache_key": "thread-1", "safety_identifier": "sid", "service_tier": "flex",
                 "prompt_cache_retention": "24h", "text": {"verbosity": "low"}, "store": True,
                 "include": ["reasoning.encrypted_content"], "client_metadata": {"a": "b"}, "truncation": "auto",
                 "top_logprobs": 3, "stream_options": {"include_obfuscation": False}, "max_tool_calls": 2,
                 "context_management": [{"type": "compaction"}], "prompt_cache_options": {"ttl": "12h"},
                 "background": False, "previous_response_id": None, "conversation": None, "prompt": None,
                 "brand_new_field": {"x": 1}})
    assert req.extra["openai"] == {"prompt_cache_key": "thread-1", "prompt_cache_retention": "24h",
                                   "safety_identifier": "sid", "service_tier": "flex", "verbosity": "low"}
    odd = parse({"input": "x", "store": "maybe", "include": 5, "client_metadata": [], "truncation": 1,
                 "prompt_cache_key": 7, "service_tier": None, "text": {"verbosity": 3}})
    assert "openai" not in odd.extra


def test_response_echo_holds_the_settings_a_response_object_repeats():
    fmt = {"type": "json_schema", "name": "weather", "schema": {"type": "object"}, "strict": True}
    req = parse({"input": "x", "instructions": "Be terse.", "max_output_tokens": 300, "temperature": 0.25,
                 "text": {"format": fmt}, "user": None, "stream": True, "include": ["x"], "client_metadata": {}})
    assert req.extra["ctx"]["responses_echo"] == {"instructions": "Be terse.", "max_output_tokens": 300,
                                                  "temperature": 0.25, "text": {"format": fmt}}


@pytest.mark.parametrize("fields, param, fragment", [
    ({"previous_response_id": "resp_1"}, "previous_response_id", "Plexus keeps no conversation state"),
    ({"conversation": "conv_1"}, "conversation", "send the whole conversation in `input`"),
    ({"conversation": {"id": "conv_1"}}, "conversation", "not supported"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt", "no stored prompts"),
    ({"background": True}, "background", "not supported"),
    ({"instructions": ["a"]}, "instructions", "must be a string"),
    ({"max_output_tokens": 0}, "max_output_tokens", "positive integer"),
    ({"max_output_tokens": True}, "max_output_tokens", "positive integer"),
    ({"temperature": "hot"}, "temperature", "a number"),
    ({"top_p": [1]}, "top_p", "a number"),
    ({"parallel_tool_calls": 1}, "parallel_tool_calls", "a boolean"),
    ({"user": 5}, "user", "a string"),
    ({"reasoning": "high"}, "reasoning", "an object"),
    ({"reasoning": {"effort": "extreme"}}, "reasoning.effort", "must be one of"),
    ({"text": "json"}, "text", "an object"),
    ({"text": {"format": {"type": "yaml"}}}, "text.format.type", "text, json_object or json_schema"),
    ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema", "JSON Schema object"),
    ({"input": []}, "input", "non-empty array"),
    ({"input": None}, "input", "`input` is required"),
    ({"model": None}, "model", "`model` is required"),
    ({"stream": 1}, "stream", "`stream` must be a boolean"),
])
def test_request_400(fields, param, fragment):
    bad({"model": "m", "input": "x", **fields}, param, fragment)


def test_body_must_be_an_object():
    bad([], None, "JSON object")


# ------------------------------------------------------------------ Codex 0.169 shape, built for every provider

CODEX_TOOLS = [
    {"type": "function", "name": "shell_command", "description": "Runs a shell command and returns its output.",
     "strict": False, "parameters": {"type": "object", "properties": {
         "command": {"type": "string"}, "workdir": {"type": "string"}, "timeout_ms": {"type": "number"}},
         "required": ["command"], "additionalProperties": False}},
    {"type": "function", "name": "update_plan", "description": "Updates the task plan.", "strict": False,
     "parameters": {"type": "object", "properties": {"plan": {"type": "array", "items": {
         "type": "object", "properties": {"step": {"type": "string"}, "status": {"type": "string"}},
         "required": ["step", "status"], "additionalProperties": False}}}, "required": ["plan"],
         "additionalProperties": False}},
    {"type": "namespace", "name": "mcp__docs", "description": "Tools in the mcp__docs namespace.", "tools": [
        {"type": "function", "name": "search", "description": "Search the docs.", "strict": False,
         "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}},
        {"type": "function", "name": "fetch", "description": "Fetch a page.", "strict": False,
         "parameters": {"type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]}},
        {"type": "function", "name": "list_sources", "description": "List sources.", "strict": False,
         "parameters": {"type": "object", "properties": {}}}]},
    {"type": "web_search", "external_web_access": False},
]
DEV = {"type": "message", "role": "developer", "content": [
    {"type": "input_text", "text": "You are Codex, a coding agent based on GPT-5."}]}
ENV = user(text("<environment_context>\n  <cwd>/repo</cwd>\n</environment_context>"))
ASK = user(text("Where are the docs for the relay?"))
CODEX_FIRST = {
    "model": "gpt-5.3-codex", "input": [DEV, ENV, ASK], "tools": CODEX_TOOLS, "tool_choice": "auto",
    "parallel_tool_calls": True, "reasoning": {"summary": "auto"}, "store": False, "stream": True,
    "include": ["reasoning.encrypted_content"], "prompt_cache_key": "019a2b3c-4d5e-7f60-8a9b-0c1d2e3f4a5b",
    "client_metadata": {"x-codex-installation-id": "abc"},
}


def codex_later(wrapped: str) -> dict:
    """A later request: the first turn's answer from an OpenAI target (its Fernet reasoning item,
    a message), the user's next message, then a turn from another provider type (a reasoning item
    Plexus wrapped, a namespaced function_call) and the call's output."""
    body = copy.deepcopy(CODEX_FIRST)
    body["input"] += [
        reasoning(FERNET, "Looking at the repo"),
        {"type": "message", "role": "assistant", "content": [
            {"type": "output_text", "text": "I'll search the docs.", "annotations": []}], "phase": "final_answer"},
        user(text("Go ahead.")),
        reasoning(wrapped, "Searching"),
        {"type": "function_call", "call_id": "call_7", "name": "search", "namespace": "mcp__docs",
         "arguments": '{"query":"relay"}'},
        {"type": "function_call_output", "call_id": "call_7", "output": "docs/relay.md: the relay ..."},
    ]
    return body


def test_codex_first_request():
    model, stream = model_and_stream(CODEX_FIRST, None, None)
    req = parse_request(CODEX_FIRST)
    assert (model, stream, req.model, req.stream) == ("gpt-5.3-codex", True, "gpt-5.3-codex", True)
    assert req.system == [ir.Text("You are Codex, a coding agent based on GPT-5.")]
    assert [m.role for m in req.messages] == ["user", "user"]
    assert [t.name for t in req.tools] == ["shell_command", "update_plan", "mcp__docs__search", "mcp__docs__fetch",
                                           "mcp__docs__list_sources"]
    assert req.tools[2].description == "Search the docs."
    assert (req.tool_choice, req.parallel_tool_calls, req.thinking, req.reasoning_effort) == ("auto", True, None, None)
    assert req.extra["dropped_tools"] == ["web_search"]
    assert req.extra["openai"] == {"prompt_cache_key": CODEX_FIRST["prompt_cache_key"]}
    assert req.extra["ctx"]["responses_echo"] == {k: CODEX_FIRST[k] for k in (
        "tools", "tool_choice", "parallel_tool_calls", "reasoning", "store", "prompt_cache_key")}


def test_codex_later_request_parses():
    req = parse_request(codex_later(W_ANTH))
    assert req.messages[2:] == [
        ir.Message("assistant", [ir.Text("I'll search the docs.")]),
        ir.Message("user", [ir.Text("Go ahead.")]),
        ir.Message("assistant", [ir.Thinking("I should search.", ANTH_SIG, source="anthropic"),
                                 ir.ToolCall("call_7", "mcp__docs__search", '{"query":"relay"}')]),
        ir.Message("user", [ir.ToolResult("call_7", "docs/relay.md: the relay ...", name="mcp__docs__search")])]


@functools.cache
def _validators():
    from anthropic.types.message_create_params import MessageCreateParamsStreaming
    from openai.types.chat.completion_create_params import CompletionCreateParamsStreaming
    from pydantic import TypeAdapter
    return TypeAdapter(CompletionCreateParamsStreaming), TypeAdapter(MessageCreateParamsStreaming)


def built(req: ir.Request, kind: str) -> dict:
    body = orjson.loads(registry.get(kind).build.build_request(req, "m", Prov(type=kind)))
    oa, an = _validators()
    if kind == "openai":
        oa.validate_python(body)
    elif kind == "anthropic":
        an.validate_python(body)
    else:
        from google.genai import types
        for c in body["contents"]:
            types.Content.model_validate(c)
        for t in body.get("tools", ()):
            types.Tool.model_validate(t)
        types.Content.model_validate(body["systemInstruction"])
    return body


FLAT = ["shell_command", "update_plan", "mcp__docs__search", "mcp__docs__fetch", "mcp__docs__list_sources"]


def test_codex_built_for_openai():
    body = built(parse_request(codex_later(W_ANTH)), "openai")
    assert [t["function"]["name"] for t in body["tools"]] == FLAT
    assert body["tool_choice"] == "auto" and body["parallel_tool_calls"] is True and body["stream"] is True
    assert body["messages"][0] == {"role": "system", "content": "You are Codex, a coding agent based on GPT-5."}
    assert body["messages"][3] == {"role": "assistant", "content": "I'll search the docs."}
    assert body["messages"][5]["tool_calls"][0]["function"] == {"name": "mcp__docs__search",
                                                               "arguments": '{"query":"relay"}'}
    assert body["messages"][6] == {"role": "tool", "tool_call_id": "call_7", "content": "docs/relay.md: the relay ..."}
    assert body["prompt_cache_key"] == CODEX_FIRST["prompt_cache_key"] and body["stream_options"]["include_usage"]
    for absent in ("store", "include", "client_metadata", "web_search_options", "reasoning"):
        assert absent not in body
    assert "web_search" not in orjson.dumps(body).decode() and FERNET not in orjson.dumps(body).decode()


def test_codex_built_for_anthropic_restores_the_signed_thinking():
    body = built(parse_request(codex_later(W_ANTH)), "anthropic")
    assert [t["name"] for t in body["tools"]] == FLAT
    assert body["system"] == "You are Codex, a coding agent based on GPT-5."
    assert body["messages"][3]["content"] == [
        {"type": "thinking", "thinking": "I should search.", "signature": ANTH_SIG},
        {"type": "tool_use", "id": "call_7", "name": "mcp__docs__search", "input": {"query": "relay"}}]
    assert body["messages"][4]["content"][0]["type"] == "tool_result"
    assert "web_search" not in orjson.dumps(body).decode() and FERNET not in orjson.dumps(body).decode()
    assert "prompt_cache_key" not in body and "metadata" not in body


def test_codex_built_for_gemini_restores_the_thought_signature():
    body = built(parse_request(codex_later(W_GEM)), "gemini")
    assert [f["name"] for f in body["tools"][0]["functionDeclarations"]] == FLAT
    model = body["contents"][3]
    assert model == {"role": "model", "parts": [{"functionCall": {"name": "mcp__docs__search",
                                                                  "args": {"query": "relay"}},
                                                 "thoughtSignature": GEM_SIG}]}
    assert body["contents"][4]["parts"][0]["functionResponse"]["name"] == "mcp__docs__search"
    assert "web_search" not in orjson.dumps(body).decode()


def test_codex_with_effort_builds_thinking_for_anthropic():
    body = codex_later(W_ANTH)
    body["reasoning"] = {"effort": "medium", "summary": "auto"}
    out = built(parse_request(body), "anthropic")
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 8192}


# ------------------------------------------------------------------ fuzz: only GatewayError

ODD = [None, True, 0, -1, 2.5, "", "x", [], [1], {}, {"type": "message"}, {"type": "function"}]


def _set(obj, path, value):
    obj = copy.deepcopy(obj)
    node = obj
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return obj


def _rich() -> dict:
    body = codex_later(W_GEM)
    body["instructions"] = "Be brief."
    body["tools"] = [*CODEX_TOOLS, *TOOLS]
    body["tool_choice"] = {"type": "function", "name": "search", "namespace": "mcp__docs"}
    body["reasoning"] = {"effort": "high", "summary": "auto"}
    body["text"] = {"format": {"type": "json_schema", "name": "o", "schema": {"type": "object"}}, "verbosity": "low"}
    body.update(max_output_tokens=100, temperature=0.5, top_p=0.9, user="u", metadata={"user_id": "x"})
    body["input"] += [
        user({"type": "input_image", "image_url": "data:image/png;base64,iVBO"},
             {"type": "input_file", "filename": "a.pdf", "file_data": f"data:application/pdf;base64,{PDF}"},
             {"type": "input_file", "filename": "m.py", "file_data": TXT},
             {"type": "input_file", "file_url": "https://x.test/a.pdf"}),
        reasoning(W_ANTH), reasoning(W_RED), reasoning(W_GEM), A1,
        {"type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": "*** Begin Patch"},
        {"type": "custom_tool_call_output", "call_id": "c2", "output": [text("ok")]},
        {"type": "additional_tools", "role": "developer", "tools": [TOOLS[5]]},
        {"role": "system", "content": "late"}, {"type": "web_search_call", "id": "w"}]
    return body


RICH = _rich()


RICH_PATHS = list(json_paths(RICH))[1:]


def _only_gateway_errors(body) -> None:
    try:
        req = parse_request(body)
    except GatewayError as e:
        assert e.status == 400 and e.kind == "invalid_request"
        return
    for kind in ("openai", "anthropic", "gemini"):
        try:
            registry.get(kind).build.build_request(req, "m", Prov(type=kind))
        except GatewayError as e:
            assert e.status == 400


def test_rich_body_parses_and_builds():
    req = parse_request(RICH)
    assert len(req.messages) > 8 and len(RICH_PATHS) > 300
    for kind in ("openai", "anthropic", "gemini"):
        built(req, kind)


@pytest.mark.parametrize("chunk", range(4))
def test_every_value_of_every_type(chunk):
    for path in RICH_PATHS[chunk::4]:
        for odd in ODD:
            _only_gateway_errors(_set(RICH, path, odd))


_scalar = st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False) | st.text(max_size=5)
_json = st.recursive(_scalar, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                     max_leaves=6)
_KEYS = ["type", "role", "content", "call_id", "name", "namespace", "arguments", "input", "output", "id",
         "encrypted_content", "summary", "text", "image_url", "file_data", "file_url", "filename", "file_id",
         "tools", "parameters", "strict", "format", "description", "refusal", "mode"]
_TYPES = ["message", "function_call", "function_call_output", "custom_tool_call", "custom_tool_call_output",
          "reasoning", "item_reference", "additional_tools", "web_search_call", "input_text", "input_image",
          "input_file", "output_text", "refusal", "function", "namespace", "custom", "web_search", None]
_special = st.sampled_from([W_ANTH, W_GEM, W_RED, FERNET, "data:application/pdf;base64,JVBE", PDF, TXT,
                            "https://x.test/a.pdf", "user", "assistant", "developer", "system"])
_obj = st.recursive(
    st.builds(lambda t, d: {**d, "type": t} if t else d, st.sampled_from(_TYPES),
              st.dictionaries(st.sampled_from(_KEYS), _json | _special, max_size=4)),
    lambda c: st.builds(lambda o, k, v: {**o, k: v}, c, st.sampled_from(["content", "tools", "output"]),
                        st.lists(c, max_size=3)),
    max_leaves=5)
_body = st.fixed_dictionaries({"model": st.just("m"), "input": st.lists(_obj, max_size=4) | st.text(max_size=3)},
                              optional={k: _json | _obj | st.lists(_obj, max_size=2) for k in (
                                  "tools", "tool_choice", "reasoning", "text", "instructions", "stream",
                                  "max_output_tokens", "temperature", "user", "metadata", "background")})


@settings(max_examples=300, deadline=None)
@given(_body)
def test_random_bodies_raise_only_gateway_errors(body):
    _only_gateway_errors(body)
