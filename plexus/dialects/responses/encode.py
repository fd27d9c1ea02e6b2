"""IR → OpenAI Responses API answers (`POST /v1/responses`): the `response` object, its stream.

`render_response(resp, ctx)` gives the non-stream `response` object; `StreamEncoder` is an
ir.Sink that writes the Responses SSE stream, taken with `take()`/`close()`. Items, ids, usage,
status and the response object's fields are objects.py's (one builder per item for both paths,
so a stream's final `response.completed` object is byte for byte `render_response` of the same
content, the same ctx).

Output items, in order (`output_index` 0, 1, 2...; ids "<msg|rs|fc|ctc>_<id_seed>_<index>"):
- a text block → `message` {id, type, status "completed", role "assistant", content
  [{type "output_text", text, annotations [], logprobs []}]}; two text blocks stay two messages.
- a thinking block → `reasoning` {id, type, summary [{type "summary_text", text}] ([] when it
  has no text), encrypted_content}: names.wrap_reasoning(source, signature, text) for signed
  thinking (objects.signed_source says whose), null for unsigned thinking (OpenAI-compatible
  reasoning_content); redacted thinking → summary [] and the wrapped redacted data.
- a Gemini thought signature on a tool call (tool_start(signature=), ToolCall.signature) or a
  text part (Text.signature) → a `reasoning` item {summary [], encrypted_content
  wrap_reasoning("gemini", sig, "")} right before that item (the request parser folds it back).
- a tool call → `function_call` {id, type, status "completed", arguments, call_id, name, and
  namespace when names.split_name(flat, ctx.extra["tool_names"]) gives one}; a flat name in
  ctx.extra["custom_tools"] → `custom_tool_call` {id, type, call_id, name, input} (the SDK's
  type has no status), input = the "input" string of the JSON arguments.
Status (objects.STATUS): max_tokens → "incomplete" {"reason": "max_output_tokens"}, refusal →
"incomplete" {"reason": "content_filter"}, else "completed". Usage: input_tokens = prompt total
(cache reads and writes included), input_tokens_details {cached_tokens, cache_write_tokens},
output_tokens, output_tokens_details.reasoning_tokens, total_tokens.

Stream (what api.openai.com sends, `event: <type>\\ndata: <json>\\n\\n`, each payload with `type`
and a `sequence_number` 0, 1, 2...): at start() `response.created` and `response.in_progress`
(the object with status "in_progress", output [], usage null); per item
`response.output_item.added` (status "in_progress", text/arguments empty, encrypted_content
null: an Anthropic signature arrives after the thinking), then
- message: content_part.added, output_text.delta*, output_text.done, content_part.done;
- reasoning with text: reasoning_summary_part.added, reasoning_summary_text.delta*,
  reasoning_summary_text.done, reasoning_summary_part.done (summary_index 0);
- function_call: function_call_arguments.delta*, function_call_arguments.done;
- custom_tool_call: its arguments are buffered until the call ends (the input is a field of
  them), then one custom_tool_call_input.delta (when non-empty) and custom_tool_call_input.done;
then `response.output_item.done` with the whole item. A signature seals its reasoning item (it
is done at once; more thinking opens a new one). At end() (usage may follow finish())
`response.completed`, or `response.incomplete` for status "incomplete", with the whole object.
- Parallel tool calls whose fragments interleave (OpenAI tool_calls[].index) come out as
  consecutive items, one open at a time, as anthropic/encode.py does: fragments of a call that
  is not the open item are buffered and written as one delta when its turn comes (block_end of
  the open call, or finish/end). Fragments for a call whose item was already done are dropped.
- error(err) → `response.failed`: the object with status "failed", error {code, message}
  (`error_code`: 429 → "rate_limit_exceeded", invalid_request → "invalid_prompt", else
  "server_error": the SDK's ResponseError codes), output = the items done so far, usage null;
  the open item is not closed, nothing follows. close() without end()/error() → the same with
  502 "upstream stream ended early".
- `error_event(err, seq=0)` is the `event: error` payload {type "error", code, message, param,
  sequence_number} the gateway writes when it has no encoder state: a relayed stream that was
  cut (stream.Passthrough passes the sequence number after the last one it saw);
  `error_object` is OpenAI's error body ({"error": {message, type, param, code}}), the same as
  the Chat Completions dialect's.
- Speed: byte templates per item (made when it opens), orjson.dumps of the delta string only,
  the delta strings kept in a list and joined once when the item is done.
"""

from __future__ import annotations

import orjson

from ... import ir
from ...errors import GatewayError
from ..openai.encode import error_object
from .objects import (call_item, item_id, message_item, reasoning_item, response_object, status_of,
                      summary_part, text_part, usage_object)

__all__ = ["render_response", "StreamEncoder", "STREAM_CONTENT_TYPE", "error_object", "error_event",
           "error_code"]

STREAM_CONTENT_TYPE = b"text/event-stream"

_dumps = orjson.dumps


def error_code(err: GatewayError) -> str:
    if err.status == 429:
        return "rate_limit_exceeded"
    return "invalid_prompt" if err.kind == "invalid_request" else "server_error"


def error_event(err: GatewayError, seq: int = 0) -> bytes:
    """The `event: error` that ends a started stream the gateway has no state of; ``seq``: its
    sequence_number (a relay passes the one after the last it saw)."""
    return b"event: error\ndata: " + _dumps({
        "type": "error", "code": err.code or error_code(err), "message": err.message,
        "param": err.param, "sequence_number": seq}) + b"\n\n"


# ============================================================== non-stream

def render_response(resp: ir.Response, ctx: ir.Context) -> bytes:
    up = ctx.extra.get("upstream")
    out: list[dict] = []
    for p in resp.parts:
        tp = type(p)
        if tp is ir.Text:
            if p.signature:
                out.append(reasoning_item(item_id("rs", ctx, len(out)), "", p.signature, "gemini", up))
            if p.text:
                out.append(message_item(item_id("msg", ctx, len(out)), p.text))
        elif tp is ir.Thinking:
            if p.text or p.signature or p.redacted:
                out.append(reasoning_item(item_id("rs", ctx, len(out)), p.text, p.signature, p.source,
                                          up, p.redacted))
        elif tp is ir.ToolCall:
            if p.signature:
                out.append(reasoning_item(item_id("rs", ctx, len(out)), "", p.signature, "gemini", up))
            out.append(call_item(ctx, len(out), p.id, p.name, p.arguments))
    status, incomplete = status_of(resp.stop_reason)
    return _dumps(response_object(ctx, resp.model or ctx.model, status, out, usage_object(resp.usage),
                                  incomplete))


# ============================================================== stream

_NONE, _MSG, _RS, _CALL = 0, 1, 2, 3


def _ev(t: bytes) -> bytes:
    return b"event: " + t + b'\ndata: {"type":"' + t + b'"'


_SEQ = b',"sequence_number":%d}\n\n'
_TEXT_SEQ = b',"logprobs":[],"sequence_number":%d}\n\n'
_CREATED = _ev(b"response.created") + b',"response":'
_IN_PROGRESS = _ev(b"response.in_progress") + b',"response":'
_ITEM_ADDED = _ev(b"response.output_item.added") + b',"output_index":%d,"item":'
_ITEM_DONE = _ev(b"response.output_item.done") + b',"output_index":%d,"item":'
_PART_ADDED = _ev(b"response.content_part.added")
_PART_DONE = _ev(b"response.content_part.done")
_TEXT_DELTA = _ev(b"response.output_text.delta")
_TEXT_DONE = _ev(b"response.output_text.done")
_SUM_ADDED = _ev(b"response.reasoning_summary_part.added")
_SUM_DONE = _ev(b"response.reasoning_summary_part.done")
_SUM_DELTA = _ev(b"response.reasoning_summary_text.delta")
_SUM_TEXT_DONE = _ev(b"response.reasoning_summary_text.done")
_ARGS_DELTA = _ev(b"response.function_call_arguments.delta")
_ARGS_DONE = _ev(b"response.function_call_arguments.done")
_INPUT_DELTA = _ev(b"response.custom_tool_call_input.delta")
_INPUT_DONE = _ev(b"response.custom_tool_call_input.done")
_EMPTY_TEXT = b',"content_index":0,"part":' + _dumps(text_part(""))
_EMPTY_SUMMARY = b',"part":' + _dumps(summary_part(""))


class StreamEncoder(ir.EncoderOutput):
    """ir.Sink → Responses API SSE bytes (see the module docstring)."""

    __slots__ = ("_ctx", "_up", "_started", "_model", "_seq", "_usage", "stop", "_items",
                 "_kind", "_idx", "_iid", "_loc", "_prefix", "_buf", "_call", "_tool",
                 "_pending", "_seen")

    def __init__(self, ctx: ir.Context) -> None:
        self._ctx = ctx
        self._up = ctx.extra.get("upstream")
        self._out: list[bytes] = []
        self._done = False
        self.failure = None           # the message of the error event written, if any
        self.stop: str | None = None  # the IR stop reason given to finish() (for the usage record)
        self._started = False
        self._model = ctx.model
        self._seq = 0                 # the next event's sequence_number
        self._usage = ir.Usage()
        self._items: list[dict] = []  # the items done, in output order
        self._kind = _NONE            # the open item: its kind, output index, id, locator bytes
        self._idx = 0
        self._iid = ""
        self._loc = b""               # b',"item_id":"…","output_index":N'
        self._prefix = b""            # its delta event up to the delta string
        self._buf: list[str] = []     # its text / summary / arguments so far
        self._call: tuple | None = None   # the open call: (call id, flat name, custom)
        self._tool = None             # the open call's source index
        self._pending: dict[int, list] = {}   # source index → [id, name, signature, fragments]
        self._seen: set[int] = set()          # source indexes of every tool_start

    # ---------------------------------------------------------------- events

    def _emit(self, head: bytes, body: bytes) -> None:
        seq = self._seq
        self._seq = seq + 1
        self._out.append(head + body + _SEQ % seq)

    def _open(self, kind: int, prefix: str, added: dict) -> bool:
        """Close the open item and add a new one (False: the stream is over)."""
        if self._done:
            return False
        if not self._started:
            self.start(None, None, None)
        if self._kind:
            self._close()
        i = self._idx = len(self._items)
        iid = self._iid = item_id(prefix, self._ctx, i)
        added["id"] = iid
        self._kind = kind
        self._loc = b',"item_id":' + _dumps(iid) + b',"output_index":%d' % i
        self._buf = []
        self._emit(_ITEM_ADDED % i, _dumps(added))
        return True

    def _item_done(self, item: dict) -> None:
        self._kind = _NONE
        self._items.append(item)
        self._emit(_ITEM_DONE % self._idx, _dumps(item))

    def _close(self) -> None:
        kind, loc = self._kind, self._loc
        text = "".join(self._buf)
        if kind == _MSG:
            jt = _dumps(text)
            self._emit(_TEXT_DONE, loc + b',"content_index":0,"text":' + jt + b',"logprobs":[]')
            self._emit(_PART_DONE, loc + b',"content_index":0,"part":' + _dumps(text_part(text)))
            self._item_done(message_item(self._iid, text))
        elif kind == _RS:
            self._close_reasoning()
        elif kind == _CALL:
            cid, flat, custom = self._call
            item = call_item(self._ctx, self._idx, cid, flat, text, custom)
            if custom:
                if item["input"]:
                    self._emit(_INPUT_DELTA, loc + b',"delta":' + _dumps(item["input"]))
                self._emit(_INPUT_DONE, loc + b',"input":' + _dumps(item["input"]))
            else:
                self._emit(_ARGS_DONE, loc + b',"arguments":' + _dumps(text))
            self._tool = self._call = None
            self._item_done(item)

    def _close_reasoning(self, sig: str | None = None, source: str | None = None,
                         redacted: str | None = None) -> None:
        text = "".join(self._buf)
        if text:
            loc = self._loc + b',"summary_index":0'
            self._emit(_SUM_TEXT_DONE, loc + b',"text":' + _dumps(text))
            self._emit(_SUM_DONE, loc + b',"part":' + _dumps(summary_part(text)))
        if redacted is not None:
            item = reasoning_item(self._iid, redacted, None, None, self._up, True)
        else:
            item = reasoning_item(self._iid, text, sig, source, self._up)
        self._item_done(item)

    def _open_reasoning(self) -> bool:
        return self._open(_RS, "rs", {"id": "", "type": "reasoning", "summary": [], "encrypted_content": None})

    def _signature_item(self, sig: str) -> None:
        """A Gemini thought signature of the next item: a reasoning item of its own."""
        if self._open_reasoning():
            self._close_reasoning(sig, "gemini")

    def _open_call(self, index: int, cid: str, flat: str, sig: str | None, frags: list | None) -> None:
        if self._kind:
            self._close()
        if sig:
            self._signature_item(sig)
        ct = self._ctx.extra.get("custom_tools")
        custom = bool(ct) and flat in ct
        added = call_item(self._ctx, len(self._items), cid, flat, "", custom)
        if not custom:
            added["status"] = "in_progress"
        if not self._open(_CALL, "ctc" if custom else "fc", added):
            return
        self._call = (cid, flat, custom)
        self._tool = index
        self._prefix = _ARGS_DELTA + self._loc + b',"delta":'
        if frags:
            self.tool_args(index, "".join(frags))

    def _next_pending(self) -> None:
        index = next(iter(self._pending))
        cid, name, sig, frags = self._pending.pop(index)
        self._open_call(index, cid, name, sig, frags)

    def _flush(self) -> None:
        if self._kind:
            self._close()
        while self._pending and not self._done:
            self._next_pending()
            if self._kind:
                self._close()

    # ---------------------------------------------------------------- ir.Sink

    def start(self, id: str | None, model: str | None, usage: ir.Usage | None) -> None:
        if self._started or self._done:
            return
        self._started = True
        if usage is not None:
            self._usage.update(usage)
        m = self._model = model or self._ctx.model
        body = _dumps(response_object(self._ctx, m, "in_progress", [], None))
        self._emit(_CREATED, body)
        self._emit(_IN_PROGRESS, body)

    def text(self, s: str) -> None:
        if s:
            if self._kind != _MSG:
                if not self._open(_MSG, "msg", {"id": "", "type": "message", "status": "in_progress",
                                                "role": "assistant", "content": []}):
                    return
                self._emit(_PART_ADDED, self._loc + _EMPTY_TEXT)
                self._prefix = _TEXT_DELTA + self._loc + b',"content_index":0,"delta":'
            seq = self._seq
            self._seq = seq + 1
            self._buf.append(s)
            self._out += (self._prefix, _dumps(s), _TEXT_SEQ % seq)

    def thinking(self, s: str) -> None:
        if s:
            if self._kind != _RS:
                if not self._open_reasoning():
                    return
            if not self._buf:
                loc = self._loc + b',"summary_index":0'
                self._emit(_SUM_ADDED, loc + _EMPTY_SUMMARY)
                self._prefix = _SUM_DELTA + loc + b',"delta":'
            seq = self._seq
            self._seq = seq + 1
            self._buf.append(s)
            self._out += (self._prefix, _dumps(s), _SEQ % seq)

    def signature(self, sig: str) -> None:
        if self._kind != _RS:
            if not self._open_reasoning():
                return
        self._close_reasoning(sig)            # a signature seals its thinking block

    def redacted_thinking(self, data: str) -> None:
        if self._open_reasoning():
            self._close_reasoning(redacted=data)

    def tool_start(self, index: int, id: str, name: str, signature: str | None = None) -> None:
        if index in self._seen or self._done:
            return
        self._seen.add(index)
        if self._kind == _CALL:
            self._pending[index] = [id, name, signature, []]
        else:
            self._open_call(index, id, name, signature, None)

    def tool_args(self, index: int, fragment: str) -> None:
        if not fragment:
            return
        if self._tool == index:
            self._buf.append(fragment)
            if not self._call[2]:
                seq = self._seq
                self._seq = seq + 1
                self._out += (self._prefix, _dumps(fragment), _SEQ % seq)
        else:
            p = self._pending.get(index)
            if p is not None:
                p[3].append(fragment)

    def block_end(self) -> None:
        if self._kind:
            call = self._kind == _CALL
            self._close()
            if call and self._pending:
                self._next_pending()

    def usage(self, u: ir.Usage) -> None:
        if u is not None:
            self._usage.update(u)

    def finish(self, stop_reason: str, stop_sequence: str | None = None) -> None:
        if self._done:
            return
        self._flush()
        self.stop = stop_reason

    def end(self) -> None:
        if self._done:
            return
        if not self._started:
            self.start(None, None, None)
        self._flush()
        status, incomplete = status_of(self.stop)
        obj = response_object(self._ctx, self._model, status, self._items, usage_object(self._usage),
                              incomplete)
        self._emit(_ev(b"response.completed" if incomplete is None else b"response.incomplete")
                   + b',"response":', _dumps(obj))
        self._done = True

    def error(self, err: Exception) -> None:
        if self._done:
            return
        if not self._started:
            self.start(None, None, None)
        if not isinstance(err, GatewayError):
            err = GatewayError(502, str(err) or "upstream stream failed", "bad_gateway")
        self.failure = err.message
        obj = response_object(self._ctx, self._model, "failed", self._items, None,
                              error={"code": error_code(err), "message": err.message})
        self._emit(_ev(b"response.failed") + b',"response":', _dumps(obj))
        self._done = True
        self._kind = _NONE
        self._tool = self._call = None
        self._pending.clear()
