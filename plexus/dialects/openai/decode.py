"""Responses FROM an OpenAI-compatible provider → IR (pure, sans-IO).

`parse_response(body)` maps a `chat.completion` JSON body to `ir.Response`; `StreamDecoder`
turns `chat.completion.chunk` SSE bytes, split anywhere, into `ir.Sink` calls in the order
ir.py prescribes. Each SSE data payload is parsed once with orjson.loads.

Mapping decisions:
- Only choice index 0 is read (the IR holds one answer; `n` > 1 extra choices are dropped).
- Thinking text: `reasoning_content` (DeepSeek, vLLM < 0.10, LiteLLM), else `reasoning`
  (OpenRouter, newer vLLM, Ollama). A LiteLLM-style `thinking_blocks` list contributes its
  signatures (→ sink.signature / Thinking.signature) and redacted blocks; its thinking text
  duplicates reasoning_content and is not repeated.
- `refusal` text becomes ordinary text (the IR has no refusal part).
- finish_reason (common.STOPS["openai"]): stop → end_turn, length → max_tokens, tool_calls/function_call → tool_use,
  content_filter → refusal, anything else → end_turn; "stop" after tool calls → tool_use
  (Ollama and some vLLM versions say "stop" for a tool call turn).
- Usage: prompt_tokens includes cached ones: input = prompt − cached_tokens − cache_write_tokens,
  cache_read = cached_tokens, cache_creation = cache_write_tokens, output = completion_tokens,
  reasoning = completion_tokens_details.reasoning_tokens. `usage: null` is ignored; usage may
  arrive in any chunk (with the finish chunk, in a `choices: []` chunk, or on every chunk).
- Tool calls: keyed by `index`; the first chunk of an index gives id and name (tool_start),
  arguments fragments follow (tool_args). A server that omits `index` (older Ollama) has each
  new id treated as a new call. A call without id gets "call_<response id>_<index>".
  Tool call ids are passed through verbatim.
- Stream end: `[DONE]` (`data: [DONE]` or `data:[DONE]`, any SSE line ending) → finish
  (synthesised "end_turn"/"tool_use" if the upstream sent no finish_reason) then end. Body
  ended (close(), or close(err) for a read failure) after a non-null finish_reason but
  without `[DONE]` → end: vLLM, llama.cpp, Ollama and OpenRouter omit it, and the usage chunk
  (`choices: []`) may or may not follow; a partial event cut off after the finish is dropped.
  Body ended before any finish_reason → error 502 "upstream stream ended early" (close(err):
  `err`). Content after the finish_reason is dropped. Anything after end/error is ignored.
- `data: {"error": {...}}` (or an `error` key on a chunk) → sink.error(GatewayError) with the
  status from an integer `code` (vLLM, OpenRouter), else from the error code or the error type
  (errors.ERROR_TYPE_KIND: rate_limit_error → 429, invalid_request_error → 400,
  insufficient_quota → 402 billing, ...), else 502. Invalid JSON
  in a data payload, or a chunk of the wrong shape (a string field that is not a string, a
  token count that is not an integer…) → error 502, so a client never receives a value of
  the wrong type; an unparsable partial event at close() is "upstream stream ended early".
  The sink always sees start() first, even when the stream fails before any chunk
  (start(None, None, None) then error).
- Speed: one orjson.loads per event; a delta that is only {"content": …} takes a fast path.
"""

from __future__ import annotations

import orjson

from ... import ir
from ...errors import ERROR_TYPE_KIND, KIND_STATUS, STATUS_KIND, STREAM_CUT, GatewayError, bad_gateway
from ...sse import SSEDecoder
from ..common import STOPS
from ..common import need_opt_int as _n, need_opt_str as _s
from ..signatures import unwrap_sig

_GARBAGE = (AttributeError, TypeError, ValueError, KeyError, IndexError)
_loads = orjson.loads
_JSONError = orjson.JSONDecodeError
_STOPS = STOPS["openai"]

_CODE_KIND = {"rate_limit_exceeded": "rate_limit", "insufficient_quota": "billing",
              "context_length_exceeded": "invalid_request", "invalid_api_key": "authentication"}


def upstream_error(e) -> GatewayError:
    """An OpenAI-style error object (the value of "error") → GatewayError."""
    if not isinstance(e, dict):
        return GatewayError(502, e if isinstance(e, str) and e else "upstream reported an error",
                            "bad_gateway")
    msg = e.get("message")
    if not isinstance(msg, str) or not msg:
        msg = "upstream reported an error"
    code = e.get("code")
    if type(code) is int and code in STATUS_KIND:
        return GatewayError(code, msg, STATUS_KIND[code])
    kind = _CODE_KIND.get(code) if isinstance(code, str) else None
    t = e.get("type")
    kind = kind or (ERROR_TYPE_KIND.get(t) if isinstance(t, str) else None)
    if kind is None:
        return GatewayError(502, msg, "bad_gateway", code=code if isinstance(code, str) else None)
    return GatewayError(KIND_STATUS[kind], msg, kind, code=code if isinstance(code, str) else None)


def parse_usage(u: dict) -> ir.Usage:
    prompt = _n(u.get("prompt_tokens")) or 0
    ptd = u.get("prompt_tokens_details")
    cached = written = None
    if ptd:
        cached = _n(ptd.get("cached_tokens"))
        written = _n(ptd.get("cache_write_tokens"))
    ctd = u.get("completion_tokens_details")
    return ir.Usage(
        input_tokens=max(prompt - (cached or 0) - (written or 0), 0),
        output_tokens=_n(u.get("completion_tokens")) or 0,
        cache_read_tokens=cached,
        cache_creation_tokens=written,
        reasoning_tokens=_n(ctd.get("reasoning_tokens")) if ctd else None,
    )


def _thinking_blocks(blocks, parts: list) -> None:
    """Non-stream: LiteLLM-style thinking_blocks → Thinking parts (text and signature)."""
    for b in blocks:
        if not isinstance(b, dict):
            continue
        if b.get("type") == "redacted_thinking":
            parts.append(ir.Thinking(b.get("data") or "", redacted=True, source="anthropic"))
        elif b.get("type") == "thinking":
            anth, gem = unwrap_sig(b.get("signature") or None)
            parts.append(ir.Thinking(b.get("thinking") or "", anth or gem,
                                     source="anthropic" if anth else "gemini" if gem else None))


def parse_response(body: bytes) -> ir.Response:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad_gateway("upstream returned invalid JSON") from None
    if not isinstance(obj, dict):
        raise bad_gateway("upstream returned an unexpected response (not a JSON object)")
    try:
        return _response(obj)
    except _GARBAGE:
        raise bad_gateway("upstream returned a malformed chat.completion") from None


def _response(obj: dict) -> ir.Response:
    if obj.get("error"):
        raise upstream_error(obj["error"])
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise bad_gateway("upstream response has no choices")
    c0 = next((c for c in choices if isinstance(c, dict) and c.get("index", 0) == 0), choices[0])
    msg = c0.get("message")
    if not isinstance(msg, dict):
        raise bad_gateway("upstream response choice has no message")
    parts: list = []
    blocks = msg.get("thinking_blocks")
    if isinstance(blocks, list) and blocks:
        _thinking_blocks(blocks, parts)
    else:
        rc = msg.get("reasoning_content")
        if not isinstance(rc, str) or not rc:
            rc = msg.get("reasoning")
        if isinstance(rc, str) and rc:
            parts.append(ir.Thinking(rc))
    content = msg.get("content")
    if isinstance(content, list):  # a few servers answer with content parts
        content = "".join(p.get("text") or "" for p in content if isinstance(p, dict))
    if isinstance(content, str) and content:
        parts.append(ir.Text(content))
    refusal = msg.get("refusal")
    if isinstance(refusal, str) and refusal:
        parts.append(ir.Text(refusal))
    calls = msg.get("tool_calls") or ()
    rid = obj.get("id")
    for i, tc in enumerate(calls):
        f = tc.get("function") if isinstance(tc, dict) else None
        if not isinstance(f, dict):
            raise bad_gateway("upstream tool call has no function")
        args = f.get("arguments")
        if not isinstance(args, str):
            args = orjson.dumps(args).decode() if args is not None else "{}"
        parts.append(ir.ToolCall(tc.get("id") or f"call_{rid}_{i}", f.get("name") or "", args))
    fc = msg.get("function_call")
    if isinstance(fc, dict) and not calls:
        args = fc.get("arguments")
        parts.append(ir.ToolCall(f"call_{rid}_0", fc.get("name") or "",
                                 args if isinstance(args, str) else "{}"))
    stop = _STOPS.to_ir(c0.get("finish_reason"), bool(calls or fc))
    u = obj.get("usage")
    return ir.Response(id=rid if isinstance(rid, str) else None,
                       model=obj.get("model") if isinstance(obj.get("model"), str) else "",
                       parts=parts, stop_reason=stop,
                       usage=parse_usage(u) if isinstance(u, dict) else ir.Usage())


# ------------------------------------------------------------------ stream

class StreamDecoder:
    """chat.completion.chunk SSE bytes → ir.Sink calls. States: not started → started →
    finished (finish_reason seen) → done (end or error: input ignored from then on)."""

    __slots__ = ("_sink", "_sse", "_started", "_finished", "_done", "_tools", "_ids", "_last",
                 "_id", "_closing", "_text")

    def __init__(self, sink: ir.Sink) -> None:
        self._sink = sink
        self._text = sink.text         # bound once: the per-event fast path
        self._sse = SSEDecoder()
        self._started = False
        self._finished = False
        self._done = False
        self._tools: set = set()       # source indexes started
        self._ids: dict = {}           # tool id → index, for servers that omit index
        self._last = 0                 # index of the last call touched (index-less servers)
        self._id = None
        self._closing = None           # at close(): the cut's error (a partial event: a cut, not bad JSON)

    def feed(self, chunk: bytes) -> None:
        if self._done:
            return
        try:
            events = self._sse.feed_data(chunk)
        except GatewayError as e:
            self._fail(e)
            return
        try:
            for data in events:
                self._event(data)
                if self._done:
                    return
        except _GARBAGE:  # a chunk of the wrong shape (e.g. "choices": [1])
            if not self._done:
                self._fail(bad_gateway("upstream sent a malformed stream chunk"))

    def close(self, err: GatewayError | None = None) -> None:
        """The body ended (`err`: the read failed). Complete after the finish, else a cut."""
        if self._done:
            return
        self._closing = err or bad_gateway(STREAM_CUT)
        try:
            for data in self._sse.close_data():
                self._event(data)
                if self._done:
                    return
        except _GARBAGE:
            if not self._done:
                self._fail(bad_gateway("upstream sent a malformed stream chunk"))
            return
        if self._finished:
            self._done = True
            self._sink.end()
        else:
            self._fail(self._closing)

    # ------------------------------------------------------------ internals

    def _fail(self, err: GatewayError) -> None:
        if not self._started:
            self._started = True
            self._sink.start(None, None, None)
        self._done = True
        self._sink.error(err)

    def _done_event(self) -> None:
        if not self._started:
            self._started = True
            self._sink.start(None, None, None)
        if not self._finished:
            self._finished = True
            self._sink.finish("tool_use" if self._tools else "end_turn", None)
        self._done = True
        self._sink.end()

    def _event(self, data: bytes) -> None:
        try:
            obj = _loads(data)
        except _JSONError:
            if data == b"[DONE]":
                self._done_event()
            elif self._closing is None:
                self._fail(bad_gateway("upstream sent invalid JSON in a stream event"))
            elif not self._finished:      # (after the finish a partial last event is dropped)
                self._fail(self._closing)
            return
        if type(obj) is not dict:
            self._fail(bad_gateway("upstream sent an unexpected stream event"))
            return
        if not self._started:
            self._start(obj)
        if "error" in obj and obj["error"]:
            self._fail(upstream_error(obj["error"]))
            return
        choices = obj.get("choices")
        if choices and not self._finished:
            c = choices[0]
            if c.get("index", 0) != 0:
                c = next((x for x in choices if x.get("index", 0) == 0), None)
            if c is not None:
                d = c.get("delta")
                if d:
                    if len(d) == 1 and "content" in d:      # the common plain-text delta
                        s = d["content"]
                        if s:
                            self._text(s if type(s) is str else _s(s))
                    else:
                        self._delta(d, self._sink)
                fr = c.get("finish_reason")
                if fr:
                    self._finish(fr)
        u = obj.get("usage")
        if u:
            self._sink.usage(parse_usage(u))

    def _start(self, obj: dict) -> None:
        self._started = True
        if "error" in obj and obj["error"]:
            self._sink.start(None, None, None)
            return
        rid = obj.get("id")
        model = obj.get("model")
        self._id = rid = rid if type(rid) is str else None
        self._sink.start(rid, model if type(model) is str else None, None)

    def _finish(self, fr) -> None:
        self._finished = True
        self._sink.finish(_STOPS.to_ir(fr, bool(self._tools)), None)

    def _delta(self, d: dict, sink) -> None:
        tcs = d.get("tool_calls")
        if tcs and len(d) == 1:                  # the common argument-fragment delta
            for tc in tcs:
                self._tool(tc, sink)
            return
        r = d.get("reasoning_content")
        if r is None:
            r = d.get("reasoning")
        if r:
            sink.thinking(r if type(r) is str else _s(r))
        tb = d.get("thinking_blocks")
        if tb:
            for b in tb:
                if b.get("type") == "redacted_thinking":
                    sink.redacted_thinking(_s(b.get("data")) or "")
                elif b.get("signature"):
                    sink.signature(_s(b["signature"]))
        s = d.get("content")
        if s:
            sink.text(s if type(s) is str else _s(s))
        s = d.get("refusal")
        if s:
            sink.text(s if type(s) is str else _s(s))
        if tcs:
            for tc in tcs:
                self._tool(tc, sink)

    def _tool(self, tc: dict, sink) -> None:
        idx = tc.get("index")
        f = tc.get("function") or {}
        if idx in self._tools and type(idx) is int:   # a started call: only arguments follow
            self._last = idx
        else:
            tid = _s(tc.get("id"))
            if idx is None:
                if tid and tid not in self._ids:
                    idx = max(self._tools, default=-1) + 1
                else:
                    idx = self._ids.get(tid, self._last)
            elif type(idx) is not int:
                raise TypeError("tool call index")
            self._last = idx
            if idx not in self._tools:
                self._tools.add(idx)
                if not tid:
                    tid = f"call_{self._id}_{idx}"
                self._ids[tid] = idx
                sink.tool_start(idx, tid, _s(f.get("name")) or "", None)
        args = f.get("arguments")
        if args:
            if type(args) is not str:
                args = orjson.dumps(args).decode()
            sink.tool_args(idx, args)
