"""OpenAI Chat Completions: IR → the body an OpenAI-compatible provider accepts (pure).

`build_request(req, model, provider) -> bytes` is the body; the URL path it goes to
("/chat/completions") is the dialect record's `upstream_path` (registry.py).

Build (IR → provider body):
- system parts → one leading system message, texts joined with "\\n\\n" (cache_control dropped:
  OpenAI caches automatically); a mid-conversation system turn → a system message.
- user: ToolResults first, as consecutive `tool` messages (text joined with "\\n"; images can't
  go in a tool message and move into the user message that follows; `is_error` has no field
  and is dropped), then the rest as one user message (one Text → string, else parts).
- Image: image/* (or no media type) → image_url (a data URL for base64); any other media type
  (a PDF from an Anthropic document block or a Responses input_file) → the file part {"type":
  "file", "file": {"filename": "attachment.<ext>", "file_data": "data:<type>;base64,<data>"}}
  (api.openai.com takes PDFs only); a URL attachment goes in file_data as is (OpenRouter
  fetches such URLs; api.openai.com's Chat Completions takes inline data only).
- assistant: texts joined with "" (as stream deltas concatenate) → content (null with tool
  calls and no text); ToolCall → tool_calls (Gemini signature dropped); an assistant message
  left empty is skipped. Thinking is dropped, except that an assistant turn with tool calls
  carries its thinking text as `reasoning_content` (DeepSeek thinking mode answers 400 when a
  tool-call turn lacks it; vLLM/SGLang/llama.cpp ignore it) — never to api.openai.com or
  *.openai.azure.com (strict schema: unknown message fields → 400), nor when
  provider.reasoning is False.
- max tokens: `max_tokens` (the name every OpenAI-compatible server knows; DeepSeek documents
  only it), but `max_completion_tokens` for api.openai.com/Azure (its reasoning models reject
  `max_tokens`; it takes the new name for every model) or when the OpenAI client itself used
  it. Omitted → provider.max_tokens when non-zero.
- reasoning_effort (only when provider.reasoning): the request's effort, else "none" when
  thinking is disabled, else budget → effort (≤2048 low, ≤8192 medium, else high); none is
  derived when the OpenAI client sent its own `thinking` object (forwarded instead). With
  provider.reasoning False the passthrough `thinking`/`reasoning` keys are dropped too.
- seed, presence_penalty, frequency_penalty (from Gemini clients' generationConfig, or an
  OpenAI client's own) are sent as such. top_k from Anthropic/Gemini clients is not sent (api.openai.com rejects unknown params).
  metadata.user_id → `user` when there is none; a `user` over 64 characters (OpenAI's limit;
  Claude Code's user_id is ~150) is sent as its sha256 hex digest (stable, 64 characters). tool_choice/parallel_tool_calls only with
  tools (OpenAI rejects them otherwise). stream_options.include_usage when streaming and
  provider.stream_usage or the client asked for usage.
"""

from __future__ import annotations

import hashlib

import orjson

from ... import ir
from ...ir import budget_effort

_REASONING_KEYS = ("thinking", "reasoning")  # passthrough keys dropped when provider.reasoning is False
_STRICT_HOSTS = ("api.openai.com",)
_STRICT_SUFFIXES = (".openai.azure.com",)


# ================================================================== build (IR → provider)

def build_request(req: ir.Request, model: str, provider) -> bytes:
    reasoning_ok = getattr(provider, "reasoning", True)
    host = getattr(provider, "host", "")
    strict = host in _STRICT_HOSTS or host.endswith(_STRICT_SUFFIXES)
    body: dict = {"model": model, "messages": _build_messages(req, reasoning_ok and not strict)}

    passthrough = req.extra.get("openai")
    if reasoning_ok:
        eff = req.reasoning_effort
        if eff is None and not (passthrough and "thinking" in passthrough):
            if req.thinking is False:
                eff = "none"
            elif req.thinking_budget is not None and req.thinking_budget > 0:
                eff = budget_effort(req.thinking_budget)
        if eff is not None:
            body["reasoning_effort"] = eff
    mt = req.max_tokens or getattr(provider, "max_tokens", 0)
    if mt:
        mct = strict or "openai_max_completion_tokens" in req.extra
        body["max_completion_tokens" if mct else "max_tokens"] = mt
    for key in ("temperature", "top_p", "n", "seed", "presence_penalty", "frequency_penalty"):
        if (v := getattr(req, key)) is not None:
            body[key] = v
    if req.stop:
        body["stop"] = req.stop
    user = req.user if req.user is not None else (req.metadata or {}).get("user_id")
    if isinstance(user, str):
        body["user"] = user if len(user) <= 64 else hashlib.sha256(user.encode()).hexdigest()
    if req.tools:
        body["tools"] = [_tool(t) for t in req.tools]
        if req.tool_choice == "tool":
            body["tool_choice"] = {"type": "function", "function": {"name": req.tool_choice_name}}
        elif req.tool_choice is not None:
            body["tool_choice"] = req.tool_choice
        if req.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = req.parallel_tool_calls
    if req.response_format is not None:
        body["response_format"] = _response_format(req.response_format)
    if req.stream:
        body["stream"] = True
        if getattr(provider, "stream_usage", False) or req.include_usage:
            body["stream_options"] = {"include_usage": True}
    if passthrough:
        for k, v in passthrough.items():
            if k not in body and (reasoning_ok or k not in _REASONING_KEYS):
                body[k] = v
    return orjson.dumps(body)


def _tool(t: ir.Tool) -> dict:
    f: dict = {"name": t.name} if t.description is None else {"name": t.name, "description": t.description}
    f["parameters"] = t.parameters
    if t.extra and isinstance(t.extra.get("strict"), bool):
        f["strict"] = t.extra["strict"]
    return {"type": "function", "function": f}


def _response_format(rf: dict) -> dict:
    t = rf.get("type")
    if t != "json_schema":
        return {"type": t or "text"}
    js = {"name": rf.get("name") or "response", "schema": rf.get("schema") or {}}
    if rf.get("description"):
        js["description"] = rf["description"]
    if rf.get("strict") is not None:
        js["strict"] = rf["strict"]
    return {"type": "json_schema", "json_schema": js}


_FILE_EXT = {"application/pdf": "pdf", "text/plain": "txt", "text/markdown": "md", "text/csv": "csv",
             "application/json": "json"}


def _image_part(img: ir.Image) -> dict:
    mt = img.media_type
    url = f"data:{mt or 'image/png'};base64,{img.data}" if img.data is not None else img.url or ""
    if mt is None or mt.startswith("image/"):
        return {"type": "image_url", "image_url": {"url": url}}
    # a binary attachment (PDF from an Anthropic document block or a Responses input_file): the
    # Chat Completions file part; a URL goes in file_data as well (OpenRouter fetches it)
    return {"type": "file", "file": {"filename": f"attachment.{_FILE_EXT.get(mt, 'bin')}", "file_data": url}}


def _join_texts(parts, sep: str) -> str:
    return sep.join(p.text for p in parts if type(p) is ir.Text)


def _build_messages(req: ir.Request, send_reasoning: bool) -> list:
    out: list = []
    if req.system:
        out.append({"role": "system", "content": _join_texts(req.system, "\n\n")})
    for m in req.messages:
        if m.role == "assistant":
            msg = _assistant(m.parts, send_reasoning)
            if msg is not None:
                out.append(msg)
        elif m.role == "system":
            out.append({"role": "system", "content": _join_texts(m.parts, "\n\n")})
        else:
            _user(m.parts, out)
    return out


def _assistant(parts: list, send_reasoning: bool) -> dict | None:
    texts: list[str] = []
    calls: list[dict] = []
    thinking: list[str] = []
    for p in parts:
        tp = type(p)
        if tp is ir.Text:
            texts.append(p.text)
        elif tp is ir.ToolCall:
            calls.append({"id": p.id, "type": "function",
                          "function": {"name": p.name, "arguments": p.arguments}})
        elif tp is ir.Thinking and not p.redacted and p.text:
            thinking.append(p.text)
    content = "".join(texts)
    if not calls:
        return {"role": "assistant", "content": content} if content else None
    msg: dict = {"role": "assistant", "content": content or None, "tool_calls": calls}
    if send_reasoning and thinking:
        msg["reasoning_content"] = "".join(thinking)
    return msg


def _user(parts: list, out: list) -> None:
    content: list = []
    for p in parts:
        tp = type(p)
        if tp is ir.ToolResult:
            c = p.content
            if isinstance(c, str):
                text = c
            else:
                text = _join_texts(c, "\n")
                content.extend(_image_part(x) for x in c if type(x) is ir.Image)
            out.append({"role": "tool", "tool_call_id": p.call_id, "content": text})
        elif tp is ir.Text:
            content.append({"type": "text", "text": p.text})
        elif tp is ir.Image:
            content.append(_image_part(p))
    if not content:
        return
    if len(content) == 1 and content[0]["type"] == "text":
        out.append({"role": "user", "content": content[0]["text"]})
    else:
        out.append({"role": "user", "content": content})
