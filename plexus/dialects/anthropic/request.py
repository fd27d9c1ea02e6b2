"""Anthropic Messages requests: client body -> IR (`parse_request`), IR -> provider body (`build_request`).

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

Build (IR -> Anthropic provider "/messages")
- IR system parts -> `system` blocks (cache_control kept; a single plain part -> a string).
  IR system messages: from an Anthropic client they stay in place as `role: "system"` messages (as
  the client sent them, which the Anthropic API accepts); from other dialects they are appended to
  `system` in order (position in the conversation is lost; documented).
- Consecutive same-role turns are merged (Anthropic requires alternation); in a user turn all
  tool_result blocks come first (the API requires them at the start), then the other content.
  Empty text parts and messages left empty are dropped (the API rejects empty content).
- ToolCall -> tool_use with input = the arguments JSON (invalid or non-object JSON from a model ->
  {}).  ToolCall.extra / Tool.extra keys are re-added only when the IR came from an Anthropic
  client (another dialect's extras would be fields Anthropic rejects).  Tool ids outside
  [A-Za-z0-9_-] (e.g. "functions.get:0" from some OpenAI-compatible models) get those characters
  replaced by "_" in tool_use and tool_result alike (Anthropic rejects them).
- Thinking: only Anthropic-signed blocks (byte-for-byte signature) and redacted ones are sent;
  unsigned or Gemini-signed thinking is dropped (never invented).  Text/ToolCall Gemini
  signatures are dropped.
- Image base64/url -> image block; Image(media_type application/pdf) -> document block.
- tools: input_schema = parameters as is ({} or a schema without "type" gets type "object").
- tool_choice: "required" -> any; parallel_tool_calls False -> disable_parallel_tool_use.
  No tools -> no tool_choice.
- max_tokens = req.max_tokens or provider.max_tokens (4096 if that is 0).
- thinking (skipped entirely when getattr(provider, "reasoning", True) is False, which also drops
  output_config.effort): budget from thinking_budget, else from reasoning_effort (minimal 1024,
  low 2048, medium 8192, high 24576, xhigh/max 32768), else 8192 when thinking is True (or the
  budget is negative: Gemini's "dynamic"); "none" / thinking False / budget 0 -> omitted.
  Budget < 1024 -> 1024.  budget >= max_tokens -> max_tokens is raised to budget + max_tokens
  (the visible-answer allowance the client asked for is kept).
  Forced tool use (any/tool) cannot be combined with thinking: thinking is dropped.  When the
  final assistant turn used tools but does not start with a thinking block Anthropic accepts
  (e.g. it came from another provider), thinking is dropped too (Anthropic rejects it; for an
  Anthropic client only when the block was dropped by us, see _turn_lacks_thinking).
  With thinking on: temperature omitted unless 1, top_k omitted, top_p kept only when >= 0.95
  (Anthropic's rules).
- temperature clamped to [0, 1] (OpenAI allows up to 2).
- stop -> stop_sequences (whitespace-only sequences dropped: Anthropic rejects them).
- user -> metadata.user_id.  response_format json_schema -> output_config.format {type:
  json_schema, schema}; json_object -> an extra system text asking for a single JSON object
  (Anthropic has no JSON mode).
- n > 1 -> invalid (400).
- seed, presence_penalty, frequency_penalty (OpenAI / Gemini clients) -> dropped: the Messages
  API has no such parameters (it would reject unknown fields).
"""

from __future__ import annotations

import orjson

from ... import ir
from ...errors import invalid
from ...ir import EFFORT_BUDGET, budget_effort
from ..signatures import SIG_PREFIX
from .decode import parse_blocks
from .encode import blocks_out, text_out

__all__ = ["parse_request", "build_request", "EFFORT_BUDGET", "budget_effort"]

_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh", "max": "xhigh",
            "minimal": "minimal", "none": "none"}
_DEFAULT_MAX_TOKENS = 4096
_MIN_BUDGET = 1024
_JSON_OBJECT_INSTRUCTION = "Respond only with a single valid JSON object and nothing else."

_TOOL_CHOICE = {"auto": "auto", "any": "required", "none": "none", "tool": "tool"}
_TOOL_CHOICE_OUT = {"auto": "auto", "required": "any", "none": "none", "tool": "tool"}

# top-level keys the IR models; everything else is kept verbatim for Anthropic targets
_MODELLED = frozenset({"model", "messages", "system", "max_tokens", "temperature", "top_p", "top_k",
                       "stop_sequences", "stream", "tools", "tool_choice"})

_CUSTOM_TOOL_KEYS = frozenset({"name", "description", "input_schema", "cache_control"})




# ============================================================== parse: client -> IR

def _num(body: dict, key: str, kind=(int, float)):
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, kind):
        raise invalid(f"{key}: expected a number", param=key)
    return v


def _cc(block: dict):
    cc = block.get("cache_control")
    return cc if isinstance(cc, dict) else None


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
        out.append(ir.Text(t, _cc(b)))
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
        out.append(ir.Tool(name, desc if isinstance(desc, str) else None, schema, _cc(t), extra))
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
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise invalid("model: expected a non-empty string", param="model")
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
    req.temperature = _num(body, "temperature")
    req.top_p = _num(body, "top_p")
    req.top_k = _num(body, "top_k", int)
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise invalid("stop_sequences: expected a list of strings", param="stop_sequences")
        req.stop = stops
    if stream is None:
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise invalid("stream: expected a boolean", param="stream")
    req.stream = stream
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


# ============================================================== build: IR -> provider

def _raw_filtered(content: list) -> list:
    """An Anthropic client's original blocks, minus thinking Anthropic would reject."""
    out = []
    for b in content:
        if isinstance(b, dict) and b.get("type") == "thinking":
            sig = b.get("signature")
            if not isinstance(sig, str) or not sig or sig.startswith(SIG_PREFIX):
                continue
        out.append(b)
    return out


def _system_out(parts: list[ir.Text]):
    if len(parts) == 1 and not parts[0].cache_control:
        return parts[0].text
    return [text_out(t) for t in parts if t.text]


def _messages_out(req: ir.Request, anth: dict | None, system: list[ir.Text]) -> list[dict]:
    raw = anth["raw"] if anth else {}
    out: list[dict] = []
    for i, m in enumerate(req.messages):
        role = m.role
        if role == "system":
            if anth is None:
                system.extend(p for p in m.parts if isinstance(p, ir.Text))
                continue
            texts = [p for p in m.parts if isinstance(p, ir.Text) and p.text]
            if texts:
                out.append({"role": "system", "content": _system_out(texts)})
            continue
        else:
            rc = raw.get(i)
            blocks = _raw_filtered(rc) if rc is not None else blocks_out(m.parts, role, anth is not None)
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            prev = out[-1]["content"]
            if role == "user" and blocks[0].get("type") == "tool_result":
                # keep every tool_result at the start of the merged turn
                n = 0
                while n < len(prev) and prev[n].get("type") == "tool_result":
                    n += 1
                k = 0
                while k < len(blocks) and blocks[k].get("type") == "tool_result":
                    k += 1
                prev[n:n] = blocks[:k]
                prev.extend(blocks[k:])
            else:
                prev.extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out


def _kept_thinking(x) -> bool:
    return isinstance(x, ir.Thinking) and x.source != "gemini" and (
        x.redacted or bool(x.signature and not x.signature.startswith(SIG_PREFIX)))


def _turn_lacks_thinking(messages: list[ir.Message], from_anthropic: bool) -> bool:
    """Would Anthropic reject thinking for this conversation?

    With thinking on, the final assistant turn (assistant messages since the last user message
    that is not just tool results) must start with a thinking block when it used tools.  For an
    Anthropic client this is only our doing when its turn started with thinking we must drop
    (Gemini-signed / unsigned, e.g. an earlier answer from another provider); otherwise the client
    sent what the API accepts (adaptive thinking may skip thinking) and nothing is changed.
    """
    first, tools = None, False
    for m in reversed(messages):
        if m.role == "assistant":
            first = m
            tools = tools or any(isinstance(x, ir.ToolCall) for x in m.parts)
        elif m.role == "user" and not any(isinstance(x, ir.ToolResult) for x in m.parts):
            break
    if first is None or not tools:
        return False
    lead = next((x for x in first.parts if not (isinstance(x, ir.Text) and not x.text and not x.signature)), None)
    if _kept_thinking(lead):
        return False
    if not from_anthropic:
        return True
    return isinstance(lead, ir.Thinking) or bool(getattr(lead, "signature", None))


def build_request(req: ir.Request, model: str, provider) -> tuple[str, bytes]:
    if req.n is not None and req.n > 1:
        raise invalid("n>1 not supported by Anthropic providers", param="n")
    anth = req.extra.get("anthropic")
    system = list(req.system)
    messages = _messages_out(req, anth, system)
    max_tokens = req.max_tokens or provider.max_tokens or _DEFAULT_MAX_TOKENS
    body: dict = {"model": model, "max_tokens": max_tokens, "messages": messages}

    rf = req.response_format
    if rf and rf.get("type") == "json_object":
        system.append(ir.Text(_JSON_OBJECT_INSTRUCTION))
    if anth is not None and "system" in anth:
        body["system"] = anth["system"]
    elif system:
        body["system"] = _system_out(system)

    # tools
    if anth is not None and "tools" in anth:
        body["tools"] = anth["tools"]
    elif req.tools:
        tools = []
        for t in req.tools:
            p = t.parameters or {}
            schema = p if p.get("type") else {"type": "object", **p}
            d = {"name": t.name}
            if t.description:
                d["description"] = t.description
            d["input_schema"] = schema
            if t.cache_control:
                d["cache_control"] = t.cache_control
            if t.extra and anth is not None:      # our own extras only (see blocks_out)
                for k, v in t.extra.items():
                    d.setdefault(k, v)
            tools.append(d)
        body["tools"] = tools
    forced = False
    if "tools" in body:
        tc = _TOOL_CHOICE_OUT.get(req.tool_choice) if req.tool_choice else None
        if tc is None and req.parallel_tool_calls is False:
            tc = "auto"
        if tc is not None:
            choice = {"type": tc}
            if tc == "tool":
                choice["name"] = req.tool_choice_name or ""
            if req.parallel_tool_calls is False and tc != "none":
                choice["disable_parallel_tool_use"] = True
            body["tool_choice"] = choice
            forced = tc in ("any", "tool")

    # fields an Anthropic client sent that the IR does not model (verbatim)
    if anth is not None:
        for k, v in anth["fields"].items():
            body[k] = v
    else:
        if req.user:
            body["metadata"] = {"user_id": req.user}
        if rf and rf.get("type") == "json_schema" and isinstance(rf.get("schema"), dict):
            body["output_config"] = {"format": {"type": "json_schema", "schema": rf["schema"]}}
        budget, tb = None, req.thinking_budget
        if req.thinking is not False and req.reasoning_effort != "none" and tb != 0:
            if tb is not None and tb > 0:
                budget = tb
            elif req.reasoning_effort in EFFORT_BUDGET:
                budget = EFFORT_BUDGET[req.reasoning_effort]
            elif req.thinking or tb is not None:      # thinking on / Gemini's -1 (dynamic)
                budget = EFFORT_BUDGET["medium"]
        if budget is not None:
            body["thinking"] = {"type": "enabled", "budget_tokens": max(budget, _MIN_BUDGET)}

    # thinking constraints
    th = body.get("thinking")
    if th is not None:
        if (not getattr(provider, "reasoning", True) or forced
                or (th.get("type") != "disabled" and _turn_lacks_thinking(req.messages, anth is not None))):
            del body["thinking"]
            th = None
        elif th.get("type") == "enabled":
            b = th.get("budget_tokens")
            if isinstance(b, int) and b >= body["max_tokens"]:
                body["max_tokens"] = b + body["max_tokens"]
    if not getattr(provider, "reasoning", True):
        oc = body.get("output_config")
        if isinstance(oc, dict) and "effort" in oc:
            oc = {k: v for k, v in oc.items() if k != "effort"}
            if oc:
                body["output_config"] = oc
            else:
                del body["output_config"]
    thinking_on = th is not None and th.get("type") != "disabled"

    t = req.temperature
    if t is not None and (not thinking_on or t == 1):
        body["temperature"] = min(max(t, 0.0), 1.0)
    if req.top_p is not None and (not thinking_on or req.top_p >= 0.95):
        body["top_p"] = req.top_p
    if req.top_k is not None and not thinking_on:
        body["top_k"] = req.top_k
    stops = [s for s in req.stop if s.strip()]
    if stops:
        body["stop_sequences"] = stops
    if req.stream:
        body["stream"] = True
    return "/messages", orjson.dumps(body)
