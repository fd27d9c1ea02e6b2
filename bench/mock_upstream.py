"""Mock LLM upstream for the bench: a raw uvloop asyncio.Protocol with a minimal HTTP/1.1 parser.

Theory: the baseline must cost (almost) nothing, so the mock does no per-request work it can avoid.
Every answer is precomputed bytes (status line, headers and the whole body, chunk framing included),
built once per (path, model, stream, include_usage) and cached; a request costs one header search,
one small JSON parse (to read model/stream) and one transport.write. Connections are keep-alive.

Answers, in each dialect's exact wire format:
- POST /v1/chat/completions (OpenAI): a chat.completion JSON, or a chunked text/event-stream of 100
  events: role chunk, 98 content chunks, finish chunk (+ a usage chunk with "choices": [] when
  stream_options.include_usage), then `data: [DONE]`.
- POST /v1/messages (Anthropic): a message JSON, or 100 events: message_start, content_block_start,
  95 content_block_delta, content_block_stop, message_delta, message_stop.
- GET /health: 200 OK.
Each SSE event is its own HTTP chunk. Unpaced streams go out in one write; models whose name
contains "paced" get PACE_S (20 ms) between events, one write per event, and the connection serves
no further request (pipelined input waits) until that stream is done.

Run standalone: `python -m bench.mock_upstream --port 0` prints `READY <port>` and serves until stdin
closes or --max-seconds pass. Only ever binds 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from typing import Callable

import orjson

EVENTS = 100
PACE_S = 0.020
MAX_HEAD = 65536
MAX_BODY = 8 * 1024 * 1024

_WORDS = ("Hello", " there", ",", " this", " is", " a", " benchmark", " reply", " from", " the",
          " mock", " upstream", ".", " It", " streams", " tokens", " quickly")


def _tok(i: int) -> str:
    return _WORDS[i % len(_WORDS)]


def _text(n: int) -> str:
    return "".join(_tok(i) for i in range(n))


def _chunk(b: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(b), b)


def _head(status: str, ctype: str, length: int | None) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"content-type: {ctype}"]
    lines.append(f"content-length: {length}" if length is not None else "transfer-encoding: chunked")
    if length is None:
        lines.append("cache-control: no-cache")
    lines.append("x-request-id: req_bench")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def json_answer(body: bytes, status: str = "200 OK") -> bytes:
    return _head(status, "application/json", len(body)) + body


def stream_pieces(events: list[bytes]) -> list[bytes]:
    """Head + one chunk per event; the last piece carries the terminating zero chunk."""
    pieces = [_chunk(e) for e in events]
    pieces[0] = _head("200 OK", "text/event-stream; charset=utf-8", None) + pieces[0]
    pieces[-1] += b"0\r\n\r\n"
    return pieces


# --- OpenAI -------------------------------------------------------------------------------------

def _openai_json(model: str) -> bytes:
    n = EVENTS - 2
    return orjson.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": _text(n),
                                             "refusal": None},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 25, "completion_tokens": n, "total_tokens": 25 + n},
        "system_fingerprint": "fp_bench",
    })


def _openai_events(model: str, usage: bool) -> list[bytes]:
    n = EVENTS - 2

    def ev(delta: dict, finish: str | None = None) -> bytes:
        d = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
             "model": model, "system_fingerprint": "fp_bench",
             "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if usage:
            d["usage"] = None
        return b"data: " + orjson.dumps(d) + b"\n\n"

    events = [ev({"role": "assistant", "content": "", "refusal": None})]
    events += [ev({"content": _tok(i)}) for i in range(n)]
    events.append(ev({}, "stop"))
    if usage:
        events.append(b"data: " + orjson.dumps({
            "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
            "model": model, "system_fingerprint": "fp_bench", "choices": [],
            "usage": {"prompt_tokens": 25, "completion_tokens": n, "total_tokens": 25 + n}})
            + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def _openai(req: dict):
    model = str(req.get("model", "mock-gpt"))
    if req.get("stream") is True:
        usage = bool((req.get("stream_options") or {}).get("include_usage"))
        return ("openai", model, True, usage), lambda: stream_pieces(_openai_events(model, usage))
    return ("openai", model, False, False), lambda: [json_answer(_openai_json(model))]


# --- Anthropic ----------------------------------------------------------------------------------

def _anthropic_json(model: str) -> bytes:
    n = EVENTS - 5
    return orjson.dumps({
        "id": "msg_bench", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": _text(n)}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 25, "output_tokens": n},
    })


def _anthropic_events(model: str) -> list[bytes]:
    n = EVENTS - 5

    def ev(name: str, d: dict) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(d) + b"\n\n"

    events = [ev("message_start", {"type": "message_start", "message": {
        "id": "msg_bench", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 25, "output_tokens": 1}}}),
        ev("content_block_start", {"type": "content_block_start", "index": 0,
                                   "content_block": {"type": "text", "text": ""}})]
    events += [ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                          "delta": {"type": "text_delta", "text": _tok(i)}})
               for i in range(n)]
    events += [ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
               ev("message_delta", {"type": "message_delta",
                                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                    "usage": {"output_tokens": n}}),
               ev("message_stop", {"type": "message_stop"})]
    assert len(events) == EVENTS
    return events


def _anthropic(req: dict):
    model = str(req.get("model", "mock-claude"))
    if req.get("stream") is True:
        return ("anthropic", model, True, False), lambda: stream_pieces(_anthropic_events(model))
    return ("anthropic", model, False, False), lambda: [json_answer(_anthropic_json(model))]


# path -> responder(parsed body) -> (cache key, builder of the response pieces)
RESPONDERS: dict[bytes, Callable[[dict], tuple[tuple, Callable[[], list[bytes]]]]] = {
    b"/v1/chat/completions": _openai,
    b"/v1/messages": _anthropic,
}

_HEALTH = [b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nOK"]
_NOT_FOUND = [json_answer(b'{"error":{"type":"not_found","message":"no such path"}}',
                          "404 Not Found")]
_BAD_REQUEST = [json_answer(b'{"error":{"type":"invalid_request_error","message":"bad body"}}',
                            "400 Bad Request")]
_CL = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)")
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[ \t]*chunked")


def _dechunk(buf: bytearray, pos: int) -> tuple[bytes, int] | None:
    """Decode a complete chunked body starting at pos -> (body, end), or None if incomplete."""
    out = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
        pos = eol + 2
        if size == 0:
            while True:  # trailers, then an empty line
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                if eol == pos:
                    return bytes(out), pos + 2
                pos = eol + 2
        if len(buf) < pos + size + 2:
            return None
        out += buf[pos:pos + size]
        pos += size + 2
        if len(out) > MAX_BODY:
            raise ValueError("body too large")


class MockProtocol(asyncio.Protocol):
    __slots__ = ("cache", "transport", "buf", "pieces", "close_after", "timer")

    def __init__(self, cache: dict):
        self.cache = cache
        self.transport = None
        self.buf = bytearray()
        self.pieces: list[bytes] | None = None  # a paced stream in progress
        self.close_after = False
        self.timer = None

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.transport = None

    def data_received(self, data: bytes):
        self.buf += data
        if self.pieces is None:
            self._serve()

    def _serve(self) -> None:
        buf = self.buf
        while buf and self.pieces is None and self.transport is not None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    self.transport.close()
                return
            line_end = buf.find(b"\r\n")
            head = bytes(buf[line_end:end + 2]).lower()
            parts = bytes(buf[:line_end]).split(b" ")
            method, path = parts[0], parts[1] if len(parts) > 1 else b"/"
            pos = end + 4
            try:
                if _CHUNKED.search(head):
                    got = _dechunk(buf, pos)
                    if got is None:
                        return
                    body, pos = got
                else:
                    m = _CL.search(head)
                    n = int(m.group(1)) if m else 0
                    if n > MAX_BODY:
                        raise ValueError("body too large")
                    if len(buf) < pos + n:
                        return
                    body = bytes(buf[pos:pos + n])
                    pos += n
            except ValueError:
                self.transport.write(_BAD_REQUEST[0])
                self.transport.close()
                return
            del buf[:pos]
            self.close_after = b"\r\nconnection: close" in head
            self._respond(method, path.split(b"?", 1)[0], body)
            if self.pieces is None and self.close_after and self.transport is not None:
                self.transport.close()

    def _respond(self, method: bytes, path: bytes, body: bytes) -> None:
        responder = RESPONDERS.get(path) if method == b"POST" else None
        if responder is None:
            pieces = _HEALTH if path == b"/health" and method == b"GET" else _NOT_FOUND
        else:
            try:
                req = orjson.loads(body)
                if not isinstance(req, dict):
                    raise ValueError
            except ValueError:
                pieces = _BAD_REQUEST
            else:
                key, build = responder(req)
                pieces = self.cache.get(key)
                if pieces is None:
                    pieces = self.cache[key] = build()
                    if "paced" not in key[1]:
                        pieces = self.cache[key] = [b"".join(pieces)]
                if "paced" in key[1] and len(pieces) > 1:
                    self.pieces = pieces
                    self._pace(0)
                    return
        self.transport.write(pieces[0])

    def _pace(self, i: int) -> None:
        self.timer = None
        if self.transport is None:
            return
        pieces = self.pieces
        self.transport.write(pieces[i])
        if i + 1 < len(pieces):
            self.timer = asyncio.get_running_loop().call_later(PACE_S, self._pace, i + 1)
            return
        self.pieces = None
        if self.close_after:
            self.transport.close()
        elif self.buf:
            self._serve()


async def start(host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
    """Start the mock on the running loop (for in-process use); the caller closes the server."""
    cache: dict = {}
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: MockProtocol(cache), host, port, backlog=1024)


async def _main(port: int, max_seconds: float) -> None:
    server = await start("127.0.0.1", port)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    loop = asyncio.get_running_loop()
    stdin_closed = loop.create_future()

    class _Stdin(asyncio.Protocol):
        def connection_lost(self, exc):
            if not stdin_closed.done():
                stdin_closed.set_result(None)

    try:
        await loop.connect_read_pipe(_Stdin, sys.stdin)
    except (OSError, ValueError):
        pass  # stdin not a pipe: rely on --max-seconds
    try:
        await asyncio.wait_for(stdin_closed, max_seconds)
    except asyncio.TimeoutError:
        pass
    server.close()


def main(argv: list[str] | None = None) -> None:
    import uvloop

    p = argparse.ArgumentParser(description="Plexus bench mock upstream (127.0.0.1 only)")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--max-seconds", type=float, default=3600.0)
    a = p.parse_args(argv)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_main(a.port, a.max_seconds))


if __name__ == "__main__":
    main()
