"""The OpenAI Responses API (`POST /v1/responses`) end to end: the official openai SDK against a
real Plexus process (tests/spawn.py) and the scripted fake upstream, which records what it got.

One Plexus per module, four aliases: `gpt` (an OpenAI Chat Completions provider), `claude`
(Anthropic), `gem` (Gemini), all three reached by translation, and `relay`, an OpenAI provider
with `responses: true` at a base path of its own ("/openai/v1"), to which a Responses request is
relayed byte for byte (only the model changed).

Checked, per provider type: the answer (output items, status, usage with cached and reasoning
tokens) and what the provider received (the translated body); a streamed answer is a well-formed
event stream (`event:` = data.type, increasing sequence_number, every item added then done, the
deltas adding up to the done values) whose final response equals the unstreamed one for the same
scripted content; function calls (parallel, and their outputs on the next turn); Anthropic
thinking signatures riding in reasoning items' encrypted_content and restored byte for byte;
OpenAI's own encrypted reasoning dropped for other providers; max tokens → incomplete; errors in
the Responses shape (status, retry-after); a cut upstream stream never looks finished; the relay's
bytes both ways; the usage records. The Codex tool loop is tests/test_e2e_responses_codex.py.
"""

from __future__ import annotations

import base64
import json

import httpx
import openai
import pytest

from fake_upstream import (FakeUpstream, Reply, anthropic_error, dumps, gemini_error, openai_error, parse_sse,
                           responses_object, responses_stream, responses_usage, sse_event)
from matrix_cases import ANTHROPIC_SIG, TOOLS, Answer, anthropic_answer, anthropic_blocks, b64, received, reply_for
from spawn import start_plexus, usage_record

ADMIN = "responses-admin-key-0123"
CLIENT_KEY = "client-key"
CONFIG = """\
admin_key: {admin}
providers:
  p_openai: {{type: OpenAI, api_base_url: "{base}/v1", api_key: sk-up-openai, models: [up-gpt]}}
  p_anthropic: {{type: Anthropic, api_base_url: "{base}/v1", api_key: sk-up-anthropic, models: [up-claude]}}
  p_gemini: {{type: Gemini, api_base_url: "{base}/v1beta", api_key: g-up-key, models: [up-gemini]}}
  p_relay: {{type: OpenAI, api_base_url: "{base}/openai/v1", api_key: sk-up-relay, models: [up-relay], responses: true}}
models:
  gpt: {{targets: [{{provider: p_openai, model: up-gpt}}]}}
  claude: {{targets: [{{provider: p_anthropic, model: up-claude}}]}}
  gem: {{targets: [{{provider: p_gemini, model: up-gemini}}]}}
  relay: {{targets: [{{provider: p_relay, model: up-relay}}]}}
"""
PROVIDER = {"gpt": "openai", "claude": "anthropic", "gem": "gemini"}   # the translated aliases
UP_MODEL = {"gpt": "up-gpt", "claude": "up-claude", "gem": "up-gemini", "relay": "up-relay"}
TRANSLATED = pytest.mark.parametrize("alias", list(PROVIDER))
STREAM = pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
TERMINAL = ("response.completed", "response.incomplete", "response.failed")


class World:
    def __init__(self, fake: FakeUpstream, px) -> None:
        self.fake, self.px, self.url = fake, px, px.url
        self.client = openai.OpenAI(base_url=f"{px.url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=10)
        self.http = httpx.Client(base_url=px.url, timeout=10, trust_env=False,
                                 headers={"authorization": f"Bearer {CLIENT_KEY}"})

    def record(self, rid: str) -> dict:
        return usage_record(self.url, ADMIN, rid)

    def close(self) -> None:
        self.client.close()
        self.http.close()


def start_world(tmp_path_factory, name: str, log_level: str = "warning"):
    """A fake upstream and a Plexus process with the four aliases (a generator for a fixture)."""
    with FakeUpstream() as fake:
        with start_plexus(CONFIG.format(admin=ADMIN, base=fake.base_url), tmp_path_factory.mktemp(name),
                          log_level=log_level) as px:
            w = World(fake, px)
            try:
                yield w
            finally:
                w.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    yield from start_world(tmp_path_factory, "responses")


@pytest.fixture
def w(world):
    world.fake.reset()
    return world


# ================================================================ scripted provider answers

# Usage reports with cache and reasoning figures, and what the Responses `usage` must say:
# (input_tokens (cache included), cached_tokens, output_tokens (reasoning included), reasoning_tokens)
OA_USAGE = {"prompt_tokens": 100, "completion_tokens": 30, "total_tokens": 130,
            "prompt_tokens_details": {"cached_tokens": 40, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 10, "audio_tokens": 0}}
AN_USAGE_START = {"input_tokens": 50, "cache_read_input_tokens": 20, "cache_creation_input_tokens": 10,
                  "output_tokens": 1}
AN_USAGE = {"input_tokens": 50, "cache_read_input_tokens": 20, "cache_creation_input_tokens": 10,
            "output_tokens": 30}
GE_USAGE = {"promptTokenCount": 90, "cachedContentTokenCount": 30, "candidatesTokenCount": 20,
            "thoughtsTokenCount": 5, "totalTokenCount": 115}
USAGE_WANT = {"openai": (100, 40, 30, 10), "anthropic": (80, 20, 30, 0), "gemini": (90, 30, 25, 5)}
# the usage record's figures (tests/test_e2e_usage.py semantics)
RECORD_WANT = {"openai": dict(input_tokens=100, output_tokens=30, cached_tokens=40, reasoning_tokens=10),
               "anthropic": dict(input_tokens=80, output_tokens=30, cached_tokens=20, cache_write_tokens=10),
               "gemini": dict(input_tokens=90, output_tokens=25, cached_tokens=30, reasoning_tokens=5)}
# what a provider says when the answer hit max tokens, for each normal stop marker
MAX_STOP = {"openai": (b'"finish_reason":"stop"', b'"finish_reason":"length"'),
            "anthropic": (b'"stop_reason":"end_turn"', b'"stop_reason":"max_tokens"'),
            "gemini": (b'"finishReason":"STOP"', b'"finishReason":"MAX_TOKENS"')}


def _patch_usage(provider: str, obj: dict) -> None:
    if provider == "openai":
        if obj.get("usage") is not None:
            obj["usage"] = OA_USAGE
    elif provider == "anthropic":
        t = obj.get("type")
        if t == "message":
            obj["usage"] = AN_USAGE
        elif t == "message_start":
            obj["message"]["usage"] = AN_USAGE_START
        elif t == "message_delta":
            obj["usage"] = {"output_tokens": 30}
    elif (obj.get("candidates") or [{}])[0].get("finishReason"):
        obj["usageMetadata"] = GE_USAGE


def _patch_chunk(provider: str, chunk: bytes) -> bytes:
    head, sep, rest = chunk.partition(b"data: ")
    data = rest.rstrip(b"\r\n")
    if not sep or not data.startswith(b"{"):
        return chunk
    obj = json.loads(data)
    _patch_usage(provider, obj)
    return head + sep + dumps(obj) + rest[len(data):]


def scripted(provider: str, a: Answer, *, usage: bool = True, max_tokens: bool = False, **kw):
    """A script entry answering `a` the way `provider` would (stream or not, as asked), with the
    cache/reasoning usage report above (`usage`) and a max-tokens stop (`max_tokens`)."""
    make = reply_for(provider, a, **kw)

    def reply(req) -> Reply:
        r = make(req)
        if usage:
            if r.chunks is not None:
                r.chunks = [_patch_chunk(provider, c) for c in r.chunks]
            else:
                obj = json.loads(r.body)
                _patch_usage(provider, obj)
                r.body = dumps(obj)
        if max_tokens:
            old, new = MAX_STOP[provider]
            if r.chunks is not None:
                r.chunks = [c.replace(old, new) for c in r.chunks]
            else:
                r.body = r.body.replace(old, new)
        return r
    return reply


TEXT = Answer("Hello from the fake upstream.")
TOOLS_ANSWER = Answer("Checking both.", calls=(("get_weather", {"city": "Tokyo", "units": "c"}),
                                               ("get_time", {"tz": "Asia/Tokyo"})))
THINKING = Answer("The answer is 42.", thinking="Six sevens: 42.")
RESP_TOOLS = [{"type": "function", "name": t["name"], "description": t["description"],
               "parameters": t["parameters"], "strict": False} for t in TOOLS]
CALL_IDS = {"openai": ("call_Wx1", "call_Tm2"), "anthropic": ("toolu_01Wx", "toolu_02Tm")}


# ================================================================ reading answers

def as_dict(x) -> dict:
    return x if isinstance(x, dict) else x.model_dump(mode="json", exclude_none=True)


def _strip(x, drop=("id", "parsed")):
    if isinstance(x, dict):
        return {k: _strip(v, drop) for k, v in x.items() if v is not None and k not in drop}
    if isinstance(x, list):
        return [_strip(v, drop) for v in x]
    return x


def norm(resp) -> dict:
    """What must be equal in two answers to the same scripted content (ids and times may differ;
    arguments are compared as JSON: Anthropic streams the text of what it answers as an object)."""
    d = as_dict(resp)
    output = _strip(d["output"])
    for it in output:
        if isinstance(it.get("arguments"), str):
            it["arguments"] = json.loads(it["arguments"])
    return {"status": d["status"], "incomplete_details": d.get("incomplete_details"), "model": d["model"],
            "output": output, "usage": _strip(d.get("usage"))}


def usage_of(resp) -> tuple:
    u = as_dict(resp)["usage"]
    assert u["total_tokens"] == u["input_tokens"] + u["output_tokens"]
    return (u["input_tokens"], u["input_tokens_details"]["cached_tokens"], u["output_tokens"],
            u["output_tokens_details"]["reasoning_tokens"])


def items(resp) -> list[tuple]:
    """Output items as tuples: ("reasoning", summary text), ("message", text),
    ("function_call", name, args, call_id)."""
    out = []
    for it in as_dict(resp)["output"]:
        t = it["type"]
        if t == "reasoning":
            out.append(("reasoning", "".join(s["text"] for s in it.get("summary") or ())))
        elif t == "message":
            assert it["role"] == "assistant" and all(c["type"] == "output_text" for c in it["content"])
            out.append(("message", "".join(c["text"] for c in it["content"])))
        elif t == "function_call":
            out.append(("function_call", it["name"], json.loads(it["arguments"]), it["call_id"]))
        else:
            out.append((t,))
    return out


def check_answer(resp, provider: str, a: Answer) -> None:
    """`resp` says what the scripted provider answer `a` said (call ids as the provider gave them,
    or made up, unique, for Gemini; reasoning summaries adding up to the thinking)."""
    got = items(resp)
    assert "".join(i[1] for i in got if i[0] == "reasoning") == a.thinking
    rest = [i for i in got if i[0] != "reasoning"]
    assert rest[0] == ("message", a.text)
    assert [i[1:3] for i in rest[1:]] == [tuple(c) for c in a.calls]
    ids = [i[3] for i in rest[1:]]
    if provider in CALL_IDS:
        assert ids == list(CALL_IDS[provider][:len(ids)])
    assert all(ids) and len(set(ids)) == len(ids)
    if a.thinking:
        assert got[0][0] == "reasoning", "the thinking comes first"


def sse_events(raw: bytes) -> list[dict]:
    """A Responses event stream's events; each `event:` line names its data's type."""
    out = []
    for name, data in parse_sse(raw):
        obj = json.loads(data)
        assert name == obj["type"], f"event: {name} carries a {obj['type']}"
        out.append(obj)
    return out


def check_stream(events: list[dict]) -> dict:
    """A well-formed Responses stream: sequence numbers increasing, response.created first and one
    terminal event last, every item added then done with its deltas in between adding up to its
    done values, the final output the items as done. Returns the final response object."""
    seq = [e["sequence_number"] for e in events]
    assert all(b > a for a, b in zip(seq, seq[1:])), f"sequence numbers not increasing: {seq}"
    types = [e["type"] for e in events]
    assert types[0] == "response.created", types
    assert events[0]["response"]["status"] in ("in_progress", "queued")
    assert types[-1] in TERMINAL and sum(t in TERMINAL for t in types) == 1, types
    rid = events[0]["response"]["id"]
    opened: dict[int, dict] = {}
    done: dict[int, dict] = {}
    acc: dict[tuple, str] = {}
    for e in events[1:-1]:
        t = e["type"]
        if "response" in e:
            assert e["response"]["id"] == rid and t in ("response.in_progress", "response.queued"), t
            continue
        if t == "error":
            continue
        i = e.get("output_index")
        if t == "response.output_item.added":
            assert i not in opened and i not in done, f"item {i} added twice"
            assert i == len(opened) + len(done), f"item {i} out of order"
            opened[i] = e["item"]
        elif t == "response.output_item.done":
            added = opened.pop(i)
            assert (added["type"], added.get("id")) == (e["item"]["type"], e["item"].get("id"))
            done[i] = e["item"]
        else:
            assert i in opened, f"{t} for item {i}, which is not open"
            if "item_id" in e and opened[i].get("id") is not None:
                assert e["item_id"] == opened[i]["id"], (t, e["item_id"], opened[i]["id"])
            kind, _, phase = t.rpartition(".")
            key = (i, kind, e.get("content_index", e.get("summary_index")))
            if phase == "delta":
                acc[key] = acc.get(key, "") + e["delta"]
            elif phase == "done" and kind != "response.content_part" and kind != "response.reasoning_summary_part":
                value = e.get("text", e.get("arguments"))
                assert acc.get(key, "") == value, (t, acc.get(key), value)
    final = events[-1]["response"]
    assert final["id"] == rid
    if types[-1] != "response.failed":   # (a failed stream may leave its last item open)
        assert not opened, f"items never done: {sorted(opened)}"
        assert final["output"] == [done[i] for i in sorted(done)]
    return final


def stream_raw(w, body: dict, headers: dict | None = None) -> httpx.Response:
    r = w.http.post("/v1/responses", json={**body, "stream": True},
                    headers={"accept": "text/event-stream", **(headers or {})})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    return r


def dump_items(resp) -> list[dict]:
    """An answer's output items as a client sends them back as input."""
    return [as_dict(i) for i in resp.output] if not isinstance(resp, dict) else resp["output"]


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


@STREAM
def test_relay_stream_and_whole(w, stream):
    """Relayed: the SDK reads the provider's own answer (the fake's OpenAI-shaped events)."""
    if stream:
        with w.client.responses.stream(model="relay", input="hi") as s:
            events = list(s)
            final = s.get_final_response()
        assert [e.sequence_number for e in events] == list(range(len(events)))
    else:
        final = w.client.responses.create(model="relay", input="hi")
    assert norm(final) == norm(responses_object("up-relay"))
    assert final.id == "resp_fake0123456789"
    assert w.fake.last.path == "/openai/v1/responses"


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


# ================================================================ errors

RATE_LIMITED = {
    "openai": openai_error("Rate limit reached for requests", "requests", "rate_limit_exceeded"),
    "anthropic": anthropic_error("rate_limit_error", "Number of requests has exceeded your rate limit"),
    "gemini": gemini_error(429, "Resource has been exhausted (e.g. check quota).", "RESOURCE_EXHAUSTED"),
}
BAD_REQUEST = {
    "openai": openai_error("Invalid value for 'temperature'.", "invalid_request_error"),
    "anthropic": anthropic_error("invalid_request_error", "messages.0.content: bad"),
    "gemini": gemini_error(400, "Invalid JSON payload received.", "INVALID_ARGUMENT"),
}
ALL = pytest.mark.parametrize("alias", [*PROVIDER, "relay"])


@STREAM
@ALL
def test_upstream_429_keeps_status_and_retry_after(w, alias, stream):
    w.fake.script(Reply(429, json=RATE_LIMITED[PROVIDER.get(alias, "openai")], headers={"retry-after": "7"}))
    with pytest.raises(openai.RateLimitError) as ei:
        if stream:
            list(w.client.responses.create(model=alias, input="hi", stream=True))
        else:
            w.client.responses.create(model=alias, input="hi")
    e = ei.value
    assert e.status_code == 429 and e.response.headers["retry-after"] == "7"
    err = e.response.json()["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert {"message", "type"} <= err.keys()


@ALL
def test_upstream_400_stays_400(w, alias):
    w.fake.script(Reply(400, json=BAD_REQUEST[PROVIDER.get(alias, "openai")]))
    with pytest.raises(openai.BadRequestError) as ei:
        w.client.responses.create(model=alias, input="hi")
    assert ei.value.status_code == 400 and ei.value.response.json()["error"]["message"]
    assert len(w.fake.requests) == 1


@TRANSLATED
def test_previous_response_id_is_refused_when_translated(w, alias):
    with pytest.raises(openai.BadRequestError) as ei:
        w.client.responses.create(model=alias, input="hi", previous_response_id="resp_abc123")
    err = ei.value.response.json()["error"]
    assert "previous_response_id" in err["message"] or err.get("param") == "previous_response_id"
    assert w.fake.requests == []


def test_previous_response_id_is_relayed(w):
    r = w.client.responses.create(model="relay", input="hi", previous_response_id="resp_abc123")
    assert r.output_text
    assert w.fake.last.json["previous_response_id"] == "resp_abc123"


@TRANSLATED
def test_missing_input_is_400(w, alias):
    r = w.http.post("/v1/responses", json={"model": alias, "instructions": "Be terse."})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] and r.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        w.client.responses.create(model=alias)
    assert w.fake.requests == []


def _cut(alias: str):
    """A stream that breaks off mid-answer (the connection closes without its end)."""
    def make(req) -> Reply:
        if alias == "relay":
            return Reply.sse(responses_stream("up-relay")[:6], cut=True)
        provider = PROVIDER[alias]
        r = scripted(provider, Answer("A long answer that never ends"), usage=False)(req)
        keep = {"openai": 3, "anthropic": 4, "gemini": 1}[provider]   # some text, no finish
        return Reply.sse(r.chunks[:keep], cut=True)
    return make


@ALL
def test_cut_upstream_stream_is_no_clean_finish(w, alias):
    w.fake.script(_cut(alias))
    types, raised = [], None
    try:
        for e in w.client.responses.create(model=alias, input="hi", stream=True):
            types.append(e.type)
    except openai.APIError as e:
        raised = e
    assert types and types[0] == "response.created"
    assert "response.completed" not in types and "response.incomplete" not in types
    assert raised is not None or types[-1] in ("response.failed", "error"), types


@TRANSLATED
def test_cut_stream_raw_events_end_in_failure(w, alias):
    w.fake.script(_cut(alias))
    r = stream_raw(w, {"model": alias, "input": "hi"})
    events = sse_events(r.content)
    types = [e["type"] for e in events]
    assert types[-1] in ("response.failed", "error"), types
    assert "response.completed" not in types
    if types[-1] == "response.failed":
        final = check_stream(events)
        assert final["status"] == "failed" and final["error"]["message"]


# ================================================================ the relay (responses: true)

ODD = (b'{ "input" : [ {"role":"user","content":"say \\"model\\": \\u00e9\\ud83d\\ude00"} ],\n'
       b'  "metadata": {"model": "relay"}, "temperature": 0.70000, "x_unknown": [1.5E+300, -0.0],\r\n'
       b'  "model"  :  "relay" , "store" : false }')


def test_relay_is_byte_exact_both_ways(w):
    answer = (b'{\n  "id": "resp_odd",\n  "object": "response",\n  "status": "completed",\n'
              b'  "model": "up-relay",  "output": [{"type":"message","id":"msg_1","role":"assistant",'
              b'"status":"completed","content":[{"type":"output_text","text":"\\u00e9t\\u00e9","annotations":[]}]}],\n'
              b'  "usage": {"input_tokens": 3, "input_tokens_details": {"cached_tokens": 0},'
              b' "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 5},'
              b' "x_future": 1.50 }')
    w.fake.script(Reply(body=answer, content_type="application/json"))
    r = w.http.post("/v1/responses", content=ODD, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.content == answer
    rec = w.fake.last
    assert rec.path == "/openai/v1/responses"
    assert rec.headers["authorization"] == "Bearer sk-up-relay"
    i = ODD.rindex(b'"relay"')
    assert rec.body == ODD[:i] + b'"up-relay"' + ODD[i + len(b'"relay"'):]


def test_relay_stream_is_byte_exact(w):
    chunks = responses_stream("up-relay", pieces=("été", " ", "🌞"), usage=responses_usage(9, 3))
    w.fake.script(Reply.sse(chunks))
    body = b'{"model":"relay","stream":true,"input":"hi","include":["reasoning.encrypted_content"]}'
    r = w.http.post("/v1/responses", content=body,
                    headers={"content-type": "application/json", "accept": "text/event-stream"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.content == b"".join(chunks)
    assert w.fake.last.body == body.replace(b'"relay"', b'"up-relay"')
    final = check_stream(sse_events(r.content))
    assert final["output"][0]["content"][0]["text"] == "été 🌞"


def test_relay_with_plexus_reasoning_is_translated(w):
    """A request holding another provider's signature (a Plexus reasoning item) cannot go to
    OpenAI's Responses API as is: it is translated for the provider's Chat Completions."""
    w.fake.script(scripted("anthropic", THINKING))
    r1 = w.client.responses.create(model="claude", input="q", reasoning={"effort": "high"},
                                   include=["reasoning.encrypted_content"])
    assert r1.output[0].encrypted_content.startswith("plexus:")
    r2 = w.client.responses.create(model="relay", input=[{"role": "user", "content": "q"}, *dump_items(r1),
                                                         {"role": "user", "content": "next"}])
    assert r2.output_text == "Hello from the fake upstream."
    rec = w.fake.last
    assert rec.path == "/openai/v1/chat/completions" and b"plexus:" not in rec.body
    assert ANTHROPIC_SIG.encode() not in rec.body


# ================================================================ usage records

@STREAM
@TRANSLATED
def test_usage_record_translated(w, alias, stream):
    provider = PROVIDER[alias]
    w.fake.script(scripted(provider, TEXT))
    if stream:
        with w.client.responses.with_streaming_response.create(model=alias, input="hi", stream=True) as r:
            events = list(r.parse())
            rid = r.headers["x-plexus-request-id"]
        assert usage_of(events[-1].response) == USAGE_WANT[provider]
    else:
        r = w.client.responses.with_raw_response.create(model=alias, input="hi")
        assert usage_of(r.parse()) == USAGE_WANT[provider]
        rid = r.headers["x-plexus-request-id"]
    rec = w.record(rid)
    want = RECORD_WANT[provider]
    assert {k: rec[k] for k in want} == want
    assert (rec["status"], rec["http_status"], rec["dialect"], rec["provider_type"]) == \
        ("success", 200, "responses", provider)
    assert (rec["alias"], rec["model"], rec["stream"], rec["passthrough"]) == (alias, UP_MODEL[alias], stream, False)
    assert rec["finish_reason"] == "end_turn"


@STREAM
def test_usage_record_relayed(w, stream):
    usage = responses_usage(100, 30, cached=40, reasoning=10)
    w.fake.script(Reply.sse(responses_stream("up-relay", usage=usage)) if stream
                  else Reply(json=responses_object("up-relay", usage=usage)))
    if stream:
        with w.client.responses.with_streaming_response.create(model="relay", input="hi", stream=True) as r:
            assert list(r.parse())[-1].type == "response.completed"
            rid = r.headers["x-plexus-request-id"]
    else:
        r = w.client.responses.with_raw_response.create(model="relay", input="hi")
        assert r.parse().usage.input_tokens == 100
        rid = r.headers["x-plexus-request-id"]
    rec = w.record(rid)
    assert {k: rec[k] for k in RECORD_WANT["openai"]} == RECORD_WANT["openai"]
    assert (rec["status"], rec["dialect"], rec["provider_type"], rec["provider"]) == \
        ("success", "responses", "openai", "p_relay")
    assert (rec["stream"], rec["passthrough"], rec["finish_reason"]) == (stream, True, "end_turn")


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


@TRANSLATED
def test_upstream_error_event_mid_stream(w, alias):
    """The provider's own error event after some text: the client's stream fails, never completes."""
    provider = PROVIDER[alias]

    def make(req) -> Reply:
        r = scripted(provider, Answer("Some text that stops"), usage=False)(req)
        keep = {"openai": 2, "anthropic": 4, "gemini": 1}[provider]
        err = {"openai": b'data: {"error":{"message":"overloaded","type":"server_error"}}\n\n',
               "anthropic": sse_event("error", anthropic_error("overloaded_error", "Overloaded")),
               "gemini": b'data: {"error":{"code":503,"message":"overloaded","status":"UNAVAILABLE"}}\r\n\r\n'}
        return Reply.sse(r.chunks[:keep] + [err[provider]])
    w.fake.script(make)
    events = sse_events(stream_raw(w, {"model": alias, "input": "hi"}).content)
    types = [e["type"] for e in events]
    assert types[-1] in ("response.failed", "error") and "response.completed" not in types, types
    if types[-1] == "response.failed":
        assert "overload" in events[-1]["response"]["error"]["message"].lower()


def _relayed_stream_record(w, chunks: list[bytes]) -> dict:
    """Relay `chunks` to the client (who must get them as sent); the request's usage record."""
    w.fake.script(Reply.sse(chunks))
    r = stream_raw(w, {"model": "relay", "input": "hi"})
    assert r.content == b"".join(chunks)
    return w.record(r.headers["x-plexus-request-id"])


def _relayed_end(event: str, seq: int, obj: dict) -> bytes:
    return sse_event(event, {"type": event, "sequence_number": seq, **obj})


@STREAM
def test_relayed_incomplete_is_a_max_tokens_finish(w, stream):
    obj = responses_object("up-relay", status="incomplete", incomplete="max_output_tokens")
    if stream:
        chunks = responses_stream("up-relay")[:-1]
        rec = _relayed_stream_record(w, chunks + [_relayed_end("response.incomplete", len(chunks), {"response": obj})])
    else:
        w.fake.script(Reply(json=obj))
        r = w.client.responses.with_raw_response.create(model="relay", input="hi", max_output_tokens=16)
        assert r.parse().incomplete_details.reason == "max_output_tokens"
        rec = w.record(r.headers["x-plexus-request-id"])
    assert (rec["status"], rec["finish_reason"], rec["input_tokens"]) == ("success", "max_tokens", 12)


def test_relayed_error_event_is_an_error_record(w):
    chunks = responses_stream("up-relay")[:4]
    chunks.append(_relayed_end("error", 4, {"code": "rate_limit_exceeded", "message": "Slow down.", "param": None}))
    rec = _relayed_stream_record(w, chunks)
    assert rec["status"] == "error_stream" and "Slow down." in rec["error"]


def test_relayed_response_failed_is_an_error_record(w):
    chunks = responses_stream("up-relay")[:5]
    obj = responses_object("up-relay", [], status="failed", usage=None)
    obj["error"] = {"code": "server_error", "message": "The model failed."}
    rec = _relayed_stream_record(w, chunks + [_relayed_end("response.failed", 5, {"response": obj})])
    assert rec["status"] == "error_stream" and "The model failed." in (rec["error"] or "")
    assert rec["finish_reason"] == "error"


def test_cut_relayed_stream_keeps_sequence_numbers_increasing(w):
    w.fake.script(_cut("relay"))
    events = sse_events(stream_raw(w, {"model": "relay", "input": "hi"}).content)
    seq = [e["sequence_number"] for e in events]
    assert events[-1]["type"] == "error" and all(b > a for a, b in zip(seq, seq[1:])), seq
