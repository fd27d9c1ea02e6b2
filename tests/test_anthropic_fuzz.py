"""Fuzz the Anthropic request/response parsers: only GatewayError may escape.

Every value of a realistic body (Claude Code shaped, plus tool_choice / thinking / output_config /
images / documents) and of a provider message is replaced, one at a time, by a value of each other
JSON type: parse_request must give an ir.Request that build_request accepts, or a 400;
parse_response must give an ir.Response or a 502.  A hypothesis test adds random bodies.  Nothing
else (TypeError, KeyError, ...) may escape: the handler renders GatewayError only.
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from anthropic_helpers import claude_code_body, json_paths
from plexus.dialects.anthropic.decode import parse_response
from plexus.dialects.anthropic.request import build_request, parse_request
from plexus.errors import GatewayError

PROVIDER = SimpleNamespace(name="anth", type="anthropic", max_tokens=4096, stream_usage=False)
ODD = [None, True, 0, -1, 2.5, "", "x", [], [1], {}, {"type": "text"}]


def _set(obj, path, value):
    obj = copy.deepcopy(obj)
    if not path:
        return value
    node = obj
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return obj


def _rich_body() -> dict:
    body = claude_code_body()
    body["tool_choice"] = {"type": "tool", "name": "Read", "disable_parallel_tool_use": True}
    body["thinking"] = {"type": "enabled", "budget_tokens": 2048}
    body["output_config"] = {"effort": "high", "format": {"type": "json_schema", "schema": {"type": "object"}}}
    body["stop_sequences"] = ["END"]
    body["top_k"] = 5
    body["messages"][0]["content"] += [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}},
        {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "d"}, "title": "t"},
        {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "c"}]}},
        {"type": "search_result", "source": "s", "title": "t", "content": [{"type": "text", "text": "r"}]}]
    return body


RICH = _rich_body()
RICH_PATHS = list(json_paths(RICH))
MESSAGE = orjson.loads((Path(__file__).parent / "fixtures" / "anthropic" / "message_tools_thinking.json").read_bytes())


def _request_ok(body) -> None:
    try:
        req = parse_request(body)
    except GatewayError as e:
        assert e.status == 400 and e.kind == "invalid_request"
        return
    build_request(req, "m", PROVIDER)          # whatever parsed must build
    req.extra.clear()                            # and build for a foreign source too
    build_request(req, "m", PROVIDER)


def test_request_fixture_paths_are_many():
    assert len(RICH_PATHS) > 100


@pytest.mark.parametrize("chunk", range(8))
def test_request_every_value_of_every_type(chunk):
    for path in RICH_PATHS[chunk::8]:
        for odd in ODD:
            _request_ok(_set(RICH, path, odd))


def test_response_every_value_of_every_type():
    for path in json_paths(MESSAGE):
        for odd in ODD:
            try:
                parse_response(orjson.dumps(_set(MESSAGE, path, odd)))
            except GatewayError as e:
                assert e.status in (502, 500, 529, 400, 429) and e.kind


_scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False) | st.text(max_size=4)
_json = st.recursive(_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                     max_leaves=6)
_types = st.sampled_from(["text", "image", "document", "tool_use", "tool_result", "thinking",
                          "redacted_thinking", "search_result", "compaction", "server_tool_use"])
_block = st.builds(lambda t, extra: {"type": t, **extra}, _types, st.dictionaries(
    st.sampled_from(["text", "id", "name", "input", "tool_use_id", "content", "source", "thinking",
                     "signature", "data", "is_error", "cache_control"]), _json, max_size=3))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.builds(lambda r, c: {"role": r, "content": c}, st.sampled_from(["user", "assistant", "system"]),
                          st.one_of(st.text(max_size=4), st.lists(_block, max_size=3), _json)), max_size=3))
def test_random_messages(messages):
    _request_ok({"model": "m", "messages": messages, "thinking": {"type": "adaptive"}})
