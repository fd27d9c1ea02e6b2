"""OpenAI dialect stream decoder: upstream chat.completion.chunk SSE → IR sink calls.

Theory: the sink call sequence follows ir.py's order and does not depend on how the upstream
bytes were split (every split point, one byte at a time, hypothesis-chosen multi-splits);
recorded-style upstream streams (tests/fixtures/openai/*.sse: OpenAI, DeepSeek, OpenRouter,
LiteLLM, vLLM, Ollama shapes) give exactly the expected calls; garbage only ever ends in
sink.error(GatewayError).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openai_support import FIXTURES, check_order, data, decode, events, transcode
from plexus import ir

# ------------------------------------------------------------------ decoder: expected calls

U = ir.Usage


def test_text_fixture_calls():
    calls = decode([data("text.sse")])
    texts = ["Hello", "!", " How", " can", " I", " help", " you", " today", "? ", "Ünïcödé ✓ 🚀",
             "\n\n\"quoted\""]
    assert calls == [
        ("start", "chatcmpl-AB1cdEfGhIjKlMnOpQrStUvWxYz01", "gpt-4o-mini-2024-07-18", None),
        *[("text", t) for t in texts],
        ("finish", "end_turn", None),
        ("usage", U(input_tokens=15, output_tokens=12, cache_read_tokens=4, reasoning_tokens=0)),
        ("end",),
    ]


def test_deepseek_reasoning_calls():
    calls = decode([data("reasoning_deepseek.sse")])
    assert calls == [
        ("start", "5f0a6c1e-3b2d-4c8e-9f00-1a2b3c4d5e6f", "deepseek-reasoner", None),
        ("thinking", "Okay"), ("thinking", ", the user"), ("thinking", " asks 9.11 vs 9.8"),
        ("thinking", ". 9.8 = 9.80 > 9.11."),
        ("text", "9.8"), ("text", " is"), ("text", " greater."),
        ("finish", "end_turn", None),
        ("usage", U(input_tokens=20, output_tokens=40, cache_read_tokens=0, reasoning_tokens=30)),
        ("end",),
    ]


def test_openrouter_reasoning_keepalive_and_late_usage():
    calls = decode([data("reasoning_openrouter.sse")])
    assert calls == [
        ("start", "gen-1738000000-AbCdEfGhIjKlMnOp", "qwen/qwen3-235b-a22b", None),
        ("thinking", "Let me think"), ("thinking", " about it."),
        ("text", "Answer: 42"),
        ("finish", "end_turn", None),
        ("usage", U(input_tokens=11, output_tokens=25, cache_read_tokens=0, reasoning_tokens=18)),
        ("end",),
    ]


def test_litellm_signed_thinking_crlf():
    calls = decode([data("thinking_signed_crlf.sse")])
    assert calls == [
        ("start", "chatcmpl-7c9e2f1a-0b3d-4e5f-8a9b-0c1d2e3f4a5b", "claude-sonnet-4-5-20250929", None),
        ("thinking", "The user wants"), ("thinking", " a haiku."),
        ("signature", "EqQBCkgIBRABGAIiQL3xYz+/sig=="),
        ("text", "Autumn moonlight—"), ("text", "\na worm digs silently"),
        ("text", "\ninto the chestnut."),
        ("finish", "end_turn", None),
        ("usage", U(input_tokens=10, output_tokens=60, cache_read_tokens=30,
                    cache_creation_tokens=10, reasoning_tokens=20)),
        ("end",),
    ]


def test_parallel_tools_calls():
    calls = decode([data("parallel_tools.sse")])
    assert calls[1:] == [
        ("tool_start", 0, "call_abc123", "get_weather", None),
        ("tool_args", 0, '{"lo'), ("tool_args", 0, "cation"), ("tool_args", 0, '": "Pa'),
        ("tool_args", 0, 'ris, FR"}'),
        ("tool_start", 1, "call_def456", "get_time", None),
        ("tool_args", 1, '{"tz'), ("tool_args", 1, '": "Europe/Paris"}'),
        ("finish", "tool_use", None),
        ("usage", U(input_tokens=80, output_tokens=40, cache_read_tokens=0, reasoning_tokens=0)),
        ("end",),
    ]


def test_interleaved_tools_calls():
    calls = decode([data("interleaved_tools.sse")])
    assert calls == [
        ("start", "chatcmpl-vllm-0f1e2d3c4b5a", "Qwen/Qwen3-32B", None),
        ("text", "Checking both."),
        ("tool_start", 0, "chatcmpl-tool-aaa", "read_file", None),
        ("tool_start", 1, "chatcmpl-tool-bbb", "list_dir", None),
        ("tool_args", 1, '{"path"'),
        ("tool_args", 0, '{"path": "a.txt"}'),
        ("tool_args", 1, ': "/tmp"}'),
        ("finish", "tool_use", None),
        ("end",),
    ]


def test_no_index_tools_stop_without_done_is_lenient():
    calls = decode([data("no_index_tools_no_done.sse")])
    assert calls == [
        ("start", "chatcmpl-812", "llama3.2", None),
        ("tool_start", 0, "call_x1", "add", None), ("tool_args", 0, '{"a":1,"b":2}'),
        ("tool_start", 1, "call_x2", "mul", None), ("tool_args", 1, '{"a":3,"b":4}'),
        ("finish", "tool_use", None),   # "stop" after tool calls → tool_use
        ("end",),
    ]


def test_upstream_error_event():
    calls = decode([data("error.sse")])
    assert calls == [
        ("start", "chatcmpl-AB1cdEfGhIjKlMnOpQrStUvWxYz01", "gpt-4o-mini-2024-07-18", None),
        ("text", "Partial"),
        ("error", "api_error", 500,
         "The server had an error while processing your request. Sorry about that!"),
    ]


def test_upstream_error_first_event_int_code():
    assert decode([data("error_first.sse")]) == [
        ("start", None, None, None),
        ("error", "rate_limit", 429, "Rate limit exceeded: free-models-per-day"),
    ]


def test_cut_stream_is_an_error():
    calls = decode([data("cut.sse")])
    assert calls[1:] == [("text", "Once upon"), ("text", " a time"),
                         ("error", "bad_gateway", 502, "upstream stream ended early")]


@pytest.mark.parametrize("body,expected", [
    (b"", [("start", None, None, None), ("error", "bad_gateway", 502, "upstream stream ended early")]),
    (b"data: [DONE]\n\n", [("start", None, None, None), ("finish", "end_turn", None), ("end",)]),
    (b"data: {not json}\n\n", [("start", None, None, None),
                               ("error", "bad_gateway", 502, "upstream sent invalid JSON in a stream event")]),
    (b'data: {"choices":[1]}\n\n', [("start", None, None, None),
                                    ("error", "bad_gateway", 502, "upstream sent a malformed stream chunk")]),
    (b'data: {"id":"x","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"length"}]}\n\n'
     b'data: {"id":"x","choices":[{"index":0,"delta":{"content":"late"},"finish_reason":null}]}\n\n',
     [("start", "x", None, None), ("text", "a"), ("finish", "max_tokens", None), ("end",)]),
    (b'data: {"id":"x","choices":[{"index":0,"delta":{"refusal":"No."},"finish_reason":"content_filter"}]}\n\n'
     b"data: [DONE]\n\n",
     [("start", "x", None, None), ("text", "No."), ("finish", "refusal", None), ("end",)]),
    # choice index 1 (n=2) is dropped; a tool call without id gets a derived id
    (b'data: {"id":"r","choices":[{"index":1,"delta":{"content":"B"}},{"index":0,"delta":{"tool_calls":'
     b'[{"index":0,"function":{"name":"f","arguments":"{}"}}]}}]}\n\ndata: [DONE]\n\n',
     [("start", "r", None, None), ("tool_start", 0, "call_r_0", "f", None), ("tool_args", 0, "{}"),
      ("finish", "tool_use", None), ("end",)]),
    (b'data: {"id":"x","choices":[{"index":0,"delta":{"thinking_blocks":[{"type":"redacted_thinking",'
     b'"data":"QUJD"}]},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\nDATA AFTER DONE',
     [("start", "x", None, None), ("redacted_thinking", "QUJD"), ("finish", "end_turn", None), ("end",)]),
])
def test_edge_streams(body, expected):
    assert decode([body]) == expected


# ------------------------------------------------------------------ decoder: split invariance

@pytest.mark.parametrize("name", FIXTURES)
def test_every_split_point_gives_the_same_calls(name):
    raw = data(name)
    whole = decode([raw])
    check_order(whole)
    for i in range(len(raw) + 1):
        assert decode([raw[:i], raw[i:]]) == whole, f"split at {i}"


@pytest.mark.parametrize("name", FIXTURES)
def test_one_byte_at_a_time(name):
    raw = data(name)
    assert decode([raw[i:i + 1] for i in range(len(raw))]) == decode([raw])


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(FIXTURES), cuts=st.lists(st.integers(0, 25000), max_size=12))
def test_hypothesis_splits(name, cuts):
    raw = data(name)
    pts = sorted({c % (len(raw) + 1) for c in cuts})
    pieces = [raw[a:b] for a, b in zip([0, *pts], [*pts, len(raw)])]
    assert decode(pieces) == decode([raw])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"data: ", b"\n\n", b"[DONE]", b'{"choices":[{"delta":{"content":"x"}}]}',
                     b'{"error":{"message":"m"}}', b'{"choices":[{"delta":{"tool_calls":[{"index":"a"}]}}]}',
                     b'{"usage":{"prompt_tokens":"x"}}', b"\r", b": ping\n\n"])), max_size=20))
def test_garbage_never_escapes_as_anything_but_sink_calls(pieces):
    calls = decode(pieces)
    check_order(calls)


@pytest.mark.parametrize("usage", [b'{"prompt_tokens":1,"completion_tokens":"x"}', b'[1]',
                                   b'{"prompt_tokens":1,"prompt_tokens_details":{"cached_tokens":1.5}}'])
def test_malformed_usage_is_an_error_not_a_broken_stream(usage):
    raw = (b'data: {"id":"x","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]}\n\n'
           b'data: {"id":"x","choices":[],"usage":' + usage + b"}\n\ndata: [DONE]\n\n")
    assert decode([raw])[-1] == ("error", "bad_gateway", 502, "upstream sent a malformed stream chunk")
    body = transcode(raw, ir.Context(model="m", id_seed="s", created=1, include_usage=True))
    assert events(body)[-1].startswith(b'{"error"')
