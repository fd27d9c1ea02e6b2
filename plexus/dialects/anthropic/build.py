"""Anthropic Messages: IR -> the body an Anthropic provider accepts (`build_request`, pure).

The body's URL path ("/messages") is the dialect record's `upstream_path` (registry.py); what
an Anthropic client's request keeps for an Anthropic target (req.extra["anthropic"]) is
described in request.py.

Build (IR -> Anthropic provider body)
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
from ...ir import EFFORT_BUDGET
from ..signatures import SIG_PREFIX
from .encode import blocks_out, text_out

__all__ = ["build_request"]

_DEFAULT_MAX_TOKENS = 4096
_MIN_BUDGET = 1024
_JSON_OBJECT_INSTRUCTION = "Respond only with a single valid JSON object and nothing else."
_TOOL_CHOICE_OUT = {"auto": "auto", "required": "any", "none": "none", "tool": "tool"}


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


def build_request(req: ir.Request, model: str, provider) -> bytes:
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
    return orjson.dumps(body)
