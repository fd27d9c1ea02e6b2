"""Gemini generateContent request bodies ↔ IR (pure).

The conversation itself (contents ↔ IR messages) lives in contents.py; this module holds the
entry points, systemInstruction, tools, toolConfig and generationConfig, and documents all the
mapping decisions of both.

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

build_request: IR → a Gemini provider's request
-----------------------------------------------
Path "/<model_path(model)>:generateContent" or "…:streamGenerateContent?alt=sse".
`model_path` is the one place a configured model name becomes a URL path (passthrough calls use
it too): "gemini-2.5-flash" and "models/gemini-2.5-flash" → "models/gemini-2.5-flash",
"tunedModels/x" → "tunedModels/x" (the API's two model collections); the id is percent-quoted
with only RFC 3986 unreserved characters left as they are (`-._~`), so a "/", ":", "?", "#",
"%" or space in it can never change the path, the method or the query.

- contents: user → "user", assistant → "model"; consecutive same-role contents merged (Gemini
  wants alternation). "system" messages in the conversation are appended to systemInstruction
  (Gemini has no system role in contents). Empty messages are skipped.
- Text → {"text"} (+ thoughtSignature when Text.signature); cache_control dropped.
- Image: base64 → inlineData (no media type: image/png); an http(s)/gs URL → fileData {mimeType (given, or guessed from the
  URL's extension, else image/jpeg), fileUri} (the gateway never fetches URLs); a data: URL →
  inlineData; any other URL → 400.
- ToolCall → functionCall {name, args} (ids are not sent: the Gemini API pairs calls and
  responses by name and order; arguments that are not a JSON object → {}) + thoughtSignature =
  ToolCall.signature.
- Thinking of source "gemini": with text → a thought part {"text", "thought": true} with its
  signature; signature-only → its signature goes on the next text/functionCall part of the same
  turn that has none (else the previous one, else an empty signed thought part). A Thinking
  without source whose signature is tagged "plexus-gemini:" counts as Gemini's. Thinking of any
  other source, unsigned (even Gemini's own text) or redacted → dropped (never sent to Gemini).
- A model turn with function calls of which none has a signature (history from another
  provider): the first call gets Gemini's documented placeholder "skip_thought_signature_validator"
  (Gemini 3 rejects unsigned calls). A real signature is never replaced.
- ToolResult → functionResponse {name, response}: name = ToolResult.name, else the name of the
  latest earlier ToolCall with that id, else the call id. response: a JSON-object text is sent
  as that object; other text → {"output": text}; is_error → {"error": text}. Images in a
  result → inlineData parts after the functionResponse parts of that turn.
- tools → one {"functionDeclarations": [...]} with `parametersJsonSchema` = schema.clean(params)
  (v1beta; Gemini accepts JSON Schema there). When the provider's base path ends in "/v1" (no
  JSON Schema fields) → `parameters` = schema.to_gemini(params). Gemini-only tools kept from a
  Gemini client are appended.
- tool_choice: auto → AUTO, none → NONE, required → ANY, tool → ANY + allowedFunctionNames.
  parallel_tool_calls has no Gemini equivalent: dropped.
- generationConfig: temperature, topP, topK, maxOutputTokens (req.max_tokens, else
  provider.max_tokens when > 0), stopSequences, seed/presencePenalty/frequencyPenalty from
  req.seed/presence_penalty/frequency_penalty (an OpenAI client's seed and penalties);
  response_format json_object → responseMimeType application/json; json_schema →
  + responseJsonSchema = schema.clean(schema) (v1: responseSchema = schema.to_gemini(schema)).
  n > 1 → 400 (Plexus relays one candidate).
- thinkingConfig (never when provider.reasoning is False): thinkingBudget, chosen over
  thinkingLevel because every thinking model accepts it (Gemini 2.5 rejects thinkingLevel;
  Gemini 3 accepts a budget for compatibility): thinking_budget, else the effort table
  (minimal 1024, low 2048, medium 8192, high 24576, xhigh/max 32768), else -1 (dynamic) when
  thinking is on; with includeThoughts true so thoughts come back. Thinking off / effort "none"
  → thinkingBudget 0. Nothing asked → no thinkingConfig. A Gemini client's own thinkingConfig
  is sent unchanged.
- user, metadata, stop_sequence details, cache_control → dropped.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson

from ... import ir
from ...errors import invalid
from ...ir import EFFORT_BUDGET, budget_effort
from . import schema as gschema
from .contents import build_contents, parse_contents



def _get(d: dict, camel: str, snake: str | None = None) -> Any:
    v = d.get(camel)
    if v is None and snake is not None:
        v = d.get(snake)
    return v


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

    si = _get(body, "systemInstruction", "system_instruction")
    if si is not None:
        req.system = _parse_system(si)

    tools = body.get("tools")
    if tools is not None:
        req.tools = _parse_tools(tools, gextra)
    tc = _get(body, "toolConfig", "tool_config")
    if isinstance(tc, dict):
        _parse_tool_config(tc, req)

    gc = _get(body, "generationConfig", "generation_config")
    if gc is not None:
        if not isinstance(gc, dict):
            raise invalid("generationConfig must be an object", "generationConfig")
        _parse_generation_config(gc, req, gextra)

    for camel, snake in (("safetySettings", "safety_settings"), ("cachedContent", "cached_content"),
                         ("labels", None)):
        v = _get(body, camel, snake)
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
        decls = _get(t, "functionDeclarations", "function_declarations")
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
            js = _get(d, "parametersJsonSchema", "parameters_json_schema")
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
    fcc = _get(tc, "functionCallingConfig", "function_calling_config")
    if not isinstance(fcc, dict):
        return
    mode = str(fcc.get("mode") or "AUTO").upper()
    names = _get(fcc, "allowedFunctionNames", "allowed_function_names") or []
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


def _num(v: Any, name: str, kind: type = float) -> Any:
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
        req.temperature = _num(g["temperature"], "temperature")
    if "topP" in g:
        req.top_p = _num(g["topP"], "topP")
    if "topK" in g:
        req.top_k = _num(g["topK"], "topK", int)
    if "maxOutputTokens" in g:
        req.max_tokens = _num(g["maxOutputTokens"], "maxOutputTokens", int)
    if "candidateCount" in g:
        req.n = _num(g["candidateCount"], "candidateCount", int)
    if "stopSequences" in g:
        stops = g["stopSequences"]
        if isinstance(stops, str):
            stops = [stops]
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise invalid("stopSequences must be a list of strings", "generationConfig.stopSequences")
        req.stop = stops
    if "seed" in g:
        req.seed = _num(g["seed"], "seed", int)
    if "presencePenalty" in g:
        req.presence_penalty = _num(g["presencePenalty"], "presencePenalty")
    if "frequencyPenalty" in g:
        req.frequency_penalty = _num(g["frequencyPenalty"], "frequencyPenalty")
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
    budget = _get(tcfg, "thinkingBudget", "thinking_budget")
    level = _get(tcfg, "thinkingLevel", "thinking_level")
    include = _get(tcfg, "includeThoughts", "include_thoughts")
    if budget is not None:
        budget = _num(budget, "thinkingConfig.thinkingBudget", int)
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


# ================================================================ build (IR → provider)

_COLLECTIONS = ("models/", "tunedModels/")


def model_path(model: str) -> str:
    """A Gemini model name → its URL path after the API version, without the leading "/"."""
    for c in _COLLECTIONS:
        if model.startswith(c):
            return c + quote(model[len(c):], safe="-._~")
    return "models/" + quote(model, safe="-._~")



def build_request(req: ir.Request, model: str, provider: Any) -> tuple[str, bytes]:
    legacy = str(getattr(provider, "base_path", "") or "").endswith("/v1")
    gextra = req.extra.get("gemini") or {}
    system = [{"text": t.text} for t in req.system if t.text]
    contents = build_contents(req.messages, system)
    body: dict = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}

    decls = []
    for t in req.tools:
        d: dict = {"name": t.name}
        if t.description:
            d["description"] = t.description
        if legacy:
            d["parameters"] = gschema.to_gemini(t.parameters)
        else:
            d["parametersJsonSchema"] = gschema.clean(t.parameters)
        decls.append(d)
    tools: list = [{"functionDeclarations": decls}] if decls else []
    tools.extend(gextra.get("tools") or ())
    if tools:
        body["tools"] = tools
    if decls and req.tool_choice:
        fcc: dict | None
        if req.tool_choice == "none":
            fcc = {"mode": "NONE"}
        elif req.tool_choice == "required":
            fcc = {"mode": "ANY"}
        elif req.tool_choice == "tool" and req.tool_choice_name:
            fcc = {"mode": "ANY", "allowedFunctionNames": [req.tool_choice_name]}
        else:
            fcc = {"mode": "AUTO"}
        body["toolConfig"] = {"functionCallingConfig": fcc}

    gc = _build_generation_config(req, provider, legacy, gextra)
    if gc:
        body["generationConfig"] = gc
    for k in ("safetySettings", "cachedContent", "labels"):
        if k in gextra:
            body[k] = gextra[k]
    path = (f"/{model_path(model)}:streamGenerateContent?alt=sse" if req.stream
            else f"/{model_path(model)}:generateContent")
    return path, orjson.dumps(body)


def _build_generation_config(req: ir.Request, provider: Any, legacy: bool, gextra: dict) -> dict:
    gc: dict = dict(gextra.get("generationConfig") or ())
    if req.n is not None and req.n > 1:
        raise invalid("n > 1 (candidateCount) is not supported for Gemini providers: "
                      "Plexus relays one candidate", "n")
    if req.temperature is not None:
        gc["temperature"] = req.temperature
    if req.top_p is not None:
        gc["topP"] = req.top_p
    if req.top_k is not None:
        gc["topK"] = req.top_k
    max_tokens = req.max_tokens
    if max_tokens is None:
        default = getattr(provider, "max_tokens", 0) or 0
        if default > 0:
            max_tokens = default
    if max_tokens is not None:
        gc["maxOutputTokens"] = max_tokens
    if req.stop:
        gc["stopSequences"] = list(req.stop)
    if req.seed is not None:
        gc["seed"] = req.seed
    if req.presence_penalty is not None:
        gc["presencePenalty"] = req.presence_penalty
    if req.frequency_penalty is not None:
        gc["frequencyPenalty"] = req.frequency_penalty
    rf = req.response_format
    if isinstance(rf, dict):
        kind = rf.get("type")
        if kind == "json_object":
            gc["responseMimeType"] = "application/json"
        elif kind == "json_schema":
            gc["responseMimeType"] = "application/json"
            sch = rf.get("schema")
            if sch is None and isinstance(rf.get("json_schema"), dict):  # OpenAI's nesting
                sch = rf["json_schema"].get("schema")
            if isinstance(sch, dict):
                if legacy:
                    gc["responseSchema"] = gschema.to_gemini(sch)
                else:
                    gc["responseJsonSchema"] = gschema.clean(sch, root_object=False)
    if getattr(provider, "reasoning", True):
        tc = _thinking_config(req, gextra)
        if tc is not None:
            gc["thinkingConfig"] = tc
    return gc


def _thinking_config(req: ir.Request, gextra: dict) -> dict | None:
    own = gextra.get("thinkingConfig")
    if own is not None:
        return dict(own)
    effort = req.reasoning_effort
    if req.thinking is False or effort == "none":
        return {"thinkingBudget": 0}
    if req.thinking_budget is not None and req.thinking_budget > 0:
        return {"thinkingBudget": req.thinking_budget, "includeThoughts": True}
    if effort in EFFORT_BUDGET:
        return {"thinkingBudget": EFFORT_BUDGET[effort], "includeThoughts": True}
    if req.thinking:
        return {"thinkingBudget": -1, "includeThoughts": True}
    return None
