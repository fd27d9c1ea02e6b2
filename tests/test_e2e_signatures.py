"""End-to-end: thinking signatures survive a multi-turn tool conversation, whatever the client dialect.

Theory (the spec under test): Gemini 3 rejects turn 2 unless each functionCall comes back with the
thoughtSignature it carried, and Anthropic rejects thinking blocks whose signature (or text) was
altered. Clients only send back what their SDK models or their dialect documents, so Plexus must
hide a signature where such a client keeps it verbatim (OpenAI: the tool call id; Anthropic: a
signature-only thinking block) and restore it, unwrapped, for the provider. Checked by what the
fake provider RECEIVES on turn 2: each functionCall with its own original signature byte for
byte, functionResponses paired by name in call order, no Plexus encoding left in any id or field;
and for Claude behind an OpenAI client, thinking_blocks coming back to Anthropic unchanged.
Turn 1 is non-streamed or streamed (the client rebuilding the turn with its SDK's helper).
"""

from __future__ import annotations

import base64
import json

import pytest

from matrix_cases import (ANTHROPIC_SIG, SYSTEM, TOOLS, Answer, anthropic_blocks, b64, received, reply_for)

SIG_T = b64(b"\xfa\xfb text-part signature \xff\xfe" * 2)          # on the text part
SIG_A = b64(b"\xf8\xf9 first call signature \xfb\xef\xbe?" * 3)   # on each functionCall its own
SIG_B = b64(b"\xfe\xff second call signature \xbf\xfb" * 3 + b"!!")
QUESTION = "Weather and local time in Paris?"
RESULTS = {"get_weather": "18C and sunny", "get_time": "14:05"}
CALLS = (("get_weather", {"city": "Paris"}), ("get_time", {"tz": "Europe/Paris"}))
TURN1 = Answer("Let me look both up.", thinking="I need the weather and the time.", calls=CALLS,
               usage=(25, 40, 15))
TURN1_CHUNKS = [[{"text": TURN1.thinking, "thought": True}],
                [{"text": TURN1.text, "thoughtSignature": SIG_T}],
                [{"functionCall": {"name": n, "args": a}, "thoughtSignature": s}
                 for (n, a), s in zip(CALLS, (SIG_A, SIG_B))]]
TURN2 = Answer("Paris: 18C and sunny, 14:05.")
STREAM = pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])


def _bytes(sig: str) -> bytes:
    """A base64 signature's bytes, whichever alphabet and padding carried it."""
    s = sig.replace("-", "+").replace("_", "/")
    return base64.b64decode(s + "=" * (-len(s) % 4))


def check_gemini_turn2(fake, text_sig: str | None, same=str.__eq__) -> None:
    """The fake Gemini's second request: the model turn with every signature where it was."""
    assert len(fake.requests) == 2
    rec = fake.requests[1]
    seen = received("gemini", rec)   # also: no Plexus encoding anywhere in the body
    assert seen["items"][-4:] == [("call", *CALLS[0]), ("call", *CALLS[1]),
                                  ("result", "get_weather", RESULTS["get_weather"]),
                                  ("result", "get_time", RESULTS["get_time"])]
    contents = rec.json["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    model, answers = contents[1]["parts"], contents[2]["parts"]
    calls = [p for p in model if "functionCall" in p]
    assert [(p["functionCall"]["name"], p["functionCall"]["args"]) for p in calls] == list(CALLS)
    for part, want in zip(calls, (SIG_A, SIG_B)):
        assert same(part.get("thoughtSignature", ""), want), f"{part} lost its own signature {want}"
    texts = [p for p in model if "text" in p and not p.get("thought") and p["text"]]
    assert [p["text"] for p in texts] == [TURN1.text]
    if text_sig is not None:
        assert same(texts[0].get("thoughtSignature", ""), text_sig)
    assert [p["functionResponse"]["name"] for p in answers] == ["get_weather", "get_time"]
    for p in answers:
        fid = p["functionResponse"].get("id")
        assert fid is None or fid == next(c["functionCall"].get("id") for c in calls
                                          if c["functionCall"]["name"] == p["functionResponse"]["name"])


def openai_tools() -> list:
    return [{"type": "function", "function": t} for t in TOOLS]


# ---------------------------------------------------------------- Gemini thinking model (alias gem)

@STREAM
def test_gemini_signatures_from_an_openai_client(fake, openai_client, stream):
    fake.script(reply_for("gemini", TURN1, chunks=TURN1_CHUNKS), reply_for("gemini", TURN2))
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    kw = {"tools": openai_tools(), "reasoning_effort": "high"}
    if stream:
        with openai_client.chat.completions.stream(model="gem", messages=msgs, **kw) as s:
            msg = s.get_final_completion().choices[0].message
    else:
        msg = openai_client.chat.completions.create(model="gem", messages=msgs, **kw).choices[0].message
    assert [tc.function.name for tc in msg.tool_calls] == ["get_weather", "get_time"]
    assert msg.content == TURN1.text
    # exactly the documented fields: role, content, tool_calls with id/type/function
    msgs.append({"role": "assistant", "content": msg.content, "tool_calls": [
        {"id": tc.id, "type": "function", "function": {"name": tc.function.name, "arguments": tc.function.arguments}}
        for tc in msg.tool_calls]})
    msgs += [{"role": "tool", "tool_call_id": tc.id, "content": RESULTS[tc.function.name]} for tc in msg.tool_calls]
    r2 = openai_client.chat.completions.create(model="gem", messages=msgs, **kw)
    assert r2.choices[0].message.content == TURN2.text
    check_gemini_turn2(fake, text_sig=None)   # an OpenAI client has no field for the text's signature


def _documented(block) -> dict:
    """An Anthropic response block reduced to the fields the Messages API documents for input."""
    keys = {"thinking": ("thinking", "signature"), "redacted_thinking": ("data",), "text": ("text",),
            "tool_use": ("id", "name", "input")}[block.type]
    return {"type": block.type, **{k: getattr(block, k) for k in keys}}


@STREAM
def test_gemini_signatures_from_an_anthropic_client(fake, anthropic_client, stream):
    fake.script(reply_for("gemini", TURN1, chunks=TURN1_CHUNKS), reply_for("gemini", TURN2))
    kw = {"system": SYSTEM, "max_tokens": 4000, "thinking": {"type": "enabled", "budget_tokens": 2048},
          "tools": [{"name": t["name"], "description": t["description"], "input_schema": t["parameters"]}
                    for t in TOOLS]}
    msgs = [{"role": "user", "content": QUESTION}]
    if stream:
        with anthropic_client.messages.stream(model="gem", messages=msgs, **kw) as s:
            m = s.get_final_message()
    else:
        m = anthropic_client.messages.create(model="gem", messages=msgs, **kw)
    uses = [b for b in m.content if b.type == "tool_use"]
    assert [b.name for b in uses] == ["get_weather", "get_time"] and m.stop_reason == "tool_use"
    msgs.append({"role": "assistant", "content": [_documented(b) for b in m.content]})
    msgs.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": b.id,
                                              "content": RESULTS[b.name]} for b in uses]})
    r2 = anthropic_client.messages.create(model="gem", messages=msgs, **kw)
    assert r2.content[-1].text == TURN2.text
    check_gemini_turn2(fake, text_sig=SIG_T)


@STREAM
def test_gemini_signatures_from_a_gemini_client(fake, genai_client, stream):
    """Passthrough: the google-genai SDK keeps thoughtSignature as bytes and re-encodes them, so the
    bytes (not the base64 spelling) are what must come back."""
    from google.genai import types

    fake.script(reply_for("gemini", TURN1, chunks=TURN1_CHUNKS), reply_for("gemini", TURN2))
    cfg = types.GenerateContentConfig(
        system_instruction=SYSTEM, thinking_config=types.ThinkingConfig(include_thoughts=True),
        tools=[types.Tool(function_declarations=[types.FunctionDeclaration(
            name=t["name"], description=t["description"], parameters_json_schema=t["parameters"]) for t in TOOLS])])
    contents = [types.Content(role="user", parts=[types.Part(text=QUESTION)])]
    if stream:
        parts = [p for ch in genai_client.models.generate_content_stream(model="gem", contents=contents, config=cfg)
                 for p in ch.candidates[0].content.parts]
        model = types.Content(role="model", parts=parts)
    else:
        model = genai_client.models.generate_content(model="gem", contents=contents, config=cfg).candidates[0].content
    calls = [p.function_call for p in model.parts if p.function_call]
    assert [c.name for c in calls] == ["get_weather", "get_time"]
    contents += [model, types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(
        name=c.name, id=c.id, response={"output": RESULTS[c.name]})) for c in calls])]
    r2 = genai_client.models.generate_content(model="gem", contents=contents, config=cfg)
    assert r2.text == TURN2.text
    check_gemini_turn2(fake, text_sig=SIG_T, same=lambda got, want: _bytes(got) == _bytes(want))


# ---------------------------------------------------------------- Claude thinking behind an OpenAI client

REDACTED = "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpPkNRj2YfWXGmKDxH4mP=="
CLAUDE_T1 = Answer("Checking.", thinking="Need the weather first.", calls=(CALLS[0],), usage=(30, 25, None))


@pytest.mark.parametrize("redacted", [False, True], ids=["thinking", "thinking+redacted"])
@STREAM
def test_claude_thinking_blocks_round_trip_through_an_openai_client(fake, openai_client, stream, redacted):
    blocks = anthropic_blocks(CLAUDE_T1)
    if redacted:
        blocks.insert(0, {"type": "redacted_thinking", "data": REDACTED})
    fake.script(reply_for("anthropic", CLAUDE_T1, blocks=blocks), reply_for("anthropic", TURN2))
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Weather in Paris?"}]
    kw = {"tools": openai_tools(), "reasoning_effort": "low"}
    if stream:
        with openai_client.chat.completions.stream(model="claude", messages=msgs, **kw) as s:
            msg = s.get_final_completion().choices[0].message
    else:
        msg = openai_client.chat.completions.create(model="claude", messages=msgs, **kw).choices[0].message
    extra = msg.model_extra or {}
    assert extra.get("reasoning_content") == CLAUDE_T1.thinking
    assert msg.content == CLAUDE_T1.text and msg.tool_calls[0].id == CLAUDE_T1.anthropic_ids[0]
    # the client echoes the assistant turn as its SDK gave it (LiteLLM's thinking_blocks convention)
    msgs.append({"role": "assistant", "content": msg.content, "reasoning_content": extra["reasoning_content"],
                 "thinking_blocks": extra["thinking_blocks"],
                 "tool_calls": [{"id": tc.id, "type": "function",
                                 "function": {"name": tc.function.name, "arguments": tc.function.arguments}}
                                for tc in msg.tool_calls]})
    msgs.append({"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": RESULTS["get_weather"]})
    r2 = openai_client.chat.completions.create(model="claude", messages=msgs, **kw)
    assert r2.choices[0].message.content == TURN2.text

    rec = fake.requests[1]
    received("anthropic", rec)        # tool_result pairs with its tool_use; no Plexus encoding
    body = rec.json
    assert body["thinking"]["type"] == "enabled", "thinking must stay on: the last assistant turn starts with it"
    assistant = body["messages"][1]
    assert assistant["role"] == "assistant"
    assert assistant["content"] == blocks, json.dumps(assistant["content"])[:800]   # byte for byte, in order
    assert body["messages"][2]["content"][0]["tool_use_id"] == CLAUDE_T1.anthropic_ids[0]
    assert ANTHROPIC_SIG.encode() in rec.body
