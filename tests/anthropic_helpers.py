"""Shared helpers for the Anthropic dialect tests (not a test module).

`Rec` is an ir.Sink that records its calls as tuples, so decoder output can be compared exactly.
`sdk_events` parses client SSE bytes and validates every event with the anthropic SDK's own
pydantic types; `check_structure` asserts the block protocol (consecutive indexes, no delta for a
block that is not open, every block stopped, proper ending); `sdk_message` accumulates the events
with the SDK's stream accumulator into the final Message a client would see.
`claude_code_body` is a request shaped like the ones Claude Code 2.1 sends.
"""

from __future__ import annotations

import functools
from pathlib import Path

import orjson

from plexus import ir
from plexus.dialects.anthropic import decode, encode
from plexus.sse import SSEDecoder
from recording_sink import RecordingSink

FIX = Path(__file__).parent / "fixtures" / "anthropic"
M = "claude-sonnet-4-5-20250929"
SIG = ("EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds7ZIbZGp8XpYBzJTKfcBqsARnnyLc5p8UNyVmW8pz"
       "OJGrKUrZMFJe6xY6w==")


def _u(u):
    if u is None:
        return None
    return (u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_creation_tokens, u.reasoning_tokens)


class Rec(RecordingSink):
    """A Sink that records its calls as tuples (usage as a tuple of its fields)."""

    def start(self, id, model, usage):
        self.calls.append(("start", id, model, _u(usage)))

    def usage(self, u):
        self.calls.append(("usage", _u(u)))


def decode_chunks(chunks) -> list:
    rec = Rec()
    d = decode.StreamDecoder(rec)
    for c in chunks:
        d.feed(c)
    d.close()
    return rec.calls


def fixture(name: str) -> bytes:
    return (FIX / name).read_bytes()


@functools.cache
def _adapters():
    from anthropic.types import RawMessageStreamEvent
    from anthropic.types.shared import ErrorResponse
    from pydantic import TypeAdapter

    return TypeAdapter(RawMessageStreamEvent), ErrorResponse


def sdk_events(data: bytes) -> list[dict]:
    """Parse client SSE bytes, validating every event with the anthropic SDK's pydantic types."""
    ta, ErrorResponse = _adapters()
    dec = SSEDecoder()
    events = dec.feed(data) + dec.close()
    assert data == b"".join(b"event: " + e + b"\ndata: " + d + b"\n\n" for e, d in events), "not canonical SSE"
    out = []
    for name, payload in events:
        obj = orjson.loads(payload)
        assert obj["type"] == name.decode()
        if name == b"error":
            ErrorResponse.model_validate(obj)
        else:
            ta.validate_python(obj)
        out.append(obj)
    return out


def check_structure(events: list[dict]) -> None:
    """message_start first; blocks open/close in order with consecutive indexes; proper ending."""
    assert events, "no events"
    if events[0]["type"] == "error":
        assert len(events) == 1
        return
    assert events[0]["type"] == "message_start"
    nxt, open_ = 0, None
    kinds = {}
    for k, e in enumerate(events[1:], 1):
        t = e["type"]
        if t == "content_block_start":
            assert open_ is None, f"block {open_} not stopped before {e}"
            assert e["index"] == nxt
            open_, nxt = nxt, nxt + 1
            kinds[open_] = e["content_block"]["type"]
        elif t == "content_block_delta":
            assert e["index"] == open_, f"delta for block {e['index']} while {open_} is open"
            dt = e["delta"]["type"]
            assert {"text_delta": "text", "thinking_delta": "thinking", "signature_delta": "thinking",
                    "input_json_delta": "tool_use"}[dt] == kinds[open_]
        elif t == "content_block_stop":
            assert e["index"] == open_
            open_ = None
        elif t == "message_delta":
            assert open_ is None
            assert events[k + 1]["type"] == "message_stop" and k + 2 == len(events)
            return
        elif t == "error":
            assert k + 1 == len(events)
            return
        else:
            raise AssertionError(f"unexpected event {e}")
    raise AssertionError("stream did not end with message_delta+message_stop or error")


def sdk_message(data: bytes):
    """The final message the anthropic SDK's stream accumulator builds from client bytes."""
    from anthropic.lib.streaming._messages import accumulate_event

    snap, bufs = None, {}
    for e in sdk_events(data):
        if e["type"] == "error":
            raise AssertionError(f"error event: {e}")
        snap = accumulate_event(event=e, current_snapshot=snap, json_bufs=bufs)
    return snap


CTX = ir.Context(model="alias-model", id_seed="0123abcd", created=1700000000)


def run_encoder(calls, ctx=CTX) -> bytes:
    enc = encode.StreamEncoder(ctx)
    out = []
    for name, *args in calls:
        getattr(enc, name)(*args)
        out.append(enc.take())
    return b"".join(out) + enc.close()


CC_SIG = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds7ZIbZGp8Xp=="


def claude_code_body() -> dict:
    return {
        "model": "claude-opus-4-6",
        "max_tokens": 32000,
        "stream": True,
        "system": [
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.",
             "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Environment: linux", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        ],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
                {"type": "text", "text": "Fix the bug in main.py", "cache_control": {"type": "ephemeral"}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Let me look at main.py.", "signature": CC_SIG},
                {"type": "text", "text": "I'll read the file."},
                {"type": "tool_use", "id": "toolu_01A", "name": "Read", "input": {"file_path": "/x/main.py"},
                 "caller": {"type": "direct"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": [{"type": "text", "text": "print(1)"}]},
                {"type": "text", "text": "continue"}]},
            {"role": "system", "content": "The user switched to plan mode."},
            {"role": "assistant", "content": [
                {"type": "redacted_thinking", "data": "EmwKAhgB"},
                {"type": "tool_use", "id": "toolu_01B", "name": "Bash", "input": {"command": "ls"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01B", "content": "main.py", "is_error": False,
                 "cache_control": {"type": "ephemeral"}}]},
        ],
        "tools": [
            {"name": "Read", "description": "Reads a file",
             "input_schema": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                              "properties": {"file_path": {"type": "string"}}, "required": ["file_path"],
                              "additionalProperties": False}},
            {"name": "Bash", "description": "Runs a command", "defer_loading": True,
             "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}},
             "cache_control": {"type": "ephemeral"}},
        ],
        "tool_choice": {"type": "auto"},
        "metadata": {"user_id": '{"device_id":"abc","session_id":"s1"}'},
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "max"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "temperature": 1,
    }


def json_paths(obj, path=()):
    """Every path (tuple of keys/indexes) into a JSON value, the root included."""
    yield path
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from json_paths(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from json_paths(v, path + (i,))
