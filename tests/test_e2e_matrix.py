"""End-to-end cross-dialect matrix through a real Plexus process, with the official SDKs.

Theory (the spec under test): whatever the client dialect (openai, anthropic, google-genai SDK)
and whatever the provider type behind the alias (gpt → OpenAI, claude → Anthropic, gem → Gemini),
streamed or not, a scripted conversation (matrix_cases.SCENARIOS: plain text; a tool history plus
two parallel tool calls; reasoning) arrives at the provider as the same request (system, turns,
tool calls paired with their results, tools, tool_choice, max tokens, temperature, thinking
budget: read back with matrix_cases.received) and comes back to the client as the same answer
(text, thinking, tool call names/arguments/ids, stop reason, usage). Ids are exact where a
dialect has them, derived (and stable) where it does not (Gemini function calls without id).
The SDK stream helpers (openai chat.completions.stream, anthropic messages.stream) must build the
same final message as the non-stream call, and a Claude-Code-shaped request (beta flags,
adaptive thinking, signatures, cache_control, a mid-conversation system turn, $schema tool
schemas, defer_loading) must work against OpenAI and Gemini providers.
"""

from __future__ import annotations

import base64
import json
import re

import pytest

from fake_upstream import CLIENT_KEY
from matrix_cases import (ANTHROPIC_SIG, GEMINI_SIG, SCENARIOS, SKIP_SIGNATURE, Answer, anthropic_kwargs, b64,
                          expected_received, gemini_parts, gemini_parts_of, genai_args, openai_kwargs, received,
                          reply_for)

PROVIDERS = {"gpt": "openai", "claude": "anthropic", "gem": "gemini"}
UP_MODEL = {"gpt": "up-gpt", "claude": "up-claude", "gem": "up-gemini"}
CLIENT_FIXTURE = {"openai": "openai_client", "anthropic": "anthropic_client", "gemini": "genai_client"}
OPENAI_STOP = {"stop": "end_turn", "tool_calls": "tool_use", "length": "max_tokens"}
DERIVED_ID = re.compile(r"call_[0-9a-f]{24}")


# ---------------------------------------------------------------- running a client, canonically

def _result(text, thinking, sigs, calls, stop, usage) -> dict:
    return {"text": "".join(text), "thinking": "".join(thinking), "sigs": [s for s in sigs if s],
            "calls": calls, "stop": stop, "usage": usage}


def run_openai(oc, alias: str, kw: dict, stream: bool) -> dict:
    if not stream:
        r = oc.chat.completions.create(model=alias, **kw)
        m, u = r.choices[0].message, r.usage
        ex = m.model_extra or {}
        return _result([m.content or ""], [ex.get("reasoning_content") or ""],
                       [b.get("signature") for b in ex.get("thinking_blocks") or ()],
                       [(c.id, c.function.name, json.loads(c.function.arguments)) for c in m.tool_calls or ()],
                       OPENAI_STOP[r.choices[0].finish_reason],
                       (u.prompt_tokens, u.completion_tokens, u.completion_tokens_details.reasoning_tokens))
    text, thinking, sigs, calls, finish, usage = [], [], [], {}, None, None
    for ch in oc.chat.completions.create(model=alias, stream=True, stream_options={"include_usage": True}, **kw):
        assert usage is None, "a chunk after the usage chunk"
        if ch.usage is not None:
            assert ch.choices == []
            u = ch.usage
            usage = (u.prompt_tokens, u.completion_tokens, u.completion_tokens_details.reasoning_tokens)
            continue
        d = ch.choices[0].delta
        ex = d.model_extra or {}
        text.append(d.content or "")
        thinking.append(ex.get("reasoning_content") or "")
        sigs += [b.get("signature") for b in ex.get("thinking_blocks") or ()]
        for tc in d.tool_calls or ():
            if tc.index not in calls:
                assert tc.index == len(calls) and tc.id and tc.function.name
                calls[tc.index] = [tc.id, tc.function.name, tc.function.arguments or ""]
            else:
                assert tc.id is None and tc.function.name is None
                calls[tc.index][2] += tc.function.arguments or ""
        if ch.choices[0].finish_reason:
            assert finish is None
            finish = ch.choices[0].finish_reason
    return _result(text, thinking, sigs, [(i, n, json.loads(a)) for i, n, a in calls.values()],
                   OPENAI_STOP[finish], usage)


def _anthropic_content(blocks: list[dict], stop: str, usage) -> dict:
    return _result([b["text"] for b in blocks if b["type"] == "text"],
                   [b["thinking"] for b in blocks if b["type"] == "thinking"],
                   [b.get("signature") for b in blocks if b["type"] == "thinking"],
                   [(b["id"], b["name"], b["input"]) for b in blocks if b["type"] == "tool_use"],
                   stop, usage)


def run_anthropic(ac, alias: str, kw: dict, stream: bool) -> dict:
    if not stream:
        m = ac.messages.create(model=alias, **kw)
        return _anthropic_content([b.model_dump() for b in m.content], m.stop_reason,
                                  (m.usage.input_tokens, m.usage.output_tokens, None))
    blocks, bufs, stop, usage = [], {}, None, [0, 0]
    for e in ac.messages.create(model=alias, stream=True, **kw):
        if e.type == "message_start":
            usage = [e.message.usage.input_tokens, e.message.usage.output_tokens]
        elif e.type == "content_block_start":
            assert e.index == len(blocks)
            blocks.append(e.content_block.model_dump())
        elif e.type == "content_block_delta":
            b, d = blocks[e.index], e.delta
            if d.type == "text_delta":
                b["text"] += d.text
            elif d.type == "thinking_delta":
                b["thinking"] += d.thinking
            elif d.type == "signature_delta":
                b["signature"] = d.signature
            elif d.type == "input_json_delta":
                bufs[e.index] = bufs.get(e.index, "") + d.partial_json
        elif e.type == "message_delta":
            stop = e.delta.stop_reason
            usage[1] = e.usage.output_tokens
            if e.usage.input_tokens is not None:
                usage[0] = e.usage.input_tokens
    for i, s in bufs.items():
        blocks[i]["input"] = json.loads(s)
    return _anthropic_content(blocks, stop, (usage[0], usage[1], None))


def run_gemini(gc, alias: str, args, stream: bool) -> dict:
    contents, config = args
    if stream:
        chunks = list(gc.models.generate_content_stream(model=alias, contents=contents, config=config))
        assert all(c.candidates[0].finish_reason is None for c in chunks[:-1])
    else:
        chunks = [gc.models.generate_content(model=alias, contents=contents, config=config)]
    parts = [p for c in chunks for p in c.candidates[0].content.parts or ()]
    calls = [(p.function_call.id, p.function_call.name, p.function_call.args) for p in parts if p.function_call]
    um = chunks[-1].usage_metadata
    return _result([p.text for p in parts if p.text and not p.thought],
                   [p.text for p in parts if p.text and p.thought],
                   [base64.b64encode(p.thought_signature).decode() for p in parts if p.thought_signature],
                   calls, "tool_use" if calls else {"STOP": "end_turn"}[chunks[-1].candidates[0].finish_reason.name],
                   (um.prompt_token_count, (um.candidates_token_count or 0) + (um.thoughts_token_count or 0),
                    um.thoughts_token_count))


def run(client: str, request, alias: str, sc, stream: bool) -> dict:
    c = request.getfixturevalue(CLIENT_FIXTURE[client])
    if client == "openai":
        return run_openai(c, alias, openai_kwargs(sc), stream)
    if client == "anthropic":
        return run_anthropic(c, alias, anthropic_kwargs(sc), stream)
    return run_gemini(c, alias, genai_args(sc), stream)


# ---------------------------------------------------------------- expectations

def expected_ids(client: str, provider: str, a) -> list:
    n = len(a.calls)
    if provider == "openai":
        return list(a.openai_ids[:n])
    if provider == "anthropic":
        return list(a.anthropic_ids[:n])
    return [None] * n if client == "gemini" else ["derived"] * n


def expected_sig(client: str, provider: str, sc) -> str | None:
    """A signature the client must see (None: it must see none; "any": some opaque one)."""
    if not sc.answer.thinking or provider == "openai":
        return None
    if provider == "anthropic":
        return "any" if client == "gemini" else ANTHROPIC_SIG
    return GEMINI_SIG if client == "gemini" else "plexus-gemini:" + GEMINI_SIG


def check_result(got: dict, client: str, provider: str, sc) -> None:
    a = sc.answer
    assert got["text"] == a.text
    assert got["thinking"] == a.thinking
    assert got["stop"] == a.stop
    assert [(n, args) for _, n, args in got["calls"]] == list(a.calls)
    for gid, want in zip([i for i, _, _ in got["calls"]], expected_ids(client, provider, a)):
        assert DERIVED_ID.fullmatch(gid) if want == "derived" else gid == want, (gid, want)
    assert len({i for i, _, _ in got["calls"]}) == len(got["calls"]) or client == "gemini"
    sig = expected_sig(client, provider, sc)
    if sig is None:
        assert got["sigs"] == []
    elif sig == "any":
        assert got["sigs"]
    else:
        assert sig in got["sigs"], f"{sig!r} not in {got['sigs']!r}"
    inp, out, reasoning = a.usage
    want_reasoning = {"anthropic": None, "openai": (reasoning or 0) if provider != "anthropic" else 0,
                      "gemini": reasoning if provider != "anthropic" else None}[client]
    assert got["usage"] == (inp, out, want_reasoning)


# ---------------------------------------------------------------- the matrix

@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("alias", list(PROVIDERS))
@pytest.mark.parametrize("client", list(CLIENT_FIXTURE))
def test_matrix(request, fake, client, alias, stream, scenario):
    sc, provider = SCENARIOS[scenario], PROVIDERS[alias]
    fake.script(reply_for(provider, sc.answer))
    got = run(client, request, alias, sc, stream)
    assert len(fake.requests) == 1
    rec = fake.last
    r = received(provider, rec)
    assert r["model"] == UP_MODEL[alias] and r["stream"] == stream
    want = expected_received(sc)
    assert {k: r[k] for k in want} == want
    if client != provider:   # translated, not passthrough
        if provider == "openai" and stream:
            assert rec.json["stream_options"] == {"include_usage": True}
        if provider == "gemini" and sc.answer.calls:
            calls = [p for parts in gemini_parts_of(rec) for p in parts if "functionCall" in p]
            assert calls and calls[0].get("thoughtSignature") == SKIP_SIGNATURE
    check_result(got, client, provider, sc)


# ---------------------------------------------------------------- SDK stream helpers vs non-stream

@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("alias", list(PROVIDERS))
def test_openai_stream_helper_equals_non_stream(fake, openai_client, alias, scenario):
    sc, provider = SCENARIOS[scenario], PROVIDERS[alias]
    kw = openai_kwargs(sc)
    fake.script(reply_for(provider, sc.answer), reply_for(provider, sc.answer))
    non = openai_client.chat.completions.create(model=alias, **kw)
    with openai_client.chat.completions.stream(model=alias, stream_options={"include_usage": True}, **kw) as s:
        fin = s.get_final_completion()
    a, b = non.choices[0], fin.choices[0]
    assert b.finish_reason == a.finish_reason
    assert b.message.content == a.message.content
    assert [(c.id, c.type, c.function.name, json.loads(c.function.arguments)) for c in b.message.tool_calls or ()] \
        == [(c.id, c.type, c.function.name, json.loads(c.function.arguments)) for c in a.message.tool_calls or ()]
    ea, eb = a.message.model_extra or {}, b.message.model_extra or {}
    assert eb.get("reasoning_content") == ea.get("reasoning_content")
    assert [{k: v for k, v in x.items() if k != "index"} for x in eb.get("thinking_blocks") or ()] \
        == ea.get("thinking_blocks", [])
    assert fin.usage.model_dump() == non.usage.model_dump()
    assert fin.id == non.id and fin.model == non.model


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("alias", list(PROVIDERS))
def test_anthropic_stream_helper_equals_non_stream(fake, anthropic_client, alias, scenario):
    sc, provider = SCENARIOS[scenario], PROVIDERS[alias]
    kw = anthropic_kwargs(sc)
    fake.script(reply_for(provider, sc.answer), reply_for(provider, sc.answer))
    non = anthropic_client.messages.create(model=alias, **kw)
    with anthropic_client.messages.stream(model=alias, **kw) as s:
        fin = s.get_final_message()
    assert [b.model_dump(exclude_none=True) for b in fin.content] == \
        [b.model_dump(exclude_none=True) for b in non.content]
    assert (fin.stop_reason, fin.stop_sequence, fin.model) == (non.stop_reason, non.stop_sequence, non.model)
    assert (fin.usage.input_tokens, fin.usage.output_tokens) == (non.usage.input_tokens, non.usage.output_tokens)
    if provider == "anthropic":   # other providers' ids are derived per request ("msg_" + a random seed)
        assert fin.id == non.id


# ---------------------------------------------------------------- a Claude Code request

CC_SYSTEM = ("You are Claude Code, Anthropic's official CLI for Claude.", "Working directory: /repo")
CC_REMINDER = "<system-reminder>The user opened README.md</system-reminder>"
CC_MIDSYS = "The user changed the working directory to /repo/docs."
CC_HEADERS = {
    "anthropic-version": "2023-06-01",
    "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,"
                      "fine-grained-tool-streaming-2025-05-14,effort-2025-11-24",
    "x-app": "cli", "user-agent": "claude-cli/2.0.50 (external, cli)",
    "anthropic-dangerous-direct-browser-access": "true",
}
CC_ANSWER = Answer("Reading it now.", thinking="I should read the README.",
                   calls=(("Read", {"file_path": "README.md"}), ("Bash", {"command": "wc -l README.md"})),
                   usage=(40, 60, 20))
CC_CALL_SIG = b64(b"\xfb\xef call signature of the turn \xff")
_SCHEMA = "http://json-schema.org/draft-07/schema#"


def claude_code_body(alias: str) -> dict:
    """What Claude Code 2.x sends to POST /v1/messages?beta=true (trimmed, every feature kept)."""
    eph = {"type": "ephemeral"}
    return {
        "model": alias, "max_tokens": 32000, "stream": True,
        "thinking": {"type": "adaptive"}, "output_config": {"effort": "high"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {"user_id": json.dumps({"device_id": "7f3a" * 16, "account_uuid": "",
                                            "session_id": "0b1e2f4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"})},
        "system": [{"type": "text", "text": CC_SYSTEM[0], "cache_control": eph},
                   {"type": "text", "text": CC_SYSTEM[1], "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": CC_REMINDER},
                                         {"type": "text", "text": "List the files.", "cache_control": eph}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "I'll list files.", "signature": ANTHROPIC_SIG},
                {"type": "text", "text": "Listing."},
                {"type": "tool_use", "id": "toolu_01Ls", "name": "Bash", "input": {"command": "ls"},
                 "caller": {"type": "direct"}, "cache_control": eph}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01Ls",
                                          "content": [{"type": "text", "text": "README.md\nsrc"}],
                                          "cache_control": eph}]},
            {"role": "system", "content": CC_MIDSYS},
            {"role": "user", "content": [{"type": "text", "text": "Now read README.md", "cache_control": eph}]},
        ],
        "tools": [
            {"name": "Bash", "description": "Run a shell command", "input_schema": {
                "$schema": _SCHEMA, "type": "object", "additionalProperties": False,
                "properties": {"command": {"type": "string"}, "timeout": {"type": "number"}},
                "required": ["command"]}},
            {"name": "Read", "description": "Read a file", "defer_loading": True, "input_schema": {
                "$schema": _SCHEMA, "type": "object", "additionalProperties": False,
                "properties": {"file_path": {"type": "string"}, "limit": {"type": "integer"}},
                "required": ["file_path"]}},
            {"name": "WebFetch", "description": "Fetch a URL", "cache_control": eph, "input_schema": {
                "$schema": _SCHEMA, "type": "object", "properties": {"url": {"type": "string", "format": "uri"}},
                "required": ["url"]}},
        ],
    }


def cc_expected_items(provider: str) -> list:
    items = [("user", CC_REMINDER), ("user", "List the files.")]
    if provider == "openai":            # thinking text rides as reasoning_content (DeepSeek needs it)
        items.append(("thinking", "I'll list files."))
    items += [("assistant", "Listing."), ("call", "Bash", {"command": "ls"}), ("result", "Bash", "README.md\nsrc")]
    if provider == "openai":            # a system turn stays in place
        items.append(("system", CC_MIDSYS))
    return items + [("user", "Now read README.md")]


def _no_schema_meta(schema) -> bool:
    if isinstance(schema, dict):
        return "$schema" not in schema and all(_no_schema_meta(v) for v in schema.values())
    return not isinstance(schema, list) or all(_no_schema_meta(v) for v in schema)


@pytest.mark.parametrize("alias", ["gpt", "gem"])
def test_claude_code_request(fake, http, alias):
    from test_stream_matrix import check_anthropic

    provider = PROVIDERS[alias]
    chunks = None
    if provider == "gemini":   # Gemini 3 style: the first call carries the turn's signature
        chunks = gemini_parts(CC_ANSWER)
        chunks[-2] = [{**chunks[-2][0], "thoughtSignature": CC_CALL_SIG}]
    fake.script(reply_for(provider, CC_ANSWER, **({"chunks": chunks} if chunks else {})))
    r = http.post("/v1/messages?beta=true", json=claude_code_body(alias),
                  headers={**CC_HEADERS, "x-api-key": CLIENT_KEY})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    got = check_anthropic(r.content, "end")   # every event SDK-valid, blocks well formed, SDK-accumulable
    assert (got["text"], got["thinking"]) == (CC_ANSWER.text, CC_ANSWER.thinking)
    assert got["tools"] == [tuple(c) for c in CC_ANSWER.calls]
    # Gemini's signatures come tagged so Claude Code sends them back where Plexus finds them
    assert got["sigs"] == (["plexus-gemini:" + GEMINI_SIG, "plexus-gemini:" + CC_CALL_SIG]
                           if provider == "gemini" else [])

    rec = fake.last
    for leak in (b"defer_loading", b"cache_control", b"caller", b"context_management", b"output_config",
                 ANTHROPIC_SIG.encode(), CLIENT_KEY.encode()):
        assert leak not in rec.body, f"{leak!r} reached the {provider} upstream"
    seen = received(provider, rec)
    assert seen["items"] == cc_expected_items(provider)
    assert [t[0] for t in seen["tools"]] == ["Bash", "Read", "WebFetch"]
    assert seen["max_tokens"] == 32000 and seen["reasoning"] == 24576 and seen["stream"] is True
    if provider == "openai":
        body = rec.json
        assert seen["system"] == "\n\n".join(CC_SYSTEM)
        # Claude Code's user_id is a ~150-character JSON string; OpenAI rejects a `user` over 64
        # characters (OpenRouter over 128): it must be shortened or left out, never sent as is
        assert len(body.get("user", "")) <= 64, f"user of {len(body['user'])} characters"
        assert body["stream_options"] == {"include_usage": True}
    else:
        assert seen["system"] == "\n\n".join(CC_SYSTEM + (CC_MIDSYS,))
        contents = rec.json["contents"]
        assert [c["role"] for c in contents] == ["user", "model", "user"], "Gemini needs alternating turns"
        call = next(p for p in contents[1]["parts"] if "functionCall" in p)
        assert call["thoughtSignature"] == SKIP_SIGNATURE          # history from another provider
        assert not any(p.get("thought") for c in contents for p in c["parts"])   # Anthropic thinking dropped
        assert all(_no_schema_meta(t[2]) for t in seen["tools"])
