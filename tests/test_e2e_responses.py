"""The OpenAI Responses API (`POST /v1/responses`) end to end, translated: the official openai
SDK against a real Plexus process and the scripted fake upstream (tests/responses_world.py), for
the aliases `gpt` (OpenAI Chat Completions), `claude` (Anthropic) and `gem` (Gemini).

Checked, per provider type: the answer (output items, status, usage with cached and reasoning
tokens) and what the provider received (the translated body); a streamed answer is a well-formed
event stream whose final response equals the unstreamed one for the same scripted content;
function calls (parallel, and their outputs on the next turn), namespaced and custom tools;
Anthropic thinking signatures riding in reasoning items' encrypted_content and restored byte for
byte, Gemini's thoughtSignatures likewise; OpenAI's own encrypted reasoning dropped for other
providers; max tokens → incomplete; the SDK's structured parse. Errors, the relay and the usage
records are tests/test_e2e_responses_errors.py; the Codex tool loop is
tests/test_e2e_responses_codex.py.
"""

from __future__ import annotations

import base64
import json

import pytest

from matrix_cases import ANTHROPIC_SIG, TOOLS, Answer, anthropic_answer, anthropic_blocks, b64, received
from responses_world import (CALL_IDS, PROVIDER, RESP_TOOLS, STREAM, TEXT, THINKING, TOOLS_ANSWER, TRANSLATED,
                             UP_MODEL, USAGE_WANT, as_dict, check_answer, check_stream, dump_items, items, norm,
                             scripted, sse_events, stream_raw, usage_of, world_fixtures)


world, w = world_fixtures("responses")


# ================================================================ text, and what the provider got

@TRANSLATED
def test_text_answer_and_usage(w, alias):
    provider = PROVIDER[alias]
    w.fake.script(scripted(provider, TEXT))
    r = w.client.responses.create(model=alias, input="hi")
    assert (r.object, r.status, r.incomplete_details, r.error) == ("response", "completed", None, None)
    assert r.output_text == TEXT.text and r.model == UP_MODEL[alias]
    assert items(r) == [("message", TEXT.text)] and r.output[0].status == "completed"
    assert usage_of(r) == USAGE_WANT[provider]
    assert len(w.fake.requests) == 1
    seen = received(provider, w.fake.last)
    assert (seen["model"], seen["stream"], seen["items"]) == (UP_MODEL[alias], False, [("user", "hi")])


PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake image bytes").decode()
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "temp": {"type": "number"}},
          "required": ["city", "temp"], "additionalProperties": False}


@TRANSLATED
def test_request_is_translated(w, alias):
    """instructions, a developer item, an image, a JSON schema, max_output_tokens, temperature."""
    provider = PROVIDER[alias]
    w.fake.script(scripted(provider, Answer('{"city": "Paris", "temp": 18}')))
    r = w.client.responses.create(
        model=alias, instructions="Be terse.", max_output_tokens=300, temperature=0.25,
        input=[{"type": "message", "role": "developer", "content": "Answer in JSON."},
               {"type": "message", "role": "user", "content": [
                   {"type": "input_text", "text": "Where and how warm is this?"},
                   {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "auto"}]}],
        text={"format": {"type": "json_schema", "name": "weather", "schema": SCHEMA, "strict": True}})
    assert json.loads(r.output_text) == {"city": "Paris", "temp": 18}
    rec = w.fake.last
    seen = received(provider, rec)
    assert seen["system"] == "Be terse.\n\nAnswer in JSON."
    assert seen["items"] == [("user", "Where and how warm is this?")]
    assert (seen["max_tokens"], seen["temperature"]) == (300, 0.25)
    body = rec.json
    if provider == "openai":
        user = body["messages"][-1]
        assert user["role"] == "user"
        assert user["content"][1]["type"] == "image_url"
        assert user["content"][1]["image_url"]["url"] == f"data:image/png;base64,{PNG}"
        assert body["response_format"] == {"type": "json_schema", "json_schema": {
            "name": "weather", "schema": SCHEMA, "strict": True}}
    elif provider == "anthropic":
        assert body["messages"][0]["content"][1] == {
            "type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
        assert body["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    else:
        parts = body["contents"][0]["parts"]
        assert parts[1] == {"inlineData": {"mimeType": "image/png", "data": PNG}}
        gc = body["generationConfig"]
        assert gc["responseMimeType"] == "application/json"
        assert gc["responseJsonSchema"]["properties"] == SCHEMA["properties"]
    # the answer echoes the request's settings, as OpenAI's does
    assert (r.instructions, r.max_output_tokens, r.temperature) == ("Be terse.", 300, 0.25)
    assert r.text.format.type == "json_schema" and r.text.format.name == "weather"


# ================================================================ streams

SCENARIOS = {"text": TEXT, "tools": TOOLS_ANSWER, "thinking": THINKING}


def _kwargs(scenario: str) -> dict:
    kw: dict = {"input": "Question?", "include": ["reasoning.encrypted_content"]}
    if scenario == "tools":
        kw["tools"] = RESP_TOOLS
    if scenario == "thinking":
        kw["reasoning"] = {"effort": "high", "summary": "auto"}
    return kw


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@TRANSLATED
def test_stream_equals_non_stream(w, alias, scenario):
    """One answer three ways: unstreamed, the SDK's stream helper, raw SSE; the same output."""
    provider, a = PROVIDER[alias], SCENARIOS[scenario]
    kw = _kwargs(scenario)
    w.fake.script(*[scripted(provider, a)] * 3)
    whole = w.client.responses.create(model=alias, **kw)
    check_answer(whole, provider, a)
    assert whole.status == "completed" and usage_of(whole) == USAGE_WANT[provider]
    with w.client.responses.stream(model=alias, **kw) as s:
        events = list(s)
        final = s.get_final_response()
    seq = [e.sequence_number for e in events]
    assert all(y > x for x, y in zip(seq, seq[1:])) and events[-1].type == "response.completed"
    assert norm(final) == norm(whole)
    assert s.get_final_response().output_text == whole.output_text == a.text
    raw = stream_raw(w, {"model": alias, **kw})
    assert norm(check_stream(sse_events(raw.content))) == norm(whole)
    up = w.fake.requests
    assert [received(provider, r)["stream"] for r in up] == [False, True, True]


# ================================================================ tools

@TRANSLATED
def test_parallel_function_calls_and_their_outputs(w, alias):
    provider = PROVIDER[alias]
    question = "Weather and time in Tokyo?"
    w.fake.script(scripted(provider, TOOLS_ANSWER), scripted(provider, Answer("Tokyo: 18C, 14:05.")))
    r1 = w.client.responses.create(model=alias, input=question, tools=RESP_TOOLS, tool_choice="auto",
                                   parallel_tool_calls=True)
    check_answer(r1, provider, TOOLS_ANSWER)
    assert r1.status == "completed"
    calls = [i for i in r1.output if i.type == "function_call"]
    assert [c.status for c in calls] == ["completed", "completed"]
    seen = received(provider, w.fake.requests[0])
    assert seen["tools"] == [(t["name"], t["description"], t["parameters"]) for t in TOOLS]
    assert seen["tool_choice"] == "auto"

    outputs = [{"type": "function_call_output", "call_id": c.call_id, "output": out}
               for c, out in zip(calls, ("18C and cloudy", "14:05"))]
    r2 = w.client.responses.create(model=alias, tools=RESP_TOOLS,
                                   input=[{"role": "user", "content": question}, *dump_items(r1), *outputs])
    assert r2.output_text == "Tokyo: 18C, 14:05."
    seen = received(provider, w.fake.requests[1])
    assert seen["items"] == [("user", question), ("assistant", "Checking both."),
                             ("call", *TOOLS_ANSWER.calls[0]), ("call", *TOOLS_ANSWER.calls[1]),
                             ("result", "get_weather", "18C and cloudy"), ("result", "get_time", "14:05")]
    if provider != "gemini":   # the provider's own call ids come back to it
        body = w.fake.requests[1].body
        assert all(i.encode() in body for i in CALL_IDS[provider])


# ================================================================ reasoning

@STREAM
def test_anthropic_thinking_signature_round_trip(w, stream):
    w.fake.script(scripted("anthropic", THINKING), scripted("anthropic", Answer("7*8 is 56.")))
    kw = dict(model="claude", input="What is 6*7?", reasoning={"effort": "high", "summary": "auto"},
              include=["reasoning.encrypted_content"], store=False)
    if stream:
        with w.client.responses.stream(**kw) as s:
            r1 = s.get_final_response()
    else:
        r1 = w.client.responses.create(**kw)
    check_answer(r1, "anthropic", THINKING)
    rs = r1.output[0]
    assert rs.type == "reasoning" and [p.text for p in rs.summary] == [THINKING.thinking]
    assert rs.encrypted_content and rs.encrypted_content.startswith("plexus:")
    assert ANTHROPIC_SIG not in rs.encrypted_content   # wrapped, not shown as is

    r2 = w.client.responses.create(**{**kw, "input": [{"role": "user", "content": "What is 6*7?"},
                                                      *dump_items(r1),
                                                      {"role": "user", "content": "And 7*8?"}]})
    assert r2.output_text == "7*8 is 56."
    sent = w.fake.requests[1].json
    assert sent["messages"][1] == {"role": "assistant", "content": [
        {"type": "thinking", "thinking": THINKING.thinking, "signature": ANTHROPIC_SIG},
        {"type": "text", "text": THINKING.text}]}
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 24576}


def test_anthropic_redacted_thinking_round_trip(w):
    blocks = [{"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT"},
              *anthropic_blocks(THINKING)]
    w.fake.script(lambda req: anthropic_answer(THINKING, "up-claude", False, blocks=blocks),
                  scripted("anthropic", Answer("ok")))
    kw = dict(model="claude", reasoning={"effort": "high"}, include=["reasoning.encrypted_content"])
    r1 = w.client.responses.create(input="q", **kw)
    assert [i.type for i in r1.output] == ["reasoning", "reasoning", "message"]
    w.client.responses.create(input=[{"role": "user", "content": "q"}, *dump_items(r1),
                                     {"role": "user", "content": "more"}], **kw)
    assert w.fake.requests[1].json["messages"][1]["content"] == blocks


OPENAI_REASONING = {"type": "reasoning", "id": "rs_68c1f0a2b3d4e5f6",
                    "summary": [{"type": "summary_text", "text": "**Thinking** about the answer"}],
                    "encrypted_content": "gAAAAABoxfXl3-Wn8zqRJYQy3YbIjlDiVZ4J0AAAAAAAAAAAAAAAAAAAAA=="}


@pytest.mark.parametrize("alias", ["claude", "gem"])
def test_openai_encrypted_reasoning_is_dropped(w, alias):
    provider = PROVIDER[alias]
    w.fake.script(scripted(provider, TEXT))
    r = w.client.responses.create(model=alias, reasoning={"effort": "low"}, input=[
        {"role": "user", "content": "First question"}, OPENAI_REASONING,
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "First answer"}]},
        {"role": "user", "content": "Second question"}])
    assert r.output_text == TEXT.text
    rec = w.fake.last
    assert b"gAAAAA" not in rec.body and b"Thinking** about" not in rec.body
    assert received(provider, rec)["items"] == [("user", "First question"), ("assistant", "First answer"),
                                                ("user", "Second question")]


# ================================================================ stop reasons

@STREAM
@TRANSLATED
def test_max_tokens_is_incomplete(w, alias, stream):
    provider = PROVIDER[alias]
    w.fake.script(scripted(provider, TEXT, max_tokens=True))
    kw = dict(model=alias, input="Tell me everything.", max_output_tokens=16)
    if stream:
        events = list(w.client.responses.create(stream=True, **kw))
        assert events[-1].type == "response.incomplete", [e.type for e in events]
        assert "response.completed" not in [e.type for e in events]
        r = events[-1].response
    else:
        r = w.client.responses.create(**kw)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert "".join(c.text for i in r.output if i.type == "message" for c in i.content) == TEXT.text
    assert received(provider, w.fake.last)["max_tokens"] == 16


# ================================================================ more of what Codex and the SDK send

SIG_T = b64(b"\xfa\xfb text-part signature \xff\xfe" * 2)
SIG_A = b64(b"\xf8\xf9 first call signature \xfb\xef\xbe?" * 3)
SIG_B = b64(b"\xfe\xff second call signature \xbf\xfb" * 3 + b"!!")
GEM_CALLS = Answer("Let me look both up.", thinking="I need the weather and the time.",
                   calls=(("get_weather", {"city": "Paris"}), ("get_time", {"tz": "Europe/Paris"})))
GEM_CHUNKS = [[{"text": GEM_CALLS.thinking, "thought": True}],
              [{"text": GEM_CALLS.text, "thoughtSignature": SIG_T}],
              [{"functionCall": {"name": n, "args": a}, "thoughtSignature": s}
               for (n, a), s in zip(GEM_CALLS.calls, (SIG_A, SIG_B))]]


@STREAM
def test_gemini_signatures_round_trip(w, stream):
    """Gemini 3 rejects a turn whose parts lost their thoughtSignatures: each comes back where it was."""
    w.fake.script(scripted("gemini", GEM_CALLS, chunks=GEM_CHUNKS), scripted("gemini", Answer("Paris: 18C, 14:05.")))
    kw = dict(model="gem", tools=RESP_TOOLS, reasoning={"effort": "high", "summary": "auto"},
              include=["reasoning.encrypted_content"], store=False)
    if stream:
        with w.client.responses.stream(input="Weather and time in Paris?", **kw) as s:
            r1 = s.get_final_response()
    else:
        r1 = w.client.responses.create(input="Weather and time in Paris?", **kw)
    check_answer(r1, "gemini", GEM_CALLS)
    shown = json.dumps([as_dict(i) for i in r1.output])
    assert not any(sig in shown for sig in (SIG_T, SIG_A, SIG_B)), "signatures ride wrapped in encrypted_content"
    calls = [i for i in r1.output if i.type == "function_call"]
    outs = [{"type": "function_call_output", "call_id": c.call_id, "output": o}
            for c, o in zip(calls, ("18C", "14:05"))]
    r2 = w.client.responses.create(input=[{"role": "user", "content": "Weather and time in Paris?"},
                                          *dump_items(r1), *outs], **kw)
    assert r2.output_text == "Paris: 18C, 14:05."
    contents = w.fake.requests[1].json["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    model = contents[1]["parts"]
    texts = [p for p in model if p.get("text") and not p.get("thought")]
    assert [(p["text"], p.get("thoughtSignature")) for p in texts] == [(GEM_CALLS.text, SIG_T)]
    fcs = [p for p in model if "functionCall" in p]
    assert [(p["functionCall"]["name"], p.get("thoughtSignature")) for p in fcs] == \
        [("get_weather", SIG_A), ("get_time", SIG_B)]
    assert [p["functionResponse"]["name"] for p in contents[2]["parts"]] == ["get_weather", "get_time"]


@TRANSLATED
def test_tool_choice_of_a_namespaced_function(w, alias):
    provider = PROVIDER[alias]
    tools = [{"type": "namespace", "name": "mcp__files", "description": "Files",
              "tools": [{"type": "function", "name": "read", "description": "Read a file",
                         "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}]}]
    w.fake.script(scripted(provider, Answer("", calls=(("mcp__files__read", {"path": "a.txt"}),))))
    r = w.client.responses.create(model=alias, input="read a.txt", tools=tools,
                                  tool_choice={"type": "function", "name": "read", "namespace": "mcp__files"})
    call = next(i for i in r.output if i.type == "function_call")
    assert (call.name, call.namespace, json.loads(call.arguments)) == ("read", "mcp__files", {"path": "a.txt"})
    assert received(provider, w.fake.last)["tool_choice"] == ("tool", "mcp__files__read")


APPLY_PATCH = {"type": "custom", "name": "apply_patch", "description": "Apply a patch to files.",
               "format": {"type": "grammar", "syntax": "lark",
                          "definition": 'start: "*** Begin Patch" LF body "*** End Patch"\nbody: /(.|\\n)*/'}}
PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+hello\n*** End Patch"


@STREAM
@TRANSLATED
def test_custom_tool_call_round_trip(w, alias, stream):
    """Codex's freeform apply_patch: a custom tool; the provider's call is a custom_tool_call."""
    provider = PROVIDER[alias]
    w.fake.script(scripted(provider, Answer("", calls=(("apply_patch", {"input": PATCH}),))),
                  scripted(provider, Answer("Done.")))
    if stream:
        with w.client.responses.stream(model=alias, input="add hello.txt", tools=[APPLY_PATCH]) as s:
            r1 = s.get_final_response()
    else:
        r1 = w.client.responses.create(model=alias, input="add hello.txt", tools=[APPLY_PATCH])
    call = next(i for i in r1.output if i.type != "message")
    assert (call.type, call.name, call.input) == ("custom_tool_call", "apply_patch", PATCH)
    tool = received(provider, w.fake.requests[0])["tools"][0]
    assert tool[0] == "apply_patch" and "input" in json.dumps(tool[2])
    r2 = w.client.responses.create(model=alias, tools=[APPLY_PATCH], input=[
        {"role": "user", "content": "add hello.txt"}, *dump_items(r1),
        {"type": "custom_tool_call_output", "call_id": call.call_id, "output": "Success."}])
    assert r2.output_text == "Done."
    assert received(provider, w.fake.requests[1])["items"][-2:] == [
        ("call", "apply_patch", {"input": PATCH}), ("result", "apply_patch", "Success.")]


def test_sdk_parse_with_a_pydantic_model(w):
    from pydantic import BaseModel

    class Weather(BaseModel):
        city: str
        temp: float

    w.fake.script(scripted("anthropic", Answer('{"city": "Paris", "temp": 18.5}')))
    r = w.client.responses.parse(model="claude", input="Weather in Paris?", text_format=Weather)
    assert r.output_parsed == Weather(city="Paris", temp=18.5)
    fmt = w.fake.last.json["output_config"]["format"]
    assert fmt["type"] == "json_schema" and set(fmt["schema"]["properties"]) == {"city", "temp"}
