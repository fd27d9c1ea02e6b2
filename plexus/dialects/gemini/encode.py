"""IR → a Gemini client's response bytes (pure, sans-IO).

`render_response` gives the non-stream GenerateContentResponse; `StreamEncoder` is an ir.Sink
writing `:streamGenerateContent` bytes: SSE (`data: {...}\\r\\n\\r\\n`, as the Gemini API frames
alt=sse) when ctx.gemini_sse, else the JSON-array stream (`[{...}` then `\\n,\\r\\n{...}` per
element and `\\n]` at the end, the Gemini API's framing without alt=sse).

Response shape: {"candidates":[{"content":{"parts":[...],"role":"model"},"finishReason",
"index":0}],"usageMetadata":{...},"modelVersion","responseId"}. modelVersion = the upstream's
model (start/Response.model) else ctx.model; responseId = the upstream id else ctx.id_seed.

Parts:
- text → {"text"}; Text.signature → its thoughtSignature.
- thinking → {"text", "thought": true}, relayed even when the client did not ask includeThoughts
  (the encoder cannot know; the SDK's `response.text` skips thought parts). A thinking block's
  signature is put on a thought part:
  non-stream on the Thinking's own part; stream as its own part {"text": "", "thought": true,
  "thoughtSignature"} when signature() arrives (the form Gemini itself streams). The request
  parser joins consecutive thought parts into one Thinking closed by the signed part, so
  Anthropic thinking (text + signature) survives a Gemini client's round trip.
- Whose signature: a Gemini one goes out raw: Thinking.source "gemini"; in a stream, any
  signature when ctx.extra["upstream"] == "gemini" (the handler's mark of a Gemini provider),
  else one tagged "plexus-gemini:" (signatures.wrap_sig). An Anthropic signature goes out as
  base64(b"plexus-anthropic::" + signature) and redacted_thinking data as
  base64(b"plexus-redacted:::" + data) on an empty thought part: the google-genai SDK keeps
  thoughtSignature as bytes (it must be valid base64, and the SDK sends it back re-encoded as
  URL-safe base64), so the value is wrapped whole and `read_sig` recovers it byte for byte.
- tool calls → {"functionCall": {"id", "name", "args"}} (+ thoughtSignature = ToolCall.signature).
  Arguments stream in fragments from OpenAI/Anthropic upstreams: each call is buffered and
  emitted whole, when its block ends (block_end right after it) or at finish/end; arguments
  that are not a JSON object become {} (Gemini needs an object).
- Stop reasons (common.STOPS["gemini"]): end_turn, stop_sequence, pause_turn, tool_use → STOP; max_tokens → MAX_TOKENS;
  refusal → SAFETY; error → OTHER.
- usageMetadata: promptTokenCount = input + cache read + cache creation; candidatesTokenCount =
  output − reasoning; thoughtsTokenCount = reasoning (when > 0); cachedContentTokenCount =
  cache read (when > 0); totalTokenCount = prompt + output. In a stream it is sent once, on
  the final chunk (with finishReason), which end() writes (usage may follow finish()).
- Intermediate chunks carry no usageMetadata (the Gemini API repeats it in every chunk; it is
  optional, and its figures are only final at the end).
- Every chunk has at least one part (the google-genai chat helper drops a streamed turn from
  its history if any chunk has none): the final chunk carries the buffered function calls or
  {"text": ""}. Empty text/thinking deltas produce nothing.
- error() → `data: {"error": {"code","message","status"}}\\r\\n\\r\\n` (array mode: the error
  object as the last element); close() without end() → that error with 502 (a cut stream never
  looks complete).
"""

from __future__ import annotations

import base64
import binascii

import orjson

from ... import ir
from ...errors import GatewayError
from ..common import STOPS, args_object
from ..signatures import unwrap_sig

STREAM_CONTENT_TYPE = b"text/event-stream"
ARRAY_CONTENT_TYPE = b"application/json"

_STOPS = STOPS["gemini"]

# kind -> google.rpc.Code name, as the Gemini API reports it
ERROR_STATUS = {
    "invalid_request": "INVALID_ARGUMENT",
    "authentication": "UNAUTHENTICATED",
    "billing": "FAILED_PRECONDITION",
    "permission": "PERMISSION_DENIED",
    "not_found": "NOT_FOUND",
    "request_too_large": "INVALID_ARGUMENT",
    "rate_limit": "RESOURCE_EXHAUSTED",
    "api_error": "INTERNAL",
    "bad_gateway": "UNAVAILABLE",
    "unavailable": "UNAVAILABLE",
    "timeout": "DEADLINE_EXCEEDED",
    "overloaded": "UNAVAILABLE",
}


def error_object(err: GatewayError) -> dict:
    return {"error": {"code": err.status, "message": err.message, "status": ERROR_STATUS[err.kind]}}


def error_event(err: GatewayError) -> bytes:
    """The SSE event (alt=sse) that ends a stream which already started."""
    return b"data: " + orjson.dumps(error_object(err)) + b"\r\n\r\n"

# 18-byte tags (a multiple of 3): their base64 is a fixed 24-character prefix
_TAG_SIG = b"plexus-anthropic::"
_TAG_RED = b"plexus-redacted:::"
_B64_SIG = base64.b64encode(_TAG_SIG).decode()
_B64_RED = base64.b64encode(_TAG_RED).decode()
_B64_SIG_URL = base64.urlsafe_b64encode(_TAG_SIG).decode()
_B64_RED_URL = base64.urlsafe_b64encode(_TAG_RED).decode()
# how a wrapped Claude signature starts in a Gemini client's history (gateway/attempt.py looks for
# these to never relay them to a Gemini provider byte for byte)
CLAUDE_SIGNATURE_PREFIXES = (_B64_SIG, _B64_RED, _B64_SIG_URL, _B64_RED_URL)


def tag_anthropic(sig: str, redacted: bool = False) -> str:
    return base64.b64encode((_TAG_RED if redacted else _TAG_SIG) + sig.encode()).decode()


def read_sig(value: str) -> tuple[str, str, bool]:
    """A thoughtSignature from a Gemini client → (source, signature, redacted)."""
    if value.startswith((_B64_SIG, _B64_RED, _B64_SIG_URL, _B64_RED_URL)):
        try:
            s = value.replace("-", "+").replace("_", "/")
            raw = base64.b64decode(s + "=" * (-len(s) % 4))
        except (binascii.Error, ValueError):
            return "gemini", value, False
        if raw.startswith(_TAG_SIG):
            return "anthropic", raw[len(_TAG_SIG):].decode("utf-8", "replace"), False
        if raw.startswith(_TAG_RED):
            return "anthropic", raw[len(_TAG_RED):].decode("utf-8", "replace"), True
    return "gemini", value, False


def client_sig(sig: str, source: str | None) -> str:
    """A signature as a Gemini client gets it in thoughtSignature."""
    if source == "gemini":
        return sig
    anth, gem = unwrap_sig(sig)
    if gem is not None:
        return gem
    return tag_anthropic(anth or "")


def usage_metadata(u: ir.Usage) -> dict:
    prompt = u.prompt_total
    out = u.output_tokens or 0
    reasoning = u.reasoning_tokens or 0
    d = {"promptTokenCount": prompt, "candidatesTokenCount": max(out - reasoning, 0),
         "totalTokenCount": prompt + out}
    if reasoning:
        d["thoughtsTokenCount"] = reasoning
    if u.cache_read_tokens:
        d["cachedContentTokenCount"] = u.cache_read_tokens
    return d


def _call_part(id: str, name: str, arguments: str, sig: str | None) -> dict:
    fc = {"id": id, "name": name, "args": args_object(arguments)}
    if id is None or id == "":
        del fc["id"]
    return {"functionCall": fc, "thoughtSignature": sig} if sig else {"functionCall": fc}


# ---------------------------------------------------------------- non-stream


def render_response(resp: ir.Response, ctx: ir.Context) -> bytes:
    parts: list = []
    for p in resp.parts:
        if isinstance(p, ir.Text):
            if p.text or p.signature:
                parts.append({"text": p.text, "thoughtSignature": p.signature} if p.signature
                             else {"text": p.text})
        elif isinstance(p, ir.Thinking):
            if p.redacted:
                parts.append({"text": "", "thought": True,
                              "thoughtSignature": tag_anthropic(p.text, redacted=True)})
            elif p.text or p.signature:
                d = {"text": p.text, "thought": True}
                if p.signature:
                    d["thoughtSignature"] = client_sig(p.signature, p.source)
                parts.append(d)
        elif isinstance(p, ir.ToolCall):
            parts.append(_call_part(p.id, p.name, p.arguments, p.signature))
    if not parts:
        parts.append({"text": ""})
    body = {
        "candidates": [{"content": {"parts": parts, "role": "model"},
                        "finishReason": _STOPS.from_ir(resp.stop_reason), "index": 0}],
        "usageMetadata": usage_metadata(resp.usage),
    }
    return orjson.dumps(body)[:-1] + _meta(resp.id, resp.model, ctx)


def _meta(id: object, model: object, ctx: ir.Context) -> bytes:
    """The response's closing fields (a source's non-string id or model is not trusted)."""
    return (b',"modelVersion":' + orjson.dumps(model if isinstance(model, str) and model else ctx.model)
            + b',"responseId":' + orjson.dumps(id if isinstance(id, str) and id else ctx.id_seed) + b"}")


# ---------------------------------------------------------------- stream

_dumps = orjson.dumps
_OPEN = b'{"candidates":[{"content":{"parts":['
_THOUGHT_SIG = b'{"text":"","thought":true,"thoughtSignature":'


class StreamEncoder(ir.EncoderOutput):
    __slots__ = ("ctx", "_sse", "_n", "_started", "_head", "_tail", "_meta",
                 "_usage", "_finish", "_tools", "_last_tool", "_sig_source", "_text_head", "_text_tail", "stop")

    def __init__(self, ctx: ir.Context) -> None:
        self.ctx = ctx
        self._out: list[bytes] = []
        self._sse = ctx.gemini_sse
        self._n = 0                 # chunks written (array mode: "[" before the first)
        self._started = False
        self._done = False          # end() or error() was called
        self.failure = None       # the message of the error event written, if any
        self._head = b""
        self._tail = b""
        self._text_head = b""       # SSE: head + '{"text":' (a text chunk is 3 parts: no concat)
        self._text_tail = b""       # SSE: '}' + tail
        self._meta = b""
        self._usage = ir.Usage()
        self._finish: str | None = None
        self.stop: str | None = None  # the IR stop reason given to finish() (for the usage record)
        self._tools: dict[int, list] = {}   # source index → [id, name, signature, [fragments]]
        self._last_tool: int | None = None
        self._sig_source = "gemini" if ctx.extra.get("upstream") == "gemini" else None

    # -------------------------------------------------------- output


    def _frame(self, obj_bytes: bytes) -> None:
        if self._sse:
            self._out.append(b"data: " + obj_bytes + b"\r\n\r\n")
        else:
            self._out.append((b"[" if self._n == 0 else b"\n,\r\n") + obj_bytes)
        self._n += 1

    def _chunk(self, part: bytes) -> None:
        if self._done:  # nothing follows end() or error()
            return
        if not self._started:
            self.start(None, None, None)
        if self._sse:  # the hot path: head and tail carry the SSE framing already
            self._out.append(self._head + part + self._tail)
            self._n += 1
        else:
            self._frame(self._head + part + self._tail)

    # -------------------------------------------------------- Sink

    def start(self, id: str | None, model: str | None, usage: ir.Usage | None) -> None:
        if self._started:
            return
        self._started = True
        self._meta = _meta(id, model, self.ctx)
        self._head = _OPEN
        self._tail = b'],"role":"model"},"index":0}]' + self._meta
        if self._sse:
            self._head = b"data: " + _OPEN
            self._tail += b"\r\n\r\n"
        self._text_head = self._head + b'{"text":'
        self._text_tail = b"}" + self._tail
        if usage is not None:
            self._usage.update(usage)

    def text(self, s: str) -> None:
        if s and not self._done:
            if not self._started:
                self.start(None, None, None)
            if self._sse:  # the hot path (what _chunk does, without building the part)
                self._out += (self._text_head, _dumps(s), self._text_tail)
                self._n += 1
            else:
                self._frame(self._text_head + _dumps(s) + self._text_tail)

    def thinking(self, s: str) -> None:
        if s:
            self._chunk(b'{"text":' + orjson.dumps(s) + b',"thought":true}')

    def signature(self, sig: str) -> None:
        if sig:
            self._chunk(_THOUGHT_SIG + orjson.dumps(client_sig(sig, self._sig_source)) + b"}")

    def redacted_thinking(self, data: str) -> None:
        self._chunk(_THOUGHT_SIG + orjson.dumps(tag_anthropic(data, redacted=True)) + b"}")

    def tool_start(self, index: int, id: str, name: str, signature: str | None = None) -> None:
        self._tools[index] = [id, name, signature, []]
        self._last_tool = index

    def tool_args(self, index: int, fragment: str) -> None:
        t = self._tools.get(index)
        if t is not None:
            t[3].append(fragment)

    def block_end(self) -> None:
        k = self._last_tool
        if k is not None:
            self._last_tool = None
            t = self._tools.pop(k, None)
            if t is not None:
                self._chunk(orjson.dumps(_call_part(t[0], t[1], "".join(t[3]), t[2])))

    def usage(self, u: ir.Usage) -> None:
        self._usage.update(u)

    def finish(self, stop_reason: str, stop_sequence: str | None = None) -> None:
        self._finish = _STOPS.from_ir(stop_reason)
        self.stop = stop_reason

    def end(self) -> None:
        if self._done:
            return
        if not self._started:
            self.start(None, None, None)
        self._done = True
        tools = self._tools
        if tools:
            parts = b",".join(orjson.dumps(_call_part(t[0], t[1], "".join(t[3]), t[2]))
                              for _k, t in sorted(tools.items()))
            tools.clear()
        else:
            parts = b'{"text":""}'
        self._frame(_OPEN + parts + b'],"role":"model"},"finishReason":"'
                    + (self._finish or "STOP").encode() + b'","index":0}],"usageMetadata":'
                    + orjson.dumps(usage_metadata(self._usage)) + self._meta)
        if not self._sse:
            self._out.append(b"\n]")

    def error(self, err: Exception) -> None:
        if self._done:
            return
        self._done = True
        if not isinstance(err, GatewayError):
            err = GatewayError(502, str(err) or "upstream error", "bad_gateway")
        self.failure = err.message
        if self._sse:
            self._out.append(error_event(err))
        else:
            body = orjson.dumps(error_object(err))
            self._out.append((b"[" if self._n == 0 else b"\n,\r\n") + body + b"\n]")
