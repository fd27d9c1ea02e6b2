"""Gemini generateContent responses (from a Gemini provider) → IR (pure, sans-IO).

`parse_response(body)` reads a GenerateContentResponse; `StreamDecoder` reads the
`:streamGenerateContent?alt=sse` body (`data: {GenerateContentResponse}\\r\\n\\r\\n` per event)
and drives an ir.Sink. If the body's first non-blank byte is `[` (the JSON-array stream a
request without alt=sse gets) the same decoder splits the array's objects instead. SSE is
framed by plexus.sse.SSEDecoder (its CRLF mode is Gemini's framing), the array by
framing.ArraySplitter; each payload is parsed once with orjson.loads.

Mapping (candidates[0] only; Plexus never asks for more than one candidate):

- `thought: true` parts → thinking. A `thoughtSignature` on a thought part → sink.signature
  of that block, then block_end() (a signature seals its thinking run); non-stream: consecutive
  thought parts form one Thinking(source="gemini"), closed by the part that carries a signature.
- text parts → text. A `thoughtSignature` on a text part: non-stream → Text.signature; stream →
  a signature-only thinking block emitted where the signature arrived: thinking(""),
  signature(sig), block_end(), then the part's text (Gemini 3 often sends it on a final
  empty text part, after the text). The Gemini request builder puts such a signature back on
  the next text/functionCall part of the turn, or the previous one when none follows.
- Signatures go to the Sink raw (sink.signature, tool_start's `signature`), as Gemini sent
  them. The handler marks the stream with ctx.extra["upstream"] = "gemini", which tells the
  OpenAI/Anthropic encoders to tag thinking signatures with signatures.wrap_sig
  ("plexus-gemini:<sig>") so their request parsers can tell them from Anthropic ones.
- functionCall parts (always whole) → tool_start(index, id, name, signature) + tool_args(the
  whole args JSON) + block_end(); index = 0-based order of the calls in the response. id =
  functionCall.id when sent, else "call_" + blake2b(responseId, index) (24 hex): deterministic,
  the same in stream and non-stream for the same response.
- finishReason (common.STOPS["gemini"]): STOP → end_turn (tool_use when the response had a function call); MAX_TOKENS
  and CONTINUATION → max_tokens; SAFETY, RECITATION, BLOCKLIST, PROHIBITED_CONTENT, SPII,
  LANGUAGE, IMAGE_* safety reasons, MODEL_ARMOR, JAILBREAK → refusal; MALFORMED_FUNCTION_CALL,
  UNEXPECTED_TOOL_CALL, TOO_MANY_TOOL_CALLS, MALFORMED_RESPONSE, MISSING_THOUGHT_SIGNATURE,
  OTHER and unknown values → end_turn (the turn ended without usable output; clients see a
  normal stop, not a gateway error).
- usageMetadata → Usage: input = promptTokenCount − cachedContentTokenCount +
  toolUsePromptTokenCount; output = candidatesTokenCount + thoughtsTokenCount; reasoning =
  thoughtsTokenCount; cache_read = cachedContentTokenCount. Streams repeat usageMetadata in
  every chunk; usage() is called only when it changed.
- A prompt blocked by safety (`promptFeedback.blockReason`, no candidates) → the text
  "Prompt blocked by Gemini: <REASON>" and stop_reason "refusal".
- Parts without an IR equivalent (inlineData images from image models, executableCode,
  codeExecutionResult, fileData) are dropped.
- Stream end: Gemini has no terminal event; a chunk with a finishReason completes the stream
  and close() (also close(err), a read failure) then calls end(); a partial event cut off
  after it is dropped. close() without one → error 502 (cut stream; close(err): `err`), also
  when a JSON array closed without one. Parts arriving after the finishReason are ignored
  (the Sink allows only usage after finish).
  `{"error": {...}}` in the stream → sink.error(errors.from_upstream(code, ...)).
  Invalid JSON, a non-object event, values of the wrong type where the mapping needs them
  (candidates, parts) or a functionCall without a name → sink.error(502 bad_gateway); other
  fields of the wrong type are ignored.
"""

from __future__ import annotations

from hashlib import blake2b

import orjson

from ... import ir
from ...errors import STREAM_CUT, GatewayError, bad_gateway, from_upstream
from ...sse import MAX_EVENT_BYTES, SSEDecoder
from ..common import STOPS, args_text, str_or_empty
from .framing import ArraySplitter

_stop = STOPS["gemini"].to_ir     # (finishReason, saw a function call) -> IR stop reason


def call_id(seed: str, index: int) -> str:
    """A deterministic id for a functionCall Gemini sent without one."""
    return "call_" + blake2b(f"{seed}:{index}".encode(), digest_size=12).hexdigest()


def usage_of(um: dict) -> ir.Usage:
    # (called for every stream chunk whose usage changed: the int checks are inline)
    g = um.get
    prompt = g("promptTokenCount")
    if type(prompt) is not int:
        prompt = None
    cached = g("cachedContentTokenCount")
    if type(cached) is not int:
        cached = None
    tool = g("toolUsePromptTokenCount")
    if type(tool) is not int:
        tool = None
    cand = g("candidatesTokenCount")
    if type(cand) is not int:
        cand = None
    thoughts = g("thoughtsTokenCount")
    if type(thoughts) is not int:
        thoughts = None
    inp = None
    if prompt is not None or tool is not None:
        inp = (prompt or 0) - (cached or 0) + (tool or 0)
    out = None
    if cand is not None or thoughts is not None:
        out = (cand or 0) + (thoughts or 0)
    return ir.Usage(inp, out, cached, None, thoughts)


def _upstream_error(obj: dict, raw: bytes) -> GatewayError:
    e = obj.get("error")
    code = e.get("code") if isinstance(e, dict) else None
    if not isinstance(code, int) or not 400 <= code <= 599:
        code = 500
    return from_upstream(code, raw, provider="gemini")


def _blocked_text(reason: object) -> str:
    return f"Prompt blocked by Gemini: {reason}"


# ---------------------------------------------------------------- non-stream


def parse_response(body: bytes) -> ir.Response:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad_gateway("Gemini returned invalid JSON") from None
    if isinstance(obj, list) and len(obj) == 1:  # some proxies wrap it
        obj = obj[0]
    if not isinstance(obj, dict):
        raise bad_gateway("Gemini returned an unexpected response (not a JSON object)")
    if "error" in obj:
        raise _upstream_error(obj, body)
    rid = str_or_empty(obj.get("responseId")) or None
    model = str_or_empty(obj.get("modelVersion"))
    parts: list = []
    finish = None
    saw_tool = False
    cands = obj.get("candidates")
    if cands is not None and type(cands) is not list:
        raise bad_gateway("Gemini returned unexpected candidates")
    if cands:
        c = cands[0]
        if not isinstance(c, dict):
            raise bad_gateway("Gemini returned an unexpected candidate")
        finish = c.get("finishReason")
        content = c.get("content")
        gparts = content.get("parts") if isinstance(content, dict) else None
        if gparts is not None and not isinstance(gparts, list):
            raise bad_gateway("Gemini returned unexpected content parts")
        run = None  # the open Thinking run
        k = 0
        for p in gparts or ():
            if not isinstance(p, dict):
                raise bad_gateway("Gemini returned an unexpected part")
            sig = str_or_empty(p.get("thoughtSignature")) or None
            if p.get("thought"):
                t = str_or_empty(p.get("text"))
                if run is None:
                    run = ir.Thinking(t, source="gemini")
                    parts.append(run)
                else:
                    run.text += t
                if sig:
                    run.signature = sig
                    run = None
                continue
            run = None
            fc = p.get("functionCall")
            if fc is not None:
                if type(fc) is not dict or not fc.get("name") or type(fc["name"]) is not str:
                    raise bad_gateway("Gemini returned a functionCall without a name")
                parts.append(ir.ToolCall(str_or_empty(fc.get("id")) or call_id(rid or "", k), fc["name"],
                                         args_text(fc.get("args")), signature=sig))
                k += 1
                saw_tool = True
                continue
            t = str_or_empty(p.get("text"))
            if t or sig:
                parts.append(ir.Text(t, signature=sig))
    else:
        pf = obj.get("promptFeedback")
        if isinstance(pf, dict) and pf.get("blockReason"):
            parts.append(ir.Text(_blocked_text(pf["blockReason"])))
            finish = "SAFETY"
    um = obj.get("usageMetadata")
    usage = usage_of(um) if type(um) is dict else ir.Usage()
    return ir.Response(id=rid, model=model, parts=parts,
                       stop_reason=_stop(finish, saw_tool), usage=usage)


# ---------------------------------------------------------------- stream

class StreamDecoder:
    __slots__ = ("sink", "_sse", "_arr", "_mode", "_started", "_finished", "_done", "_ntool",
                 "_rid", "_open_thinking", "_last_um")

    def __init__(self, sink: ir.Sink) -> None:
        self.sink = sink
        self._sse = SSEDecoder(MAX_EVENT_BYTES)
        self._arr: ArraySplitter | None = None
        self._mode = 0            # 0 undecided, 1 SSE, 2 JSON array
        self._started = False
        self._finished = False
        self._done = False        # error() was called: nothing more goes to the sink
        self._ntool = 0
        self._rid = ""
        self._open_thinking = False
        self._last_um = None

    # -------------------------------------------------------- input

    def feed(self, chunk: bytes) -> None:
        if self._done or not chunk:
            return
        try:
            if self._mode == 1:
                for data in self._sse.feed_data(chunk):
                    self._payload(data)
                    if self._done:
                        return
                return
            if self._mode == 0:
                s = chunk.lstrip()
                if not s:
                    return
                if s[0] == 91:  # "["
                    self._mode = 2
                    self._arr = ArraySplitter(MAX_EVENT_BYTES)
                else:
                    self._mode = 1
                    self.feed(chunk)
                    return
            for obj in self._arr.feed(chunk):
                self._payload(obj)
                if self._done:
                    return
        except GatewayError as e:
            self._fail(e)

    def close(self, err: GatewayError | None = None) -> None:
        """The body ended (`err`: the read failed). Complete after a finishReason, else a cut."""
        if self._done:
            return
        if self._mode == 1:
            try:
                for data in self._sse.close_data():
                    self._payload(data)
                    if self._done:
                        return
            except GatewayError as e:
                if not self._finished:      # after the finish a broken last event is dropped
                    self._fail(err or e)
                    return
        if self._done:
            return
        if self._finished:
            self.sink.end()
            self._done = True
        else:
            self._fail(err or bad_gateway(STREAM_CUT))

    # -------------------------------------------------------- events

    def _fail(self, err: GatewayError) -> None:
        if self._done:
            return
        if not self._started:
            self._started = True
            self.sink.start(None, None, None)
        self._done = True
        self.sink.error(err)

    def _payload(self, data: bytes) -> None:
        if not data or data == b"[DONE]":
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise bad_gateway("Gemini stream sent invalid JSON") from None
        if not isinstance(obj, dict):
            raise bad_gateway("Gemini stream sent an unexpected event")
        if "error" in obj:
            self._fail(_upstream_error(obj, data))
            return
        sink = self.sink
        if not self._started:
            self._started = True
            self._rid = str_or_empty(obj.get("responseId"))
            sink.start(self._rid or None, str_or_empty(obj.get("modelVersion")) or None, None)
        cands = obj.get("candidates")
        if cands is not None and type(cands) is not list:
            raise bad_gateway("Gemini stream sent unexpected candidates")
        if cands and not self._finished:
            c = cands[0]
            if type(c) is not dict:
                raise bad_gateway("Gemini stream sent an unexpected candidate")
            content = c.get("content")
            if content:
                parts = content.get("parts") if type(content) is dict else None
                if parts:
                    if type(parts) is not list:
                        raise bad_gateway("Gemini stream sent unexpected content parts")
                    p = parts[0]
                    # the common chunk: one plain text part (what _parts would do, inline)
                    if len(parts) == 1 and type(p) is dict and len(p) == 1 and type(t := p.get("text")) is str:
                        if t:
                            sink.text(t)
                            self._open_thinking = False
                    else:
                        self._parts(parts)
            finish = c.get("finishReason")
            if finish:
                self._finished = True
                sink.finish(_stop(finish, self._ntool > 0))
        elif not cands and not self._finished:
            pf = obj.get("promptFeedback")
            if type(pf) is dict and pf.get("blockReason"):
                sink.text(_blocked_text(pf["blockReason"]))
                self._finished = True
                sink.finish("refusal")
        um = obj.get("usageMetadata")
        if um and type(um) is dict and um != self._last_um:
            self._last_um = um
            sink.usage(usage_of(um))

    def _parts(self, parts: list) -> None:
        sink = self.sink
        for p in parts:
            if type(p) is not dict:
                raise bad_gateway("Gemini stream sent an unexpected part")
            if len(p) == 1:  # the common case: a plain text part
                t = p.get("text")
                if type(t) is str:
                    if t:
                        sink.text(t)
                        self._open_thinking = False
                    continue
            sig = str_or_empty(p.get("thoughtSignature"))
            if p.get("thought"):
                t = str_or_empty(p.get("text"))
                if t:
                    sink.thinking(t)
                    self._open_thinking = True
                if sig:
                    if not self._open_thinking:
                        sink.thinking("")
                    sink.signature(sig)
                    sink.block_end()
                    self._open_thinking = False
                continue
            fc = p.get("functionCall")
            if fc is not None:
                if type(fc) is not dict or not fc.get("name") or type(fc["name"]) is not str:
                    raise bad_gateway("Gemini stream sent a functionCall without a name")
                k = self._ntool
                self._ntool = k + 1
                sink.tool_start(k, str_or_empty(fc.get("id")) or call_id(self._rid, k), fc["name"],
                                sig or None)
                sink.tool_args(k, args_text(fc.get("args")))
                sink.block_end()
                self._open_thinking = False
                continue
            t = str_or_empty(p.get("text"))
            if sig:  # a text part's signature: its own signature-only thinking block
                if self._open_thinking:
                    sink.block_end()
                sink.thinking("")
                sink.signature(sig)
                sink.block_end()
            if t:
                sink.text(t)
            self._open_thinking = False
