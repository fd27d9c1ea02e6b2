"""A scripted fake LLM upstream (OpenAI, Anthropic and Gemini shapes) for end-to-end tests.

Theory: one HTTP/1.1 server on 127.0.0.1 (ephemeral port) whose asyncio loop runs in a background
thread, so synchronous SDK clients in the test thread can call Plexus while Plexus calls us. It is
deliberately independent of Plexus code: its own tiny request parser (Content-Length and chunked
bodies, keep-alive, pipelining) and its own response writer, so a Plexus bug cannot hide in a shared
helper.

Every request is recorded (`Recorded`: method, path, query, headers, raw body, parsed JSON, and a
`closed` event set when its connection goes away). Replies come first from a FIFO script queue
(`fake.script(Reply(...))`, or a callable `req -> Reply`), else from a default chosen by path:
  POST .../chat/completions                 OpenAI chat.completion, or SSE chunks when body.stream
  POST .../messages                         Anthropic message, or the exact Anthropic event stream
  POST .../models/{m}:generateContent       Gemini GenerateContentResponse
  POST .../models/{m}:streamGenerateContent ?alt=sse: `data: {...}\\r\\n\\r\\n` chunks; else a JSON array
  POST .../responses                        OpenAI Responses API `response` object, or, when body.stream,
                                            its event stream (`event:` lines, sequence_number, usage
                                            in response.completed), as api.openai.com sends them
The default reply names the model it was asked for (body.model, or {m} in the Gemini path).

`Reply` kinds: a JSON or raw-bytes body with any status/headers; a stream (list of byte chunks,
one chunked-encoding chunk each, `delay` between them, optional `hold` gate after `hold_after`
chunks, optional `cut` = close without the terminating chunk); `hang` (never answer); `close`
(close right after reading the request). A Reply records how many chunks it actually sent.

With `ssl_context=` it serves HTTPS (the tests make a throw-away CA with `trustme`), and records
one entry per TLS handshake in `tls_handshakes` (the ALPN protocol the client chose).
"""

from __future__ import annotations

import asyncio
import json as _json
import threading
import time
from collections import deque
from http import HTTPStatus
from typing import Any, Callable
from urllib.parse import parse_qs

DEFAULT_PIECES = ("Hello", " from", " the", " fake", " upstream.")
DEFAULT_TEXT = "".join(DEFAULT_PIECES)
USAGE_IN, USAGE_OUT = 12, 6
_MISSING = object()
HOLD_TIMEOUT = 5.0  # a hold gate never set by the test releases after this (so nothing hangs forever)


def dumps(obj: Any) -> bytes:
    return _json.dumps(obj, separators=(",", ":")).encode()


# ---------------------------------------------------------------- recorded requests
class Headers:
    """Case-insensitive multi-dict over the received (name, value) pairs (names lowercased)."""

    __slots__ = ("raw",)

    def __init__(self, raw: list[tuple[str, str]]):
        self.raw = raw

    def getall(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.raw if k == name]

    def get(self, name: str, default: str | None = None) -> str | None:
        return next(iter(self.getall(name)), default)

    def __getitem__(self, name: str) -> str:
        if (v := self.get(name)) is None:
            raise KeyError(name)
        return v

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def items(self) -> list[tuple[str, str]]:
        return list(self.raw)


class Recorded:
    """One request as the fake received it."""

    def __init__(self, method: str, target: str, headers: Headers, body: bytes, conn: "_Conn"):
        self.method, self.target, self.headers, self.body = method, target, headers, body
        self.path, _, self.raw_query = target.partition("?")
        self.query = parse_qs(self.raw_query, keep_blank_values=True)
        self._conn = conn
        self.conn_id = conn.conn_id
        self.closed: threading.Event = conn.closed  # set when this request's connection is gone
        try:
            self.json = _json.loads(body) if body else None
        except ValueError:
            self.json = None

    @property
    def closed_by_peer(self) -> bool:
        """True once the client (Plexus) closed this request's connection (not the fake)."""
        return self._conn.closed_by_peer

    def __repr__(self) -> str:
        return f"<Recorded {self.method} {self.target} {len(self.body)}B conn={self.conn_id}>"


# ---------------------------------------------------------------- replies
class Reply:
    def __init__(self, status: int = 200, json: Any = _MISSING, *, body: bytes | None = None,
                 chunks: list[bytes] | None = None, headers: dict[str, str] | list | None = None,
                 content_type: str | None = None, delay: float = 0.0, cut: bool = False,
                 hold: threading.Event | None = None, hold_after: int = 1,
                 hang: bool = False, close: bool = False):
        if json is not _MISSING:
            body = dumps(json)
            content_type = content_type or "application/json"
        self.status, self.body, self.chunks = status, body, chunks
        self.headers = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        if content_type is None:
            content_type = "text/event-stream" if chunks is not None else "application/json"
        self.content_type = content_type
        self.delay, self.cut, self.hold, self.hold_after = delay, cut, hold, hold_after
        self.hang, self.close = hang, close
        self.sent = 0            # stream chunks actually written
        self.hold_timed_out = False
        self.done = threading.Event()  # set when the fake finished (or gave up) sending this reply

    @classmethod
    def sse(cls, chunks: list[bytes], **kw) -> "Reply":
        return cls(chunks=list(chunks), **kw)


def sse_data(obj: Any, crlf: bool = False) -> bytes:
    return b"data: " + (obj if isinstance(obj, bytes) else dumps(obj)) + (b"\r\n\r\n" if crlf else b"\n\n")


def sse_event(event: str, obj: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + dumps(obj) + b"\n\n"


# ---- OpenAI
def openai_completion(model: str, text: str = DEFAULT_TEXT) -> dict:
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 1700000000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": USAGE_IN, "completion_tokens": USAGE_OUT,
                      "total_tokens": USAGE_IN + USAGE_OUT},
            "system_fingerprint": "fp_fake"}


def openai_chunk(model: str, delta: dict, finish: str | None = None, usage: dict | None = None,
                 no_choices: bool = False) -> dict:
    c = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
         "system_fingerprint": "fp_fake",
         "choices": [] if no_choices else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    if usage is not None:
        c["usage"] = usage
    return c


def openai_stream(model: str, include_usage: bool = False, pieces=DEFAULT_PIECES) -> list[bytes]:
    out = [sse_data(openai_chunk(model, {"role": "assistant", "content": ""}))]
    out += [sse_data(openai_chunk(model, {"content": p})) for p in pieces]
    out.append(sse_data(openai_chunk(model, {}, finish="stop")))
    if include_usage:
        out.append(sse_data(openai_chunk(model, {}, no_choices=True, usage={
            "prompt_tokens": USAGE_IN, "completion_tokens": USAGE_OUT, "total_tokens": USAGE_IN + USAGE_OUT})))
    out.append(b"data: [DONE]\n\n")
    return out


def openai_error(message: str, type_: str = "invalid_request_error", code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


# ---- Anthropic
def anthropic_message(model: str, text: str = DEFAULT_TEXT) -> dict:
    return {"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": USAGE_IN, "output_tokens": USAGE_OUT}}


def anthropic_stream(model: str, pieces=DEFAULT_PIECES) -> list[bytes]:
    start = {"id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": [],
             "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": USAGE_IN, "output_tokens": 1}}
    out = [sse_event("message_start", {"type": "message_start", "message": start}),
           sse_event("ping", {"type": "ping"}),
           sse_event("content_block_start", {"type": "content_block_start", "index": 0,
                                             "content_block": {"type": "text", "text": ""}})]
    out += [sse_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                              "delta": {"type": "text_delta", "text": p}}) for p in pieces]
    out += [sse_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            sse_event("message_delta", {"type": "message_delta",
                                        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                        "usage": {"output_tokens": USAGE_OUT}}),
            sse_event("message_stop", {"type": "message_stop"})]
    return out


def anthropic_error(type_: str, message: str) -> dict:
    return {"type": "error", "error": {"type": type_, "message": message}}


# ---- Gemini
def gemini_response(model: str, text: str = DEFAULT_TEXT, finish: str | None = "STOP",
                    usage: bool = True) -> dict:
    cand: dict = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
    cand.update({"finishReason": finish} if finish else {})
    r: dict = {"candidates": [cand]}
    r.update({"usageMetadata": {"promptTokenCount": USAGE_IN, "candidatesTokenCount": USAGE_OUT,
                                "totalTokenCount": USAGE_IN + USAGE_OUT}} if usage else {})
    return {**r, "modelVersion": model, "responseId": "fake-resp"}


def gemini_stream_objs(model: str, pieces=DEFAULT_PIECES) -> list[dict]:
    last = len(pieces) - 1
    return [gemini_response(model, p, finish="STOP" if i == last else None, usage=i == last)
            for i, p in enumerate(pieces)]


def gemini_sse(model: str, pieces=DEFAULT_PIECES) -> list[bytes]:
    return [sse_data(o, crlf=True) for o in gemini_stream_objs(model, pieces)]


def gemini_array(model: str, pieces=DEFAULT_PIECES) -> list[bytes]:
    objs = [_json.dumps(o, indent=2).encode() for o in gemini_stream_objs(model, pieces)]
    return [b"[" + objs[0]] + [b"\n,\r\n" + o for o in objs[1:]] + [b"\n]"]


def gemini_error(code: int, message: str, status: str) -> dict:
    return {"error": {"code": code, "message": message, "status": status}}


# ---- OpenAI Responses API
RESPONSES_ID, RESPONSES_MSG_ID = "resp_fake0123456789", "msg_fake0123456789"


def responses_usage(inp: int = USAGE_IN, out: int = USAGE_OUT, cached: int = 0, reasoning: int = 0) -> dict:
    return {"input_tokens": inp, "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": out, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": inp + out}


def responses_message(text: str, msg_id: str = RESPONSES_MSG_ID, status: str = "completed") -> dict:
    return {"id": msg_id, "type": "message", "status": status, "role": "assistant",
            "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}]}


def responses_object(model: str, output: list | None = None, *, status: str = "completed",
                     usage: dict | None = _MISSING, rid: str = RESPONSES_ID, text: str = DEFAULT_TEXT,
                     incomplete: str | None = None, previous_response_id: str | None = None) -> dict:
    """A `response` object as POST /v1/responses answers it (output: one message of `text` unless
    given; usage: the fake's default counts unless given, None for the in-progress snapshots)."""
    return {"id": rid, "object": "response", "created_at": 1700000000, "status": status,
            "background": False, "error": None,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "instructions": None, "max_output_tokens": None, "max_tool_calls": None, "model": model,
            "output": [responses_message(text)] if output is None else output,
            "parallel_tool_calls": True, "previous_response_id": previous_response_id,
            "prompt_cache_key": None, "reasoning": {"effort": None, "summary": None},
            "safety_identifier": None, "service_tier": "default", "store": True, "temperature": 1.0,
            "text": {"format": {"type": "text"}, "verbosity": "medium"}, "tool_choice": "auto", "tools": [],
            "top_logprobs": 0, "top_p": 1.0, "truncation": "disabled",
            "usage": responses_usage() if usage is _MISSING else usage, "user": None, "metadata": {}}


def responses_stream(model: str, pieces=DEFAULT_PIECES, *, usage: dict | None = None,
                     rid: str = RESPONSES_ID) -> list[bytes]:
    """The event stream of a one-message answer, as api.openai.com sends it: `event:` + `data:`
    lines, sequence_number from 0, the final response (with usage) in response.completed."""
    text = "".join(pieces)
    mid = RESPONSES_MSG_ID
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
    events: list[dict] = [
        {"type": "response.created", "response": responses_object(model, [], status="in_progress", usage=None,
                                                                   rid=rid)},
        {"type": "response.in_progress", "response": responses_object(model, [], status="in_progress", usage=None,
                                                                       rid=rid)},
        {"type": "response.output_item.added", "output_index": 0,
         "item": {"id": mid, "type": "message", "status": "in_progress", "content": [], "role": "assistant"}},
        {"type": "response.content_part.added", "item_id": mid, "output_index": 0, "content_index": 0,
         "part": part}]
    events += [{"type": "response.output_text.delta", "item_id": mid, "output_index": 0, "content_index": 0,
                "delta": p, "logprobs": [], "obfuscation": "x" * (16 - len(p) % 16)} for p in pieces]
    events += [
        {"type": "response.output_text.done", "item_id": mid, "output_index": 0, "content_index": 0,
         "text": text, "logprobs": []},
        {"type": "response.content_part.done", "item_id": mid, "output_index": 0, "content_index": 0,
         "part": {**part, "text": text}},
        {"type": "response.output_item.done", "output_index": 0, "item": responses_message(text)},
        {"type": "response.completed",
         "response": responses_object(model, [responses_message(text)], usage=usage or responses_usage(),
                                      rid=rid)}]
    out = []
    for n, e in enumerate(events):
        e = {"type": e["type"], "sequence_number": n, **{k: v for k, v in e.items() if k != "type"}}
        out.append(sse_event(e["type"], e))
    return out


def default_reply(req: Recorded) -> Reply:
    body = req.json if isinstance(req.json, dict) else {}
    path = req.path
    if req.method == "POST" and path.endswith("/chat/completions"):
        model = str(body.get("model", ""))
        if body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return Reply.sse(openai_stream(model, usage))
        return Reply(json=openai_completion(model))
    if req.method == "POST" and path.endswith("/messages"):
        model = str(body.get("model", ""))
        return Reply.sse(anthropic_stream(model)) if body.get("stream") else Reply(json=anthropic_message(model))
    if req.method == "POST" and "/models/" in path and ":" in path.rsplit("/", 1)[-1]:
        model, _, action = path.rsplit("/", 1)[-1].partition(":")
        if action == "generateContent":
            return Reply(json=gemini_response(model))
        if action == "streamGenerateContent":
            if req.query.get("alt") == ["sse"]:
                return Reply.sse(gemini_sse(model))
            return Reply.sse(gemini_array(model), content_type="application/json")
    if req.method == "POST" and path.endswith("/responses"):
        model = str(body.get("model", ""))
        return Reply.sse(responses_stream(model)) if body.get("stream") else Reply(json=responses_object(model))
    return Reply(404, json={"error": {"message": f"fake upstream: no route for {req.method} {path}"}})


# ---------------------------------------------------------------- the server
class _BadRequest(Exception):
    pass


class _Conn(asyncio.Protocol):
    """One accepted connection: buffers input, serves its requests in order on one task."""

    def __init__(self, fake: "FakeUpstream", conn_id: int):
        self.fake, self.conn_id = fake, conn_id
        self.buf = bytearray()
        self.closed = threading.Event()
        self.eof = self.closed_by_peer = self.we_closed = False
        self.wake = asyncio.Event()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport):
        self.transport = transport
        self.fake._conns.add(self)
        tls = transport.get_extra_info("ssl_object")
        if tls is not None:  # with TLS this runs once the handshake is done
            self.fake.tls_handshakes.append(tls.selected_alpn_protocol())
        self.task = asyncio.get_running_loop().create_task(self.serve())

    def data_received(self, data):
        self.buf += data
        self.wake.set()

    def eof_received(self):
        self.eof = True
        self.wake.set()

    def connection_lost(self, exc):
        self.closed_by_peer = not self.we_closed
        self.eof = True
        self.closed.set()
        self.wake.set()
        self.fake._conns.discard(self)

    def close(self):
        self.we_closed = True
        if self.transport is not None:
            self.transport.close()

    async def _need(self):
        if self.eof:
            raise EOFError
        self.wake.clear()
        await self.wake.wait()

    async def _line(self) -> bytes:
        while (i := self.buf.find(b"\r\n")) < 0:
            if len(self.buf) > 65536:
                raise _BadRequest("line too long")
            await self._need()
        line = bytes(self.buf[:i])
        del self.buf[:i + 2]
        return line

    async def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            await self._need()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    async def read_request(self) -> Recorded:
        parts = (await self._line()).decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(f"bad request line {parts!r}")
        headers: list[tuple[str, str]] = []
        while h := await self._line():
            name, sep, value = h.decode("latin-1").partition(":")
            if not sep:
                raise _BadRequest(f"bad header {h!r}")
            headers.append((name.strip().lower(), value.strip()))
        hd = Headers(headers)
        if "chunked" not in (hd.get("transfer-encoding") or "").lower():
            body = await self._exact(int(hd.get("content-length") or 0))
        else:
            chunks = []
            while size := int((await self._line()).split(b";")[0], 16):
                chunks.append(await self._exact(size))
                if await self._exact(2) != b"\r\n":
                    raise _BadRequest("bad chunk")
            while await self._line():  # trailers
                pass
            body = b"".join(chunks)
        return Recorded(parts[0], parts[1], hd, body, self)

    def write(self, data: bytes) -> bool:
        if self.closed.is_set() or self.transport is None or self.transport.is_closing():
            return False
        self.transport.write(data)
        return True

    async def serve(self):
        try:
            while True:
                try:
                    rec = await self.read_request()
                except EOFError:
                    break
                except (_BadRequest, ValueError) as e:
                    msg = str(e).encode()
                    self.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
                               % (len(msg), msg))
                    break
                reply = self.fake._next_reply(rec)
                self.fake._record(rec)
                keep = await self.respond(reply)
                reply.done.set()
                if not keep or (rec.headers.get("connection") or "").lower() == "close":
                    break
        except asyncio.CancelledError:
            pass
        finally:
            self.close()

    async def respond(self, r: Reply) -> bool:
        """Send one reply; False when the connection must not be reused."""
        if r.close:
            return False
        if r.hang:
            while not self.closed.is_set():
                self.wake.clear()
                await self.wake.wait()
            return False
        reason = HTTPStatus(r.status).phrase if r.status in HTTPStatus._value2member_map_ else "Unknown"
        head = [f"HTTP/1.1 {r.status} {reason}", f"content-type: {r.content_type}"]
        head += [f"{k}: {v}" for k, v in r.headers]
        if r.chunks is None:
            body = r.body or b""
            head.append(f"content-length: {len(body)}")
            return self.write("\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + body)
        head += ["transfer-encoding: chunked", "cache-control: no-cache"]
        if not self.write("\r\n".join(head).encode("latin-1") + b"\r\n\r\n"):
            return False
        for i, chunk in enumerate(r.chunks):
            if i and r.delay:
                await asyncio.sleep(r.delay)
            if r.hold is not None and i == r.hold_after:
                deadline = time.monotonic() + HOLD_TIMEOUT
                while not r.hold.is_set() and not self.closed.is_set():
                    if time.monotonic() > deadline:
                        r.hold_timed_out = True
                        break
                    await asyncio.sleep(0.005)
            if self.closed.is_set():
                return False
            r.sent += 1  # counted before the write so a reader can never see data before the count
            if chunk and not self.write(b"%x\r\n%s\r\n" % (len(chunk), chunk)):
                return False
        return not r.cut and self.write(b"0\r\n\r\n")


class FakeUpstream:
    """Context manager: `with FakeUpstream() as fake: fake.port, fake.script(...), fake.requests`."""

    def __init__(self, host: str = "127.0.0.1", ssl_context=None):
        self.host, self.port = host, 0
        self.ssl_context = ssl_context  # an ssl.SSLContext: serve HTTPS (base_url says https)
        self._lock = threading.Condition()
        self._script: deque = deque()
        self._requests: list[Recorded] = []
        self._conns: set[_Conn] = set()
        self._conn_count = 0
        self.tls_handshakes: list[str | None] = []  # the ALPN protocol chosen, one per TLS connection
        self._loop = self._thread = None

    def __enter__(self) -> "FakeUpstream":
        ready, err = threading.Event(), []

        def run():
            self._loop = loop = asyncio.new_event_loop()
            try:
                server = loop.run_until_complete(loop.create_server(self._factory, self.host, 0,
                                                                          ssl=self.ssl_context))
                self.port = server.sockets[0].getsockname()[1]
            except BaseException as e:  # reported by __enter__
                err.append(e)
                return
            finally:
                ready.set()
            loop.run_forever()
            server.close()
            for c in list(self._conns):
                c.close()
                c.task.cancel()
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=2))
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-upstream", daemon=True)
        self._thread.start()
        ready.wait(10)
        if err:
            raise err[0]
        return self

    def __exit__(self, *exc) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    def _factory(self):
        self._conn_count += 1
        return _Conn(self, self._conn_count)

    # ---- scripting and inspection (called from the test thread)
    @property
    def base_url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def connections_opened(self) -> int:
        return self._conn_count

    def script(self, *replies: Reply | Callable[[Recorded], Reply]) -> None:
        with self._lock:
            self._script.extend(replies)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self._requests.clear()

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    @property
    def last(self) -> Recorded:
        with self._lock:
            assert self._requests, "the fake upstream received no request"
            return self._requests[-1]

    def wait_requests(self, n: int, timeout: float = 5.0) -> list[Recorded]:
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._requests) >= n, timeout):
                raise AssertionError(f"fake upstream got {len(self._requests)} requests, expected {n}")
            return list(self._requests)

    # ---- called on the server loop
    def _next_reply(self, rec: Recorded) -> Reply:
        with self._lock:
            item = self._script.popleft() if self._script else None
        if item is None:
            return default_reply(rec)
        return item if isinstance(item, Reply) else item(rec)

    def _record(self, rec: Recorded) -> None:
        with self._lock:
            self._requests.append(rec)
            self._lock.notify_all()


# ---------------------------------------------------------------- client-side helpers for the e2e tests
CLIENT_KEY = "client-key"
SECRETS = ("sk-up-openai", "sk-up-anthropic", "g-up-key", CLIENT_KEY)


def assert_no_secrets(data: bytes | str) -> None:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    for s in SECRETS:
        assert s not in text, f"secret {s!r} leaked in {text[:500]!r}"


def parse_sse(data: bytes) -> list[tuple[str | None, str]]:
    """Complete SSE events in `data` as (event name or None, data); LF, CRLF and CR line ends."""
    events: list[tuple[str | None, str]] = []
    name, lines = None, []
    for line in data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line:
            if lines or name is not None:
                events.append((name, "\n".join(lines)))
            name, lines = None, []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                lines.append(value)
    return events
