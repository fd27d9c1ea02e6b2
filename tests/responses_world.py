"""Shared harness of the Responses API e2e tests (test_e2e_responses.py,
test_e2e_responses_errors.py, test_e2e_responses_codex.py).

A "world" is the scripted fake upstream (which records what it got) and one real Plexus process
(tests/spawn.py) with four aliases: `gpt` (an OpenAI Chat Completions provider), `claude`
(Anthropic), `gem` (Gemini), all three reached by translation, and `relay`, an OpenAI provider
with `responses: true` at a base path of its own ("/openai/v1"), to which a Responses request is
relayed byte for byte (only the model changed). Clients: the official openai SDK and raw httpx.
`world_fixtures` gives a test module its own world (one Plexus a module).

Also here: `scripted`, a provider answer with cache/reasoning usage figures (and what the
Responses usage and the usage record must then say) or a max-tokens stop; and the readers of an
answer: `items`, `usage_of`, `norm` (what two answers to the same content share),
`check_answer`, `sse_events` and `check_stream` (a well-formed Responses event stream:
`event:` = data.type, increasing sequence_number, every item added then done, the deltas adding
up to the done values).
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from fake_upstream import FakeUpstream, Reply, dumps, parse_sse
from matrix_cases import TOOLS, Answer, reply_for
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


def world_fixtures(name: str, log_level: str = "warning"):
    """A test module's fixtures, bound as `world, w = world_fixtures(name)`: `world`, one world
    for the module; `w`, that world with the fake upstream's script and request log emptied."""
    @pytest.fixture(scope="module")
    def world(tmp_path_factory):
        yield from start_world(tmp_path_factory, name, log_level)

    @pytest.fixture
    def w(world):
        world.fake.reset()
        return world
    return world, w


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
