"""Same-dialect streams: bytes relayed untouched at any split; a cut stream ends with an error event."""

import orjson
import pytest

from plexus.errors import GatewayError
from plexus.stream import Passthrough

OPENAI = (b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"data: [DONE]"}}]}\n\n'
          b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
          b"data: [DONE]\n\n")
ANTHROPIC = (b'event: message_start\ndata: {"type":"message_start"}\n\n'
             b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"text":"event: message_stop"}}\n\n'
             b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
GEMINI = (b'data: {"candidates":[{"content":{"parts":[{"text":"say \\"finishReason\\""}]}}]}\r\n\r\n'
          b'data: {"candidates":[{"content":{"parts":[{"text":"."}]},"finishReason":"STOP"}]}\r\n\r\n')
CASES = [("openai", OPENAI, b'"finish_reason":"stop"'), ("anthropic", ANTHROPIC, b"event: message_stop"),
         ("gemini", GEMINI, b'"finishReason":"STOP"')]


def relay(dialect, parts):
    p = Passthrough(dialect)
    out = b"".join(p.feed(x) for x in parts)
    return out, p.close()


@pytest.mark.parametrize("dialect,data,terminal", CASES)
def test_complete_stream_untouched_at_every_split(dialect, data, terminal):
    for i in range(len(data) + 1):
        out, tail = relay(dialect, [data[:i], data[i:]])
        assert out == data and tail == b"", i
    out, tail = relay(dialect, [data[i:i + 1] for i in range(len(data))])
    assert out == data and tail == b""


@pytest.mark.parametrize("dialect,data,terminal", CASES)
def test_cut_stream_ends_with_error_event_at_every_cut(dialect, data, terminal):
    cut_at = data.index(terminal)
    # text that merely mentions the marker inside JSON must not count as the end
    for n in range(0, cut_at, 7):
        for i in range(n + 1):
            out, tail = relay(dialect, [data[:i], data[i:n]])
            assert out == data[:n]
            assert tail, (n, i)
            # a cut inside an event: a line end / blank line first, so the error event parses alone
            sep = b"" if data[:n].endswith(b"\n\n") or n == 0 else b"\n" if data[:n].endswith(b"\n") else b"\n\n"
            assert tail.startswith(sep + (b"event: error\ndata: " if dialect == "anthropic" else b"data: "))
            if dialect == "anthropic":
                ev = orjson.loads(tail.split(b"data: ", 1)[1])
                assert ev["type"] == "error" and ev["error"]["type"] == "api_error"
            else:
                ev = orjson.loads(tail.split(b"data: ", 1)[1])
                assert "error" in ev


def test_fail_after_done_adds_nothing_and_fail_once():
    p = Passthrough("openai")
    p.feed(OPENAI)
    assert p.fail(GatewayError(504, "late")) == b""
    p = Passthrough("openai")
    p.feed(OPENAI[:20])
    first = p.fail(GatewayError(504, "timeout"))
    assert b"timeout" in first and p.fail(GatewayError(502, "x")) == b"" and p.close() == b""


def test_upstream_error_event_is_relayed_as_terminal():
    data = b'event: message_start\ndata: {}\n\nevent: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"x"}}\n\n'
    out, tail = relay("anthropic", [data])
    assert out == data and tail == b""


def test_gemini_json_array_cut():
    p = Passthrough("gemini", sse=False)
    out = p.feed(b'[{"candidates":[]}')
    tail = p.close()
    assert tail.startswith(b",") and tail.endswith(b"]")
    assert orjson.loads(out + tail)[1]["error"]["code"] == 502
