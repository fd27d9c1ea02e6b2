"""Gemini requests: parse (Gemini client → IR), build (IR → Gemini provider), schemas.

Theory: the parser is fed what the google-genai SDK really sends (captured through an
in-memory transport, so its snake_case fields are covered) plus hand-written camelCase bodies;
the builder's output is checked field by field and validated with the SDK's own pydantic types
(camelCase aliases), and parse(build(ir)) must give the IR back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx
import orjson
import pytest

from plexus import ir
from plexus.dialects.gemini import build as gbuild, encode, request
from plexus.dialects.gemini.contents import SKIP_SIGNATURE
from plexus.dialects.registry import DIALECTS
from plexus.errors import GatewayError


@dataclass
class Prov:
    name: str = "g"
    type: str = "gemini"
    max_tokens: int = 0
    stream_usage: bool = False
    base_path: str = "/v1beta"
    reasoning: bool = True


def sdk_body(contents, **config) -> dict:
    """The JSON body google-genai sends for generate_content(contents, config)."""
    from google import genai
    from google.genai import types
    seen = []

    def handler(req):
        seen.append(json.loads(req.content))
        return httpx.Response(200, json={"candidates": [{"content": {"role": "model", "parts": [{"text": "x"}]},
                                                         "finishReason": "STOP"}]})
    client = genai.Client(api_key="k", http_options=types.HttpOptions(
        base_url="http://plexus.test", api_version="v1beta",
        httpx_client=httpx.Client(transport=httpx.MockTransport(handler))))
    config.setdefault("automatic_function_calling", types.AutomaticFunctionCallingConfig(disable=True))
    client.models.generate_content(model="alias", contents=contents,
                                   config=types.GenerateContentConfig(**config))
    return seen[0]


def build(req: ir.Request, prov=None) -> tuple[str, dict]:
    body = gbuild.build_request(req, "gemini-2.5-flash", prov or Prov())
    return DIALECTS["gemini"].upstream_path("gemini-2.5-flash", req.stream, True), orjson.loads(body)


def validate_with_sdk(body: dict) -> None:
    from google.genai import types
    for c in body["contents"]:
        types.Content.model_validate(c)
    if "generationConfig" in body:
        types.GenerationConfig.model_validate(body["generationConfig"])
    for t in body.get("tools", ()):
        types.Tool.model_validate(t)
    if "toolConfig" in body:
        types.ToolConfig.model_validate(body["toolConfig"])
    if "systemInstruction" in body:
        types.Content.model_validate(body["systemInstruction"])


# ================================================================ parse: what the SDK sends


def test_parse_sdk_request_full():
    from google.genai import types
    body = sdk_body(
        [types.Content(role="user", parts=[types.Part(text="hi"),
                                           types.Part.from_bytes(data=b"\x89PNG", mime_type="image/png"),
                                           types.Part.from_uri(file_uri="https://x.test/a.png", mime_type="image/png")]),
         types.Content(role="model", parts=[
             types.Part(text="plan", thought=True),
             types.Part(text=" more", thought=True, thought_signature=b"sig-think"),
             types.Part(function_call=types.FunctionCall(name="f", args={"city": "P"}), thought_signature=b"sig-f1"),
             types.Part(function_call=types.FunctionCall(name="f", args={"city": "Q"})),
             types.Part(function_call=types.FunctionCall(name="g", args={}, id="given"))]),
         types.Content(role="user", parts=[
             types.Part.from_function_response(name="f", response={"output": "sunny"}),
             types.Part(function_response=types.FunctionResponse(name="g", id="given", response={"error": "boom"})),
             types.Part.from_function_response(name="f", response={"temp": 3})])],
        system_instruction="be nice", temperature=0.5, top_p=0.9, top_k=3, max_output_tokens=100,
        stop_sequences=["X"], candidate_count=1, seed=7, presence_penalty=0.1,
        response_mime_type="application/json",
        response_schema=types.Schema(type="OBJECT", properties={"a": types.Schema(type="STRING", nullable=True)}),
        thinking_config=types.ThinkingConfig(thinking_budget=3000, include_thoughts=True),
        safety_settings=[types.SafetySetting(category="HARM_CATEGORY_HATE_SPEECH", threshold="BLOCK_NONE")],
        tools=[types.Tool(function_declarations=[
            types.FunctionDeclaration(name="f", description="weather", parameters=types.Schema(
                type="OBJECT", properties={"city": types.Schema(type="STRING"),
                                           "days": types.Schema(type="INTEGER", max_items=3, nullable=True)},
                required=["city"], property_ordering=["city", "days"])),
            types.FunctionDeclaration(name="g", parameters_json_schema={
                "type": "object", "properties": {}, "additionalProperties": False})]),
            types.Tool(google_search=types.GoogleSearch())],
        tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(
            mode="ANY", allowed_function_names=["f"])),
    )
    req = request.parse_request(body, model="alias", stream=True)
    assert req.model == "alias" and req.stream is True
    assert req.system == [ir.Text("be nice")]
    user, model, results = req.messages
    assert user == ir.Message("user", [ir.Text("hi"), ir.Image("image/png", "iVBORw=="),
                                       ir.Image("image/png", url="https://x.test/a.png")])
    assert model.role == "assistant"
    assert model.parts == [
        ir.Thinking("plan more", signature="c2lnLXRoaW5r", source="gemini"),
        ir.ToolCall("call_1_0", "f", '{"city":"P"}', signature="c2lnLWYx"),
        ir.ToolCall("call_1_1", "f", '{"city":"Q"}'),
        ir.ToolCall("given", "g", "{}"),
    ]
    assert results.parts == [
        ir.ToolResult("call_1_0", "sunny", name="f"),
        ir.ToolResult("given", "boom", is_error=True, name="g"),
        ir.ToolResult("call_1_1", '{"temp":3}', name="f"),
    ]
    assert (req.temperature, req.top_p, req.top_k, req.max_tokens, req.stop, req.n) == (0.5, 0.9, 3, 100, ["X"], 1)
    assert (req.seed, req.presence_penalty, req.frequency_penalty) == (7, 0.1, None)
    assert req.response_format == {"type": "json_schema", "name": "response", "schema": {
        "type": "object", "properties": {"a": {"type": ["string", "null"]}}}}
    assert (req.thinking, req.thinking_budget, req.reasoning_effort) == (True, 3000, "medium")
    assert req.tools == [
        ir.Tool("f", "weather", {"type": "object", "properties": {
            "city": {"type": "string"}, "days": {"type": ["integer", "null"], "maxItems": 3}}, "required": ["city"]}),
        ir.Tool("g", None, {"type": "object", "properties": {}, "additionalProperties": False}),
    ]
    assert (req.tool_choice, req.tool_choice_name) == ("tool", "f")
    g = req.extra["gemini"]
    assert g["tools"] == [{"googleSearch": {}}]
    assert g["safetySettings"] == [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}]
    assert g["thinkingConfig"] == {"thinkingBudget": 3000, "includeThoughts": True}


def test_parse_camel_case_body_and_defaults():
    body = {
        "contents": [{"parts": [{"text": "q"}]},                      # no role → user
                     {"role": "user", "parts": [{"text": ""}, {"text": "more"}]}],
        "systemInstruction": {"role": "user", "parts": [{"text": "A"}, {"text": "B"}]},
        "generationConfig": {"maxOutputTokens": 10, "topK": 4.0, "stopSequences": ["s"],
                             "responseMimeType": "application/json",
                             "thinkingConfig": {"thinkingLevel": "LOW", "includeThoughts": True}},
        "toolConfig": {"functionCallingConfig": {"mode": "NONE"}},
    }
    req = request.parse_request(body, model="m")
    assert req.messages == [ir.Message("user", [ir.Text("q"), ir.Text("more")])]  # one message per turn
    assert req.system == [ir.Text("A"), ir.Text("B")]
    assert (req.max_tokens, req.top_k, req.stop) == (10, 4, ["s"])
    assert req.response_format == {"type": "json_object"}
    assert (req.thinking, req.reasoning_effort, req.thinking_budget) == (True, "low", None)
    assert req.tool_choice == "none" and req.stream is False


@pytest.mark.parametrize("cfg, want", [
    ({"thinkingBudget": 0}, (False, "none", None)),
    ({"thinking_budget": -1, "include_thoughts": True}, (True, "medium", None)),
    ({"thinkingBudget": 1024}, (True, "low", 1024)),
    ({"thinkingBudget": 8192}, (True, "medium", 8192)),
    ({"thinkingBudget": 20000}, (True, "high", 20000)),
    ({"includeThoughts": True}, (None, None, None)),
])
def test_parse_thinking_config(cfg, want):
    req = request.parse_request({"contents": [{"parts": [{"text": "x"}]}],
                                 "generationConfig": {"thinkingConfig": cfg}}, model="m")
    assert (req.thinking, req.reasoning_effort, req.thinking_budget) == want


def test_parse_signatures_from_our_encoder_come_back_as_anthropic():
    anth = encode.tag_anthropic("ErUBsig+/=")
    red = encode.tag_anthropic("opaque-data", redacted=True)
    body = {"contents": [{"role": "user", "parts": [{"text": "q"}]}, {"role": "model", "parts": [
        {"text": "Let me ", "thought": True}, {"text": "think", "thought": True},
        {"text": "", "thought": True, "thoughtSignature": anth.replace("+", "-").replace("/", "_")},
        {"text": "", "thought": True, "thoughtSignature": red},
        {"text": "", "thought": True, "thoughtSignature": "Z2VtLXNpZw=="},
        {"text": "Answer"}]}]}
    req = request.parse_request(body, model="m")
    assert req.messages[1].parts == [
        ir.Thinking("Let me think", signature="ErUBsig+/=", source="anthropic"),
        ir.Thinking("opaque-data", redacted=True, source="anthropic"),
        ir.Thinking("", signature="Z2VtLXNpZw==", source="gemini"),
        ir.Text("Answer"),
    ]


def test_parse_function_response_pairing_by_order_and_orphans():
    body = {"contents": [
        {"role": "model", "parts": [{"functionCall": {"name": "a", "args": {"i": 1}}},
                                    {"functionCall": {"name": "a", "args": {"i": 2}}},
                                    {"function_call": {"name": "b"}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "b", "response": {"output": "B"}}},
                                   {"functionResponse": {"name": "a", "response": {"output": "A1"}}},
                                   {"function_response": {"name": "a", "response": {"output": "A2"}}},
                                   {"functionResponse": {"name": "zzz", "response": {}}},
                                   {"functionResponse": {"name": "zzz", "id": "own", "response": {"x": [1]}}}]},
    ]}
    req = request.parse_request(body, model="m")
    assert [(r.call_id, r.content) for r in req.messages[1].parts] == [
        ("call_0_2", "B"), ("call_0_0", "A1"), ("call_0_1", "A2"), ("call_1_r3", "{}"), ("own", '{"x":[1]}')]


@pytest.mark.parametrize("body, param", [
    ({}, "contents"),
    ({"contents": []}, "contents"),
    ({"contents": ["hi"]}, "contents[0]"),
    ({"contents": [{"role": "system", "parts": [{"text": "x"}]}]}, "contents[0].role"),
    ({"contents": [{"parts": {"text": "x"}}]}, "contents[0].parts"),
    ({"contents": [{"parts": [{"text": 5}]}]}, "contents[0].parts[0].text"),
    ({"contents": [{"parts": [{"mystery": 1}]}]}, "contents[0].parts[0]"),
    ({"contents": [{"parts": [{}]}]}, "contents[0].parts[0]"),
    ({"contents": [{"parts": [{"functionCall": {"args": {}}}]}]}, "contents[0].parts[0].functionCall"),
    ({"contents": [{"parts": [{"functionCall": {"name": "f", "args": [1]}}]}]}, "contents[0].parts[0].functionCall.args"),
    ({"contents": [{"parts": [{"inlineData": {"mimeType": "image/png"}}]}]}, "contents[0].parts[0].inlineData"),
    ({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"temperature": "hot"}}, "generationConfig.temperature"),
    ({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"maxOutputTokens": 1.5}}, "generationConfig.maxOutputTokens"),
    ({"contents": [{"parts": [{"text": "x"}]}], "tools": [{"functionDeclarations": [{}]}]}, "tools[0].functionDeclarations[0]"),
    ({"contents": [{"parts": [{"text": "x"}]}], "systemInstruction": 5}, "systemInstruction"),
])
def test_parse_validation_errors(body, param):
    with pytest.raises(GatewayError) as ei:
        request.parse_request(body, model="m")
    assert ei.value.status == 400 and ei.value.kind == "invalid_request" and ei.value.param == param
    assert ei.value.message


def test_parse_requires_model():
    with pytest.raises(GatewayError) as ei:
        request.parse_request({"contents": [{"parts": [{"text": "x"}]}]})
    assert ei.value.param == "model"


# ================================================================ build


def conv() -> ir.Request:
    return ir.Request(
        model="alias",
        system=[ir.Text("sys", cache_control={"type": "ephemeral"})],
        messages=[
            ir.Message("user", [ir.Text("hello"), ir.Image("image/jpeg", "QUJD")]),
            ir.Message("user", [ir.Image(url="https://img.test/p.webp?x=1")]),
            ir.Message("system", [ir.Text("mid-system")]),
            ir.Message("assistant", [
                ir.Thinking("anthropic thought", signature="ErUB", source="anthropic"),
                ir.Thinking("unsigned"),
                ir.Thinking("", signature="plexus-gemini:R0VN", source=None),
                ir.Text("Calling."),
                ir.Thinking("", signature="VE9PTA==", source="gemini"),
                ir.ToolCall("call_1", "get", '{"k": 1}'),
                ir.ToolCall("call_2", "put", "not json", signature="c2ln"),
            ]),
            ir.Message("user", [
                ir.ToolResult("call_1", '{"ok": true}'),
                ir.ToolResult("call_2", [ir.Text("line1"), ir.Text("line2"), ir.Image("image/png", "UE5H")]),
                ir.ToolResult("nope", "bad", is_error=True),
            ]),
            ir.Message("assistant", [ir.ToolCall("call_3", "get", "{}")]),
        ],
        tools=[ir.Tool("get", "Get a thing", {"$schema": "http://json-schema.org/draft-07/schema#",
                                               "type": "object", "properties": {"k": {"$ref": "#/$defs/K"}},
                                               "$defs": {"K": {"type": "integer", "const": 1}},
                                               "additionalProperties": False}),
               ir.Tool("put", None, {})],
        tool_choice="tool", tool_choice_name="get",
        temperature=0.2, top_p=0.8, top_k=5, stop=["END"], max_tokens=256, reasoning_effort="high",
        response_format={"type": "json_schema", "name": "r", "schema": {"type": "object"}, "strict": True},
        user="u-1", parallel_tool_calls=False,
    )


def test_build_full_conversation():
    path, body = build(conv())
    assert path == "/models/gemini-2.5-flash:generateContent"
    assert body["systemInstruction"] == {"parts": [{"text": "sys"}, {"text": "mid-system"}]}
    assert body["contents"] == [
        {"role": "user", "parts": [
            {"text": "hello"}, {"inlineData": {"mimeType": "image/jpeg", "data": "QUJD"}},
            {"fileData": {"mimeType": "image/webp", "fileUri": "https://img.test/p.webp?x=1"}}]},
        {"role": "model", "parts": [
            {"text": "Calling.", "thoughtSignature": "R0VN"},
            {"functionCall": {"name": "get", "args": {"k": 1}}, "thoughtSignature": "VE9PTA=="},
            {"functionCall": {"name": "put", "args": {}}, "thoughtSignature": "c2ln"}]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "get", "response": {"ok": True}}},
            {"functionResponse": {"name": "put", "response": {"output": "line1\nline2"}}},
            {"functionResponse": {"name": "nope", "response": {"error": "bad"}}},
            {"inlineData": {"mimeType": "image/png", "data": "UE5H"}}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get", "args": {}},
                                     "thoughtSignature": SKIP_SIGNATURE}]},
    ]
    assert body["tools"] == [{"functionDeclarations": [
        {"name": "get", "description": "Get a thing", "parametersJsonSchema": {
            "type": "object", "properties": {"k": {"type": "integer", "enum": [1]}}, "additionalProperties": False}},
        {"name": "put", "parametersJsonSchema": {"type": "object", "properties": {}}}]}]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get"]}}
    assert body["generationConfig"] == {
        "temperature": 0.2, "topP": 0.8, "topK": 5, "maxOutputTokens": 256, "stopSequences": ["END"],
        "responseMimeType": "application/json", "responseJsonSchema": {"type": "object"},
        "thinkingConfig": {"thinkingBudget": 24576, "includeThoughts": True}}
    validate_with_sdk(body)


def test_build_stream_path_and_defaults():
    req = ir.Request(model="a", messages=[ir.Message("user", [ir.Text("x")])], stream=True)
    path, body = build(req, Prov(max_tokens=1000))
    assert path == "/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert body == {"contents": [{"role": "user", "parts": [{"text": "x"}]}],
                    "generationConfig": {"maxOutputTokens": 1000}}


@pytest.mark.parametrize("fields, want", [
    ({"reasoning_effort": "minimal"}, {"thinkingBudget": 1024, "includeThoughts": True}),
    ({"reasoning_effort": "low"}, {"thinkingBudget": 2048, "includeThoughts": True}),
    ({"reasoning_effort": "medium"}, {"thinkingBudget": 8192, "includeThoughts": True}),
    ({"reasoning_effort": "xhigh"}, {"thinkingBudget": 32768, "includeThoughts": True}),
    ({"reasoning_effort": "none"}, {"thinkingBudget": 0}),
    ({"thinking": False}, {"thinkingBudget": 0}),
    ({"thinking": True, "thinking_budget": 5000, "reasoning_effort": "medium"},
     {"thinkingBudget": 5000, "includeThoughts": True}),
    ({"thinking": True}, {"thinkingBudget": -1, "includeThoughts": True}),
    ({}, None),
])
def test_build_thinking(fields, want):
    req = ir.Request(model="a", messages=[ir.Message("user", [ir.Text("x")])], **fields)
    _, body = build(req)
    assert body.get("generationConfig", {}).get("thinkingConfig") == want
    _, body = build(req, Prov(reasoning=False))
    assert "thinkingConfig" not in body.get("generationConfig", {})


@pytest.mark.parametrize("choice, name, want", [
    ("auto", None, {"mode": "AUTO"}), ("none", None, {"mode": "NONE"}), ("required", None, {"mode": "ANY"}),
    ("tool", "t", {"mode": "ANY", "allowedFunctionNames": ["t"]}),
])
def test_build_tool_choice(choice, name, want):
    req = ir.Request(model="a", messages=[ir.Message("user", [ir.Text("x")])],
                     tools=[ir.Tool("t", None, {"type": "object"})], tool_choice=choice, tool_choice_name=name)
    _, body = build(req)
    assert body["toolConfig"] == {"functionCallingConfig": want}


def test_build_signature_placement_rules():
    req = ir.Request(model="a", messages=[ir.Message("assistant", [
        ir.Text("a"), ir.Thinking("", signature="VFJBSUw=", source="gemini"),
    ]), ir.Message("user", [ir.Text("q")]), ir.Message("assistant", [
        ir.Thinking("", signature="T05MWQ==", source="gemini"),
    ]), ir.Message("user", [ir.Text("q2")]), ir.Message("assistant", [
        ir.Thinking("thought text", signature="VA==", source="gemini"),
        ir.ToolCall("c1", "f", "{}"), ir.ToolCall("c2", "f", "{}"),
    ])])
    _, body = build(req)
    assert body["contents"][0]["parts"] == [{"text": "a", "thoughtSignature": "VFJBSUw="}]
    assert body["contents"][2]["parts"] == [{"text": "", "thought": True, "thoughtSignature": "T05MWQ=="}]
    assert body["contents"][4]["parts"] == [
        {"text": "thought text", "thought": True, "thoughtSignature": "VA=="},
        {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": SKIP_SIGNATURE},
        {"functionCall": {"name": "f", "args": {}}}]
    validate_with_sdk(body)


@pytest.mark.parametrize("img, want", [
    (ir.Image(url="data:image/gif;base64,R0lG"), {"inlineData": {"mimeType": "image/gif", "data": "R0lG"}}),
    (ir.Image(url="gs://bucket/x.png"), {"fileData": {"mimeType": "image/png", "fileUri": "gs://bucket/x.png"}}),
    (ir.Image(url="https://h.test/img"), {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://h.test/img"}}),
    (ir.Image(media_type="image/png", url="http://h.test/x.jpg"),
     {"fileData": {"mimeType": "image/png", "fileUri": "http://h.test/x.jpg"}}),
])
def test_build_images(img, want):
    _, body = build(ir.Request(model="a", messages=[ir.Message("user", [img])]))
    assert body["contents"][0]["parts"] == [want]


@pytest.mark.parametrize("url", ["ftp://h.test/x.png", "file:///etc/passwd", "data:image/png,raw", "nope"])
def test_build_bad_image_url_is_400(url):
    with pytest.raises(GatewayError) as ei:
        build(ir.Request(model="a", messages=[ir.Message("user", [ir.Text("x"), ir.Image(url=url)])]))
    assert ei.value.status == 400 and ei.value.param == "messages[0].content[1]"


def test_build_n_greater_than_one_is_400():
    with pytest.raises(GatewayError) as ei:
        build(ir.Request(model="a", messages=[ir.Message("user", [ir.Text("x")])], n=2))
    assert ei.value.status == 400 and ei.value.param == "n"


def test_build_legacy_v1_uses_the_schema_subset():
    req = ir.Request(model="a", messages=[ir.Message("user", [ir.Text("x")])],
                     tools=[ir.Tool("t", None, {"type": "object", "properties": {"a": {"type": ["string", "null"]}},
                                                "additionalProperties": False})],
                     response_format={"type": "json_schema", "schema": {"type": "object", "properties": {
                         "n": {"type": "integer", "format": "uint8"}}}})
    _, body = build(req, Prov(base_path="/v1"))
    assert body["tools"][0]["functionDeclarations"][0]["parameters"] == {
        "type": "OBJECT", "properties": {"a": {"type": "STRING", "nullable": True}}}
    assert body["generationConfig"]["responseSchema"] == {"type": "OBJECT", "properties": {"n": {"type": "INTEGER"}}}
    validate_with_sdk(body)


def test_build_keeps_gemini_only_fields_from_a_gemini_client():
    body_in = {"contents": [{"role": "user", "parts": [{"text": "x"}]}],
               "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
               "tools": [{"googleSearch": {}}, {"functionDeclarations": [{"name": "f"}]}],
               "generationConfig": {"responseModalities": ["TEXT"], "thinkingConfig": {"thinkingLevel": "HIGH"},
                                    "seed": 3, "frequencyPenalty": 0.5}}
    _, body = build(request.parse_request(body_in, model="m"))
    assert body["safetySettings"] == body_in["safetySettings"]
    assert body["tools"] == [{"functionDeclarations": [{"name": "f", "parametersJsonSchema": {
        "type": "object", "properties": {}}}]}, {"googleSearch": {}}]
    assert body["generationConfig"] == {"responseModalities": ["TEXT"], "seed": 3, "frequencyPenalty": 0.5,
                                        "thinkingConfig": {"thinkingLevel": "HIGH"}}


def test_round_trip_parse_build_parse():
    """IR → Gemini body → IR keeps messages, tools and settings (ids are not sent to Gemini)."""
    req = ir.Request(
        model="m", system=[ir.Text("S")],
        messages=[ir.Message("user", [ir.Text("q"), ir.Image("image/png", "QQ==")]),
                  ir.Message("assistant", [ir.Thinking("t", signature="U0lH", source="gemini"),
                                           ir.Text("ok", signature="VFhU"),
                                           ir.ToolCall("x", "f", '{"a":[1,2]}', signature="RkM=")]),
                  ir.Message("user", [ir.ToolResult("x", "done", name="f")])],
        tools=[ir.Tool("f", "desc", {"type": "object", "properties": {"a": {"type": "array"}}})],
        temperature=1.0, max_tokens=50, stop=["z"], thinking=True, thinking_budget=4000)
    _, body = build(req)
    back = request.parse_request(body, model="m")
    assert back.system == req.system
    assert back.messages[0] == req.messages[0]
    assert back.messages[1].parts == [ir.Thinking("t", signature="U0lH", source="gemini"),
                                      ir.Text("ok", signature="VFhU"),
                                      ir.ToolCall("call_1_0", "f", '{"a":[1,2]}', signature="RkM=")]
    assert back.messages[2].parts == [ir.ToolResult("call_1_0", "done", name="f")]
    assert back.tools == req.tools
    assert (back.temperature, back.max_tokens, back.stop, back.thinking_budget) == (1.0, 50, ["z"], 4000)


# ================================================================ fuzz: only GatewayError escapes

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

_j = st.recursive(st.none() | st.booleans() | st.integers(-2, 3) | st.floats(allow_nan=False, width=16)
                  | st.text(max_size=4), lambda k: st.lists(k, max_size=3)
                  | st.dictionaries(st.text(max_size=3), k, max_size=3), max_leaves=5)
_pkeys = ["text", "thought", "thoughtSignature", "functionCall", "functionResponse", "inlineData",
          "fileData", "function_call", "inline_data"]
_part = st.dictionaries(st.sampled_from(_pkeys), _j | st.fixed_dictionaries({}, optional={
    "name": _j, "args": _j, "id": _j, "response": _j, "data": _j, "mimeType": _j, "fileUri": _j}), max_size=2)
_content = st.fixed_dictionaries({}, optional={"role": st.sampled_from(["user", "model", "x"]) | _j,
                                               "parts": st.lists(_part, max_size=3) | _j})
_body = st.fixed_dictionaries({"contents": st.lists(_content, min_size=1, max_size=3) | _j}, optional={
    "systemInstruction": _j | _content,
    "tools": st.lists(st.fixed_dictionaries({}, optional={"functionDeclarations": st.lists(
        st.fixed_dictionaries({}, optional={"name": _j | st.just("f"), "parameters": _j,
                                            "parametersJsonSchema": _j, "description": _j}), max_size=2) | _j,
        "googleSearch": _j}), max_size=2) | _j,
    "toolConfig": st.fixed_dictionaries({}, optional={"functionCallingConfig": st.fixed_dictionaries(
        {}, optional={"mode": _j, "allowedFunctionNames": _j})}) | _j,
    "generationConfig": st.dictionaries(st.sampled_from(
        ["temperature", "topK", "maxOutputTokens", "stopSequences", "candidateCount", "responseMimeType",
         "responseSchema", "responseJsonSchema", "thinkingConfig", "seed"]), _j | st.fixed_dictionaries(
        {}, optional={"thinkingBudget": _j, "thinkingLevel": _j, "includeThoughts": _j}), max_size=4) | _j,
})


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_body)
def test_parse_and_build_raise_only_gateway_errors(body):
    try:
        req = request.parse_request(body, model="m")
    except GatewayError as e:
        assert e.status == 400 and e.message
        return
    try:
        gbuild.build_request(req, "gm", Prov())
    except GatewayError as e:
        assert e.status == 400
