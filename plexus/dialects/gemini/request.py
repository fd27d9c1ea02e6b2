"""Gemini generateContent: a client's request body ↔ IR (pure).

`parse_request` reads a Gemini client's body; `parse_path` and `model_and_stream` are the
gateway's first look at the request (model and stream flag from the URL, `contents` present).
The conversation itself (contents ↔ IR messages) lives in contents.py; this module holds the
entry points, systemInstruction, tools, toolConfig and generationConfig, and documents the
parse decisions of both. The way back, IR → a Gemini provider's request, is build.py.

parse_request: a Gemini client's body → ir.Request
--------------------------------------------------
Model and stream come from the URL (`/v1beta/models/{alias}:generateContent` |
`:streamGenerateContent`). Every field is read in both spellings, as the API itself does
(lowerCamelCase, and snake_case as the google-genai SDK sends some: `system_instruction`,
`inline_data`, `mime_type`, `parameters_json_schema`, `include_thoughts`, ...).

- contents[] (role "user" | "model"; "function" and a missing role count as "user") → IR
  messages, one per turn: consecutive same-role contents are merged (the google-genai chat
  helper stores a streamed answer as one model content per chunk; a thought run and its
  signature must meet again in one Thinking).
- text → Text (empty text parts dropped; a Gemini thoughtSignature → Text.signature).
- thought parts → Thinking: consecutive thought parts join into one Thinking, closed by the
  part that carries a thoughtSignature. A signature wrapped by our encoder (encode.read_sig)
  is restored as an Anthropic signature or redacted_thinking (source "anthropic"); any other is
  Gemini's (source "gemini").
- inlineData {mimeType, data} → Image(media_type, data) (any MIME type, e.g. PDF: builders of
  other dialects decide); fileData {mimeType, fileUri} → Image(url, media_type).
- functionCall {id?, name, args} → ToolCall(arguments = JSON text, signature = the part's
  thoughtSignature). A call without id gets "call_<message index>_<call ordinal>".
- functionResponse {id?, name, response} → ToolResult(call_id, name): paired with the calls of
  the latest model turn by id, else by name in order (the first unanswered call of that name),
  so a call without id and its response get the same generated id. An unpaired response keeps
  its own id, else gets "call_<message index>_r<part index>". Content: {"output": "<str>"} →
  that string;
  {"error": x} alone → is_error with x as text; any other object → its JSON text.
- executableCode / codeExecutionResult / videoMetadata parts are dropped; other unknown parts
  are a 400.
- systemInstruction (Content, or a plain string) → system texts.
- generationConfig: temperature, topP, topK, maxOutputTokens, stopSequences, candidateCount → n;
  responseMimeType "application/json" → response_format json_object, or json_schema when
  responseJsonSchema (as is) or responseSchema (Gemini Schema → JSON Schema) is given;
  seed (an integer) / presencePenalty / frequencyPenalty (numbers) → req.seed /
  req.presence_penalty / req.frequency_penalty (OpenAI targets: seed / presence_penalty /
  frequency_penalty; Anthropic has none: dropped). thinkingConfig: thinkingBudget 0 →
  thinking off (effort "none"); -1 (dynamic) → thinking on, effort "medium"; n > 0 →
  thinking_budget n and effort by the shared table; thinkingLevel → effort (its lowercase
  name); includeThoughts alone asks for nothing (thinking stays unspecified). Another responseMimeType (e.g. text/x.enum) is kept for
  a Gemini target only.
- tools[].functionDeclarations → Tool(parameters = parametersJsonSchema as is, or `parameters`
  converted by schema.from_gemini). toolConfig.functionCallingConfig: AUTO/VALIDATED → "auto",
  NONE → "none", ANY → "required", or "tool" when allowedFunctionNames names exactly one
  (several names: "required"; the IR cannot name a subset).
- Gemini-only fields (safetySettings, cachedContent, labels, non-function tools such as
  googleSearch, the original thinkingConfig, other generationConfig keys) are kept in
  req.extra["gemini"] for a Gemini target and dropped by the other dialects.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from ... import ir
from ...errors import GatewayError, invalid
from ...ir import EFFORT_BUDGET, budget_effort
from ..common import either, require_array
from . import schema as gschema
from .contents import parse_contents

_METHODS = {b"generateContent": False, b"streamGenerateContent": True}


# ================================================================ the request line

def parse_path(rest: bytes) -> tuple[str, bool]:
    """`{model}:{method}`, the path after `/v1beta/models/` (or `/v1/models/`) → (model, stream);
    404 for a method other than generateContent / streamGenerateContent."""
    model, _, method = rest.rpartition(b":")
    stream = _METHODS.get(method)
    if stream is None:
        raise GatewayError(404, f"unknown method '{method.decode('latin-1')}'", "not_found")
    return unquote_to_bytes(model).decode("utf-8", "replace"), stream


def model_and_stream(body: dict, path_args: tuple[str, bool], query: Any = None) -> tuple[str, bool]:
    """Model and stream flag from the URL (parse_path); a "models/" prefix is the API's own."""
    model, stream = path_args
    if model.startswith("models/"):
        model = model[7:]
    require_array(body, "contents")
    return model, stream


# ================================================================ parse (client → IR)


def parse_request(body: dict, *, model: str | None = None, stream: bool | None = None) -> ir.Request:
    if not isinstance(body, dict):
        raise invalid("request body must be a JSON object")
    model = model or body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model is required (in the URL: /v1beta/models/{model}:generateContent)", "model")
    contents = body.get("contents")
    if isinstance(contents, dict):
        contents = [contents]
    if not isinstance(contents, list) or not contents:
        raise invalid("contents must be a non-empty list of Content objects", "contents")
    gextra: dict = {}
    req = ir.Request(model=model, messages=parse_contents(contents), stream=bool(stream))

    si = either(body, "systemInstruction", "system_instruction")
    if si is not None:
        req.system = _parse_system(si)

    tools = body.get("tools")
    if tools is not None:
        req.tools = _parse_tools(tools, gextra)
    tc = either(body, "toolConfig", "tool_config")
    if isinstance(tc, dict):
        _parse_tool_config(tc, req)

    gc = either(body, "generationConfig", "generation_config")
    if gc is not None:
        if not isinstance(gc, dict):
            raise invalid("generationConfig must be an object", "generationConfig")
        _parse_generation_config(gc, req, gextra)

    for camel, snake in (("safetySettings", "safety_settings"), ("cachedContent", "cached_content"),
                         ("labels", None)):
        v = either(body, camel, snake)
        if v is not None:
            gextra[camel] = v
    if gextra:
        req.extra["gemini"] = gextra
    return req


def _parse_system(si: Any) -> list[ir.Text]:
    if isinstance(si, str):
        return [ir.Text(si)] if si else []
    if isinstance(si, list):  # a list of parts
        parts = si
    elif isinstance(si, dict):
        parts = si.get("parts") or []
        if not isinstance(parts, list):
            raise invalid("systemInstruction.parts must be a list", "systemInstruction.parts")
    else:
        raise invalid("systemInstruction must be a Content object", "systemInstruction")
    out = []
    for i, p in enumerate(parts):
        t = p.get("text") if isinstance(p, dict) else p if isinstance(p, str) else None
        if not isinstance(t, str):
            raise invalid("systemInstruction parts must be text parts", f"systemInstruction.parts[{i}]")
        if t:
            out.append(ir.Text(t))
    return out


def _parse_tools(tools: Any, gextra: dict) -> list[ir.Tool]:
    if not isinstance(tools, list):
        raise invalid("tools must be a list", "tools")
    out = []
    other = []
    for ti, t in enumerate(tools):
        if not isinstance(t, dict):
            raise invalid("each tool must be an object", f"tools[{ti}]")
        decls = either(t, "functionDeclarations", "function_declarations")
        rest = {k: v for k, v in t.items() if k not in ("functionDeclarations", "function_declarations")}
        if rest:
            other.append(rest)
        if decls is None:
            continue
        if not isinstance(decls, list):
            raise invalid("functionDeclarations must be a list", f"tools[{ti}].functionDeclarations")
        for di, d in enumerate(decls):
            where = f"tools[{ti}].functionDeclarations[{di}]"
            if not isinstance(d, dict) or not isinstance(d.get("name"), str) or not d["name"]:
                raise invalid("a function declaration needs a name", where)
            js = either(d, "parametersJsonSchema", "parameters_json_schema")
            if js is not None:
                if not isinstance(js, dict):
                    raise invalid("parametersJsonSchema must be an object", f"{where}.parametersJsonSchema")
                params = js
            elif d.get("parameters") is not None:
                if not isinstance(d["parameters"], dict):
                    raise invalid("parameters must be a Schema object", f"{where}.parameters")
                params = gschema.from_gemini(d["parameters"])
            else:
                params = {"type": "object", "properties": {}}
            desc = d.get("description")
            out.append(ir.Tool(d["name"], desc if isinstance(desc, str) else None, params))
    if other:
        gextra["tools"] = other
    return out


def _parse_tool_config(tc: dict, req: ir.Request) -> None:
    fcc = either(tc, "functionCallingConfig", "function_calling_config")
    if not isinstance(fcc, dict):
        return
    mode = str(fcc.get("mode") or "AUTO").upper()
    names = either(fcc, "allowedFunctionNames", "allowed_function_names") or []
    if mode == "NONE":
        req.tool_choice = "none"
    elif mode == "ANY":
        if isinstance(names, list) and len(names) == 1 and isinstance(names[0], str):
            req.tool_choice, req.tool_choice_name = "tool", names[0]
        else:
            req.tool_choice = "required"
    else:
        req.tool_choice = "auto"


_GC_KNOWN = {
    "temperature": "temperature", "topP": "topP", "top_p": "topP", "topK": "topK", "top_k": "topK",
    "maxOutputTokens": "maxOutputTokens", "max_output_tokens": "maxOutputTokens",
    "stopSequences": "stopSequences", "stop_sequences": "stopSequences",
    "candidateCount": "candidateCount", "candidate_count": "candidateCount",
    "responseMimeType": "responseMimeType", "response_mime_type": "responseMimeType",
    "responseSchema": "responseSchema", "response_schema": "responseSchema",
    "responseJsonSchema": "responseJsonSchema", "response_json_schema": "responseJsonSchema",
    "thinkingConfig": "thinkingConfig", "thinking_config": "thinkingConfig",
    "seed": "seed", "presencePenalty": "presencePenalty", "presence_penalty": "presencePenalty",
    "frequencyPenalty": "frequencyPenalty", "frequency_penalty": "frequencyPenalty",
}


def _gc_number(v: Any, name: str, kind: type = float) -> Any:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise invalid(f"{name} must be a number", f"generationConfig.{name}")
    if kind is int:
        if v != int(v):
            raise invalid(f"{name} must be an integer", f"generationConfig.{name}")
        return int(v)
    return v


def _parse_generation_config(gc: dict, req: ir.Request, gextra: dict) -> None:
    g: dict = {}
    rest: dict = {}
    for k, v in gc.items():
        name = _GC_KNOWN.get(k)
        if name is None:
            rest[k] = v
        elif v is not None:
            g[name] = v
    if rest:
        gextra["generationConfig"] = rest
    if "temperature" in g:
        req.temperature = _gc_number(g["temperature"], "temperature")
    if "topP" in g:
        req.top_p = _gc_number(g["topP"], "topP")
    if "topK" in g:
        req.top_k = _gc_number(g["topK"], "topK", int)
    if "maxOutputTokens" in g:
        req.max_tokens = _gc_number(g["maxOutputTokens"], "maxOutputTokens", int)
    if "candidateCount" in g:
        req.n = _gc_number(g["candidateCount"], "candidateCount", int)
    if "stopSequences" in g:
        stops = g["stopSequences"]
        if isinstance(stops, str):
            stops = [stops]
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise invalid("stopSequences must be a list of strings", "generationConfig.stopSequences")
        req.stop = stops
    if "seed" in g:
        req.seed = _gc_number(g["seed"], "seed", int)
    if "presencePenalty" in g:
        req.presence_penalty = _gc_number(g["presencePenalty"], "presencePenalty")
    if "frequencyPenalty" in g:
        req.frequency_penalty = _gc_number(g["frequencyPenalty"], "frequencyPenalty")
    mime = g.get("responseMimeType")
    js = g.get("responseJsonSchema")
    if js is None and g.get("responseSchema") is not None:
        js = gschema.from_gemini(g["responseSchema"])
    if mime == "application/json" or (js is not None and mime is None):
        if isinstance(js, dict):
            req.response_format = {"type": "json_schema", "name": "response", "schema": js}
        else:
            req.response_format = {"type": "json_object"}
    elif mime is not None and mime != "text/plain":
        gextra.setdefault("generationConfig", {})["responseMimeType"] = mime
        if js is not None:
            gextra["generationConfig"]["responseJsonSchema"] = js
    tcfg = g.get("thinkingConfig")
    if tcfg is not None:
        if not isinstance(tcfg, dict):
            raise invalid("thinkingConfig must be an object", "generationConfig.thinkingConfig")
        _parse_thinking(tcfg, req, gextra)


def _parse_thinking(tcfg: dict, req: ir.Request, gextra: dict) -> None:
    norm = {}
    budget = either(tcfg, "thinkingBudget", "thinking_budget")
    level = either(tcfg, "thinkingLevel", "thinking_level")
    include = either(tcfg, "includeThoughts", "include_thoughts")
    if budget is not None:
        budget = _gc_number(budget, "thinkingConfig.thinkingBudget", int)
        norm["thinkingBudget"] = budget
        if budget == 0:
            req.thinking, req.reasoning_effort = False, "none"
        elif budget < 0:
            req.thinking, req.reasoning_effort = True, "medium"
        else:
            req.thinking, req.thinking_budget = True, budget
            req.reasoning_effort = budget_effort(budget)
    elif level is not None:
        if not isinstance(level, str):
            raise invalid("thinkingLevel must be a string", "generationConfig.thinkingConfig.thinkingLevel")
        norm["thinkingLevel"] = level
        lv = level.lower()
        if lv in EFFORT_BUDGET:
            req.thinking, req.reasoning_effort = True, lv
    if include is not None:
        norm["includeThoughts"] = bool(include)
    gextra["thinkingConfig"] = norm
