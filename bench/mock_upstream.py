"""Mock LLM upstream for the bench: a raw uvloop asyncio.Protocol with a minimal HTTP/1.1 parser.

Theory: the baseline must cost (almost) nothing, so the mock does no per-request work it can avoid.
Every answer is precomputed bytes (status line, headers and the whole body, chunk framing included),
built once per (path, model, stream, include_usage) and cached; a request costs one header search,
one small JSON parse (to read model/stream) and one transport.write. Connections are keep-alive.
Bodies over LARGE_BODY bytes (the bench's 20 MB requests) are neither buffered nor parsed: the
mock keeps their first and last KEEP bytes, counts the rest away as it arrives, and finds model and
stream there by a byte search, so a large request costs the mock little more than the kernel copy.

Answers, in each dialect's exact wire format:
- POST /v1/chat/completions (OpenAI): a chat.completion JSON, or a chunked text/event-stream of 100
  events: role chunk, 98 content chunks, finish chunk (+ a usage chunk with "choices": [] when
  stream_options.include_usage), then `data: [DONE]`.
- POST /v1/messages (Anthropic): a message JSON, or 100 events: message_start, content_block_start,
  95 content_block_delta, content_block_stop, message_delta, message_stop.
- GET /health: 200 OK.
Each SSE event is its own HTTP chunk. How a stream is written depends on the model name:
- plain ("mock-gpt"): the whole stream in one write ("batched": the gateway reads it in one go);
- containing "split": one write per event on a TCP_NODELAY socket, the next event of every split
  stream in progress once per SPLIT_TICK_S (1 ms) tick, so every event leaves as its own TCP
  segment and reaches the gateway as its own read, as real providers send them. Yielding one loop
  iteration between events (a call_soon chain) is not enough: measured, Plexus then read ~7
  events per read() (0.13 reads per event), because a busy receiver finds several segments
  waiting; with the tick it reads ~0.9-1 times per event (see "reads per event" in the report);
- containing "paced": one write per event, PACE_S (20 ms) apart.
While a split or paced stream is in progress the connection serves no further request (pipelined
input waits).
- GET /stats: {"plain": n, "tls": n} connections accepted (TLS: handshakes completed) so far.

TLS: with --tls-cert/--tls-key the same responses are also served over TLS (ALPN http/1.1) on a
second port; every accepted TLS connection is one full handshake (no session tickets are issued),
so /stats shows whether a client's pool redoes handshakes.

Run standalone: `python -m bench.mock_upstream --port 0 [--tls-cert PEM --tls-key PEM]` prints
`READY <port> <tls port or 0>` and serves until stdin closes or --max-seconds pass. Only ever binds
127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import ssl
import sys
from typing import Callable

import orjson

EVENTS = 100
PACE_S = 0.020
SPLIT_TICK_S = 0.001  # "split" streams: one event per stream per tick (see Ticker)
MAX_HEAD = 65536
MAX_BODY = 64 * 1024 * 1024
LARGE_BODY = 1024 * 1024  # above this, model/stream are found by byte search, not a JSON parse
KEEP = 64 * 1024  # of a large body, the first and last KEEP bytes are kept (where the keys are)

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
_MODEL = re.compile(rb'"model"[ \t\r\n]*:[ \t\r\n]*"([^"\\]*)"')
_STREAM = re.compile(rb'"stream"[ \t\r\n]*:[ \t\r\n]*true')


def sniff(buf, start: int, end: int) -> dict:
    """model and stream of a large JSON request body without parsing it. A key inside a JSON
    string is escaped (\\"model\\"), so the first unescaped `"model":` is the real key (the
    bench's large bodies put model and stream outside the long content)."""
    at = buf.find(b'"model"', start, end)
    m = _MODEL.match(buf, at, min(end, at + 300)) if at >= 0 else None
    if m is None:
        raise ValueError("no model")
    at = buf.find(b'"stream"', start, end)
    return {"model": m.group(1).decode(), "stream": at >= 0 and
            _STREAM.match(buf, at, min(end, at + 40)) is not None}


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


class Ticker:
    """Writes the next piece of every split stream in progress, once per tick: all streams of
    one tick leave together, each stream's events one tick apart."""

    def __init__(self, interval: float):
        self.interval = interval
        self.active: list[MockProtocol] = []
        self.handle = None

    def add(self, proto: "MockProtocol") -> None:
        self.active.append(proto)
        if self.handle is None:
            loop = asyncio.get_running_loop()
            self.handle = (loop.call_later(self.interval, self._tick) if self.interval else
                           loop.call_soon(self._tick))

    def _tick(self) -> None:
        self.handle = None
        active, self.active = self.active, []
        for p in active:
            if p.pieces is not None and p.transport is not None:
                p._pace(p.index)  # re-adds itself while pieces remain


class MockProtocol(asyncio.Protocol):
    __slots__ = ("cache", "stats", "kind", "ticker", "transport", "buf", "need", "pieces",
                 "index", "delay", "close_after", "timer", "drop", "large", "tail", "joined")

    def __init__(self, cache: dict, stats: dict | None = None, kind: str = "plain",
                 ticker: Ticker | None = None):
        self.cache = cache
        self.stats = stats if stats is not None else {}
        self.kind = kind
        self.ticker = ticker if ticker is not None else Ticker(SPLIT_TICK_S)
        self.transport = None
        self.buf = bytearray()
        self.need = 0  # bytes the buffered request needs before it is worth parsing again
        self.pieces: list[bytes] | None = None  # a split or paced stream in progress
        self.index = 0  # next piece to write
        self.delay = 0.0  # between the pieces: PACE_S (paced), 0 = on the ticker (split)
        self.close_after = False
        self.timer = None
        self.drop = 0  # bytes of a large body still to come (counted away, the tail kept)
        self.large = b""  # head + first KEEP body bytes of that large request
        self.tail = b""
        self.joined = 0  # length of a reassembled large request at the start of buf

    def connection_made(self, transport):
        self.transport = transport
        self.stats[self.kind] = self.stats.get(self.kind, 0) + 1
        sock = transport.get_extra_info("socket")
        if sock is not None:  # each write leaves at once as its own segment
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def connection_lost(self, exc):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.transport = None

    def data_received(self, data: bytes):
        if self.drop:
            take = min(len(data), self.drop)
            self.drop -= take
            # the tail stays a contiguous suffix of what arrived, at most KEEP bytes long
            self.tail = (self.tail + data[:take])[-KEEP:] if self.drop < KEEP else b""
            if self.drop:
                return
            self.buf[:0] = self.large + self.tail  # the request, middle left out: now complete
            self.joined = len(self.large) + len(self.tail)
            self.need = 0
            self.large = self.tail = b""
            data = data[take:]
        self.buf += data
        if self.pieces is None and len(self.buf) >= self.need:
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
                    if n > LARGE_BODY:
                        if self.joined:  # reassembled from the body's two ends
                            body, pos = sniff(buf, pos, self.joined), self.joined
                            self.joined = 0
                        elif len(buf) >= pos + n:
                            body = sniff(buf, pos, pos + n)
                            pos += n
                        elif len(buf) < pos + KEEP:
                            self.need = pos + KEEP
                            return
                        else:  # keep head + first KEEP bytes; count the rest (data_received)
                            self.large = bytes(buf[:pos + KEEP])
                            self.tail = bytes(buf[pos + KEEP:][-KEEP:])
                            self.drop = pos + n - len(buf)
                            del buf[:]
                            return
                    elif len(buf) < pos + n:
                        self.need = pos + n
                        return
                    else:
                        body = bytes(buf[pos:pos + n])
                        pos += n
            except ValueError:
                self.transport.write(_BAD_REQUEST[0])
                self.transport.close()
                return
            del buf[:pos]
            self.need = 0
            self.close_after = b"\r\nconnection: close" in head
            self._respond(method, path.split(b"?", 1)[0], body)
            if self.pieces is None and self.close_after and self.transport is not None:
                self.transport.close()

    def _respond(self, method: bytes, path: bytes, body) -> None:
        responder = RESPONDERS.get(path) if method == b"POST" else None
        if responder is None:
            if method == b"GET" and path == b"/stats":
                pieces = [json_answer(orjson.dumps(self.stats))]
            else:
                pieces = _HEALTH if path == b"/health" and method == b"GET" else _NOT_FOUND
        else:
            try:
                req = body if isinstance(body, dict) else orjson.loads(body)
                if not isinstance(req, dict):
                    raise ValueError
            except ValueError:
                pieces = _BAD_REQUEST
            else:
                key, build = responder(req)
                pieces = self.cache.get(key)
                one_by_one = "paced" in key[1] or "split" in key[1]
                if pieces is None:
                    pieces = self.cache[key] = build()
                    if not one_by_one:
                        pieces = self.cache[key] = [b"".join(pieces)]
                if one_by_one and len(pieces) > 1:
                    self.pieces = pieces
                    self.delay = PACE_S if "paced" in key[1] else 0.0
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
            self.index = i + 1
            if self.delay:
                self.timer = asyncio.get_running_loop().call_later(self.delay, self._pace, i + 1)
            else:
                self.ticker.add(self)
            return
        self.pieces = None
        self.index = 0
        if self.close_after:
            self.transport.close()
        elif self.buf:
            self._serve()


def server_ssl_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.num_tickets = 0  # TLS 1.3: no session tickets, every new connection is a full handshake
    return ctx


async def start(host: str = "127.0.0.1", port: int = 0, *, tls: ssl.SSLContext | None = None,
                tls_port: int = 0, stats: dict | None = None) -> list[asyncio.Server]:
    """Start the mock on the running loop (for in-process use): [plain server, TLS server if
    `tls`]; both share the response cache and the `stats` counters. The caller closes them."""
    cache: dict = {}
    stats = stats if stats is not None else {"plain": 0, "tls": 0}
    ticker = Ticker(SPLIT_TICK_S)
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(lambda: MockProtocol(cache, stats, "plain", ticker), host,
                                        port, backlog=1024)]
    if tls is not None:
        servers.append(await loop.create_server(lambda: MockProtocol(cache, stats, "tls", ticker),
                                                host, tls_port, ssl=tls, backlog=1024))
    return servers


async def _main(port: int, max_seconds: float, cert: str, key: str) -> None:
    tls = server_ssl_context(cert, key) if cert else None
    servers = await start("127.0.0.1", port, tls=tls)
    ports = [s.sockets[0].getsockname()[1] for s in servers] + [0]
    print(f"READY {ports[0]} {ports[1]}", flush=True)
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
    for server in servers:
        server.close()


def main(argv: list[str] | None = None) -> None:
    import uvloop

    p = argparse.ArgumentParser(description="Plexus bench mock upstream (127.0.0.1 only)")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--max-seconds", type=float, default=3600.0)
    p.add_argument("--tls-cert", default="", help="PEM certificate chain: also serve TLS")
    p.add_argument("--tls-key", default="", help="PEM private key of --tls-cert")
    a = p.parse_args(argv)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_main(a.port, a.max_seconds, a.tls_cert, a.tls_key))


if __name__ == "__main__":
    main()
