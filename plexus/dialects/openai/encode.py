"""IR → responses TO an OpenAI Chat Completions client (pure, sans-IO).

`render_response(resp, ctx)` gives the non-stream `chat.completion` body; `StreamEncoder` is an
`ir.Sink` that writes the `chat.completion.chunk` SSE stream, taken with `take()`/`close()`.

Wire shape (as api.openai.com sends it):
    data: {"id":"chatcmpl-…","object":"chat.completion.chunk","created":N,"model":"…",
           "choices":[{"index":0,"delta":{…},"logprobs":null,"finish_reason":null}]}
  first chunk delta {"role":"assistant","content":"","refusal":null} (sent at start(), so
  the client sees headers-and-first-byte at once); text → {"content":…}; thinking →
  {"reasoning_content":s,"thinking_blocks":[{"index":b,"type":"thinking","thinking":s}]};
  a signature → {"thinking_blocks":[{"index":b,"type":"thinking","thinking":"","signature":…}]}
  (it seals block b); redacted thinking → {"thinking_blocks":[{"index":b,"type":
  "redacted_thinking","data":…}]}. This is the LiteLLM convention plus an `index` per block
  (0,1,2… in order): the openai SDK's stream accumulator (ChatCompletionStreamState) merges
  list deltas by `index` and fails on a second un-indexed one, and with it the accumulated
  message holds complete signed blocks a client can send back. tool_start → {"tool_calls":[{"index":
  k,"id":…,"type":"function","function":{"name":…,"arguments":""}}]} with k = 0,1,2… in order
  of first appearance (never the source index); tool_args → {"tool_calls":[{"index":k,
  "function":{"arguments":…}}]}; finish → empty delta + finish_reason; at end(), when
  ctx.include_usage, a `"choices":[]` chunk with the usage, then `data: [DONE]`. With
  include_usage every other chunk carries `"usage":null`, as OpenAI does. Usage that arrives
  after finish() still makes the usage chunk (it is written at end()).
- Chunks are built from per-stream byte templates (prefix with id/created/model, fixed suffix,
  made once at start()) plus orjson.dumps of the payload string, appended as parts to the
  output list and joined once per take(): no per-event dicts or concatenation.
- error() → `data: {"error":{…}}` (`error_event`; `error_object` is the error body of a
  whole response) and no [DONE]; close() without
  end()/error() → the same with 502 "upstream stream ended early". Nothing after either.
- end() without finish() → a "stop"/"tool_calls" finish chunk first (never a stream without
  finish_reason).

Mapping decisions:
- id: the upstream id when it already starts with "chatcmpl-", else "chatcmpl-" + upstream id,
  else "chatcmpl-" + ctx.id_seed. model: the upstream-reported model, else ctx.model.
  created: ctx.created.
- finish_reason (common.STOPS["openai"]): end_turn/stop_sequence/pause_turn/error → stop,
  max_tokens → length, tool_use → tool_calls, refusal → content_filter; "stop" in a turn that
  made tool calls → tool_calls (Gemini reports STOP for function calls; OpenAI clients loop on "tool_calls").
- Gemini signatures: ToolCall.signature / tool_start(signature=) → id = signatures.wrap_id(id,
  sig). Thinking signatures from Gemini carry the "plexus-gemini:" tag (signatures.wrap_sig) so
  the request parser can tell them from Anthropic ones: non-stream Thinking.source == "gemini"
  is wrapped here; in a stream the Gemini decoder already hands signature() the tagged form
  (it is passed on verbatim; an untagged one is wrapped when ctx.extra["upstream"] ==
  "gemini"). A Gemini Text.signature (non-stream) becomes a signature-only thinking block.
- Non-stream content: texts joined with "" (as stream deltas concatenate); null when the
  answer is only tool calls. Thinking → `reasoning_content` (all unredacted thinking text)
  and `thinking_blocks`: every thinking part in order (unsigned ones without "signature"; a
  Text.signature as a signature-only block), so a streamed answer accumulated by the openai
  SDK and the same answer unstreamed carry the same blocks (the stream's `index` aside).
- Usage: prompt_tokens = input + cache_read + cache_creation, prompt_tokens_details.
  cached_tokens = cache_read (cache_write_tokens added when non-zero), completion_tokens =
  output, completion_tokens_details.reasoning_tokens = reasoning; the audio/prediction
  counters OpenAI reports are 0.
"""

from __future__ import annotations

import orjson

from ... import ir
from ...errors import GatewayError
from ..common import STOPS
from ..signatures import SIG_PREFIX, wrap_id, wrap_sig

STREAM_CONTENT_TYPE = b"text/event-stream"

_STOPS = STOPS["openai"]

# kind -> OpenAI error type
ERROR_TYPE = {
    "invalid_request": "invalid_request_error",
    "authentication": "authentication_error",
    "billing": "insufficient_quota",
    "permission": "permission_error",
    "not_found": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "rate_limit": "rate_limit_error",
    "api_error": "server_error",
    "bad_gateway": "server_error",
    "unavailable": "server_error",
    "timeout": "server_error",
    "overloaded": "server_error",
}

_DONE = b"data: [DONE]\n\n"
_ARGS_CLOSE = b"}}]"
_BLOCK_CLOSE = b"}]"
_dumps = orjson.dumps
_FIRST_DELTA = b'{"role":"assistant","content":"","refusal":null}'


def error_object(err: GatewayError) -> dict:
    return {"error": {"message": err.message, "type": ERROR_TYPE[err.kind], "param": err.param,
                      "code": err.code}}


def error_event(err: GatewayError) -> bytes:
    """The final event of a stream that fails after it started (no `[DONE]` follows)."""
    return b"data: " + orjson.dumps(error_object(err)) + b"\n\n"


def chat_id(upstream_id: str | None, ctx: ir.Context) -> str:
    if upstream_id:
        return upstream_id if upstream_id.startswith("chatcmpl-") else "chatcmpl-" + upstream_id
    return "chatcmpl-" + ctx.id_seed


def usage_object(u: ir.Usage) -> dict:
    cached = u.cache_read_tokens or 0
    written = u.cache_creation_tokens or 0
    prompt = (u.input_tokens or 0) + cached + written
    out = u.output_tokens or 0
    ptd = {"cached_tokens": cached, "audio_tokens": 0}
    if written:
        ptd["cache_write_tokens"] = written
    return {"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out,
            "prompt_tokens_details": ptd,
            "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens or 0,
                                          "audio_tokens": 0, "accepted_prediction_tokens": 0,
                                          "rejected_prediction_tokens": 0}}


def _sig(t: ir.Thinking) -> str | None:
    if not t.signature:
        return None
    return wrap_sig(t.signature) if t.source == "gemini" else t.signature


def render_response(resp: ir.Response, ctx: ir.Context) -> bytes:
    texts: list[str] = []
    thinking: list[str] = []
    blocks: list[dict] = []
    calls: list[dict] = []
    for p in resp.parts:
        tp = type(p)
        if tp is ir.Text:
            texts.append(p.text)
            if p.signature:
                blocks.append({"type": "thinking", "thinking": "", "signature": wrap_sig(p.signature)})
        elif tp is ir.ToolCall:
            calls.append({"id": wrap_id(p.id, p.signature), "type": "function",
                          "function": {"name": p.name, "arguments": p.arguments}})
        elif tp is ir.Thinking:
            if p.redacted:
                blocks.append({"type": "redacted_thinking", "data": p.text})
                continue
            thinking.append(p.text)
            b = {"type": "thinking", "thinking": p.text}
            sig = _sig(p)
            if sig:
                b["signature"] = sig
            blocks.append(b)
    content = "".join(texts)
    msg: dict = {"role": "assistant", "content": content if content or not calls else None}
    if thinking:
        msg["reasoning_content"] = "".join(thinking)
    if blocks:
        msg["thinking_blocks"] = blocks
    if calls:
        msg["tool_calls"] = calls
    msg["refusal"] = None
    msg["annotations"] = []
    finish = _STOPS.from_ir(resp.stop_reason, bool(calls))
    return orjson.dumps({
        "id": chat_id(resp.id, ctx), "object": "chat.completion", "created": ctx.created,
        "model": resp.model or ctx.model,
        "choices": [{"index": 0, "message": msg, "logprobs": None, "finish_reason": finish}],
        "usage": usage_object(resp.usage),
    })


class StreamEncoder(ir.EncoderOutput):
    """ir.Sink → OpenAI chunk bytes. States: new → open (after start) → finished → done."""

    __slots__ = ("_ctx", "_pre", "_suf", "_head", "_tools", "_usage", "_finished",
                 "_wrap_sig", "_usage_null", "_text_pre", "_think_pre", "_close", "_tb",
                 "_nblocks", "stop")

    def __init__(self, ctx: ir.Context) -> None:
        self._ctx = ctx
        self.stop: str | None = None     # the IR stop reason given to finish() (for the usage record)
        self._out: list[bytes] = []
        self._pre: bytes | None = None   # b'data: {"id":…,"choices":[{"index":0,"delta":'
        self._suf = b""                  # b',"logprobs":null,"finish_reason":null}]…}\n\n'
        self._head = b""                 # b'data: {"id":…,"model":…,'
        self._tools: dict[int, bytes] = {}   # source index → prefix of its arguments chunk
        self._usage = ir.Usage()
        self._finished = False
        self._done = False
        self.failure = None       # the message of the error event written, if any
        self._wrap_sig = ctx.extra.get("upstream") == "gemini"
        self._usage_null = b',"usage":null' if ctx.include_usage else b""
        self._tb: bytes | None = None    # the open thinking block's thinking_blocks prefix
        self._nblocks = 0                # thinking_blocks entries numbered so far

    # ------------------------------------------------------------ output


    # ------------------------------------------------------------ sink

    def start(self, id: str | None, model: str | None, usage: ir.Usage | None) -> None:
        if self._pre is not None or self._done:
            return
        ctx = self._ctx
        self._head = (b'data: {"id":' + orjson.dumps(chat_id(id, ctx))
                      + b',"object":"chat.completion.chunk","created":' + str(ctx.created).encode()
                      + b',"model":' + orjson.dumps(model or ctx.model) + b",")
        pre = self._pre = self._head + b'"choices":[{"index":0,"delta":'
        suf = self._suf = b',"logprobs":null,"finish_reason":null}]' + self._usage_null + b"}\n\n"
        self._text_pre = pre + b'{"content":'
        self._think_pre = pre + b'{"reasoning_content":'
        self._close = b"}" + suf
        if usage is not None:
            self._usage.update(usage)
        self._out.append(pre + _FIRST_DELTA + suf)

    def text(self, s: str) -> None:
        if s and not self._finished:
            if self._pre is None:
                self.start(None, None, None)
            self._tb = None
            self._out += (self._text_pre, _dumps(s), self._close)

    def thinking(self, s: str) -> None:
        if s and not self._finished:
            if self._pre is None:
                self.start(None, None, None)
            tb = self._tb or self._open_block()
            js = _dumps(s)
            self._out += (self._think_pre, js, tb, js, _BLOCK_CLOSE, self._close)

    def signature(self, sig: str) -> None:
        if sig and not self._finished:
            if self._pre is None:
                self.start(None, None, None)
            if self._wrap_sig and not sig.startswith(SIG_PREFIX):
                sig = wrap_sig(sig)
            tb = self._tb or self._open_block()
            self._tb = None                      # a signature seals its thinking block
            self._out += (self._pre, b"{", tb[1:], b'"","signature":', _dumps(sig), _BLOCK_CLOSE,
                          self._close)

    def redacted_thinking(self, data: str) -> None:
        if not self._finished:
            if self._pre is None:
                self.start(None, None, None)
            self._tb = None
            k = str(self._nblocks).encode()
            self._nblocks += 1
            self._out += (self._pre, b'{"thinking_blocks":[{"index":', k,
                          b',"type":"redacted_thinking","data":', _dumps(data), _BLOCK_CLOSE,
                          self._close)

    def _open_block(self) -> bytes:
        """Number a new thinking block; return its b',"thinking_blocks":[{…,"thinking":' prefix."""
        tb = self._tb = (b',"thinking_blocks":[{"index":' + str(self._nblocks).encode()
                         + b',"type":"thinking","thinking":')
        self._nblocks += 1
        return tb

    def tool_start(self, index: int, id: str, name: str, signature: str | None = None) -> None:
        if self._finished:
            return
        if self._pre is None:
            self.start(None, None, None)
        self._tb = None
        k = b'{"tool_calls":[{"index":' + str(len(self._tools)).encode() + b","
        self._tools[index] = self._pre + k + b'"function":{"arguments":'
        self._out += (self._pre, k, b'"id":', _dumps(wrap_id(id, signature)),
                      b',"type":"function","function":{"name":', _dumps(name),
                      b',"arguments":""}}]', self._close)

    def tool_args(self, index: int, fragment: str) -> None:
        head = self._tools.get(index)
        if head is not None and fragment and not self._finished:
            self._out += (head, _dumps(fragment), _ARGS_CLOSE, self._close)

    def block_end(self) -> None:
        self._tb = None

    def usage(self, u: ir.Usage) -> None:
        self._usage.update(u)

    def finish(self, stop_reason: str, stop_sequence: str | None = None) -> None:
        if self._finished or self._done:
            return
        if self._pre is None:
            self.start(None, None, None)
        self._finished = True
        self.stop = stop_reason
        fr = _STOPS.from_ir(stop_reason, bool(self._tools))
        self._out.append(self._pre + b'{},"logprobs":null,"finish_reason":"' + fr.encode() + b'"}]'
                         + self._usage_null + b"}\n\n")

    def end(self) -> None:
        if self._done:
            return
        if not self._finished:
            self.finish("end_turn")
        self._done = True
        if self._ctx.include_usage:
            self._out.append(self._head + b'"choices":[],"usage":'
                             + orjson.dumps(usage_object(self._usage)) + b"}\n\n")
        self._out.append(_DONE)

    def error(self, err: Exception) -> None:
        if self._done:
            return
        self._done = self._finished = True
        if not isinstance(err, GatewayError):
            err = GatewayError(502, str(err) or "upstream error", "bad_gateway")
        self.failure = err.message
        self._out.append(error_event(err))
