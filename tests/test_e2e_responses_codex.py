"""A Codex-shaped tool loop over `POST /v1/responses`, on every provider type (and the relay).

Codex CLI sends one streamed request per step (`Accept: text/event-stream`), no `instructions`
(its base prompt is the first `developer` input item), function tools, MCP tools as a
`namespace` tool, the hosted `web_search`, tool_choice "auto", parallel_tool_calls, reasoning
{"summary": "auto"}, store false, include ["reasoning.encrypted_content"], a prompt_cache_key and
client_metadata; it reads the answer's items from the events and sends them all back on the next
turn (reasoning items with their encrypted_content, the function_call with its namespace, then
the function_call_output), ids left out.

Turn 1: the provider (as it sees the tools: `mcp__files__read`, flattened; no web_search, which
no other provider type runs) calls the namespaced function; Codex must see `name: "read"`,
`namespace: "mcp__files"`. Turn 2: the provider must receive the flattened call and its result,
with the thinking signature it gave (Anthropic `signature`, Gemini `thoughtSignature` on the
functionCall) byte for byte; the final answer is a message. The relay gets Codex's bytes (only the
model changed) and Codex gets OpenAI's. Requests are raw httpx with Codex's exact JSON and
headers, the SSE parsed by hand (tests/responses_world.py `check_stream`); then the openai
SDK replays turn 2 and must read the same answer.
"""

from __future__ import annotations

import copy
import json

import pytest

from fake_upstream import Reply, dumps, openai_chunk, responses_object, responses_usage, sse_data, sse_event
from matrix_cases import ANTHROPIC_SIG, GEMINI_SIG, Answer, anthropic_answer, gemini_answer, received, reply_for
from responses_world import PROVIDER, check_stream, norm, sse_events, world_fixtures
from spawn import wait_for


world, w = world_fixtures("codex", log_level="info")


BASE_PROMPT = ("You are Codex, based on GPT-5. You are running as a coding agent in the Codex CLI on a "
               "user's computer.\n\n## General\n\n- Prefer `rg` over `grep`.")
ENV_CONTEXT = ("<environment_context>\n  <cwd>/repo</cwd>\n  <approval_policy>on-request</approval_policy>\n"
               "  <sandbox_mode>workspace-write</sandbox_mode>\n  <network_access>restricted</network_access>\n"
               "  <shell>bash</shell>\n</environment_context>")
ASK = "Summarize README.md"
PATH_SCHEMA = {"type": "object", "properties": {"path": {"type": "string", "description": "File path"}},
               "required": ["path"], "additionalProperties": False}
TOOLS = [
    {"type": "function", "name": "shell", "description": "Runs a shell command and returns its output.",
     "strict": False, "parameters": {
         "type": "object", "properties": {
             "command": {"type": "array", "items": {"type": "string"}, "description": "The command to execute"},
             "workdir": {"type": "string"}, "timeout_ms": {"type": "number"}},
         "required": ["command"], "additionalProperties": False}},
    {"type": "namespace", "name": "mcp__files", "description": "Tools of the MCP server `files`.",
     "tools": [
         {"type": "function", "name": "read", "description": "Read a file", "strict": False,
          "parameters": PATH_SCHEMA},
         {"type": "function", "name": "write", "description": "Write a file", "strict": False,
          "parameters": {"type": "object", "properties": {"path": {"type": "string"},
                                                          "content": {"type": "string"}},
                         "required": ["path", "content"], "additionalProperties": False}}]},
    {"type": "web_search"},
]
FLAT_TOOLS = ["shell", "mcp__files__read", "mcp__files__write"]
HEADERS = {"accept": "text/event-stream", "originator": "codex_cli_rs", "openai-beta": "responses=experimental",
           "session_id": "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "version": "0.46.0",
           "user-agent": "codex_cli_rs/0.46.0 (Ubuntu 24.4.0; x86_64) xterm-256color"}
THOUGHT = "**Reading the README**\n\nI should read README.md first."
ARGS = {"path": "README.md"}
FILE = "# Plexus\n\nAn LLM API gateway."
FINAL = "README.md describes Plexus, an LLM API gateway."


def codex_body(alias: str, extra_input: list | None = None) -> dict:
    return {
        "model": alias,
        "input": [{"type": "message", "role": "developer", "content": [{"type": "input_text", "text": BASE_PROMPT}]},
                  {"type": "message", "role": "user", "content": [{"type": "input_text", "text": ENV_CONTEXT}]},
                  {"type": "message", "role": "user", "content": [{"type": "input_text", "text": ASK}]},
                  *(extra_input or [])],
        "tools": TOOLS, "tool_choice": "auto", "parallel_tool_calls": True,
        "reasoning": {"effort": "medium", "summary": "auto"}, "store": False, "stream": True,
        "include": ["reasoning.encrypted_content"], "prompt_cache_key": "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        "text": {"verbosity": "medium"},
        "client_metadata": {"originator": "codex_cli_rs", "session_id": "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"},
    }


# ---------------------------------------------------------------- the providers' turn 1

def openai_turn1(req) -> Reply:
    """A Chat Completions stream: reasoning_content, then the call (content null, as OpenAI sends)."""
    m = req.json["model"]
    ch = [openai_chunk(m, {"role": "assistant", "content": None}),
          openai_chunk(m, {"reasoning_content": THOUGHT[:20]}), openai_chunk(m, {"reasoning_content": THOUGHT[20:]}),
          openai_chunk(m, {"tool_calls": [{"index": 0, "id": "call_rd1", "type": "function",
                                           "function": {"name": "mcp__files__read", "arguments": ""}}]}),
          openai_chunk(m, {"tool_calls": [{"index": 0, "function": {"arguments": '{"path":'}}]}),
          openai_chunk(m, {"tool_calls": [{"index": 0, "function": {"arguments": ' "README.md"}'}}]}),
          openai_chunk(m, {}, finish="tool_calls"),
          openai_chunk(m, {}, no_choices=True, usage={"prompt_tokens": 900, "completion_tokens": 40,
                                                      "total_tokens": 940})]
    return Reply.sse([sse_data(c) for c in ch] + [b"data: [DONE]\n\n"])


CALL = Answer("", thinking=THOUGHT, calls=(("mcp__files__read", ARGS),), usage=(900, 40, None))


def anthropic_turn1(req) -> Reply:
    blocks = [{"type": "thinking", "thinking": THOUGHT, "signature": ANTHROPIC_SIG},
              {"type": "tool_use", "id": "toolu_01Rd", "name": "mcp__files__read", "input": ARGS}]
    return anthropic_answer(CALL, req.json["model"], bool(req.json.get("stream")), blocks=blocks)


def gemini_turn1(req) -> Reply:
    chunks = [[{"text": THOUGHT, "thought": True}],
              [{"functionCall": {"name": "mcp__files__read", "args": ARGS}, "thoughtSignature": GEMINI_SIG}]]
    model, _, action = req.path.rsplit("/", 1)[-1].partition(":")
    return gemini_answer(CALL, model, action == "streamGenerateContent", chunks=chunks)


# ---------------------------------------------------------------- OpenAI's own Responses stream (relay)

ENC = "gAAAAABoxfXl3-Wn8zqRJYQy3YbIjlDiVZ4J0" + "A" * 40 + "=="
RELAY_ITEMS = [
    {"id": "rs_0a1b2c", "type": "reasoning", "summary": [{"type": "summary_text", "text": THOUGHT}],
     "encrypted_content": ENC},
    {"id": "fc_0a1b2c", "type": "function_call", "status": "completed", "arguments": json.dumps(ARGS),
     "call_id": "call_Xy9", "name": "read", "namespace": "mcp__files"},
]


def responses_events(model: str, output: list[dict], usage: dict, rid: str = "resp_codex0123") -> list[bytes]:
    """The events api.openai.com streams for `output` (reasoning, function_call, message items)."""
    ev: list[dict] = [
        {"type": "response.created", "response": responses_object(model, [], status="in_progress", usage=None,
                                                                   rid=rid)},
        {"type": "response.in_progress", "response": responses_object(model, [], status="in_progress",
                                                                       usage=None, rid=rid)}]
    for i, item in enumerate(output):
        base = {"item_id": item["id"], "output_index": i}
        t = item["type"]
        if t == "reasoning":
            ev.append({"type": "response.output_item.added", "output_index": i,
                       "item": {"id": item["id"], "type": "reasoning", "summary": []}})
            for k, s in enumerate(item["summary"]):
                part = {"type": "summary_text", "text": ""}
                ev += [{"type": "response.reasoning_summary_part.added", **base, "summary_index": k, "part": part},
                       {"type": "response.reasoning_summary_text.delta", **base, "summary_index": k,
                        "delta": s["text"], "obfuscation": "abc"},
                       {"type": "response.reasoning_summary_text.done", **base, "summary_index": k,
                        "text": s["text"]},
                       {"type": "response.reasoning_summary_part.done", **base, "summary_index": k,
                        "part": {**part, "text": s["text"]}}]
        elif t == "function_call":
            ev += [{"type": "response.output_item.added", "output_index": i,
                    "item": {**item, "status": "in_progress", "arguments": ""}},
                   {"type": "response.function_call_arguments.delta", **base, "delta": item["arguments"],
                    "obfuscation": "abc"},
                   {"type": "response.function_call_arguments.done", **base, "arguments": item["arguments"]}]
        else:
            text = item["content"][0]["text"]
            part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
            ev += [{"type": "response.output_item.added", "output_index": i,
                    "item": {**item, "status": "in_progress", "content": []}},
                   {"type": "response.content_part.added", **base, "content_index": 0, "part": part},
                   {"type": "response.output_text.delta", **base, "content_index": 0, "delta": text,
                    "logprobs": [], "obfuscation": "abc"},
                   {"type": "response.output_text.done", **base, "content_index": 0, "text": text, "logprobs": []},
                   {"type": "response.content_part.done", **base, "content_index": 0, "part": {**part, "text": text}}]
        ev.append({"type": "response.output_item.done", "output_index": i, "item": item})
    ev.append({"type": "response.completed", "response": responses_object(model, output, usage=usage, rid=rid)})
    return [sse_event(e["type"], {"type": e["type"], "sequence_number": n,
                                  **{k: v for k, v in e.items() if k != "type"}}) for n, e in enumerate(ev)]


def relay_turn1(req) -> Reply:
    return Reply.sse(responses_events(req.json["model"], RELAY_ITEMS, responses_usage(900, 40, cached=512,
                                                                                        reasoning=24)))


def relay_turn2(req) -> Reply:
    msg = {"id": "msg_0a1b2c", "type": "message", "status": "completed", "role": "assistant",
           "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": FINAL}]}
    return Reply.sse(responses_events(req.json["model"], [msg], responses_usage(960, 20), rid="resp_codex4567"))


TURN1 = {"gpt": openai_turn1, "claude": anthropic_turn1, "gem": gemini_turn1, "relay": relay_turn1}


def turn2_reply(alias: str):
    return relay_turn2 if alias == "relay" else reply_for(PROVIDER[alias], Answer(FINAL))


# ---------------------------------------------------------------- Codex

def codex_post(w, body: dict):
    """One Codex step: the raw exchange, its events (checked well formed) and the final response."""
    raw = dumps(body)
    r = w.http.post("/v1/responses", content=raw, headers={**HEADERS, "content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.content)
    final = check_stream(events)
    assert events[-1]["type"] == "response.completed", [e["type"] for e in events]
    return raw, r, events, final


def sent_back(output: list[dict]) -> list[dict]:
    """What Codex sends back of an answer's items: everything but their ids."""
    return [{k: v for k, v in it.items() if k != "id"} for it in copy.deepcopy(output)]


def upstream_tool_names(provider: str, body: dict) -> list[str]:
    if provider == "openai":
        return [t["function"]["name"] for t in body["tools"]]
    if provider == "anthropic":
        return [t["name"] for t in body["tools"]]
    return [d["name"] for t in body["tools"] for d in t.get("functionDeclarations", ())]


@pytest.mark.parametrize("alias", ["gpt", "claude", "gem", "relay"])
def test_codex_tool_loop(w, alias):
    relay = alias == "relay"
    provider = "openai" if relay else PROVIDER[alias]
    fake = w.fake
    log_start = len(w.px.stderr())

    # ---- turn 1: the model calls mcp__files.read
    fake.script(TURN1[alias])
    body1 = codex_body(alias)
    raw1, r1, events1, final1 = codex_post(w, body1)
    rec1 = fake.last
    if relay:
        assert rec1.path == "/openai/v1/responses"
        assert rec1.body == raw1.replace(b'"model":"relay"', b'"model":"up-relay"')
        assert r1.content == b"".join(relay_turn1(rec1).chunks)
    else:
        assert rec1.json.get("stream") is True or rec1.path.endswith(":streamGenerateContent")
        assert b"web_search" not in rec1.body and b'"namespace"' not in rec1.body
        assert upstream_tool_names(provider, rec1.json) == FLAT_TOOLS
        seen = received(provider, rec1)
        assert seen["system"] == BASE_PROMPT
        assert seen["items"] == [("user", ENV_CONTEXT), ("user", ASK)]
        assert seen["tool_choice"] == "auto"
        name, desc, params = seen["tools"][1]
        assert name == "mcp__files__read" and desc.endswith("Read a file")   # (maybe under the namespace's)
        if provider != "gemini":   # (Gemini gets the schema cleaned of what it does not take)
            assert params == PATH_SCHEMA
        if provider == "openai":   # what Chat Completions also takes
            assert rec1.json["prompt_cache_key"] == body1["prompt_cache_key"]
        wait_for(lambda: "web_search" in w.px.stderr()[log_start:], what="a log line naming the dropped web_search")

    calls = [i for i in final1["output"] if i["type"] == "function_call"]
    assert len(calls) == 1
    call = calls[0]
    assert (call["name"], call.get("namespace"), json.loads(call["arguments"])) == ("read", "mcp__files", ARGS)
    assert call["call_id"] == {"gpt": "call_rd1", "claude": "toolu_01Rd", "relay": "call_Xy9"}.get(alias, call["call_id"])
    added = next(e["item"] for e in events1 if e["type"] == "response.output_item.added"
                 and e["item"]["type"] == "function_call")
    assert (added["name"], added.get("namespace")) == ("read", "mcp__files")
    reasoning = [i for i in final1["output"] if i["type"] == "reasoning"]
    assert "".join(s["text"] for i in reasoning for s in i["summary"]) == THOUGHT
    if provider in ("anthropic", "gemini") and not relay:
        assert any((i.get("encrypted_content") or "").startswith("plexus:") for i in reasoning)
    assert final1["status"] == "completed" and final1["usage"]["input_tokens"] == 900

    # ---- turn 2: Codex sends everything back with the tool's output
    extra = [*sent_back(final1["output"]),
             {"type": "function_call_output", "call_id": call["call_id"], "output": FILE}]
    body2 = codex_body(alias, extra)
    fake.script(turn2_reply(alias))
    raw2, r2, events2, final2 = codex_post(w, body2)
    assert [i["type"] for i in final2["output"]] == ["message"]
    assert final2["output"][0]["content"][0]["text"] == FINAL
    rec2 = fake.last
    if relay:
        assert rec2.body == raw2.replace(b'"model":"relay"', b'"model":"up-relay"')
        assert ENC.encode() in rec2.body and r2.content == b"".join(relay_turn2(rec2).chunks)
    else:
        assert b"web_search" not in rec2.body
        seen = received(provider, rec2)
        items = [i for i in seen["items"] if i[0] != "thinking" or provider == "anthropic"]
        want = [("user", ENV_CONTEXT), ("user", ASK), ("call", "mcp__files__read", ARGS),
                ("result", "mcp__files__read", FILE)]
        if provider == "anthropic":
            want.insert(2, ("thinking", THOUGHT))
        assert items == want
        body = rec2.json
        if provider == "anthropic":
            assert body["messages"][1] == {"role": "assistant", "content": [
                {"type": "thinking", "thinking": THOUGHT, "signature": ANTHROPIC_SIG},
                {"type": "tool_use", "id": "toolu_01Rd", "name": "mcp__files__read", "input": ARGS}]}
            assert body["thinking"] == {"type": "enabled", "budget_tokens": 8192}   # effort medium, kept on
        elif provider == "gemini":
            fc = [p for c in body["contents"] if c["role"] == "model" for p in c["parts"] if "functionCall" in p]
            assert len(fc) == 1 and fc[0]["thoughtSignature"] == GEMINI_SIG
            assert fc[0]["functionCall"]["name"] == "mcp__files__read"
        else:
            call_msg = next(m for m in body["messages"] if m.get("tool_calls"))
            assert call_msg["tool_calls"][0]["id"] == "call_rd1"

    # ---- the openai SDK replays turn 2 and reads the same answer
    fake.script(turn2_reply(alias))
    kw = {k: v for k, v in body2.items() if k not in ("stream", "client_metadata")}
    with w.client.responses.stream(**kw, extra_body={"client_metadata": body2["client_metadata"]},
                                   extra_headers={k: v for k, v in HEADERS.items() if k != "accept"}) as s:
        final = s.get_final_response()
    assert final.output_text == FINAL
    assert norm(final) == norm(final2)
    assert fake.last.json == rec2.json   # the same request as Codex's raw one
