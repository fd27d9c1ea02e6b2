"""IR -> Anthropic JSON: content blocks, the client's message (`render_response`), its stream.

Theory: everything that writes Anthropic-shaped JSON lives here.  `blocks_out` renders IR parts
as request content blocks (request.build_request uses it); `render_response` renders a
non-stream message; `StreamEncoder` is an ir.Sink that appends client SSE bytes to a list,
built from byte templates with orjson.dumps only for payload strings.

Stream shape (exactly what the Anthropic API sends): message_start (content [], stop_reason null,
usage as known: input/cache_creation/cache_read/output tokens, 0 when unknown); then per block
content_block_start / content_block_delta* / content_block_stop with indexes 0, 1, 2...; then
message_delta {stop_reason, stop_sequence} + usage {input_tokens, cache_creation_input_tokens,
cache_read_input_tokens (each when known), output_tokens} and message_stop, both at end() (usage
may follow finish()).  `ping` is not sent.
- text -> "text" block (text_delta); thinking -> "thinking" block (start carries thinking ""
  and signature "", thinking_delta, then signature_delta right before its stop).  A signature
  ends a thinking block's content: more thinking, or a second signature, opens a new block.
  signature() with no thinking block open opens one (thinking "").  Empty text("") /
  thinking("") open nothing (no empty blocks, which Anthropic rejects when sent back).
- Gemini signatures travel as "plexus-gemini:<sig>" (signatures.wrap_sig): on thinking blocks
  when ctx.extra["upstream"] == "gemini" (the handler/Translator says which provider type the
  stream comes from), and always for tool_start(signature=...) / ToolCall.signature and
  Text.signature, which become a signature-only thinking block right before their block.
  Unsigned thinking (e.g. OpenAI reasoning) gets signature "" (it is dropped if sent back).
- redacted_thinking -> a redacted_thinking block (start with data, then stop).
- tool_start -> tool_use block {id, name, input: {}} then input_json_delta fragments.  Parallel
  calls whose arguments arrive interleaved (OpenAI tool_calls[].index) come out as separate,
  consecutive blocks: fragments of a call that is not the open block are buffered and emitted
  as one delta when its turn comes (block_end of the open call, or finish/end).  Text never
  waits.  Fragments for a call whose block was already closed are dropped (no source does this).
- Stop reasons (common.STOPS["anthropic"]): IR names pass through (pause_turn and refusal included); "error" or unknown ->
  end_turn; end_turn while tool_use blocks were sent -> tool_use (some sources, e.g. Gemini,
  report STOP for function calls, and agent loops key on tool_use).  finish() never called
  before end() -> tool_use if tools were sent, else end_turn.
- error() -> `event: error` (`error_event`; `error_object` is a whole error response's body)
  and nothing more; open blocks are not
  closed (as the API does).  close() without end()/error() -> an error event (502).
- Response ids: an upstream "msg_..." id is kept, otherwise "msg_" + ctx.id_seed.  Model: the
  upstream's, else ctx.model.  Tool call ids pass through unchanged.
- usage.reasoning_tokens is not sent (no field the API always has); ToolCall.extra is not
  written into responses (it may hold another dialect's fields).
"""

from __future__ import annotations

import re

import orjson

from ... import ir
from ...errors import GatewayError, stream_cut
from ..common import STOPS, args_object
from ..signatures import SIG_PREFIX, wrap_sig

__all__ = ["render_response", "StreamEncoder", "STREAM_CONTENT_TYPE", "blocks_out", "text_out",
           "error_object", "error_event"]

STREAM_CONTENT_TYPE = b"text/event-stream"

_STOPS = STOPS["anthropic"]

# kind -> Anthropic error type (https://docs.anthropic.com/en/api/errors)
ERROR_TYPE = {
    "invalid_request": "invalid_request_error",
    "authentication": "authentication_error",
    "billing": "billing_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "request_too_large": "request_too_large",
    "rate_limit": "rate_limit_error",
    "api_error": "api_error",
    "bad_gateway": "api_error",
    "unavailable": "overloaded_error",
    "timeout": "timeout_error",
    "overloaded": "overloaded_error",
}


def error_object(err: GatewayError) -> dict:
    return {"type": "error", "error": {"type": ERROR_TYPE[err.kind], "message": err.message}}


def error_event(err: GatewayError) -> bytes:
    """The `event: error` that ends a stream which already started."""
    return b"event: error\ndata: " + orjson.dumps(error_object(err)) + b"\n\n"


_BAD_ID = re.compile(r"[^A-Za-z0-9_-]")


# ============================================================== IR parts -> blocks

def safe_id(cid: str) -> str:
    """A tool id Anthropic accepts ([A-Za-z0-9_-]); others' characters become "_"."""
    return _BAD_ID.sub("_", cid) if _BAD_ID.search(cid) else cid


def text_out(t: ir.Text) -> dict:
    d = {"type": "text", "text": t.text}
    if t.cache_control:
        d["cache_control"] = t.cache_control
    return d


def _image_out(img: ir.Image) -> dict | None:
    mt, data, url = img.media_type, img.data, img.url
    if data is None and url and url.startswith("data:"):
        head, _, data = url.partition(",")
        mt = head[5:].split(";")[0] or mt
        url = None
    if data is not None:
        src = {"type": "base64", "media_type": mt or "image/png", "data": data}
    elif url:
        src = {"type": "url", "url": url}
    else:
        return None
    d = {"type": "document" if mt == "application/pdf" else "image", "source": src}
    if img.cache_control:
        d["cache_control"] = img.cache_control
    return d


def _tool_use_out(tc: ir.ToolCall, cid: str, extra: bool = False) -> dict:
    # (a model's invalid JSON, or JSON that is not an object: Anthropic needs an object)
    d = {"type": "tool_use", "id": cid, "name": tc.name, "input": args_object(tc.arguments)}
    if extra and tc.extra:
        for k, v in tc.extra.items():
            d.setdefault(k, v)
    return d


def _result_out(r: ir.ToolResult) -> dict:
    d = {"type": "tool_result", "tool_use_id": safe_id(r.call_id)}
    c = r.content
    if isinstance(c, str):
        d["content"] = c
    else:
        blocks = []
        for x in c:
            if isinstance(x, ir.Text):
                if x.text:
                    blocks.append(text_out(x))
            elif isinstance(x, ir.Image):
                b = _image_out(x)
                if b is not None:
                    blocks.append(b)
        if blocks:
            d["content"] = blocks
    if r.is_error:
        d["is_error"] = True
    if r.cache_control:
        d["cache_control"] = r.cache_control
    return d


def _thinking_out(t: ir.Thinking) -> dict | None:
    """A thinking part as an Anthropic provider accepts it, or None (foreign/unsigned: dropped)."""
    if t.source == "gemini":
        return None
    if t.redacted:
        return {"type": "redacted_thinking", "data": t.text}
    sig = t.signature
    if not sig or sig.startswith(SIG_PREFIX):
        return None
    return {"type": "thinking", "thinking": t.text, "signature": sig}


def blocks_out(parts: list, role: str, extra: bool = False) -> list[dict]:
    """IR parts of one message -> request content blocks (tool_result blocks first).

    `extra`: re-add ToolCall.extra keys (only when the IR came from an Anthropic client: other
    dialects' extras would be fields Anthropic rejects)."""
    out: list[dict] = []
    results: list[dict] = []
    for x in parts:
        if isinstance(x, ir.Text):
            if x.text:
                out.append(text_out(x))
        elif isinstance(x, ir.ToolCall):
            out.append(_tool_use_out(x, safe_id(x.id), extra))
        elif isinstance(x, ir.ToolResult):
            results.append(_result_out(x))
        elif isinstance(x, ir.Thinking):
            if role == "assistant":
                b = _thinking_out(x)
                if b is not None:
                    out.append(b)
        elif isinstance(x, ir.Image):
            b = _image_out(x)
            if b is not None:
                out.append(b)
    return results + out if results else out


# ============================================================== non-stream response

def _msg_id(upstream_id, ctx: ir.Context) -> str:
    if isinstance(upstream_id, str) and upstream_id.startswith("msg_"):
        return upstream_id
    return "msg_" + ctx.id_seed


def _usage_start(u: ir.Usage | None) -> dict:
    if u is None:
        return {"input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                "output_tokens": 0}
    return {"input_tokens": u.input_tokens or 0, "cache_creation_input_tokens": u.cache_creation_tokens or 0,
            "cache_read_input_tokens": u.cache_read_tokens or 0, "output_tokens": u.output_tokens or 0}


def _sig_block(sig: str) -> dict:
    return {"type": "thinking", "thinking": "", "signature": wrap_sig(sig)}


def render_response(resp: ir.Response, ctx: ir.Context) -> bytes:
    content = []
    tools = False
    for p in resp.parts:
        if isinstance(p, ir.Text):
            if p.signature:
                content.append(_sig_block(p.signature))
            if p.text:
                content.append({"type": "text", "text": p.text})
        elif isinstance(p, ir.Thinking):
            if p.redacted:
                content.append({"type": "redacted_thinking", "data": p.text})
            else:
                sig = p.signature or ""
                if sig and p.source == "gemini":
                    sig = wrap_sig(sig)
                content.append({"type": "thinking", "thinking": p.text, "signature": sig})
        elif isinstance(p, ir.ToolCall):
            if p.signature:
                content.append(_sig_block(p.signature))
            content.append(_tool_use_out(p, p.id))
            tools = True
    return orjson.dumps({
        "id": _msg_id(resp.id, ctx), "type": "message", "role": "assistant",
        "model": resp.model or ctx.model, "content": content,
        "stop_reason": _STOPS.from_ir(resp.stop_reason, tools), "stop_sequence": resp.stop_sequence,
        "usage": _usage_start(resp.usage),
    })


# ============================================================== stream

_NONE, _TEXT, _THINK, _TOOL = 0, 1, 2, 3

_START = b'event: message_start\ndata: {"type":"message_start","message":'
_BLOCK = b'event: content_block_start\ndata: {"type":"content_block_start","index":%d,"content_block":'
_TEXT_START = b'{"type":"text","text":""}}\n\n'                          # after _BLOCK % index
_THINK_START = b'{"type":"thinking","thinking":"","signature":""}}\n\n'
_DELTA = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,"delta":{"type":'
_TEXT_DELTA = _DELTA + b'"text_delta","text":'
_THINK_DELTA = _DELTA + b'"thinking_delta","thinking":'
_SIG_DELTA = _DELTA + b'"signature_delta","signature":'
_JSON_DELTA = _DELTA + b'"input_json_delta","partial_json":'
_END_DELTA = b"}}\n\n"
_STOP = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":%d}\n\n'
_MSG_DELTA = b'event: message_delta\ndata: {"type":"message_delta","delta":'
_MSG_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


class StreamEncoder:
    """ir.Sink -> Anthropic client SSE bytes (see the module docstring)."""

    __slots__ = ("failure", "_ctx", "_out", "_wrap", "_started", "_done", "_n", "_open", "_idx", "_prefix",
                 "_signed", "_tool", "_pending", "_seen", "_stop", "_stop_seq", "_usage", "_tools", "_final")

    def __init__(self, ctx: ir.Context) -> None:
        self._ctx = ctx
        self._out: list[bytes] = []
        self._wrap = ctx.extra.get("upstream") == "gemini"
        self._started = False
        self._done = False
        self.failure = None       # the message of the error event written, if any
        self._n = 0                  # next block index
        self._open = _NONE           # kind of the open block
        self._idx = 0                # its index
        self._prefix = b""           # its delta template, index filled in
        self._signed = False         # the open thinking block has its signature
        self._tool = -1              # source index of the open tool_use block
        self._pending: dict[int, list] = {}   # source index -> [id, name, signature, fragments]
        self._seen: set[int] = set()          # source indexes of every tool_start
        self._stop: str | None = None
        self._stop_seq: str | None = None
        self._usage = ir.Usage()
        self._tools = False          # a tool_use block was sent
        self._final: list[bytes] = []  # output up to end()/error(); later calls write to a dead list

    @property
    def stop(self) -> str | None:
        """The IR stop reason given to finish() (for the usage record)."""
        return self._stop

    # ---------------------------------------------------------------- output

    def take(self) -> bytes:
        if self._done:
            self._out.clear()         # calls after end()/error() produce nothing
            out, self._final = self._final, []
        else:
            out = self._out
            self._out = []
        return b"".join(out) if out else b""

    def _terminate(self, data: bytes) -> None:
        self._out.append(data)
        self._final = self._out
        self._out = []
        self._done = True

    def close(self) -> bytes:
        if not self._done:
            self.error(stream_cut())
        return self.take()

    # ---------------------------------------------------------------- blocks

    def _begin(self, kind: int, start: bytes, delta: bytes) -> None:
        """Close the open block, open a new one: `start` is the content_block JSON + end."""
        if not self._started:
            self.start(None, None, None)
        if self._open:
            self._out.append(_STOP % self._idx)
        i = self._idx = self._n
        self._n = i + 1
        self._open = kind
        self._signed = False
        self._out += (_BLOCK % i, start)
        self._prefix = delta % i

    def _close(self) -> None:
        if self._open:
            self._out.append(_STOP % self._idx)
            self._open = _NONE

    def _signature_block(self, sig: str) -> None:
        self._begin(_THINK, _THINK_START, _SIG_DELTA)
        self._out += (self._prefix, orjson.dumps(wrap_sig(sig)), _END_DELTA, _STOP % self._idx)
        self._open = _NONE

    def _open_tool(self, index: int, id: str, name: str, sig: str | None, frags: list | None) -> None:
        if sig:
            self._signature_block(sig)
        self._begin(_TOOL, orjson.dumps({"type": "tool_use", "id": id, "name": name, "input": {}}) + b"}\n\n",
                    _JSON_DELTA)
        self._tool = index
        self._tools = True
        if frags:
            self._out += (self._prefix, orjson.dumps("".join(frags)), _END_DELTA)

    def _next_pending(self) -> None:
        index = next(iter(self._pending))
        id, name, sig, frags = self._pending.pop(index)
        self._open_tool(index, id, name, sig, frags)

    def _flush(self) -> None:
        self._close()
        while self._pending:
            self._next_pending()
            self._close()

    # ---------------------------------------------------------------- ir.Sink

    def start(self, id: str | None, model: str | None, usage: ir.Usage | None) -> None:
        if self._started:
            return
        self._started = True
        if usage is not None:
            self._usage.update(usage)
        self._out.append(_START + orjson.dumps({
            "id": _msg_id(id, self._ctx), "type": "message", "role": "assistant",
            "model": model or self._ctx.model, "content": [], "stop_reason": None,
            "stop_sequence": None, "usage": _usage_start(usage)}) + b"}\n\n")

    def text(self, s: str) -> None:
        if s:
            if self._open != _TEXT:
                self._begin(_TEXT, _TEXT_START, _TEXT_DELTA)
            self._out += (self._prefix, orjson.dumps(s), _END_DELTA)

    def thinking(self, s: str) -> None:
        if s:
            if self._open != _THINK or self._signed:
                self._begin(_THINK, _THINK_START, _THINK_DELTA)
            self._out += (self._prefix, orjson.dumps(s), _END_DELTA)

    def signature(self, sig: str) -> None:
        if self._open != _THINK or self._signed:
            self._begin(_THINK, _THINK_START, _THINK_DELTA)
        self._signed = True
        self._out += (_SIG_DELTA % self._idx, orjson.dumps(wrap_sig(sig) if self._wrap else sig), _END_DELTA)

    def redacted_thinking(self, data: str) -> None:
        self._begin(_THINK, orjson.dumps({"type": "redacted_thinking", "data": data}) + b"}\n\n", _THINK_DELTA)
        self._close()

    def tool_start(self, index: int, id: str, name: str, signature: str | None = None) -> None:
        if index in self._seen:
            return
        self._seen.add(index)
        if self._open == _TOOL:
            self._pending[index] = [id, name, signature, []]
        else:
            self._open_tool(index, id, name, signature, None)

    def tool_args(self, index: int, fragment: str) -> None:
        if not fragment:
            return
        if self._open == _TOOL and self._tool == index:
            self._out += (self._prefix, orjson.dumps(fragment), _END_DELTA)
        else:
            p = self._pending.get(index)
            if p is not None:
                p[3].append(fragment)

    def block_end(self) -> None:
        if self._open:
            tool = self._open == _TOOL
            self._close()
            if tool and self._pending:
                self._next_pending()

    def usage(self, u: ir.Usage) -> None:
        if u is None:
            return
        self._usage.update(u)

    def finish(self, stop_reason: str, stop_sequence: str | None = None) -> None:
        self._flush()
        self._stop = stop_reason
        self._stop_seq = stop_sequence

    def end(self) -> None:
        if self._done:
            return
        if not self._started:
            self.start(None, None, None)
        self._flush()
        u = self._usage
        usage = {}
        if u.input_tokens is not None:
            usage["input_tokens"] = u.input_tokens
        if u.cache_creation_tokens is not None:
            usage["cache_creation_input_tokens"] = u.cache_creation_tokens
        if u.cache_read_tokens is not None:
            usage["cache_read_input_tokens"] = u.cache_read_tokens
        usage["output_tokens"] = u.output_tokens or 0
        stop = _STOPS.from_ir(self._stop, self._tools)
        self._out += (_MSG_DELTA, orjson.dumps({"stop_reason": stop, "stop_sequence": self._stop_seq}),
                      b',"usage":', orjson.dumps(usage), b"}\n\n")
        self._terminate(_MSG_STOP)

    def error(self, err: Exception) -> None:
        if self._done:
            return
        if not isinstance(err, GatewayError):
            err = GatewayError(502, str(err) or "upstream stream failed", "bad_gateway")
        self.failure = err.message
        self._terminate(error_event(err))
