"""Scripted conversations shared by the cross-dialect e2e tests (test_e2e_matrix, test_e2e_signatures).

Theory: each scenario is described once, dialect-neutrally (the conversation a client sends, the
answer the model gives), and rendered per dialect: the client request (openai / anthropic SDK
keyword arguments, google-genai contents + config) and the provider answer (JSON body, or the SSE
chunks the real API streams, arguments and text cut into fragments). The inverse, `received()`,
reads what the fake upstream got (any provider dialect) back into one canonical dict, so a test can
compare "what Plexus sent" with "what the scenario asked for" whatever the client/provider pair.

Canonical conversation items: ("user"|"assistant"|"system", text), ("thinking", text),
("call", name, args), ("result", name, text). Tool results are named through the call ids of the
same request (OpenAI/Anthropic) or by functionResponse.name (Gemini): a result that pairs with no
earlier call fails the read.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from fake_upstream import Recorded, Reply, openai_chunk, sse_data, sse_event

SYSTEM = "You are terse."
EFFORT_BUDGET = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576, "xhigh": 32768}
SKIP_SIGNATURE = "skip_thought_signature_validator"   # Gemini's documented placeholder
PLEXUS_MARKS = (b"__thought__", b"plexus-gemini", b"plexus-anthropic", b"cGxleHVz")  # last: base64 "plexus"

WEATHER = {"name": "get_weather", "description": "Current weather for a city",
           "parameters": {"type": "object", "properties": {
               "city": {"type": "string", "description": "City name"},
               "units": {"type": "string", "enum": ["c", "f"]}}, "required": ["city"]}}
TIME = {"name": "get_time", "description": "Local time in a time zone",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}
TOOLS = (WEATHER, TIME)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# Signatures with "+", "/" and "=" in them: any re-encoding (URL-safe base64, unpadding) shows.
ANTHROPIC_SIG = b64(b"\x12\xb5\x01\n" + bytes(range(248, 256)) * 6 + b"anthropic thinking signature")
GEMINI_SIG = b64(b"\xfb\xff\xbf gemini thought signature \xfe\xfa" * 3 + b"!")
assert all(c in ANTHROPIC_SIG and c in GEMINI_SIG for c in "+/=")


@dataclass(frozen=True)
class Answer:
    """What the model says, dialect-neutrally."""
    text: str
    thinking: str = ""
    calls: tuple = ()                     # ((name, args), ...)
    usage: tuple = (12, 6, None)          # input, output (reasoning included), reasoning or None
    openai_ids: tuple = ("call_Wx1", "call_Tm2")
    anthropic_ids: tuple = ("toolu_01Wx", "toolu_02Tm")

    @property
    def stop(self) -> str:
        return "tool_use" if self.calls else "end_turn"


@dataclass(frozen=True)
class Scenario:
    name: str
    history: tuple                        # canonical items the client sends
    answer: Answer
    tools: tuple = ()
    tool_choice: str | None = None        # "required" or None
    max_tokens: int = 300
    temperature: float | None = None
    effort: str | None = None             # reasoning: "high" = a 24576-token thinking budget
    expect: dict = field(default_factory=dict)

    @property
    def budget(self) -> int | None:
        return EFFORT_BUDGET[self.effort] if self.effort else None


SCENARIOS = {
    "text": Scenario("text", (("user", "Say hello."),), Answer("Hello from the fake upstream."),
                     temperature=0.5),
    "tools": Scenario(
        "tools",
        (("user", "Weather in Paris?"), ("call", "get_weather", {"city": "Paris"}),
         ("result", "get_weather", "18C and sunny"), ("user", "Now Tokyo's weather and time, please.")),
        Answer("Checking both.", calls=(("get_weather", {"city": "Tokyo", "units": "c"}),
                                        ("get_time", {"tz": "Asia/Tokyo"})), usage=(30, 20, None)),
        tools=TOOLS, tool_choice="required", max_tokens=500),
    "thinking": Scenario("thinking", (("user", "What is 6*7?"),),
                         Answer("The answer is 42.", thinking="Six sevens: 42.", usage=(20, 50, 30)),
                         max_tokens=32000, effort="high"),
}
HISTORY_IDS = {"openai": "call_prev1", "anthropic": "toolu_prev1"}


# ================================================================ client requests

def openai_kwargs(sc: Scenario) -> dict:
    msgs: list[dict] = [{"role": "system", "content": SYSTEM}]
    for item in sc.history:
        if item[0] == "user":
            msgs.append({"role": "user", "content": item[1]})
        elif item[0] == "call":
            msgs.append({"role": "assistant", "content": None, "tool_calls": [
                {"id": HISTORY_IDS["openai"], "type": "function",
                 "function": {"name": item[1], "arguments": json.dumps(item[2])}}]})
        elif item[0] == "result":
            msgs.append({"role": "tool", "tool_call_id": HISTORY_IDS["openai"], "content": item[2]})
    kw: dict = {"messages": msgs}
    if sc.effort:
        kw["reasoning_effort"] = sc.effort
        kw["max_completion_tokens"] = sc.max_tokens
    else:
        kw["max_tokens"] = sc.max_tokens
    if sc.temperature is not None:
        kw["temperature"] = sc.temperature
    if sc.tools:
        kw["tools"] = [{"type": "function", "function": t} for t in sc.tools]
    if sc.tool_choice:
        kw["tool_choice"] = sc.tool_choice
    return kw


def anthropic_kwargs(sc: Scenario) -> dict:
    msgs: list[dict] = []
    for item in sc.history:
        if item[0] == "user":
            msgs.append({"role": "user", "content": item[1]})
        elif item[0] == "call":
            msgs.append({"role": "assistant", "content": [
                {"type": "tool_use", "id": HISTORY_IDS["anthropic"], "name": item[1], "input": item[2]}]})
        elif item[0] == "result":
            msgs.append({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": HISTORY_IDS["anthropic"], "content": item[2]}]})
    kw: dict = {"system": SYSTEM, "messages": msgs, "max_tokens": sc.max_tokens}
    if sc.effort:
        kw["thinking"] = {"type": "enabled", "budget_tokens": sc.budget}
    if sc.temperature is not None:   # anthropic 2.x SDKs dropped the keyword; the API still takes it
        kw["extra_body"] = {"temperature": sc.temperature}
    if sc.tools:
        kw["tools"] = [{"name": t["name"], "description": t["description"], "input_schema": t["parameters"]}
                       for t in sc.tools]
    if sc.tool_choice:
        kw["tool_choice"] = {"type": "any"}
    return kw


def genai_args(sc: Scenario):
    """(contents, config) for google-genai's generate_content(_stream)."""
    from google.genai import types

    contents = []
    for item in sc.history:
        if item[0] == "user":
            contents.append(types.Content(role="user", parts=[types.Part(text=item[1])]))
        elif item[0] == "call":
            contents.append(types.Content(role="model", parts=[
                types.Part(function_call=types.FunctionCall(name=item[1], args=item[2]))]))
        elif item[0] == "result":
            contents.append(types.Content(role="user", parts=[types.Part(
                function_response=types.FunctionResponse(name=item[1], response={"output": item[2]}))]))
    cfg: dict = {"system_instruction": SYSTEM, "max_output_tokens": sc.max_tokens}
    if sc.temperature is not None:
        cfg["temperature"] = sc.temperature
    if sc.effort:
        cfg["thinking_config"] = types.ThinkingConfig(thinking_budget=sc.budget, include_thoughts=True)
    if sc.tools:
        cfg["tools"] = [types.Tool(function_declarations=[
            types.FunctionDeclaration(name=t["name"], description=t["description"],
                                      parameters_json_schema=t["parameters"]) for t in sc.tools])]
    if sc.tool_choice:
        cfg["tool_config"] = types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(mode="ANY"))
    return contents, types.GenerateContentConfig(**cfg)


# ================================================================ provider answers

def _halves(s: str) -> list[str]:
    k = max(1, len(s) // 2)
    return [s[:k], s[k:]] if len(s) > 1 else [s]


def openai_answer(a: Answer, model: str, stream: bool, include_usage: bool) -> Reply:
    inp, out, reasoning = a.usage
    usage = {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out,
             "completion_tokens_details": {"reasoning_tokens": reasoning or 0}}
    finish = "tool_calls" if a.calls else "stop"
    calls = [(a.openai_ids[k], n, json.dumps(args)) for k, (n, args) in enumerate(a.calls)]
    if not stream:
        msg: dict = {"role": "assistant", "content": a.text, "refusal": None}
        if a.thinking:
            msg["reasoning_content"] = a.thinking
        if calls:
            msg["tool_calls"] = [{"id": i, "type": "function", "function": {"name": n, "arguments": s}}
                                 for i, n, s in calls]
        return Reply(json={"id": "chatcmpl-fake", "object": "chat.completion", "created": 1700000000,
                           "model": model, "choices": [{"index": 0, "message": msg, "logprobs": None,
                                                        "finish_reason": finish}], "usage": usage})
    ch = [openai_chunk(model, {"role": "assistant", "content": "", "refusal": None})]
    ch += [openai_chunk(model, {"reasoning_content": p}) for p in _halves(a.thinking) if a.thinking]
    ch += [openai_chunk(model, {"content": p}) for p in _halves(a.text)]
    for k, (i, n, s) in enumerate(calls):
        ch.append(openai_chunk(model, {"tool_calls": [{"index": k, "id": i, "type": "function",
                                                       "function": {"name": n, "arguments": ""}}]}))
        ch += [openai_chunk(model, {"tool_calls": [{"index": k, "function": {"arguments": p}}]})
               for p in _halves(s)]
    ch.append(openai_chunk(model, {}, finish=finish))
    if include_usage:
        ch.append(openai_chunk(model, {}, no_choices=True, usage=usage))
    return Reply.sse([sse_data(c) for c in ch] + [b"data: [DONE]\n\n"])


def anthropic_blocks(a: Answer, signature: str = ANTHROPIC_SIG) -> list[dict]:
    blocks: list[dict] = []
    if a.thinking:
        blocks.append({"type": "thinking", "thinking": a.thinking, "signature": signature})
    blocks.append({"type": "text", "text": a.text})
    blocks += [{"type": "tool_use", "id": a.anthropic_ids[k], "name": n, "input": args}
               for k, (n, args) in enumerate(a.calls)]
    return blocks


def anthropic_answer(a: Answer, model: str, stream: bool, blocks: list[dict] | None = None) -> Reply:
    inp, out, _ = a.usage
    blocks = anthropic_blocks(a) if blocks is None else blocks
    if not stream:
        return Reply(json={"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                           "content": blocks, "stop_reason": a.stop, "stop_sequence": None,
                           "usage": {"input_tokens": inp, "output_tokens": out}})
    msg = {"id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": [],
           "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": inp, "output_tokens": 1}}
    ev = [sse_event("message_start", {"type": "message_start", "message": msg}), sse_event("ping", {"type": "ping"})]

    def delta(i, d):
        return sse_event("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d})
    for i, b in enumerate(blocks):
        t = b["type"]
        start = {"text": {"type": "text", "text": ""}, "redacted_thinking": b, "tool_use": {**b, "input": {}},
                 "thinking": {"type": "thinking", "thinking": "", "signature": ""}}[t]
        ev.append(sse_event("content_block_start", {"type": "content_block_start", "index": i, "content_block": start}))
        if t == "text":
            ev += [delta(i, {"type": "text_delta", "text": p}) for p in _halves(b["text"])]
        elif t == "thinking":
            ev += [delta(i, {"type": "thinking_delta", "thinking": p}) for p in _halves(b["thinking"])]
            ev.append(delta(i, {"type": "signature_delta", "signature": b["signature"]}))
        elif t == "tool_use":
            ev += [delta(i, {"type": "input_json_delta", "partial_json": p}) for p in _halves(json.dumps(b["input"]))]
        ev.append(sse_event("content_block_stop", {"type": "content_block_stop", "index": i}))
    ev.append(sse_event("message_delta", {"type": "message_delta", "usage": {"output_tokens": out},
                                          "delta": {"stop_reason": a.stop, "stop_sequence": None}}))
    ev.append(sse_event("message_stop", {"type": "message_stop"}))
    return Reply.sse(ev)


def gemini_parts(a: Answer, signature: str = GEMINI_SIG) -> list[list[dict]]:
    """The answer's parts, grouped as they would arrive in stream chunks."""
    chunks: list[list[dict]] = []
    if a.thinking:
        chunks.append([{"text": a.thinking, "thought": True}])
        first, second = _halves(a.text) if len(a.text) > 1 else (a.text, "")
        chunks.append([{"text": first, "thoughtSignature": signature}])
        if second:
            chunks.append([{"text": second}])
    else:
        chunks += [[{"text": p}] for p in _halves(a.text)]
    for n, args in a.calls:
        chunks.append([{"functionCall": {"name": n, "args": args}}])
    return chunks


def gemini_answer(a: Answer, model: str, stream: bool, chunks: list[list[dict]] | None = None,
                  response_id: str = "gem-resp-1") -> Reply:
    inp, out, reasoning = a.usage
    um = {"promptTokenCount": inp, "candidatesTokenCount": out - (reasoning or 0), "totalTokenCount": inp + out}
    if reasoning:
        um["thoughtsTokenCount"] = reasoning
    chunks = gemini_parts(a) if chunks is None else chunks

    def resp(parts, final):
        cand: dict = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if final:
            cand["finishReason"] = "STOP"
        usage = um if final else {"promptTokenCount": inp, "totalTokenCount": inp}
        return {"candidates": [cand], "usageMetadata": usage, "modelVersion": model, "responseId": response_id}
    if not stream:   # one answer: consecutive text parts come as one (as the API sends them)
        parts: list[dict] = []
        for p in (p for c in chunks for p in c):
            if parts and set(p) == {"text"} and set(parts[-1]) - {"thoughtSignature"} == {"text"}:
                parts[-1] = {**parts[-1], "text": parts[-1]["text"] + p["text"]}
            else:
                parts.append(p)
        return Reply(json=resp(parts, True))
    return Reply.sse([sse_data(resp(c, k == len(chunks) - 1), crlf=True) for k, c in enumerate(chunks)])


def reply_for(dialect: str, a: Answer, **kw):
    """A script entry answering in `dialect` with the model, stream flag and usage option the
    request itself carries (what the real provider would do)."""
    def make(req: Recorded) -> Reply:
        body = req.json or {}
        if dialect == "openai":
            return openai_answer(a, body.get("model", ""), bool(body.get("stream")),
                                 bool((body.get("stream_options") or {}).get("include_usage")))
        if dialect == "anthropic":
            return anthropic_answer(a, body.get("model", ""), bool(body.get("stream")), **kw)
        model, _, action = req.path.rsplit("/", 1)[-1].partition(":")
        return gemini_answer(a, model, action == "streamGenerateContent", **kw)
    return make


# ================================================================ what the upstream received

def _texts(content) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content] if content else []
    return [p["text"] for p in content if p.get("type") == "text" and p.get("text")]


def received(dialect: str, rec: Recorded) -> dict[str, Any]:
    """A provider request of any dialect → {model, stream, system, items, tools, tool_choice,
    max_tokens, temperature, reasoning (thinking budget; 0 = off)}."""
    for mark in PLEXUS_MARKS:
        assert mark not in rec.body, f"Plexus encoding {mark!r} leaked to the {dialect} upstream"
    return {"openai": _openai, "anthropic": _anthropic, "gemini": _gemini}[dialect](rec.json, rec)


def _openai(b: dict, rec: Recorded) -> dict:
    assert rec.path.endswith("/chat/completions")
    system, items, names = [], [], {}
    for m in b["messages"]:
        role = m["role"]
        if role in ("system", "developer"):
            if items:
                items += [("system", t) for t in _texts(m["content"])]
            else:
                system += _texts(m["content"])
        elif role == "user":
            items += [("user", t) for t in _texts(m["content"])]
        elif role == "assistant":
            if m.get("reasoning_content"):
                items.append(("thinking", m["reasoning_content"]))
            items += [("assistant", t) for t in _texts(m.get("content"))]
            for tc in m.get("tool_calls") or ():
                names[tc["id"]] = tc["function"]["name"]
                items.append(("call", tc["function"]["name"], json.loads(tc["function"]["arguments"])))
        elif role == "tool":
            assert m["tool_call_id"] in names, f"tool result {m['tool_call_id']!r} answers no call"
            items.append(("result", names[m["tool_call_id"]], m["content"]))
    tc = b.get("tool_choice")
    eff = b.get("reasoning_effort")
    return {"model": b["model"], "stream": b.get("stream", False), "system": "\n\n".join(system), "items": items,
            "tools": [(t["function"]["name"], t["function"].get("description"), t["function"].get("parameters"))
                      for t in b.get("tools") or ()],
            "tool_choice": ("tool", tc["function"]["name"]) if isinstance(tc, dict) else tc,
            "max_tokens": b.get("max_completion_tokens") or b.get("max_tokens"),
            "temperature": b.get("temperature"),
            "reasoning": None if eff is None else 0 if eff == "none" else EFFORT_BUDGET[eff]}


def _anthropic(b: dict, rec: Recorded) -> dict:
    assert rec.path.endswith("/messages")
    items, names = [], {}
    for m in b["messages"]:
        role = m["role"]
        c = m["content"]
        if isinstance(c, str):
            items.append((role, c))
            continue
        for blk in c:
            t = blk["type"]
            if t == "text":
                items.append((role, blk["text"]))
            elif t == "thinking":
                items.append(("thinking", blk["thinking"]))
            elif t == "tool_use":
                names[blk["id"]] = blk["name"]
                items.append(("call", blk["name"], blk["input"]))
            elif t == "tool_result":
                assert blk["tool_use_id"] in names, f"tool_result {blk['tool_use_id']!r} answers no tool_use"
                rc = blk.get("content", "")
                rc = rc if isinstance(rc, str) else "\n".join(_texts(rc))
                items.append(("result", names[blk["tool_use_id"]], rc))
    system = b.get("system") or ""
    tc = b.get("tool_choice")
    th = b.get("thinking")
    return {"model": b["model"], "stream": b.get("stream", False),
            "system": system if isinstance(system, str) else "\n\n".join(_texts(system)), "items": items,
            "tools": [(t["name"], t.get("description"), t.get("input_schema")) for t in b.get("tools") or ()],
            "tool_choice": None if tc is None else ("tool", tc["name"]) if tc["type"] == "tool"
            else {"any": "required"}.get(tc["type"], tc["type"]),
            "max_tokens": b.get("max_tokens"), "temperature": b.get("temperature"),
            "reasoning": None if th is None else th.get("budget_tokens", 0) if th["type"] == "enabled" else 0}


def _gemini(b: dict, rec: Recorded) -> dict:
    model, _, action = rec.path.rsplit("/", 1)[-1].partition(":")
    stream = action == "streamGenerateContent"
    if stream:
        assert rec.query.get("alt") == ["sse"], "Plexus should ask Gemini for SSE"
    items = []
    for c in b["contents"]:
        role = {"user": "user", "model": "assistant"}[c.get("role", "user")]
        for p in c["parts"]:
            if p.get("thought"):
                items.append(("thinking", p.get("text", "")))
            elif "text" in p:
                if p["text"]:
                    items.append((role, p["text"]))
            elif "functionCall" in p:
                items.append(("call", p["functionCall"]["name"], p["functionCall"].get("args", {})))
            elif "functionResponse" in p:
                r = p["functionResponse"]["response"]
                items.append(("result", p["functionResponse"]["name"],
                              r["output"] if set(r) == {"output"} else json.dumps(r)))
    si = b.get("systemInstruction") or {}
    gc = b.get("generationConfig") or {}
    fcc = (b.get("toolConfig") or {}).get("functionCallingConfig")
    choice = None
    if fcc:
        names = fcc.get("allowedFunctionNames") or []
        choice = {"AUTO": "auto", "NONE": "none"}.get(fcc["mode"]) or (
            ("tool", names[0]) if len(names) == 1 else "required")
    tcfg = gc.get("thinkingConfig")
    return {"model": model, "stream": stream, "system": "\n\n".join(p["text"] for p in si.get("parts", [])),
            "items": items,
            "tools": [(d["name"], d.get("description"),
                       _either(d, "parametersJsonSchema", "parameters_json_schema") or d.get("parameters"))
                      for t in b.get("tools") or () for d in t.get("functionDeclarations", ())],
            "tool_choice": choice, "max_tokens": gc.get("maxOutputTokens"), "temperature": gc.get("temperature"),
            "reasoning": None if tcfg is None else _either(tcfg, "thinkingBudget", "thinking_budget")}


def _either(d: dict, camel: str, snake: str):
    """The Gemini API reads both spellings (google-genai sends some fields in snake_case)."""
    return d[camel] if camel in d else d.get(snake)


def expected_received(sc: Scenario) -> dict:
    return {"system": SYSTEM, "items": list(sc.history),
            "tools": [(t["name"], t["description"], t["parameters"]) for t in sc.tools],
            "tool_choice": sc.tool_choice, "max_tokens": sc.max_tokens, "temperature": sc.temperature,
            "reasoning": sc.budget}


def gemini_parts_of(rec: Recorded, role: str = "model") -> list[list[dict]]:
    """The raw parts of every content of `role` a Gemini upstream received."""
    return [c["parts"] for c in rec.json["contents"] if c.get("role") == role]
