"""Responses dialect, non-stream: IR → the `response` object (`render_response`) and errors.

Theory: every answer must validate as the openai SDK's `Response` with no field the SDK does not
know (`strict`: pydantic keeps unknown fields in `model_extra`, so a typo would pass a plain
model_validate), and carry the IR's content: text as `message` items (`output_text` works),
thinking as `reasoning` items whose `encrypted_content` unwraps (names.unwrap_reasoning) to the
source, signature and text a later request needs, tool calls as `function_call` items with the
client's own names (namespace split back) or as `custom_tool_call` items; the stop reason gives
status/incomplete_details, the usage the Responses usage object (prompt total incl. cache).
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from openai.types.responses import Response, ResponseErrorEvent
from pydantic import BaseModel

from plexus import ir
from plexus.dialects.anthropic import decode as adecode
from plexus.dialects.gemini import decode as gdecode
from plexus.dialects.openai import decode as odecode
from plexus.dialects.responses.encode import (STREAM_CONTENT_TYPE, error_code, error_event, error_object,
                                              render_response)
from plexus.dialects.responses.names import flat_name, unwrap_reasoning, wrap_reasoning
from plexus.errors import GatewayError, stream_cut

FIX = Path(__file__).parent / "fixtures"


def ctx(upstream: str = "anthropic", **extra) -> ir.Context:
    return ir.Context(model="ctx-model", id_seed="5eed", created=1700000000,
                      extra={"upstream": upstream, **extra})


# what api.openai.com sends that the SDK's types do not declare (a real answer carries "store")
SENT_BUT_UNDECLARED = {Response: {"store"}}


def strict(m, path: str = "$") -> None:
    """No field the SDK type does not declare, anywhere in the model."""
    if isinstance(m, BaseModel):
        extra = set(m.model_extra or ()) - SENT_BUT_UNDECLARED.get(type(m), set())
        assert not extra, f"{path}: unknown fields {sorted(extra)}"
        for name in type(m).model_fields:
            strict(getattr(m, name), f"{path}.{name}")
    elif isinstance(m, (list, tuple)):
        for i, x in enumerate(m):
            strict(x, f"{path}[{i}]")
    elif isinstance(m, dict):
        for k, v in m.items():
            strict(v, f"{path}.{k}")


def render(parts, c: ir.Context | None = None, stop="end_turn", usage=None, model="up-model"):
    body = render_response(ir.Response("up-id", model, parts, stop, None, usage or ir.Usage()), c or ctx())
    obj = orjson.loads(body)
    r = Response.model_validate(obj)
    strict(r)
    return obj, r


# ---------------------------------------------------------------- the object

def test_text_and_the_response_object_defaults():
    obj, r = render([ir.Text("Hello"), ir.Text(" world")])
    assert r.output_text == "Hello world"
    assert obj["id"] == "resp_5eed" and obj["object"] == "response" and obj["created_at"] == 1700000000
    assert obj["model"] == "up-model" and obj["status"] == "completed"
    assert obj["error"] is None and obj["incomplete_details"] is None
    assert obj["parallel_tool_calls"] is True and obj["tool_choice"] == "auto" and obj["tools"] == []
    assert obj["text"] == {"format": {"type": "text"}} and obj["truncation"] == "disabled"
    assert obj["store"] is False and obj["metadata"] == {} and obj["reasoning"] == {"effort": None, "summary": None}
    assert obj["output"] == [
        {"id": "msg_5eed_0", "type": "message", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "Hello", "annotations": [], "logprobs": []}]},
        {"id": "msg_5eed_1", "type": "message", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": " world", "annotations": [], "logprobs": []}]}]
    assert STREAM_CONTENT_TYPE == b"text/event-stream"


def test_model_falls_back_to_the_context_and_empty_parts_make_no_items():
    obj, r = render([ir.Text(""), ir.Thinking("")], model="")
    assert obj["model"] == "ctx-model" and obj["output"] == [] and r.output_text == ""


def test_echo_replaces_defaults_but_not_computed_fields():
    tools = [{"type": "function", "name": "f", "description": None, "parameters": {"type": "object"},
              "strict": False}]
    echo = {"instructions": "Be brief.", "tools": tools, "tool_choice": "required", "max_output_tokens": 99,
            "temperature": 0.5, "metadata": {"k": "v"}, "store": False,
            "reasoning": {"effort": "high", "summary": "auto"},
            "id": "resp_client", "status": "queued", "output": [1], "usage": {}, "model": "nope"}
    obj, r = render([ir.Text("x")], ctx(responses_echo=echo))
    assert obj["instructions"] == "Be brief." and obj["tools"] == tools and obj["tool_choice"] == "required"
    assert obj["max_output_tokens"] == 99 and obj["temperature"] == 0.5 and obj["metadata"] == {"k": "v"}
    assert obj["reasoning"] == {"effort": "high", "summary": "auto"}
    assert obj["id"] == "resp_5eed" and obj["status"] == "completed" and obj["model"] == "up-model"
    assert r.output_text == "x" and obj["usage"]["total_tokens"] == 0


# ---------------------------------------------------------------- reasoning

def _enc(item) -> dict:
    doc = unwrap_reasoning(item["encrypted_content"])
    assert doc is not None
    return doc


def test_signed_anthropic_thinking_keeps_signature_and_text():
    obj, _ = render([ir.Thinking("Let me think.", "sig-A", source="anthropic"), ir.Text("Done.")])
    rs, msg = obj["output"]
    assert rs["id"] == "rs_5eed_0" and rs["type"] == "reasoning" and msg["id"] == "msg_5eed_1"
    assert rs["summary"] == [{"type": "summary_text", "text": "Let me think."}]
    assert _enc(rs) == {"p": "anthropic", "s": "sig-A", "t": "Let me think.", "r": False}
    assert rs["encrypted_content"] == wrap_reasoning("anthropic", "sig-A", "Let me think.")


def test_gemini_thinking_and_signature_sources():
    obj, _ = render([ir.Thinking("hm", "g-sig", source="gemini")], ctx("gemini"))
    assert _enc(obj["output"][0]) == {"p": "gemini", "s": "g-sig", "t": "hm", "r": False}
    # no source on the part: a "plexus-gemini:" tag (an OpenAI hop) → gemini, untagged: by upstream
    obj, _ = render([ir.Thinking("a", "plexus-gemini:g2"), ir.Thinking("b", "s3")], ctx("openai"))
    assert _enc(obj["output"][0])["p"] == "gemini" and _enc(obj["output"][0])["s"] == "g2"
    assert _enc(obj["output"][1]) == {"p": "anthropic", "s": "s3", "t": "b", "r": False}
    obj, _ = render([ir.Thinking("c", "s4")], ctx("gemini"))
    assert _enc(obj["output"][0])["p"] == "gemini"


def test_unsigned_thinking_has_null_encrypted_content():
    obj, _ = render([ir.Thinking("reasoning_content text")], ctx("openai"))
    assert obj["output"] == [{"id": "rs_5eed_0", "type": "reasoning",
                              "summary": [{"type": "summary_text", "text": "reasoning_content text"}],
                              "encrypted_content": None}]


def test_redacted_thinking_has_no_summary_and_keeps_its_data():
    obj, _ = render([ir.Thinking("opaque==", redacted=True, source="anthropic")])
    rs = obj["output"][0]
    assert rs["summary"] == []
    assert _enc(rs) == {"p": "anthropic", "s": None, "t": "opaque==", "r": True}


def test_signature_only_thinking_is_an_item_without_summary():
    obj, _ = render([ir.Thinking("", "sig-only", source="anthropic")])
    assert obj["output"][0]["summary"] == [] and _enc(obj["output"][0])["s"] == "sig-only"


# ---------------------------------------------------------------- tool calls

def test_function_call_item():
    obj, r = render([ir.Text("Checking."), ir.ToolCall("call_1", "get_weather", '{"city":"Paris"}')], stop="tool_use")
    assert obj["output"][1] == {"id": "fc_5eed_1", "type": "function_call", "status": "completed",
                                "arguments": '{"city":"Paris"}', "call_id": "call_1", "name": "get_weather"}
    assert obj["status"] == "completed" and r.output_text == "Checking."


def test_namespaced_call_gets_its_namespace_back():
    flat = flat_name("mcp__files", "read")
    odd = flat_name("my.server", "do thing")            # renamed (hashed) flat name
    names = {flat: ("mcp__files", "read"), odd: ("my.server", "do thing")}
    obj, _ = render([ir.ToolCall("c1", flat, "{}"), ir.ToolCall("c2", odd, "{}"), ir.ToolCall("c3", "plain", "{}")],
                    ctx(tool_names=names))
    a, b, c = obj["output"]
    assert (a["namespace"], a["name"]) == ("mcp__files", "read")
    assert (b["namespace"], b["name"]) == ("my.server", "do thing")
    assert c["name"] == "plain" and "namespace" not in c


def test_custom_tool_call_item():
    obj, _ = render([ir.ToolCall("c1", "apply_patch", '{"input":"*** Begin Patch\\n"}'),
                     ir.ToolCall("c2", "apply_patch", "not json"),
                     ir.ToolCall("c3", "apply_patch", '{"other": 1}')],
                    ctx(custom_tools={"apply_patch"}))
    assert obj["output"][0] == {"id": "ctc_5eed_0", "type": "custom_tool_call", "call_id": "c1",
                                "name": "apply_patch", "input": "*** Begin Patch\n"}
    assert obj["output"][1]["input"] == "not json" and obj["output"][2]["input"] == '{"other": 1}'


def test_gemini_signatures_become_reasoning_items_before_their_item():
    obj, _ = render([ir.Text("I'll look.", signature="t-sig"),
                     ir.ToolCall("c1", "search", '{"q":1}', signature="c-sig")], ctx("gemini"))
    kinds = [(o["type"], o["id"]) for o in obj["output"]]
    assert kinds == [("reasoning", "rs_5eed_0"), ("message", "msg_5eed_1"), ("reasoning", "rs_5eed_2"),
                     ("function_call", "fc_5eed_3")]
    for i, sig in ((0, "t-sig"), (2, "c-sig")):
        assert obj["output"][i]["summary"] == []
        assert obj["output"][i]["encrypted_content"] == wrap_reasoning("gemini", sig, "")


# ---------------------------------------------------------------- status and usage

@pytest.mark.parametrize("stop,status,details", [
    ("end_turn", "completed", None), ("stop_sequence", "completed", None), ("tool_use", "completed", None),
    ("pause_turn", "completed", None), ("error", "completed", None),
    ("max_tokens", "incomplete", {"reason": "max_output_tokens"}),
    ("refusal", "incomplete", {"reason": "content_filter"}),
])
def test_stop_reason_gives_status(stop, status, details):
    obj, r = render([ir.Text("x")], stop=stop)
    assert obj["status"] == status and obj["incomplete_details"] == details
    assert r.status == status


def test_usage_mapping():
    u = ir.Usage(input_tokens=100, output_tokens=50, cache_read_tokens=30, cache_creation_tokens=20,
                 reasoning_tokens=12)
    obj, r = render([ir.Text("x")], usage=u)
    assert obj["usage"] == {"input_tokens": 150,
                            "input_tokens_details": {"cached_tokens": 30, "cache_write_tokens": 20},
                            "output_tokens": 50, "output_tokens_details": {"reasoning_tokens": 12},
                            "total_tokens": 200}
    obj, _ = render([ir.Text("x")])
    assert obj["usage"]["input_tokens"] == 0 and obj["usage"]["total_tokens"] == 0


# ---------------------------------------------------------------- real provider answers

@pytest.mark.parametrize("src,name", [
    ("anthropic", "message_text.json"), ("anthropic", "message_tools_thinking.json"),
    ("openai", "completion_tools.json"), ("gemini", "response_tools.json"), ("gemini", "response_blocked.json"),
])
def test_provider_answers_render_valid_responses(src, name):
    dec = {"anthropic": adecode, "openai": odecode, "gemini": gdecode}[src]
    resp = dec.parse_response((FIX / src / name).read_bytes())
    obj, r = render(resp.parts, ctx(src), resp.stop_reason, resp.usage, resp.model)
    texts = "".join(p.text for p in resp.parts if isinstance(p, ir.Text))
    assert r.output_text == texts
    calls = [(o["call_id"], o["name"], o["arguments"]) for o in obj["output"] if o["type"] == "function_call"]
    assert calls == [(p.id, p.name, p.arguments) for p in resp.parts if isinstance(p, ir.ToolCall)]
    assert obj["usage"]["input_tokens"] == resp.usage.prompt_total
    ids = [o["id"] for o in obj["output"]]
    assert len(set(ids)) == len(ids)


def test_tools_thinking_fixture_in_detail():
    resp = adecode.parse_response((FIX / "anthropic" / "message_tools_thinking.json").read_bytes())
    obj, _ = render(resp.parts, ctx("anthropic"), resp.stop_reason, resp.usage, resp.model)
    assert [o["type"] for o in obj["output"]] == ["reasoning", "message", "function_call", "reasoning"]
    assert _enc(obj["output"][0])["t"] == "Let me check the weather."
    assert _enc(obj["output"][3])["r"] is True
    assert orjson.loads(obj["output"][2]["arguments"]) == {"location": "San Francisco, CA", "unit": "celsius"}
    assert obj["usage"]["input_tokens"] == 2095 + 1800 + 100
    assert obj["usage"]["input_tokens_details"]["cached_tokens"] == 1800


# ---------------------------------------------------------------- errors

def test_error_object_is_openais():
    e = GatewayError(429, "slow down", param="model")
    assert error_object(e) == {"error": {"message": "slow down", "type": "rate_limit_error", "param": "model",
                                         "code": None}}


def test_error_event():
    ev = error_event(GatewayError(429, "slow down"))
    head, _, data = ev.partition(b"\ndata: ")
    assert head == b"event: error" and ev.endswith(b"}\n\n") and data.count(b"\n") == 2
    obj = orjson.loads(data)
    assert obj == {"type": "error", "code": "rate_limit_exceeded", "message": "slow down", "param": None,
                   "sequence_number": 0}
    strict(ResponseErrorEvent.model_validate(obj))
    assert orjson.loads(error_event(stream_cut()).split(b"data: ")[1])["code"] == "server_error"
    assert orjson.loads(error_event(GatewayError(400, "bad", code="context_length_exceeded"))
                        .split(b"data: ")[1])["code"] == "context_length_exceeded"


@pytest.mark.parametrize("status,code", [(429, "rate_limit_exceeded"), (400, "invalid_prompt"), (500, "server_error"),
                                         (502, "server_error"), (529, "server_error"), (401, "server_error")])
def test_error_codes_are_the_sdks(status, code):
    assert error_code(GatewayError(status, "x")) == code
