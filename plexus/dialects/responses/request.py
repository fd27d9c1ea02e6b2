"""OpenAI Responses API: a client's `POST /v1/responses` body -> IR (`parse_request`;
`model_and_stream`, the gateway's first look). Pure: no I/O, no clock, no module state mutated.
It runs only when Plexus translates (a Responses-capable OpenAI provider gets the body as sent).
The main client is Codex: everything it sends must parse.

Input
- `instructions` -> req.system. `input`: a string (one user message) or an array of items.
- Messages ({"type": "message"}, or a `role` and no `type`): system/developer ones before any
  other item -> req.system (after instructions), later ones -> Message("system"). Content: a
  string or parts, read by content.py (`parse_content`): input_text / output_text / refusal ->
  Text; input_image / input_file -> Image (a text attachment -> Text); images/files: user only.
- Assistant output in a row (assistant messages, reasoning, function_call, custom_tool_call) ->
  ONE Message("assistant") (one chat turn), in order; dropped items do not end it.
  function_call {call_id, name, namespace?, arguments} -> ToolCall(call_id, flat_name(namespace,
  name), arguments); custom_tool_call {..., input} -> ToolCall(arguments {"input": input}).
- function_call_output / custom_tool_call_output {call_id, output: string | parts} ->
  ToolResult(name = flat name of the call with that call_id, else of the item's own
  name/namespace); outputs in a row -> one Message("user").
- reasoning: a Plexus `encrypted_content` (names.unwrap_reasoning) -> Thinking(text, signature,
  redacted, source); any other (OpenAI's Fernet token, none) -> dropped: another provider's
  reasoning is never forwarded (summary/content are display copies). A Gemini signature-only one
  directly before a function_call or an assistant message goes onto that part
  (ToolCall.signature / first Text.signature), as anthropic/request.py folds "plexus-gemini:".
- item_reference (or only an `id`) -> 400. Hosted tool calls/outputs (`_HOSTED_ITEMS`),
  compaction items and configuration_update -> dropped. additional_tools -> its tools join
  `tools`. Any other type -> 400 naming it.

Tools
- function {name, description, parameters, strict} -> Tool(flat_name(None, name)); parameters
  null -> an empty object schema; strict (a bool) -> Tool.extra["strict"].
- namespace {name, description, tools} -> one Tool per function/custom member, named
  flat_name(namespace, member); the namespace's description heads each member's (blank line
  between) unless empty or Codex's placeholder "Tools in the <ns> namespace.".
- custom {name, description, format} -> a Tool taking {"input": string} (a grammar's syntax and
  definition describe `input`); its flat name in req.extra["custom_tools"] (a set), so the
  encoder answers with custom_tool_call items.
- Any other type (web_search, file_search, mcp, shell, computer, ...) only runs at OpenAI:
  dropped, each type once in req.extra["dropped_tools"] (logged by the gateway), never made
  another provider's server tool.
- req.extra["tool_names"] = {flat: (namespace or None, name)} for each tool and history call
  with a namespace or a flat name unlike its name (names.split_name reverses it).
- tool_choice: auto/none/required; {type: function|custom, name, namespace?} -> "tool" + flat
  name; {type: allowed_tools, mode} -> mode (list not enforced); a hosted tool's -> "auto".

Parameters
- max_output_tokens -> max_tokens; temperature, top_p, parallel_tool_calls; user (else
  safety_identifier) -> user; metadata (an object) -> req.metadata (builders read only user_id).
- reasoning.effort -> reasoning_effort, thinking = effort != "none" (as openai/request.py);
  reasoning.summary alone leaves thinking unspecified (the provider's default): asking for a
  summary of reasoning is not asking for reasoning.
- text.format: text -> None; json_object; json_schema -> response_format as openai/request.py.
- stream -> req.stream (null: false); include_usage = stream (Responses streams report usage).
- req.extra["openai"] (merged into an OpenAI-type target's body by openai/build.py):
  prompt_cache_key, prompt_cache_retention, safety_identifier, service_tier, text.verbosity ->
  verbosity. Accepted, dropped: store (Chat Completions' store differs), include, metadata
  (Chat Completions wants store with it), client_metadata, truncation, top_logprobs,
  stream_options, max_tool_calls, context_management, prompt_cache_options, unknown keys.
- 400 naming the param: previous_response_id, conversation, prompt (state and templates Plexus
  does not keep), background: true.
- req.extra["ctx"] = {"tool_names", "custom_tools" (the same objects), "responses_echo": the
  client's settings the response object repeats (tools, instructions, ...)}: the encoder's ctx.extra.
"""

from __future__ import annotations

import orjson

from ... import ir
from ...errors import invalid
from ..common import body_model, body_stream
from ..openai.request import EFFORTS
from .content import _text, parse_content
from .names import flat_name, unwrap_reasoning

__all__ = ["parse_request", "model_and_stream"]

_ROLES = frozenset(("user", "assistant", "system", "developer"))
_HOSTED_ITEMS = frozenset((  # items of tools only OpenAI runs, and of its stored state
    "web_search_call", "file_search_call", "computer_call", "computer_call_output", "code_interpreter_call",
    "image_generation_call", "local_shell_call", "local_shell_call_output", "shell_call", "shell_call_output",
    "apply_patch_call", "apply_patch_call_output", "mcp_list_tools", "mcp_approval_request",
    "mcp_approval_response", "mcp_call", "tool_search_call", "tool_search_output", "program", "program_output",
    "compaction", "compaction_trigger", "configuration_update"))
_NO_STATE = "Plexus keeps no conversation state; send the whole conversation in `input`"
_STATEFUL = (("previous_response_id", _NO_STATE), ("conversation", _NO_STATE),
             ("prompt", "Plexus keeps no stored prompts; send `instructions` and `input`"))
_ECHO = ("instructions", "tools", "tool_choice", "parallel_tool_calls", "max_output_tokens", "max_tool_calls",
         "temperature", "top_p", "top_logprobs", "reasoning", "text", "truncation", "store", "user", "metadata",
         "prompt_cache_key", "prompt_cache_retention", "safety_identifier", "service_tier")
_OPENAI_KEYS = ("prompt_cache_key", "prompt_cache_retention", "safety_identifier", "service_tier")


# ================================================================== the gateway's first look

def model_and_stream(body: dict, path_args=None, query=None) -> tuple[str, bool]:
    model, stream = body_model(body), _stream(body)
    if not isinstance(body.get("input"), (str, list)):
        raise invalid("`input` is required and must be a string or an array of items", "input")
    return model, stream


def _stream(body: dict) -> bool:
    return False if body.get("stream") is None else body_stream(body)


# ================================================================== parse (client -> IR)

def parse_request(body: dict, *, model: str | None = None, stream: bool | None = None) -> ir.Request:
    if not isinstance(body, dict):
        raise invalid("request body must be a JSON object")
    if model is None:
        model = body_model(body)
    for key, why in _STATEFUL:
        if body.get(key) is not None:
            raise invalid(f"`{key}` is not supported: {why}", key)
    if body.get("background") is True:
        raise invalid("`background` is not supported: Plexus answers while the client waits", "background")
    req = ir.Request(model=model, messages=[], stream=_stream(body) if stream is None else stream)
    req.include_usage = req.stream
    conv = _Conversation(req)
    if ins := _field(body, "instructions", _of(str), "a string"):
        req.system.append(ir.Text(ins))
    if (tools := body.get("tools")) is not None:
        _tools(tools, "tools", conv)
    inp = body.get("input")
    if isinstance(inp, str):
        req.messages.append(ir.Message("user", [ir.Text(inp)]))
    elif isinstance(inp, list) and inp:
        for i, item in enumerate(inp):
            _item(item, f"input[{i}]", conv)
        conv.close()
    else:
        raise invalid("`input` is required and must be a string or a non-empty array of items", "input")

    req.max_tokens = _field(body, "max_output_tokens", lambda v: type(v) is int and v > 0, "a positive integer")
    req.temperature = _field(body, "temperature", _of(int, float), "a number")
    req.top_p = _field(body, "top_p", _of(int, float), "a number")
    req.parallel_tool_calls = _field(body, "parallel_tool_calls", _of(bool), "a boolean")
    user = _field(body, "user", _of(str), "a string")
    req.user = user if user is not None else _text(body.get("safety_identifier"))
    if isinstance(md := body.get("metadata"), dict):
        req.metadata = md
    if (tc := body.get("tool_choice")) is not None:
        _tool_choice(tc, req)
    if (eff := (_field(body, "reasoning", _of(dict), "an object") or {}).get("effort")) is not None:
        if type(eff) is not str or eff not in EFFORTS:
            raise invalid("reasoning.effort must be one of " + ", ".join(sorted(EFFORTS)), "reasoning.effort")
        req.reasoning_effort, req.thinking = eff, eff != "none"
    oa = {k: body[k] for k in _OPENAI_KEYS if _text(body.get(k))}
    if (text := _field(body, "text", _of(dict), "an object")) is not None:
        if (fmt := text.get("format")) is not None:
            req.response_format = _format(fmt)
        if _text(text.get("verbosity")):
            oa["verbosity"] = text["verbosity"]
    if oa:
        req.extra["openai"] = oa
    req.extra["tool_names"] = conv.names
    req.extra["custom_tools"] = conv.custom
    req.extra["ctx"] = {"tool_names": conv.names, "custom_tools": conv.custom,
                        "responses_echo": {k: body[k] for k in _ECHO if body.get(k) is not None}}
    if conv.dropped:
        req.extra["dropped_tools"] = conv.dropped
    return req


class _Conversation:
    """The request being built and the open turn: the assistant message taking output items,
    the user message taking tool outputs, a Gemini signature waiting for its part."""

    __slots__ = ("req", "names", "custom", "dropped", "calls", "leading", "turn", "results", "held")

    def __init__(self, req: ir.Request) -> None:
        self.req = req
        self.names: dict[str, tuple[str | None, str]] = {}
        self.custom: set[str] = set()
        self.dropped: list[str] = []
        self.calls: dict[str, str] = {}       # call_id -> flat name
        self.leading = True                   # no item but system/developer messages yet
        self.turn: ir.Message | None = None
        self.results: ir.Message | None = None
        self.held: ir.Thinking | None = None

    def name(self, ns: str | None, name: str) -> str:
        flat = flat_name(ns, name)
        if ns or flat != name:
            self.names[flat] = (ns, name)
        return flat

    def _open(self) -> list:
        if self.turn is None:
            self.turn = ir.Message("assistant", [])
            self.req.messages.append(self.turn)
            self.results = None
        return self.turn.parts

    def say(self, part) -> None:
        """An assistant part into the open turn; a held Gemini signature goes on it when it is
        a text or a call without one, else stays a Thinking before it."""
        parts = self._open()
        held, self.held = self.held, None
        if held is not None:
            if type(part) in (ir.Text, ir.ToolCall) and part.signature is None:
                part.signature = held.signature
            else:
                parts.append(held)
        parts.append(part)

    def hold(self, th: ir.Thinking) -> None:
        parts = self._open()
        if self.held is not None:
            parts.append(self.held)
        self.held = th

    def close(self) -> None:
        """A non-assistant item: the open turn ends (its held signature stays a Thinking)."""
        if self.held is not None:
            self.turn.parts.append(self.held)
            self.held = None
        self.turn = None

    def result(self, r: ir.ToolResult) -> None:
        self.close()
        if self.results is None:
            self.results = ir.Message("user", [])
            self.req.messages.append(self.results)
        self.results.parts.append(r)

    def message(self, role: str, parts: list) -> None:
        self.close()
        self.results = None
        self.req.messages.append(ir.Message(role, parts))


def _item(it, w: str, conv: _Conversation) -> None:
    if not isinstance(it, dict):
        raise invalid(f"{w} must be an object", w)
    t = it.get("type")
    if t is None:
        t = "message" if "role" in it else "item_reference" if "id" in it else None
    elif type(t) is not str:
        raise invalid(f"{w}.type must be a string", f"{w}.type")
    if t == "message":
        role = it.get("role")
        if type(role) is not str or role not in _ROLES:
            raise invalid(f"{w}.role must be user, assistant, system or developer (got {role!r})", f"{w}.role")
        if role in ("system", "developer"):
            texts = parse_content(it.get("content"), f"{w}.content", "system")
            if conv.leading:
                conv.req.system.extend(texts)
            else:
                conv.message("system", texts)
            return
        conv.leading = False
        parts = parse_content(it.get("content"), f"{w}.content", role)
        if role == "user":
            conv.message("user", parts)
        else:
            for p in parts:
                conv.say(p)
        return
    conv.leading = False
    if t == "function_call" or t == "custom_tool_call":
        cid, name = _str(it, "call_id", w), _str(it, "name", w)
        flat = conv.name(_ns(it), name)
        if t == "custom_tool_call":
            if not isinstance(inp := it.get("input"), str):
                raise invalid(f"{w}.input must be a string", f"{w}.input")
            args = orjson.dumps({"input": inp}).decode()
        elif (args := it.get("arguments")) is None:
            args = "{}"
        elif isinstance(args, dict):
            args = orjson.dumps(args).decode()
        elif not isinstance(args, str):
            raise invalid(f"{w}.arguments must be a JSON string", f"{w}.arguments")
        conv.calls[cid] = flat
        conv.say(ir.ToolCall(cid, flat, args))
    elif t == "function_call_output" or t == "custom_tool_call_output":
        cid, out = _str(it, "call_id", w), it.get("output")
        content = out if isinstance(out, str) else "" if out is None else parse_content(out, f"{w}.output", "user")
        name = conv.calls.get(cid) or (_text(it.get("name")) and flat_name(_ns(it), it["name"]))
        conv.result(ir.ToolResult(cid, content, name=name))
    elif t == "reasoning":
        doc = unwrap_reasoning(it.get("encrypted_content"))
        if doc is None:
            return                                # OpenAI's own, or none: never forwarded
        th = ir.Thinking(doc["t"], doc["s"], redacted=doc["r"], source=doc["p"])
        if doc["p"] == "gemini" and not doc["t"] and not doc["r"] and doc["s"]:
            conv.hold(th)
        else:
            conv.say(th)
    elif t == "item_reference":
        raise invalid(f"{w}: item_reference is not supported: Plexus keeps no stored items; "
                      "send the item itself", w)
    elif t == "additional_tools":
        _tools(it.get("tools"), f"{w}.tools", conv)
    elif t is None:
        raise invalid(f"{w} needs a `type` (or a `role`, for a message)", f"{w}.type")
    elif t not in _HOSTED_ITEMS:
        raise invalid(f"{w}.type: unsupported item type {t!r}", f"{w}.type")



# ================================================================== tools

def _tools(tools, w: str, conv: _Conversation) -> None:
    if not isinstance(tools, list):
        raise invalid(f"`{w}` must be an array", w)
    for i, t in enumerate(tools):
        tw = f"{w}[{i}]"
        typ = t.get("type") if isinstance(t, dict) else None
        if not isinstance(typ, str):
            raise invalid(f"{tw} must be an object with a string `type`", f"{tw}.type")
        if typ == "function" or typ == "custom":
            _tool(t, tw, None, None, conv)
        elif typ == "namespace":
            ns = _str(t, "name", tw)
            members = t.get("tools")
            if not isinstance(members, list):
                raise invalid(f"{tw}.tools must be an array", f"{tw}.tools")
            head = _text(t.get("description"))
            head = None if head == f"Tools in the {ns} namespace." else head
            for j, m in enumerate(members):
                mw = f"{tw}.tools[{j}]"
                if not isinstance(m, dict) or m.get("type") not in ("function", "custom"):
                    raise invalid(f"{mw}: a namespace holds function and custom tools", f"{mw}.type")
                _tool(m, mw, ns, head, conv)
        elif typ not in conv.dropped:
            conv.dropped.append(typ)


def _tool(t: dict, w: str, ns: str | None, head: str | None, conv: _Conversation) -> None:
    flat = conv.name(ns, _str(t, "name", w))
    desc = _text(t.get("description"))
    if head:
        desc = f"{head}\n\n{desc}" if desc else head
    extra = None
    if t["type"] == "custom":
        conv.custom.add(flat)
        inp: dict = {"type": "string"}
        fmt = t.get("format")
        if isinstance(fmt, dict) and fmt.get("type") == "grammar" and _text(fmt.get("definition")):
            syntax = _text(fmt.get("syntax")) or "a"
            inp["description"] = f"Input matching this {syntax} grammar:\n{fmt['definition']}"
        params = {"type": "object", "properties": {"input": inp}, "required": ["input"]}
    else:
        params = t.get("parameters")
        if params is None:
            params = {"type": "object", "properties": {}}
        elif not isinstance(params, dict):
            raise invalid(f"{w}.parameters must be a JSON Schema object", f"{w}.parameters")
        if isinstance(strict := t.get("strict"), bool):
            extra = {"strict": strict}
    if all(x.name != flat for x in conv.req.tools):      # (additional_tools may repeat one)
        conv.req.tools.append(ir.Tool(flat, desc, params, extra=extra))


def _tool_choice(tc, req: ir.Request) -> None:
    if tc in ("auto", "none", "required"):
        req.tool_choice = tc
        return
    t = tc.get("type") if isinstance(tc, dict) else None
    if t == "function" or t == "custom":
        req.tool_choice, req.tool_choice_name = "tool", flat_name(_ns(tc), _str(tc, "name", "tool_choice"))
    elif t == "allowed_tools":
        if (mode := tc.get("mode")) not in ("auto", "required"):
            raise invalid('tool_choice.mode must be "auto" or "required"', "tool_choice.mode")
        req.tool_choice = mode
    elif isinstance(t, str):
        req.tool_choice = "auto"                  # a hosted tool's: that tool is dropped
    else:
        raise invalid('`tool_choice` must be "auto", "none", "required" or an object with a `type`',
                      "tool_choice")


def _format(f) -> dict | None:
    t = f.get("type") if isinstance(f, dict) else None
    if t == "text":
        return None
    if t == "json_object":
        return {"type": "json_object"}
    if t == "json_schema":
        if not isinstance(schema := f.get("schema"), dict):
            raise invalid("text.format.schema must be a JSON Schema object", "text.format.schema")
        strict = f.get("strict")
        out = {"type": "json_schema", "name": _text(f.get("name")) or "response", "schema": schema,
               "strict": strict if isinstance(strict, bool) else None}
        if _text(f.get("description")):
            out["description"] = f["description"]
        return out
    raise invalid("text.format.type must be text, json_object or json_schema", "text.format.type")


# ================================================================== small checks

def _of(*types):
    return lambda v: type(v) in types


def _field(body: dict, key: str, ok, what: str):
    v = body.get(key)
    if v is not None and not ok(v):
        raise invalid(f"`{key}` must be {what}", key)
    return v


def _str(d: dict, key: str, w: str) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v:
        raise invalid(f"{w}.{key} must be a non-empty string", f"{w}.{key}")
    return v


def _ns(d: dict) -> str | None:
    return _text(d.get("namespace"))
