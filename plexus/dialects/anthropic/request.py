"""Anthropic Messages: a client's request body -> IR (`parse_request`; `model_and_stream`, the
gateway's first look at the body). The way back, IR -> a provider's body, is build.py.

Pure functions: no I/O, no clocks, no module state mutated.  The main client is Claude Code 2.x
(`POST /v1/messages?beta=true`, always streaming), so everything it sends must parse, and nothing
it sends may become an error when the target is another provider type: what the IR cannot carry
is mapped to the nearest equivalent or dropped, as listed here.

Parse (client body -> ir.Request)
- `system` string or text blocks (cache_control kept) -> req.system.  A `role: "system"` message
  inside `messages` -> ir.Message(role="system").
- Blocks: text (cache_control), image (base64 | url; `file` sources have no IR form: dropped),
  tool_use {id, name, input, ...} -> ToolCall(arguments=JSON text of input; the other keys, e.g.
  cache_control/caller, -> ToolCall.extra), tool_result {tool_use_id, content str|[text,image],
  is_error, cache_control} -> ToolResult (other result content such as documents, search results
  and tool_reference blocks is dropped), thinking {thinking, signature} -> Thinking whose
  `source` comes from signatures.unwrap_sig ("anthropic", or "gemini" for "plexus-gemini:"
  signatures; no signature -> unsigned), redacted_thinking {data} -> Thinking(redacted=True).
  A signature-only Gemini thinking block (thinking "") directly before a tool_use or text block is
  folded back onto that part (ToolCall.signature / Text.signature): the exact inverse of what the
  encoders emit for Gemini signatures.
- document blocks: text source -> Text (title, if any, on its own first line); content source ->
  its text blocks; base64 / url PDF -> Image(media_type="application/pdf") (the IR's "binary
  attachment"; Gemini takes it as inlineData, OpenAI targets may reject it); file source dropped.
  search_result -> its text; compaction -> its summary text.
- Server-tool blocks (server_tool_use, web_search_tool_result, web_fetch_tool_result,
  code_execution_*, mcp_tool_*, container_upload, ...) and unknown block types: no IR form,
  dropped for other targets.
- tools: custom tools {name, description, input_schema, cache_control, ...}: input_schema kept as
  is ($schema, additionalProperties included); other keys (defer_loading, strict, input_examples,
  eager_input_streaming, allowed_callers, type "custom") -> Tool.extra.  Server / Anthropic-defined
  tools (any other `type`, e.g. web_search_20250305, bash_20250124, text_editor_*, computer_*,
  code_execution_*, memory_*, tool_search_*, mcp_toolset) are dropped for other targets: they only
  run at Anthropic (or have no schema a model elsewhere was trained on).
- tool_choice {auto|any|none|tool} -> "auto"|"required"|"none"|"tool" (+tool_choice_name);
  disable_parallel_tool_use -> parallel_tool_calls = not it.
- thinking {enabled, budget_tokens} -> thinking True + thinking_budget; {disabled} -> thinking
  False + reasoning_effort "none"; {adaptive} (and any future type) -> thinking True +
  reasoning_effort from output_config.effort ("max" -> "xhigh", default "medium").
  output_config.effort without thinking -> reasoning_effort.
- output_config.format / beta `output_format` {type: json_schema, schema} -> response_format
  {"type": "json_schema", "name": "output", "schema", "strict": True}.
- metadata.user_id -> user (kept verbatim, it is a JSON string from Claude Code).
- max_tokens: optional here (missing -> None; the builder fills provider.max_tokens).

Same-dialect fidelity (Anthropic client -> Anthropic provider, e.g. Claude Code): what the IR
cannot carry is kept in req.extra["anthropic"] = {"fields": {top-level keys the IR does not
model, verbatim: thinking, output_config, output_format, metadata, context_management,
container, service_tier, speed, cache_control, ...}, "raw": {message index: original content
list} for messages holding a block the IR cannot express exactly, "tools": the original tool
list when it has server tools, "system": the original system when a block has keys beyond
text/cache_control}.  `build_request` uses these only for Anthropic targets; other builders
ignore req.extra["anthropic"].
"""

from __future__ import annotations

from ... import ir
from ...errors import invalid
from ..common import body_model, body_stream, from_body
from .build import build_request  # noqa: F401  (its old place: tests/test_anthropic_fuzz.py imports it here)
from .decode import cache_control, parse_blocks

__all__ = ["parse_request", "model_and_stream"]

_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh", "max": "xhigh",
            "minimal": "minimal", "none": "none"}
_TOOL_CHOICE = {"auto": "auto", "any": "required", "none": "none", "tool": "tool"}

# top-level keys the IR models; everything else is kept verbatim for Anthropic targets
_MODELLED = frozenset({"model", "messages", "system", "max_tokens", "temperature", "top_p", "top_k",
                       "stop_sequences", "stream", "tools", "tool_choice"})

_CUSTOM_TOOL_KEYS = frozenset({"name", "description", "input_schema", "cache_control"})

model_and_stream = from_body("messages")


# ============================================================== parse: client -> IR

def _number_field(body: dict, key: str, kind=(int, float)):
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, kind):
        raise invalid(f"{key}: expected a number", param=key)
    return v


def _text_blocks(value, param: str) -> list[ir.Text]:
    """`system` or a system message's content: a string or a list of text blocks."""
    if isinstance(value, str):
        return [ir.Text(value)] if value else []
    if not isinstance(value, list):
        raise invalid(f"{param}: expected a string or a list of text blocks", param=param)
    out = []
    for j, b in enumerate(value):
        if not isinstance(b, dict):
            raise invalid(f"{param}[{j}]: expected an object", param=f"{param}[{j}]")
        t = b.get("text")
        if b.get("type", "text") != "text" or not isinstance(t, str):
            raise invalid(f"{param}[{j}]: expected a text block with a string `text`", param=f"{param}[{j}]")
        out.append(ir.Text(t, cache_control(b)))
    return out


def _parse_tools(tools, anth: dict) -> list[ir.Tool]:
    if not isinstance(tools, list):
        raise invalid("tools: expected a list", param="tools")
    out = []
    server = False
    for i, t in enumerate(tools):
        p = f"tools[{i}]"
        if not isinstance(t, dict):
            raise invalid(f"{p}: expected an object", param=p)
        ttype = t.get("type")
        if ttype not in (None, "custom"):
            server = True    # server / Anthropic-defined tool: Anthropic targets only
            continue
        name, schema = t.get("name"), t.get("input_schema")
        if not isinstance(name, str) or not name:
            raise invalid(f"{p}.name: expected a non-empty string", param=f"{p}.name")
        if schema is None:
            schema = {"type": "object", "properties": {}}
        elif not isinstance(schema, dict):
            raise invalid(f"{p}.input_schema: expected an object", param=f"{p}.input_schema")
        desc = t.get("description")
        extra = {k: v for k, v in t.items() if k not in _CUSTOM_TOOL_KEYS} or None
        out.append(ir.Tool(name, desc if isinstance(desc, str) else None, schema, cache_control(t), extra))
    if server:
        anth["tools"] = tools
    return out


def _parse_tool_choice(tc, req: ir.Request) -> None:
    if not isinstance(tc, dict):
        raise invalid("tool_choice: expected an object", param="tool_choice")
    t = tc.get("type")
    kind = _TOOL_CHOICE.get(t) if isinstance(t, str) else None
    if kind is None:
        raise invalid("tool_choice.type: expected one of auto, any, none, tool", param="tool_choice.type")
    req.tool_choice = kind
    if kind == "tool":
        name = tc.get("name")
        if not isinstance(name, str) or not name:
            raise invalid("tool_choice.name: required when type is tool", param="tool_choice.name")
        req.tool_choice_name = name
    dp = tc.get("disable_parallel_tool_use")
    if isinstance(dp, bool):
        req.parallel_tool_calls = not dp


def _parse_thinking(body: dict, req: ir.Request) -> None:
    th = body.get("thinking")
    oc = body.get("output_config")
    effort = oc.get("effort") if isinstance(oc, dict) else None
    effort = _EFFORTS.get(effort) if isinstance(effort, str) else None
    if th is None:
        req.reasoning_effort = effort
        return
    if not isinstance(th, dict) or not isinstance(th.get("type"), str):
        raise invalid("thinking: expected an object with a `type`", param="thinking")
    t = th["type"]
    if t == "disabled":
        req.thinking = False
        req.reasoning_effort = "none"
    elif t == "enabled":
        budget = th.get("budget_tokens")
        if isinstance(budget, bool) or not isinstance(budget, int):
            raise invalid("thinking.budget_tokens: expected an integer", param="thinking.budget_tokens")
        req.thinking = True
        req.thinking_budget = budget
        req.reasoning_effort = effort
    else:  # "adaptive" and future types: the model decides, guided by the effort
        req.thinking = True
        req.reasoning_effort = effort or "medium"


def _parse_format(body: dict, req: ir.Request) -> None:
    oc = body.get("output_config")
    fmt = oc.get("format") if isinstance(oc, dict) else None
    if fmt is None:
        fmt = body.get("output_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        req.response_format = {"type": "json_schema", "name": "output", "schema": fmt["schema"], "strict": True}


def parse_request(body: dict, *, model: str | None = None, stream: bool | None = None) -> ir.Request:
    if not isinstance(body, dict):
        raise invalid("request body must be a JSON object")
    if model is None:
        model = body_model(body)
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise invalid("messages: expected a non-empty list of messages", param="messages")
    raw: dict[int, list] = {}
    messages = []
    for i, m in enumerate(msgs):
        p = f"messages[{i}]"
        if not isinstance(m, dict):
            raise invalid(f"{p}: expected an object", param=p)
        role = m.get("role")
        if role not in ("user", "assistant", "system"):
            raise invalid(f"{p}.role: expected user, assistant or system", param=f"{p}.role")
        c = m.get("content")
        if role == "system":
            parts = _text_blocks(c, f"{p}.content")
        elif isinstance(c, str):
            parts = [ir.Text(c)] if c else []
        elif isinstance(c, list):
            parts, exact = parse_blocks(c, f"{p}.content")
            if not exact:
                raw[i] = c
        else:
            raise invalid(f"{p}.content: expected a string or a list of content blocks", param=f"{p}.content")
        messages.append(ir.Message(role, parts))

    fields = {k: v for k, v in body.items() if k not in _MODELLED}
    anth: dict = {"fields": fields, "raw": raw}
    req = ir.Request(model=model, messages=messages, extra={"anthropic": anth})

    system = body.get("system")
    if system is not None:
        req.system = _text_blocks(system, "system")
        if isinstance(system, list) and any(b.keys() - {"type", "text", "cache_control"} for b in system):
            anth["system"] = system
    mt = body.get("max_tokens")
    if mt is not None:
        if isinstance(mt, bool) or not isinstance(mt, int) or mt < 1:
            raise invalid("max_tokens: expected a positive integer", param="max_tokens")
        req.max_tokens = mt
    req.temperature = _number_field(body, "temperature")
    req.top_p = _number_field(body, "top_p")
    req.top_k = _number_field(body, "top_k", int)
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise invalid("stop_sequences: expected a list of strings", param="stop_sequences")
        req.stop = stops
    req.stream = body_stream(body) if stream is None else stream
    md = body.get("metadata")
    if md is not None:
        if not isinstance(md, dict):
            raise invalid("metadata: expected an object", param="metadata")
        uid = md.get("user_id")
        if isinstance(uid, str) and uid:
            req.user = uid
    tools = body.get("tools")
    if tools is not None:
        req.tools = _parse_tools(tools, anth)
    tc = body.get("tool_choice")
    if tc is not None:
        _parse_tool_choice(tc, req)
    _parse_thinking(body, req)
    _parse_format(body, req)
    return req
