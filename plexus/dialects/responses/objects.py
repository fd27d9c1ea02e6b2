"""The pieces of a Responses API answer both encode paths build the same way (pure).

`render_response` and the stream's `response.created` / `response.completed` events are one
`response_object(...)`; every output item is one of the builders below, called with the same
values by both paths, so a streamed answer's final object is byte for byte the unstreamed one.

- Item ids: `item_id(prefix, ctx, index)` = "<prefix>_<id_seed>_<output index>" (prefix "msg",
  "rs", "fc" or "ctc"): stable within a response, equal in a stream and in render_response.
- Reasoning signatures ride in `encrypted_content` (names.wrap_reasoning); `signed_source`
  decides whose they are: a "plexus-gemini:" tag (an OpenAI-dialect hop that carried a Gemini
  signature) → gemini, else the part's own source, else the provider type of the stream
  (ctx.extra["upstream"]) when it is "gemini", else "anthropic" (an OpenAI-compatible upstream
  that sends signatures relays Anthropic's, as LiteLLM does).
- Tool names: `split_name(flat, ctx.extra["tool_names"])` restores (namespace, name); a flat
  name in ctx.extra["custom_tools"] makes a `custom_tool_call` whose `input` is the "input"
  string of the JSON arguments (`custom_input`), or the argument text itself when it holds none.
- status / incomplete_details (`STATUS`): max_tokens → "incomplete" {"reason":
  "max_output_tokens"}; refusal → "incomplete" {"reason": "content_filter"}; anything else
  (None included) → "completed", null.
- The response object carries every field the openai SDK's `Response` requires, with the
  defaults OpenAI answers for an unspecified request; the keys of ctx.extra["responses_echo"]
  (the client's instructions, tools, tool_choice, max_output_tokens, ...) replace those
  defaults, except the fields computed here (id, object, created_at, status, error,
  incomplete_details, model, output, usage).
"""

from __future__ import annotations

import orjson

from ... import ir
from ..signatures import SIG_PREFIX
from .names import split_name, wrap_reasoning

__all__ = ["item_id", "response_object", "usage_object", "STATUS", "status_of", "signed_source", "custom_input",
           "message_item", "reasoning_item", "call_item", "text_part", "summary_part"]

_COMPLETED = ("completed", None)
STATUS = {"max_tokens": ("incomplete", {"reason": "max_output_tokens"}),
          "refusal": ("incomplete", {"reason": "content_filter"})}

_DEFAULTS = {
    "id": None, "object": "response", "created_at": 0, "status": None, "background": False,
    "error": None, "incomplete_details": None, "instructions": None, "max_output_tokens": None,
    "max_tool_calls": None, "model": None, "output": None, "parallel_tool_calls": True,
    "previous_response_id": None, "reasoning": {"effort": None, "summary": None}, "store": False,
    "temperature": None, "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
    "top_p": None, "truncation": "disabled", "usage": None, "user": None, "metadata": {},
}


def item_id(prefix: str, ctx: ir.Context, index: int) -> str:
    return f"{prefix}_{ctx.id_seed}_{index}"


def status_of(stop: str | None) -> tuple[str, dict | None]:
    return STATUS.get(stop, _COMPLETED)


def usage_object(u: ir.Usage) -> dict:
    inp = u.prompt_total
    out = u.output_tokens or 0
    return {"input_tokens": inp,
            "input_tokens_details": {"cached_tokens": u.cache_read_tokens or 0,
                                     "cache_write_tokens": u.cache_creation_tokens or 0},
            "output_tokens": out, "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens or 0},
            "total_tokens": inp + out}


def response_object(ctx: ir.Context, model: str, status: str, output: list, usage: dict | None,
                    incomplete: dict | None = None, error: dict | None = None) -> dict:
    d = dict(_DEFAULTS)
    echo = ctx.extra.get("responses_echo")
    if echo:
        d.update(echo)
    d["id"] = "resp_" + ctx.id_seed
    d["object"] = "response"
    d["created_at"] = ctx.created
    d["status"] = status
    d["error"] = error
    d["incomplete_details"] = incomplete
    d["model"] = model
    d["output"] = output
    d["usage"] = usage
    return d


# ---------------------------------------------------------------- items

def text_part(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def summary_part(text: str) -> dict:
    return {"type": "summary_text", "text": text}


def message_item(iid: str, text: str) -> dict:
    return {"id": iid, "type": "message", "status": "completed", "role": "assistant",
            "content": [text_part(text)]}


def signed_source(sig: str, source: str | None, upstream: str | None) -> tuple[str, str]:
    """(source, raw signature) of a thinking signature (see the module docstring)."""
    if sig.startswith(SIG_PREFIX):
        return "gemini", sig[len(SIG_PREFIX):]
    return source or ("gemini" if upstream == "gemini" else "anthropic"), sig


def reasoning_item(iid: str, text: str, sig: str | None, source: str | None, upstream: str | None,
                   redacted: bool = False) -> dict:
    """A thinking block: summary [text] (none for an empty or redacted one), encrypted_content
    the wrapped signature (redacted: the wrapped data), null for unsigned thinking."""
    if redacted:
        enc = wrap_reasoning(source or "anthropic", None, text, True)
        text = ""
    elif sig:
        src, raw = signed_source(sig, source, upstream)
        enc = wrap_reasoning(src, raw, text)
    else:
        enc = None
    return {"id": iid, "type": "reasoning", "summary": [summary_part(text)] if text else [],
            "encrypted_content": enc}


def custom_input(arguments: str) -> str:
    try:
        obj = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return arguments
    if type(obj) is dict and type(obj.get("input")) is str:
        return obj["input"]
    return arguments


def call_item(ctx: ir.Context, index: int, call_id: str, flat: str, arguments: str,
              custom: bool | None = None) -> dict:
    """A function_call (or custom_tool_call) item, done. `custom` None: by ctx.extra["custom_tools"]."""
    extra = ctx.extra
    if custom is None:
        ct = extra.get("custom_tools")
        custom = bool(ct) and flat in ct
    ns, name = split_name(flat, extra.get("tool_names"))
    if custom:
        d = {"id": item_id("ctc", ctx, index), "type": "custom_tool_call", "call_id": call_id,
             "name": name, "input": custom_input(arguments)}
    else:
        d = {"id": item_id("fc", ctx, index), "type": "function_call", "status": "completed",
             "arguments": arguments, "call_id": call_id, "name": name}
    if ns is not None:
        d["namespace"] = ns
    return d
