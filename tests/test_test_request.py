"""`plexus test-request` (plexus/test_request.py): shape rules, the example files, and the tool run
against a real Plexus process (tests/spawn.py) in front of the scripted fake upstream.

Theory: the tool is checked as a user sees it, by its printed output and exit code. Unit tests
hold the shape rules (every rule of the module docstring, both ways, and the ambiguous shapes
that must be refused), what is sent per dialect (path, model, stream flag, Gemini's endpoint),
the SSE line splitter, and colors. Every example file in config/examples must be detected as
the dialect its name says and parse with that dialect's own request parser.

End to end, one Plexus (inbound key required) with an alias per provider type (`gpt` OpenAI,
`claude` Anthropic, `gem` Gemini) and `relay` (an OpenAI provider with `responses: true`): every
client dialect × provider type × stream/whole gets an answer with thinking, text and two tool
calls (tests/matrix_cases.py), and the output must show them distinctly (`[thinking] …`, the
text, `[tool_call name] {args}`), then status, timings, usage and the x-plexus-* headers; exact
usage lines (cached, cache-write, reasoning tokens) come from scripted same-dialect answers. An
upstream error is exit 1 with the status and the error body; a stream cut upstream is exit 1
with `[error]`; no key is a 401 (exit 1); nothing listening is exit 2 with one line; a streamed
answer is printed while it is still arriving (the fake holds the rest back).
"""

from __future__ import annotations

import io
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fake_upstream import (FakeUpstream, Reply, anthropic_error, gemini_error, openai_chunk, openai_error,
                           responses_object, responses_stream, responses_usage, sse_data, sse_event)
from matrix_cases import Answer, anthropic_answer, gemini_answer, openai_answer, received, reply_for
from plexus import test_request as tr
from plexus.dialects import registry
from plexus.test_request_render import READERS, Out, sse_events, sse_lines
from spawn import child_env, free_port, start_plexus

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "config" / "examples"
KEY = "tester-key-0123"
CONFIG = """\
keys: {{tester: {{secret: {key}}}}}
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
ALIAS = {"openai": "gpt", "anthropic": "claude", "gemini": "gem"}
UP_MODEL = {"gpt": "up-gpt", "claude": "up-claude", "gem": "up-gemini", "relay": "up-relay"}
DIALECTS = ("openai", "anthropic", "gemini", "responses")
CALLS = (("get_weather", {"city": "Tokyo", "units": "c"}), ("get_time", {"tz": "Asia/Tokyo"}))
ANSWER = Answer("The answer is 42.", thinking="Six sevens: 42.", calls=CALLS, usage=(20, 50, 30))
TIME_LINE = re.compile(r"^time: ttfb \d+\.\d ms( · first content \d+\.\d ms)? · total \d+\.\d ms$", re.M)


# ================================================================ shape rules

MSG = [{"role": "user", "content": "hi"}]
SHAPES = [
    ({"contents": [{"parts": [{"text": "hi"}]}]}, "gemini"),
    ({"contents": [], "stream": True, "model": "x"}, "gemini"),
    ({"input": "hi"}, "responses"),
    ({"input": [{"role": "user", "content": "hi"}], "max_output_tokens": 5}, "responses"),
    ({"messages": MSG}, "openai"),
    ({"messages": MSG, "temperature": 0.1, "stream": True}, "openai"),
    ({"messages": MSG, "max_tokens": 10}, "anthropic"),
    ({"messages": MSG, "system": "be terse"}, "anthropic"),
    ({"messages": MSG, "thinking": {"type": "enabled", "budget_tokens": 1024}}, "anthropic"),
    ({"messages": MSG, "stop_sequences": ["x"]}, "anthropic"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]}]},
     "anthropic"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "u"}}]}]},
     "anthropic"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}]}]},
     "anthropic"),
    ({"messages": MSG, "tools": [{"name": "f", "input_schema": {"type": "object"}}]}, "anthropic"),
    ({"messages": MSG, "tool_choice": {"type": "any"}}, "anthropic"),
    # OpenAI markers win over the legacy max_tokens
    ({"messages": [{"role": "system", "content": "s"}, *MSG], "max_tokens": 10}, "openai"),
    ({"messages": [{"role": "developer", "content": "s"}, *MSG], "max_tokens": 10}, "openai"),
    ({"messages": [*MSG, {"role": "assistant", "tool_calls": []}, {"role": "tool", "tool_call_id": "c",
                                                                 "content": "r"}], "max_tokens": 10}, "openai"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}],
      "max_tokens": 10}, "openai"),
    ({"messages": MSG, "max_tokens": 10, "max_completion_tokens": 10}, "openai"),
    ({"messages": MSG, "max_tokens": 10, "reasoning_effort": "low"}, "openai"),
    ({"messages": MSG, "max_tokens": 10, "stream_options": {"include_usage": True}}, "openai"),
    ({"messages": MSG, "max_tokens": 10, "tools": [{"type": "function", "function": {"name": "f"}}]}, "openai"),
    ({"messages": MSG, "max_tokens": 10, "tool_choice": "auto"}, "openai"),
    ({"messages": MSG, "max_tokens": 10, "tool_choice": {"type": "function", "function": {"name": "f"}}}, "openai"),
]


@pytest.mark.parametrize("body,want", SHAPES, ids=[f"{w}-{i}" for i, (_, w) in enumerate(SHAPES)])
def test_detect_dialect(body, want):
    assert tr.detect_dialect(body) == want


@pytest.mark.parametrize("body,needle", [
    ({"model": "x"}, "none of"),
    ({"messages": MSG, "contents": []}, "`messages` and `contents`"),
    ({"input": "x", "contents": []}, "`contents` and `input`"),
    ({"messages": [{"role": "system", "content": "s"}, *MSG], "system": "s"}, "Anthropic (`system`) and OpenAI (role system)"),
    ({"messages": MSG, "thinking": {}, "reasoning_effort": "low"}, "pass --dialect"),
])
def test_detect_dialect_refuses(body, needle):
    with pytest.raises(tr.UsageError, match=re.escape(needle)):
        tr.detect_dialect(body)


def test_prepare_sets_the_alias_and_the_endpoint():
    body = {"messages": MSG, "model": "old"}
    assert tr.prepare(body, "fast", "openai") == ("/v1/chat/completions", {"messages": MSG, "model": "fast"}, False)
    assert body == {"messages": MSG, "model": "old"}, "the caller's body must not change"
    path, sent, stream = tr.prepare({"messages": MSG, "stream": True}, "fast", "openai")
    assert (path, stream, sent["stream_options"]) == ("/v1/chat/completions", True, {"include_usage": True})
    sent = tr.prepare({"messages": MSG, "stream": True, "stream_options": {"x": 1}}, "f", "openai")[1]
    assert sent["stream_options"] == {"x": 1}
    assert tr.prepare({"messages": MSG, "max_tokens": 5}, "c", "anthropic") == (
        "/v1/messages", {"messages": MSG, "max_tokens": 5, "model": "c"}, False)
    assert tr.prepare({"input": "hi", "stream": True}, "r", "responses") == (
        "/v1/responses", {"input": "hi", "stream": True, "model": "r"}, True)
    # the override wins over the file
    assert tr.prepare({"input": "hi", "stream": True}, "r", "responses", stream=False)[1:] == (
        {"input": "hi", "stream": False, "model": "r"}, False)
    assert tr.prepare({"messages": MSG}, "c", "anthropic", stream=True)[1]["stream"] is True


def test_prepare_gemini():
    c = [{"parts": [{"text": "hi"}]}]
    assert tr.prepare({"contents": c}, "gem", "gemini") == ("/v1beta/models/gem:generateContent", {"contents": c},
                                                            False)
    assert tr.prepare({"contents": c, "stream": True, "model": "x"}, "gem", "gemini") == (
        "/v1beta/models/gem:streamGenerateContent?alt=sse", {"contents": c}, True)
    assert tr.prepare({"contents": c, "stream": True}, "gem", "gemini", stream=False)[0].endswith(":generateContent")
    assert tr.prepare({"contents": c}, "p/m x", "gemini", stream=True)[0] == (
        "/v1beta/models/p%2Fm%20x:streamGenerateContent?alt=sse")


# ================================================================ the example files

def test_examples_cover_every_dialect_and_kind():
    names = sorted(p.name for p in EXAMPLES.glob("*.json"))
    want = sorted(f"{d}-{k}.json" for d in DIALECTS for k in ("basic", "stream", "tools", "reasoning"))
    assert names == want
    readme = (EXAMPLES / "README.md").read_text()
    assert all(f"`{n}`" in readme for n in names)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.json")), ids=lambda p: p.stem)
def test_example_is_a_valid_request_of_its_dialect(path):
    dialect, kind = path.stem.split("-")
    body = json.loads(path.read_text())
    assert tr.detect_dialect(body) == dialect
    _, sent, stream = tr.prepare(body, "some-alias", dialect)
    assert stream == (kind in ("stream", "reasoning"))
    parser = registry.get(dialect).request
    if dialect == "gemini":
        req = parser.parse_request(sent, model="some-alias", stream=stream)
    else:
        assert sent["model"] == "some-alias"
        req = parser.parse_request(sent)
    assert req.model == "some-alias" and req.messages
    if kind == "tools":
        assert [t.name for t in req.tools] == ["get_weather", "get_time"]
    if kind == "reasoning":
        assert req.reasoning_effort or req.thinking_budget


# ================================================================ rendering pieces

def test_sse_lines_split_on_every_line_end_across_chunks():
    data = 'event: a\r\ndata: {"t":"x\u2028y"}\r\n\r\ndata: 2\rdata: 3\r\rdata: 4\n\n'.encode()
    want = [("a", '{"t":"x\u2028y"}'), (None, "2\n3"), (None, "4")]
    assert list(sse_events(sse_lines([data]))) == want
    assert list(sse_events(sse_lines([data[i:i + 1] for i in range(len(data))]))) == want
    assert list(sse_events(sse_lines([b": ping\n\ndata: [DONE]"]))) == [(None, "[DONE]")]


def test_colors_only_on_a_tty_without_no_color():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    assert tr.use_color(Tty(), {}) is True
    assert tr.use_color(Tty(), {"NO_COLOR": "1"}) is False
    assert tr.use_color(Tty(), {"NO_COLOR": ""}) is True
    assert tr.use_color(io.StringIO(), {}) is False
    for color in (True, False):
        s = io.StringIO()
        out = Out(s, color)
        out.thinking("hmm")
        out.text("Hi")
        out.tool_call(1, "f", {"a": 1})
        text = s.getvalue()
        assert ("\x1b[2m" in text and "\x1b[36m" in text) is color
        assert re.sub(r"\x1b\[\d+m", "", text) == '[thinking] hmm\nHi\n[tool_call f] {"a": 1}'
    s = io.StringIO()
    out = Out(s)
    for piece in ("Line one", ",\nline two.\n\n", "Third.\n"):   # as a stream cuts it
        out.thinking(piece)
    out.text("Answer.")
    out.note("refusal", "no")
    out.note("redacted_thinking")
    out.error("boom")
    assert s.getvalue() == ("[thinking] Line one,\n[thinking] line two.\n\n[thinking] Third.\nAnswer.\n"
                            "[refusal] no\n[redacted_thinking]\n[error] boom")


# ================================================================ end to end

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with FakeUpstream() as fake:
        with start_plexus(CONFIG.format(key=KEY, base=fake.base_url), tmp_path_factory.mktemp("test-request")) as px:
            yield fake, px


@pytest.fixture
def w(world, monkeypatch):
    for var in ("PLEXUS_URL", "PLEXUS_KEY", "NO_COLOR"):
        monkeypatch.delenv(var, raising=False)
    world[0].reset()
    return world


def run_main(capsys, px, alias: str, file, *extra: str, key: str | None = KEY) -> tuple[int, str, str]:
    argv = [alias, str(file), "--url", px.url, *extra] + (["--key", key] if key else [])
    rc = tr.main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def tool_calls(out: str) -> list:
    return [(m[1], json.loads(m[2])) for m in re.finditer(r"^\[tool_call (\S+)\] (.*)$", out, re.M)]


def check_summary(out: str, status: str = "200 OK") -> None:
    assert f"\nstatus: {status}\n" in out
    assert TIME_LINE.search(out), out
    assert re.search(r"^x-plexus-request-id: \S+$", out, re.M)
    assert "x-plexus-attempts: 1\n" in out


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("provider", list(ALIAS))
@pytest.mark.parametrize("dialect", DIALECTS)
def test_answer_shown_for_every_dialect(w, capsys, dialect, provider, stream):
    fake, px = w
    fake.script(reply_for(provider, ANSWER))
    rc, out, err = run_main(capsys, px, ALIAS[provider], EXAMPLES / f"{dialect}-tools.json",
                            "--stream" if stream else "--no-stream")
    assert (rc, err) == (0, ""), out
    assert received(provider, fake.last)["stream"] is stream   # the stream flag reached the provider
    first = out.splitlines()[0]
    assert first.startswith(f"POST {px.url}/v1") and first.endswith(" · stream" if stream else f" · {dialect}")
    # thinking, then the text, then the tool calls, each distinct
    assert "\n[thinking] Six sevens: 42.\nThe answer is 42.\n[tool_call get_weather] " in out, out
    assert tool_calls(out) == list(CALLS)
    check_summary(out)
    assert f"x-plexus-target: p_{provider}/{UP_MODEL[ALIAS[provider]]}\n" in out
    assert re.search(rf"^finish: \S+.* · model: {UP_MODEL[ALIAS[provider]]}$", out, re.M)
    assert ("first content" in out) is stream
    usage = re.search(r"^usage: (.*)$", out, re.M)[1]
    # Gemini reports the output without the thoughts; Anthropic has no reasoning count
    output = 20 if dialect == "gemini" and provider != "anthropic" else 50
    assert usage.startswith(f"input 20 · output {output}"), usage
    if dialect != "anthropic" and provider != "anthropic":
        assert usage.endswith("reasoning 30"), usage


OA_USAGE = {"prompt_tokens": 100, "completion_tokens": 30, "total_tokens": 130,
            "prompt_tokens_details": {"cached_tokens": 40}, "completion_tokens_details": {"reasoning_tokens": 10}}
AN_USAGE = {"input_tokens": 50, "cache_read_input_tokens": 20, "cache_creation_input_tokens": 10, "output_tokens": 30}
GE_USAGE = {"promptTokenCount": 90, "cachedContentTokenCount": 30, "candidatesTokenCount": 20,
            "thoughtsTokenCount": 5, "totalTokenCount": 115}


def _usage_reply(dialect: str, stream: bool) -> Reply:
    a = Answer("Hi.")
    if dialect == "openai":
        r = openai_answer(a, "up-gpt", stream, include_usage=True)
        swap = (b'"usage":{"prompt_tokens":12,"completion_tokens":6,"total_tokens":18,'
                b'"completion_tokens_details":{"reasoning_tokens":0}}')
        new = b'"usage":' + json.dumps(OA_USAGE, separators=(",", ":")).encode()
    elif dialect == "anthropic":
        r = anthropic_answer(a, "up-claude", stream)
        if stream:   # message_start has the input side, message_delta the final counts
            r.chunks[0] = r.chunks[0].replace(b'"input_tokens":12', b'"input_tokens":50,"cache_read_input_tokens":20,'
                                              b'"cache_creation_input_tokens":10')
            swap, new = b'"usage":{"output_tokens":6}', b'"usage":{"output_tokens":30}'
        else:
            swap = b'"usage":{"input_tokens":12,"output_tokens":6}'
            new = b'"usage":' + json.dumps(AN_USAGE, separators=(",", ":")).encode()
    elif dialect == "gemini":
        r = gemini_answer(a, "up-gemini", stream)
        swap = b'"usageMetadata":{"promptTokenCount":12,"candidatesTokenCount":6,"totalTokenCount":18}'
        new = b'"usageMetadata":' + json.dumps(GE_USAGE, separators=(",", ":")).encode()
    else:
        u = responses_usage(100, 30, cached=40, reasoning=10)
        return (Reply.sse(responses_stream("up-relay", ["Hi", "."], usage=u)) if stream
                else Reply(json=responses_object("up-relay", text="Hi.", usage=u)))
    if stream:
        assert any(swap in c for c in r.chunks)
        r.chunks = [c.replace(swap, new) for c in r.chunks]
    else:
        assert swap in r.body
        r.body = r.body.replace(swap, new)
    return r


USAGE_LINES = {"openai": "usage: input 100 · output 30 · cached 40 · reasoning 10",
               "anthropic": "usage: input 50 · output 30 · cached 20 · cache_write 10",
               "gemini": "usage: input 90 · output 20 · cached 30 · reasoning 5",
               "responses": "usage: input 100 · output 30 · cached 40 · reasoning 10"}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("dialect", DIALECTS)
def test_usage_as_the_answer_reported_it(w, capsys, dialect, stream):
    """Same dialect on both sides (relayed as the provider sent it): every figure, as reported."""
    fake, px = w
    fake.script(_usage_reply(dialect, stream))
    alias = ALIAS.get(dialect, "relay")
    rc, out, _ = run_main(capsys, px, alias, EXAMPLES / f"{dialect}-basic.json", *(["--stream"] if stream else []))
    assert rc == 0, out
    assert "\nHi.\n" in out and USAGE_LINES[dialect] + "\n" in out, out
    assert f"x-plexus-target: p_{'relay' if alias == 'relay' else dialect}/{UP_MODEL[alias]}\n" in out
    if dialect == "gemini":
        assert fake.last.path.endswith(":streamGenerateContent" if stream else ":generateContent")
        assert "stream" not in fake.last.json and "model" not in fake.last.json


UPSTREAM_429 = {"openai": openai_error("slow down please", "rate_limit_error"),
                "anthropic": anthropic_error("rate_limit_error", "slow down please"),
                "gemini": gemini_error(429, "slow down please", "RESOURCE_EXHAUSTED")}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_upstream_error_is_exit_1_with_status_and_body(w, capsys, dialect):
    fake, px = w
    provider = "openai" if dialect == "responses" else dialect
    fake.script(Reply(429, json=UPSTREAM_429[provider], headers={"retry-after": "7"}))
    rc, out, _ = run_main(capsys, px, ALIAS[provider], EXAMPLES / f"{dialect}-stream.json")
    assert rc == 1
    assert "[error] HTTP 429 Too Many Requests\n" in out
    assert "slow down please" in out
    check_summary(out, "429 Too Many Requests")
    assert "retry-after: 7\n" in out and "usage:" not in out


def test_stream_cut_upstream_is_exit_1(w, capsys):
    fake, px = w
    chunks = [sse_data(openai_chunk("up-gpt", {"role": "assistant", "content": ""})),
              sse_data(openai_chunk("up-gpt", {"content": "Half an ans"}))]
    fake.script(Reply.sse(chunks, cut=True))
    rc, out, _ = run_main(capsys, px, "gpt", EXAMPLES / "anthropic-stream.json")
    assert rc == 1
    assert "\nHalf an ans\n[error] " in out
    check_summary(out)


def test_error_event_in_a_200_stream_is_exit_1(w, capsys):
    fake, px = w
    fake.script(Reply.sse([sse_event("message_start", {"type": "message_start", "message": {
        "id": "m", "type": "message", "role": "assistant", "model": "up-claude", "content": [],
        "usage": {"input_tokens": 3, "output_tokens": 1}}}),
        sse_event("error", anthropic_error("overloaded_error", "Overloaded"))]))
    rc, out, _ = run_main(capsys, px, "claude", EXAMPLES / "anthropic-stream.json")
    assert rc == 1 and "[error] overloaded_error: Overloaded\n" in out


def test_no_key_is_a_401(w, capsys):
    _, px = w
    rc, out, _ = run_main(capsys, px, "gpt", EXAMPLES / "openai-basic.json", key=None)
    assert rc == 1 and "[error] HTTP 401 Unauthorized" in out and "authentication_error" in out


def test_bad_file_is_exit_2(w, capsys, tmp_path):
    _, px = w
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[]")
    (tmp_path / "odd.json").write_text('{"prompt": "hi"}')
    for name, msg in (("bad.json", "not valid JSON"), ("list.json", "must be a JSON object"),
                      ("odd.json", "pass --dialect"), ("missing.json", "No such file")):
        rc, out, err = run_main(capsys, px, "gpt", tmp_path / name)
        assert rc == 2 and out == "" and msg in err and err.count("\n") == 1, err


def _tool(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "plexus.test_request", *args], cwd=ROOT, env=child_env(env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_nothing_listening_is_exit_2_with_one_line():
    p = _tool("gpt", str(EXAMPLES / "openai-basic.json"), "--url", f"http://127.0.0.1:{free_port()}")
    out, err = p.communicate(timeout=20)
    assert p.returncode == 2
    lines = err.decode().splitlines()
    assert len(lines) == 1 and "cannot connect to http://127.0.0.1:" in lines[0], err


def test_subprocess_reads_env_and_streams_as_it_arrives(w):
    """`python -m plexus.test_request` with $PLEXUS_URL / $PLEXUS_KEY: the first half of a streamed
    answer is on the terminal while the fake still holds back the rest."""
    fake, px = w
    hold = threading.Event()
    reply = openai_answer(ANSWER, "up-gpt", True, include_usage=True)
    reply.hold, reply.hold_after = hold, 5    # role, 2 thinking halves, 2 text halves: then wait
    fake.script(reply)
    p = _tool("gpt", str(EXAMPLES / "openai-stream.json"), env={"PLEXUS_URL": px.url, "PLEXUS_KEY": KEY,
                                                                  "NO_COLOR": None})
    try:
        seen, deadline = b"", time.monotonic() + 10
        while b"The answer is 42." not in seen and time.monotonic() < deadline:
            if select.select([p.stdout], [], [], 0.1)[0]:
                seen += os.read(p.stdout.fileno(), 65536)
        assert b"[thinking] Six sevens: 42.\nThe answer is 42." in seen, seen
        assert b"tool_call" not in seen and p.poll() is None, "the rest must still be on its way"
    finally:
        hold.set()
    rest, err = p.communicate(timeout=10)
    out = (seen + rest).decode()
    assert p.returncode == 0, (out, err)
    assert "\x1b[" not in out   # not a terminal: no colors
    assert tool_calls(out) == list(CALLS)
    check_summary(out)
    assert "usage: input 20 · output 50 · reasoning 30\n" in out
    assert fake.last.json["stream_options"] == {"include_usage": True}


def test_stream_without_its_finish_is_exit_1(capsys, monkeypatch):
    """Straight to the fake (it serves /v1/chat/completions too): a stream that ends cleanly but
    never sent its finish is not a finished answer."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    with FakeUpstream() as fake:
        fake.script(Reply.sse([sse_data(openai_chunk("m", {"content": "Partial"}))]))
        rc = tr.main(["m", str(EXAMPLES / "openai-stream.json"), "--url", fake.base_url])
    out = capsys.readouterr().out
    assert rc == 1 and "\nPartial\n[error] the stream ended before its finish\n" in out
    assert "usage: not reported\n" in out and "x-plexus-target" not in out


def test_dialect_override_headers_and_stdin(w, capsys, monkeypatch):
    fake, px = w
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"messages": MSG})))   # shaped as OpenAI
    rc, out, _ = run_main(capsys, px, "claude", "-", "--dialect", "anthropic", "-H", "anthropic-beta: x-test")
    assert rc == 0, out
    assert out.startswith(f"POST {px.url}/v1/messages · anthropic\n")
    assert "\nHello from the fake upstream.\n" in out and "finish: end_turn · model: up-claude\n" in out
    rec = fake.last
    assert rec.path == "/v1/messages" and rec.headers["anthropic-beta"] == "x-test"
    assert rec.json == {"messages": MSG, "model": "up-claude"}


def _read(dialect: str, events=None, whole=None):
    s = io.StringIO()
    reader = READERS[dialect](Out(s))
    for e in events or ():
        reader.event(e.get("type") if isinstance(e, dict) else None, e)
    if whole is not None:
        reader.whole(whole)
    return s.getvalue(), reader


def test_readers_on_less_common_shapes():
    # OpenRouter's `reasoning` delta, a refusal, a stream that ends with [DONE] only
    out, r = _read("openai", [{"choices": [{"index": 0, "delta": {"reasoning": "hm"}}]},
                              {"choices": [{"index": 0, "delta": {"refusal": "I can't."}}]}, "[DONE]"])
    assert out == "[thinking] hm\n[refusal] I can't." and r.finished and r.finish is None
    # redacted thinking, a server tool whose input comes whole in its start block, a client tool without input
    out, r = _read("anthropic", [
        {"type": "content_block_start", "index": 0, "content_block": {"type": "redacted_thinking", "data": "x"}},
        {"type": "content_block_start", "index": 1, "content_block": {
            "type": "server_tool_use", "id": "s", "name": "web_search", "input": {"query": "q"}}},
        {"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "t", "name": "now",
                                                                      "input": {}}},
        {"type": "content_block_stop", "index": 2},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}])
    assert out == ('[redacted_thinking]\n[server_tool_use web_search] {"query": "q"}\n[tool_call now] {}')
    assert (r.finish, r.usage, r.finished) == ("tool_use", {"output": 9}, True)
    # a prompt Gemini blocked; an answer given as the JSON-array stream
    out, r = _read("gemini", whole={"promptFeedback": {"blockReason": "SAFETY"}})
    assert out == "[blocked] SAFETY" and r.finish == "SAFETY"
    out, r = _read("gemini", whole=[{"candidates": [{"content": {"parts": [{"text": "a"}]}}]},
                                    {"candidates": [{"content": {"parts": [{"text": "b"}]}, "finishReason": "STOP"}]}])
    assert out == "ab" and r.finish == "STOP"
    # Responses: a custom tool call streamed, a function call whose arguments come only in .done, incomplete
    out, r = _read("responses", [
        {"type": "response.output_item.added", "output_index": 0,
         "item": {"type": "custom_tool_call", "name": "apply_patch", "input": ""}},
        {"type": "response.custom_tool_call_input.delta", "output_index": 0, "delta": "*** Begin"},
        {"type": "response.output_item.added", "output_index": 1, "item": {"type": "function_call", "name": "f"}},
        {"type": "response.output_item.done", "output_index": 1,
         "item": {"type": "function_call", "name": "f", "arguments": "{}"}},
        {"type": "response.incomplete", "response": {"status": "incomplete", "model": "m",
                                                     "incomplete_details": {"reason": "max_output_tokens"}}}])
    assert out == "[custom_tool_call apply_patch] *** Begin\n[tool_call f] {}"
    assert (r.finish, r.model, r.finished, r.error) == ("incomplete (max_output_tokens)", "m", True, None)
    out, r = _read("responses", [{"type": "response.failed", "response": {
        "status": "failed", "error": {"code": "server_error", "message": "upstream broke"}}}])
    assert out == "[error] server_error: upstream broke" and r.error
