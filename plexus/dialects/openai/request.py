"""OpenAI Chat Completions: a client's request body → IR (pure: no I/O, no clock, no globals mutated).

`parse_request` validates a client's /v1/chat/completions body (400 `invalid()` naming the
param, e.g. "messages[2].content") and maps it to `ir.Request`; `model_and_stream` is the
gateway's first look at the body (model, stream flag, `messages` present). The way back, IR →
the body an OpenAI-compatible provider accepts, is build.py.

Parse (client → IR):
- Leading system/developer messages → `req.system` (one Text per string or text part); later
  ones → `Message(role="system")`. Message `name` fields are dropped; consecutive same-role
  messages stay separate (target builders merge).
- user parts: text → Text (a `cache_control` dict on the part, as OpenRouter/LiteLLM clients
  send, is kept); image_url data:…;base64 → Image(media_type, data), http(s) → Image(url),
  `detail` dropped; input_audio / file → 400 (not translatable).
- assistant: thinking first (`thinking_blocks` preferred, fragments merged as the stream
  encoder numbers them, see `_thinking_blocks`; else `reasoning_content`/`reasoning` as
  unsigned Thinking; a signature "plexus-gemini:…" is Gemini's, any other Anthropic's), then
  text (string or text parts; `refusal` becomes a Text so the model sees what it said), then
  tool calls (ids through `signatures.unwrap_id` → ToolCall.signature; object arguments are
  serialised).
- tool: one `Message("user", [ToolResult])` per tool message, `name` filled from the earlier
  call with that id (Gemini pairs results by name). Legacy function calling (`functions`,
  `function_call`, assistant `function_call`, the `function` role) → 400 naming the modern
  field: answers would come back as `tool_calls`, which a legacy client would not read.
- tools: `type: function` only (custom → 400); no parameters → {"type":"object","properties":
  {}}; `strict` → Tool.extra {"strict": bool}. tool_choice allowed_tools → 400.
- seed (an integer), presence_penalty, frequency_penalty (numbers) → req.seed /
  req.presence_penalty / req.frequency_penalty (Gemini targets: generationConfig.seed /
  presencePenalty / frequencyPenalty; Anthropic has none: dropped).
- max_completion_tokens wins over max_tokens. reasoning_effort (none/minimal/low/medium/high/
  xhigh/max) → req.reasoning_effort + thinking (False for "none"); builders map effort →
  budget with the shared table. An Anthropic-style `thinking` object (LiteLLM and DeepSeek take
  it from OpenAI clients) → thinking/thinking_budget.
- Every other top-level key (logprobs, logit_bias, service_tier, store,
  prediction, verbosity, metadata, top_k, thinking, vendor extensions…) is kept verbatim in
  `req.extra["openai"]`, sent only to OpenAI-type targets (logprobs are never translated
  back). metadata and top_k are also parsed into req.metadata / req.top_k.
"""

from __future__ import annotations

import orjson

from ... import ir
from ...errors import invalid
from ..common import body_model, body_stream, from_body
from ..signatures import unwrap_id, unwrap_sig


EFFORTS = frozenset(("none", "minimal", "low", "medium", "high", "xhigh", "max"))

_HANDLED = frozenset((
    "model", "messages", "tools", "tool_choice", "parallel_tool_calls", "max_tokens",
    "max_completion_tokens", "temperature", "top_p", "stop", "user", "n", "response_format",
    "reasoning_effort", "stream", "stream_options", "functions", "function_call",
    "seed", "presence_penalty", "frequency_penalty",
))
_ROLES = frozenset(("system", "developer", "user", "assistant", "tool", "function"))
_EMPTY_SCHEMA = {"type": "object", "properties": {}}


# ================================================================== parse (client → IR)

model_and_stream = from_body("messages")


def parse_request(body: dict, *, model: str | None = None, stream: bool | None = None) -> ir.Request:
    if not isinstance(body, dict):
        raise invalid("request body must be a JSON object")
    if model is None:
        model = body_model(body)
    for p in ("functions", "function_call"):
        if p in body:
            raise invalid(f"`{p}` is deprecated and not supported; use `tools` and `tool_choice`", p)
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise invalid("`messages` must be a non-empty array", "messages")
    req = ir.Request(model=model, messages=[])
    _parse_messages(msgs, req)

    g = body.get
    for key, check in _SCALARS:
        if (v := g(key)) is not None:
            setattr(req, key, check(v, key))
    mct = g("max_completion_tokens")
    if mct is not None:
        req.max_tokens = _pos_int(mct, "max_completion_tokens")
        req.extra["openai_max_completion_tokens"] = True
    elif (mt := g("max_tokens")) is not None:
        req.max_tokens = _pos_int(mt, "max_tokens")
    if (v := g("tools")) is not None:
        req.tools = _parse_tools(v)
    if (v := g("tool_choice")) is not None:
        _parse_tool_choice(v, req)
    if (stop := g("stop")) is not None:
        if isinstance(stop, str):
            stop = [stop]
        elif not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
            raise invalid("`stop` must be a string or an array of strings", "stop")
        req.stop = stop
    if (v := g("response_format")) is not None:
        req.response_format = _parse_response_format(v)
    if (eff := g("reasoning_effort")) is not None:
        if type(eff) is not str or eff not in EFFORTS:
            raise invalid("`reasoning_effort` must be one of " + ", ".join(sorted(EFFORTS)),
                          "reasoning_effort")
        req.reasoning_effort, req.thinking = eff, eff != "none"
    if (v := g("thinking")) is not None:
        _parse_thinking_param(v, req)
    req.stream = body_stream(body) if stream is None else stream
    if (so := g("stream_options")) is not None:
        req.include_usage = _dict(so, "stream_options").get("include_usage") is True
    passthrough = {k: v for k, v in body.items() if k not in _HANDLED}
    if passthrough:
        req.extra["openai"] = passthrough
    return req


def _parse_messages(msgs: list, req: ir.Request) -> None:
    out = req.messages
    leading = True
    call_names: dict[str, str] = {}
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise invalid(f"{where} must be an object", where)
        role = m.get("role")
        if type(role) is not str or role not in _ROLES:
            raise invalid(f"{where}.role must be one of system, developer, user, assistant, tool "
                          f"(got {role!r})", f"{where}.role")
        if role == "system" or role == "developer":
            texts = _text_parts(m.get("content"), f"{where}.content", allow_images=False)
            if leading:
                req.system.extend(texts)
            else:
                out.append(ir.Message("system", texts))
            continue
        leading = False
        if role == "user":
            out.append(ir.Message("user", _text_parts(m.get("content"), f"{where}.content", True)))
        elif role == "assistant":
            out.append(ir.Message("assistant", _assistant_parts(m, where, call_names)))
        elif role == "tool":
            cid = unwrap_id(_field_str(m, "tool_call_id", where))[0]
            content = _tool_content(m.get("content"), f"{where}.content")
            out.append(ir.Message("user", [ir.ToolResult(cid, content, name=call_names.get(cid))]))
        else:
            raise invalid(f"{where}: the legacy `function` role is not supported; use `tool` "
                          "messages with tool_call_id", f"{where}.role")


def _text_parts(content, where: str, allow_images: bool) -> list:
    if isinstance(content, str):
        return [ir.Text(content)]
    if not isinstance(content, list):
        raise invalid(f"{where} must be a string or an array of content parts", where)
    parts = []
    for j, p in enumerate(content):
        pw = f"{where}[{j}]"
        t = p.get("type") if isinstance(p, dict) else None
        if t == "text":
            cc = p.get("cache_control")
            parts.append(ir.Text(_field_str(p, "text", pw, "a string"), cc if isinstance(cc, dict) else None))
        elif allow_images and t == "image_url":
            parts.append(_image(p.get("image_url"), f"{pw}.image_url"))
        else:
            _bad_part(t, pw, allow_images)
    return parts


def _bad_part(t, pw: str, allow_images: bool):
    if t == "input_audio":
        raise invalid(f"{pw}: audio input (input_audio) is not supported by this gateway", pw)
    if t == "file":
        raise invalid(f"{pw}: file content parts are not supported by this gateway; send the text "
                      "or images instead", pw)
    allowed = "text, image_url" if allow_images else "text"
    raise invalid(f"{pw}: unsupported content part type {t!r} here (allowed: {allowed})", pw)


def _tool_content(content, where: str):
    return content if isinstance(content, str) else "" if content is None else _text_parts(content, where, True)


def _image(v, where: str) -> ir.Image:
    url = v.get("url") if isinstance(v, dict) else v
    if not isinstance(url, str) or not url:
        raise invalid(f"{where}.url must be a string", f"{where}.url")
    if url.startswith("data:"):
        header, sep, data = url.partition(",")
        if not sep or not header.endswith(";base64"):
            raise invalid(f"{where}.url: a data URL must be base64 (data:<type>;base64,<data>)",
                          f"{where}.url")
        return ir.Image(media_type=header[5:-7] or None, data=data)
    if url.startswith("https://") or url.startswith("http://"):
        return ir.Image(url=url)
    raise invalid(f"{where}.url must be an http(s) URL or a base64 data URL", f"{where}.url")


def _assistant_parts(m: dict, where: str, call_names: dict) -> list:
    parts: list = []
    blocks = m.get("thinking_blocks")
    if isinstance(blocks, list) and blocks:
        _thinking_blocks(blocks, m.get("reasoning_content"), f"{where}.thinking_blocks", parts)
    else:
        rc = m.get("reasoning_content")
        if rc is None:
            rc = m.get("reasoning")
        if isinstance(rc, str) and rc:
            parts.append(ir.Thinking(rc))
    content = m.get("content")
    if content is not None:
        if isinstance(content, str):
            if content:
                parts.append(ir.Text(content))
        elif isinstance(content, list):
            for j, p in enumerate(content):
                pw = f"{where}.content[{j}]"
                t = p.get("type") if isinstance(p, dict) else None
                key = "text" if t == "text" else "refusal" if t == "refusal" else None
                if key is None:
                    raise invalid(f"{pw}: assistant content parts must be text or refusal", pw)
                parts.append(ir.Text(_field_str(p, key, pw, "a string")))
        else:
            raise invalid(f"{where}.content must be a string, an array or null", f"{where}.content")
    refusal = m.get("refusal")
    if isinstance(refusal, str) and refusal:
        parts.append(ir.Text(refusal))
    calls = m.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list):
            raise invalid(f"{where}.tool_calls must be an array", f"{where}.tool_calls")
        for j, c in enumerate(calls):
            cw = f"{where}.tool_calls[{j}]"
            if not isinstance(c, dict):
                raise invalid(f"{cw} must be an object", cw)
            cid, sig = unwrap_id(_field_str(c, "id", cw))
            name, args = _function(c.get("function"), f"{cw}.function")
            call_names[cid] = name
            parts.append(ir.ToolCall(cid, name, args, signature=sig))
    if m.get("function_call") is not None:
        raise invalid(f"{where}.function_call is deprecated and not supported; use tool_calls",
                      f"{where}.function_call")
    return parts


def _function(f, where: str) -> tuple[str, str]:
    if not isinstance(f, dict):
        raise invalid(f"{where} must be an object with name and arguments", where)
    name = _field_str(f, "name", where)
    args = f.get("arguments")
    if args is None:
        args = "{}"
    elif not isinstance(args, str):
        if not isinstance(args, dict):
            raise invalid(f"{where}.arguments must be a JSON string", f"{where}.arguments")
        args = orjson.dumps(args).decode()
    return name, args


def _thinking_blocks(blocks: list, rc, where: str, parts: list) -> None:
    """Unsigned entries followed by a signature-only entry (same `index`, or none) are the
    fragments of the block that signature seals: a client that appended our stream's
    thinking_blocks deltas instead of merging them by `index`, or a Gemini thought run closed
    by a text part's signature. Otherwise every entry is its own block. A lone signed block
    with no text takes `reasoning_content` as its text (a client that kept the two apart)."""
    frags: list[str] = []
    frag_idx = None
    start = len(parts)
    for j, b in enumerate(blocks):
        t = _thinking_block(b, f"{where}[{j}]")
        idx = b.get("index")
        if frags and (t.redacted or idx != frag_idx):
            parts.append(ir.Thinking("".join(frags)))
            frags.clear()
        if t.signature and not t.redacted:
            if not t.text:
                t.text = "".join(frags)
                frags.clear()
            elif frags:
                parts.append(ir.Thinking("".join(frags)))
                frags.clear()
        elif not t.redacted:
            frags.append(t.text)
            frag_idx = idx
            continue
        parts.append(t)
    if frags:
        parts.append(ir.Thinking("".join(frags)))
    if len(parts) == start + 1 and not parts[start].text and isinstance(rc, str):
        parts[start].text = rc


def _thinking_block(b, where: str) -> ir.Thinking:
    t = b.get("type") if isinstance(b, dict) else None
    if t == "redacted_thinking":
        return ir.Thinking(_field_str(b, "data", where, "a string"), redacted=True, source="anthropic")
    if t != "thinking":
        raise invalid(f"{where}.type must be thinking or redacted_thinking", f"{where}.type")
    text = _field_str(b, "thinking", where, "a string") if b.get("thinking") is not None else ""
    anth, gem = unwrap_sig(_field_str(b, "signature", where, "a string") if b.get("signature") else None)
    return ir.Thinking(text, anth or gem, source="anthropic" if anth else "gemini" if gem else None)


def _parse_tools(tools) -> list:
    if not isinstance(tools, list):
        raise invalid("`tools` must be an array", "tools")
    out = []
    for i, t in enumerate(tools):
        w = f"tools[{i}]"
        if not isinstance(t, dict) or t.get("type", "function") != "function":
            raise invalid(f"{w}: only tools of type \"function\" are supported", f"{w}.type")
        f = t.get("function")
        if not isinstance(f, dict):
            raise invalid(f"{w}.function must be an object", f"{w}.function")
        name = _field_str(f, "name", f"{w}.function")
        desc = _field_str(f, "description", f"{w}.function", "a string") if "description" in f else None
        params = f.get("parameters", _EMPTY_SCHEMA)
        if not isinstance(params, dict):
            raise invalid(f"{w}.function.parameters must be a JSON Schema object",
                          f"{w}.function.parameters")
        strict = f.get("strict")
        out.append(ir.Tool(name, desc, params,
                           extra={"strict": strict} if isinstance(strict, bool) else None))
    return out


def _parse_tool_choice(tc, req: ir.Request) -> None:
    if tc in ("auto", "none", "required"):
        req.tool_choice = tc
        return
    if isinstance(tc, dict) and tc.get("type") == "function":
        f = tc.get("function")
        name = f.get("name") if isinstance(f, dict) else None
        if isinstance(name, str) and name:
            req.tool_choice, req.tool_choice_name = "tool", name
            return
    raise invalid('`tool_choice` must be "auto", "none", "required" or '
                  '{"type": "function", "function": {"name": ...}}', "tool_choice")


def _parse_response_format(rf) -> dict | None:
    t = rf.get("type") if isinstance(rf, dict) else None
    if t == "text":
        return None
    if t == "json_object":
        return {"type": "json_object"}
    if t == "json_schema":
        js = rf.get("json_schema")
        if not isinstance(js, dict) or not isinstance(js.get("schema", {}), dict):
            raise invalid("response_format.json_schema must be an object with a `schema`",
                          "response_format.json_schema")
        return {"type": "json_schema", "name": js.get("name") or "response",
                "schema": js.get("schema") or {}, "strict": js.get("strict"),
                **({"description": js["description"]} if isinstance(js.get("description"), str) else {})}
    raise invalid("response_format.type must be text, json_object or json_schema",
                  "response_format.type")


def _parse_thinking_param(th, req: ir.Request) -> None:
    t = th.get("type") if isinstance(th, dict) else None
    if t == "disabled":
        req.thinking = False
    elif t in ("enabled", "adaptive"):
        req.thinking = True
        b = th.get("budget_tokens")
        if type(b) is int and b > 0:
            req.thinking_budget = b
    else:
        raise invalid('`thinking.type` must be "enabled" or "disabled"', "thinking.type")


def _field_str(d: dict, key: str, where: str, what: str = "a non-empty string") -> str:
    v = d.get(key)
    if not isinstance(v, str) or (not v and what == "a non-empty string"):
        raise invalid(f"{where}.{key} must be {what}", f"{where}.{key}")
    return v


def _check(ok, what: str):
    def check(v, name: str):
        if not ok(v):
            raise invalid(f"`{name}` must be {what}", name)
        return v
    return check


_bool = _check(lambda v: isinstance(v, bool), "a boolean")
_num = _check(lambda v: type(v) in (int, float), "a number")
_pos_int = _check(lambda v: type(v) is int and v > 0, "a positive integer")
_dict = _check(lambda v: isinstance(v, dict), "an object")
_SCALARS = (
    ("temperature", _num), ("top_p", _num), ("top_k", _check(lambda v: type(v) is int, "an integer")),
    ("user", _check(lambda v: isinstance(v, str), "a string")), ("n", _pos_int),
    ("parallel_tool_calls", _bool), ("metadata", _dict),
    ("seed", _check(lambda v: type(v) is int, "an integer")), ("presence_penalty", _num),
    ("frequency_penalty", _num),
)
