"""Gemini generateContent: IR → a Gemini provider's request (pure).

`build_request(req, model, provider) -> bytes` is the body (its contents through
contents.build_contents); `upstream_path(model, stream, sse)` is the URL path after the base URL
(the dialect record's `upstream_path`, for translated and relayed calls alike).

Path "/<model_path(model)>:generateContent" or "…:streamGenerateContent" (+ "?alt=sse" for an
SSE stream, which is what translated calls ask for). `model_path` is the one place a configured model name becomes a URL path (passthrough calls use
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
from ...ir import EFFORT_BUDGET
from . import schema as gschema
from .contents import build_contents


_COLLECTIONS = ("models/", "tunedModels/")


def model_path(model: str) -> str:
    """A Gemini model name → its URL path after the API version, without the leading "/"."""
    for c in _COLLECTIONS:
        if model.startswith(c):
            return c + quote(model[len(c):], safe="-._~")
    return "models/" + quote(model, safe="-._~")



def upstream_path(model: str, stream: bool, sse: bool = True) -> str:
    """The provider URL path for `model`: generateContent, or streamGenerateContent (with
    `?alt=sse` for an SSE stream; without it the API answers with a JSON array stream)."""
    if not stream:
        return f"/{model_path(model)}:generateContent"
    return f"/{model_path(model)}:streamGenerateContent" + ("?alt=sse" if sse else "")


def build_request(req: ir.Request, model: str, provider: Any) -> bytes:
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
    return orjson.dumps(body)


_GENERATION_FIELDS = (("temperature", "temperature"), ("top_p", "topP"), ("top_k", "topK"), ("seed", "seed"),
                      ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty"))


def _build_generation_config(req: ir.Request, provider: Any, legacy: bool, gextra: dict) -> dict:
    gc: dict = dict(gextra.get("generationConfig") or ())
    if req.n is not None and req.n > 1:
        raise invalid("n > 1 (candidateCount) is not supported for Gemini providers: "
                      "Plexus relays one candidate", "n")
    for attr, key in _GENERATION_FIELDS:  # IR fields copied as they are, when set
        value = getattr(req, attr)
        if value is not None:
            gc[key] = value
    max_tokens = req.max_tokens
    if max_tokens is None:
        default = getattr(provider, "max_tokens", 0) or 0
        if default > 0:
            max_tokens = default
    if max_tokens is not None:
        gc["maxOutputTokens"] = max_tokens
    if req.stop:
        gc["stopSequences"] = list(req.stop)
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
