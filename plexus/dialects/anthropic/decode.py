"""Anthropic JSON -> IR: content blocks, a provider's message (`parse_response`), its stream.

Theory: everything that reads Anthropic-shaped JSON lives here.  `parse_blocks` turns content
blocks into IR parts; request.parse_request uses it for client messages and `parse_response` for
a provider's answer.  `StreamDecoder` is sans-IO: upstream bytes in (any split), ir.Sink calls
out, in the order ir.py prescribes.  Each SSE data payload is parsed once (orjson) and dispatched
on its `type` (the `event:` line is redundant in Anthropic streams and absent in some
Anthropic-compatible ones).

Mappings (provider -> IR), in addition to the block rules in request.py's docstring:
- message_start -> start(id, model, usage); ping -> nothing; content_block_start text / thinking
  / redacted_thinking / tool_use -> (text(initial) | nothing | redacted_thinking(data) |
  tool_start(block index, id, name) [+ tool_args(input JSON) if the start carries a non-empty
  input]); text_delta -> text; thinking_delta -> thinking; signature_delta -> signature (preceded
  by thinking("") when the block had no thinking text, so a thinking block is open);
  input_json_delta -> tool_args(block index, partial_json) (empty fragments skipped);
  citations_delta -> dropped; content_block_stop -> block_end; message_delta -> usage(...) then
  finish(stop_reason, stop_sequence); message_stop -> end; `error` event -> error(GatewayError)
  with the Anthropic error type mapped to a kind and its status (errors.ERROR_TYPE_KIND:
  overloaded_error 529, rate_limit_error 429, api_error 500, invalid_request_error 400,
  authentication_error 401, permission_error 403, not_found_error 404, request_too_large 413,
  billing_error 402, timeout_error 504; other 500).
- Server-tool blocks (server_tool_use, web_search_tool_result, ...) and unknown block types have
  no IR form: all their events are dropped (a client of another dialect cannot run them).  In a
  non-stream message they are dropped as well.
- Stop reasons (common.STOPS["anthropic"]) pass through; model_context_window_exceeded ->
  max_tokens; unknown -> end_turn.
- Usage: input_tokens, output_tokens, cache_read_input_tokens, cache_creation_input_tokens,
  output_tokens_details.thinking_tokens -> reasoning_tokens.
- tool_use fields beyond id/name/input (e.g. caller) -> ToolCall.extra (non-stream).
- Stream end: message_stop (whatever its `event:` line looks like: the data's type decides)
  -> end.  A body that ends (close(), or close(err) for a read failure)
  after a message_delta with a non-null stop_reason but before message_stop -> end as well
  (the answer is complete; a partial event after it is dropped).  A body that ends before
  that -> 502 "upstream stream ended early" (close(err): `err`).
- Bad JSON, an unexpected shape, or a value of the wrong type (the sink only ever gets str text,
  int indexes, int-or-None usage) -> 502 bad_gateway (`sink.error`, never an exception); after
  end() or error() further input is ignored.
- An `event:` line is not needed (some Anthropic-compatible servers send bare `data:` lines);
  events before message_start get an implicit start(None, None, None).
"""

from __future__ import annotations

import re

import orjson

from ... import ir
from ...errors import ERROR_TYPE_KIND, KIND_STATUS, GatewayError, bad_gateway, invalid, stream_cut
from ...sse import MAX_EVENT_BYTES, SSEDecoder
from ..common import STOPS, need_str, opt_int, opt_str
from ..signatures import unwrap_sig

__all__ = ["parse_blocks", "cache_control", "parse_response", "StreamDecoder"]

_STOPS = STOPS["anthropic"]

# per block type: the keys the IR carries exactly (a block with other keys is kept raw too)
_EXACT_KEYS = {
    "text": frozenset({"type", "text", "cache_control", "citations"}),
    "image": frozenset({"type", "source", "cache_control"}),
    "thinking": frozenset({"type", "thinking", "signature"}),
    "redacted_thinking": frozenset({"type", "data"}),
    "tool_result": frozenset({"type", "tool_use_id", "content", "is_error", "cache_control"}),
}
_TOOL_KEYS = ("type", "id", "name", "input")


# ============================================================== content blocks -> IR parts

def cache_control(block: dict) -> dict | None:
    cc = block.get("cache_control")
    return cc if isinstance(cc, dict) else None


def _texts_of(blocks) -> list[ir.Text]:
    if not isinstance(blocks, list):
        return []
    return [ir.Text(x["text"]) for x in blocks if isinstance(x, dict) and isinstance(x.get("text"), str)]


def _image(source, param: str, cc=None) -> ir.Image | None:
    if not isinstance(source, dict):
        raise invalid(f"{param}.source: expected an object", param=f"{param}.source")
    st = source.get("type")
    if st == "base64":
        data, mt = source.get("data"), source.get("media_type")
        if not isinstance(data, str):
            raise invalid(f"{param}.source.data: expected a base64 string", param=f"{param}.source.data")
        return ir.Image(media_type=mt if isinstance(mt, str) else None, data=data, cache_control=cc)
    if st == "url":
        url = source.get("url")
        if not isinstance(url, str):
            raise invalid(f"{param}.source.url: expected a string", param=f"{param}.source.url")
        return ir.Image(url=url, cache_control=cc)
    return None  # file sources (Files API) have no IR form


def _document(b: dict, param: str) -> list[ir.Part]:
    source = b.get("source")
    if not isinstance(source, dict):
        raise invalid(f"{param}.source: expected an object", param=f"{param}.source")
    st, cc = source.get("type"), cache_control(b)
    title = b.get("title")
    head = f"{title}\n" if isinstance(title, str) and title else ""
    if st == "text":
        data = source.get("data")
        return [ir.Text(head + data, cc)] if isinstance(data, str) else []
    if st == "content":
        c = source.get("content")
        texts = [c] if isinstance(c, str) else [t.text for t in _texts_of(c)]
        return [ir.Text(head + "\n".join(texts), cc)] if texts else []
    if st == "base64" and isinstance(source.get("data"), str):
        return [ir.Image(media_type=source.get("media_type") or "application/pdf", data=source["data"],
                         cache_control=cc)]
    if st == "url" and isinstance(source.get("url"), str):
        return [ir.Image(media_type="application/pdf", url=source["url"], cache_control=cc)]
    return []


def _result_content(c, param: str):
    """tool_result content -> (str | [Text|Image], exact?)."""
    if c is None:
        return "", True
    if isinstance(c, str):
        return c, True
    if not isinstance(c, list):
        raise invalid(f"{param}: expected a string or a list of blocks", param=param)
    out: list = []
    exact = True
    for j, b in enumerate(c):
        if not isinstance(b, dict):
            raise invalid(f"{param}[{j}]: expected an object", param=f"{param}[{j}]")
        t = b.get("type")
        if t == "text" and isinstance(b.get("text"), str):
            out.append(ir.Text(b["text"], cache_control(b)))
            exact = exact and b.keys() <= _EXACT_KEYS["text"] and not b.get("citations")
        elif t == "image":
            img = _image(b.get("source"), f"{param}[{j}]", cache_control(b))
            if img is not None:
                out.append(img)
            exact = exact and img is not None and b.keys() <= _EXACT_KEYS["image"]
        else:  # document, search_result, tool_reference ...
            exact = False
            if t == "document":
                out.extend(p for p in _document(b, f"{param}[{j}]") if isinstance(p, ir.Text))
            elif t == "search_result":
                out.extend(_texts_of(b.get("content")))
    return out, exact


def parse_blocks(content: list, param: str) -> tuple[list[ir.Part], bool]:
    """Content blocks -> (IR parts, exact: every block has an exact IR form).

    Raises errors.invalid() naming `param[j]` for a malformed block.
    """
    parts: list[ir.Part] = []
    exact = True
    gsig: ir.Thinking | None = None     # held signature-only Gemini thinking block
    for j, b in enumerate(content):
        p = f"{param}[{j}]"
        if not isinstance(b, dict):
            raise invalid(f"{p}: expected a content block object", param=p)
        t = b.get("type")
        if not isinstance(t, str):
            raise invalid(f"{p}.type: expected a string", param=f"{p}.type")
        keys = _EXACT_KEYS.get(t)
        if keys is not None and not b.keys() <= keys:
            exact = False
        part: ir.Part | None = None
        if t == "text":
            s = b.get("text")
            if not isinstance(s, str):
                raise invalid(f"{p}.text: expected a string", param=f"{p}.text")
            if b.get("citations"):
                exact = False
            part = ir.Text(s, cache_control(b))
            if gsig is not None:
                part.signature, gsig = gsig.signature, None
        elif t == "tool_use":
            cid, name, args = b.get("id"), b.get("name"), b.get("input")
            if not isinstance(cid, str) or not isinstance(name, str):
                raise invalid(f"{p}: tool_use needs string `id` and `name`", param=p)
            if args is None:
                args = {}
            elif not isinstance(args, dict):
                raise invalid(f"{p}.input: expected an object", param=f"{p}.input")
            extra = {k: v for k, v in b.items() if k not in _TOOL_KEYS} or None
            part = ir.ToolCall(cid, name, orjson.dumps(args).decode(), extra=extra)
            if gsig is not None:
                part.signature, gsig = gsig.signature, None
        elif t == "tool_result":
            tid = b.get("tool_use_id")
            if not isinstance(tid, str):
                raise invalid(f"{p}.tool_use_id: expected a string", param=f"{p}.tool_use_id")
            rc, rexact = _result_content(b.get("content"), f"{p}.content")
            exact = exact and rexact
            part = ir.ToolResult(tid, rc, b.get("is_error") is True, cache_control=cache_control(b))
        elif t == "thinking":
            s, sig = b.get("thinking"), b.get("signature")
            if not isinstance(s, str):
                raise invalid(f"{p}.thinking: expected a string", param=f"{p}.thinking")
            asig, gs = unwrap_sig(sig if isinstance(sig, str) else None)
            if gs is not None:
                if gsig is not None:
                    parts.append(gsig)
                    gsig = None
                if not s:
                    gsig = ir.Thinking("", gs, source="gemini")   # folded onto the next tool_use/text
                    continue
                part = ir.Thinking(s, gs, source="gemini")
            else:
                part = ir.Thinking(s, asig, source="anthropic" if asig else None)
        elif t == "redacted_thinking":
            data = b.get("data")
            if not isinstance(data, str):
                raise invalid(f"{p}.data: expected a string", param=f"{p}.data")
            part = ir.Thinking(data, redacted=True, source="anthropic")
        elif t == "image":
            part = _image(b.get("source"), p, cache_control(b))
            if part is None:
                exact = False
                continue
        else:
            exact = False
            if t == "document":
                got = _document(b, p)
            elif t == "search_result":
                got = _texts_of(b.get("content"))
            elif t == "compaction" and isinstance(b.get("content"), str):
                got = [ir.Text(b["content"])]
            else:
                continue     # server tool blocks and unknown types
            if got and gsig is not None:
                parts.append(gsig)
                gsig = None
            parts.extend(got)
            continue
        if gsig is not None:
            parts.append(gsig)
            gsig = None
        parts.append(part)
    if gsig is not None:
        parts.append(gsig)
    return parts, exact


# ============================================================== non-stream response

def _usage(u) -> ir.Usage:
    if not isinstance(u, dict):
        return ir.Usage()
    d = u.get("output_tokens_details")
    return ir.Usage(opt_int(u.get("input_tokens")), opt_int(u.get("output_tokens")),
                    opt_int(u.get("cache_read_input_tokens")), opt_int(u.get("cache_creation_input_tokens")),
                    opt_int(d.get("thinking_tokens")) if isinstance(d, dict) else None)


def _sent(what: str) -> GatewayError:
    return bad_gateway(f"upstream (anthropic) sent {what}")


def _upstream_error(e: object, default: str) -> GatewayError:
    """The `error` object of an Anthropic error body or event -> GatewayError."""
    e = e if isinstance(e, dict) else {}
    kind = ERROR_TYPE_KIND.get(opt_str(e.get("type")), "api_error")
    return GatewayError(KIND_STATUS[kind], opt_str(e.get("message")) or default, kind)


def parse_response(body: bytes) -> ir.Response:
    try:
        msg = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _sent("a body that is not JSON") from None
    if not isinstance(msg, dict):
        raise _sent("a body that is not a JSON object")
    if msg.get("type") == "error":
        raise _upstream_error(msg.get("error"), "upstream error")
    content = msg.get("content")
    if not isinstance(content, list):
        raise _sent("a message without a content list")
    try:
        parts, _ = parse_blocks(content, "content")
    except GatewayError as e:
        raise _sent(f"a malformed message: {e.message}") from None
    except (TypeError, AttributeError, KeyError, ValueError):
        raise _sent("a malformed message") from None
    return ir.Response(opt_str(msg.get("id")), opt_str(msg.get("model")) or "", parts,
                       _STOPS.to_ir(msg.get("stop_reason")), opt_str(msg.get("stop_sequence")),
                       _usage(msg.get("usage")))


# ============================================================== stream

_TEXT, _THINK, _TOOL, _SKIP = 1, 2, 3, 4

# The usual event of a streamed answer, whole in one chunk: a text delta, exactly as Anthropic
# writes it. A chunk this matches is one valid event (the text a JSON string literal, its escapes
# and UTF-8 checked by orjson) that the general path would turn into exactly one `sink.text`.
_TEXT_EVENT = re.compile(
    rb'event: content_block_delta\ndata: \{"type":"content_block_delta","index":(?:0|[1-9][0-9]{0,17}),'
    rb'"delta":\{"type":"text_delta","text":("(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*")\}\}\n\n'
).fullmatch


class StreamDecoder:
    """Anthropic SSE bytes -> ir.Sink calls (see the module docstring for the mapping).

    Framing is sse.SSEDecoder's (its LF mode slices `event: X\ndata: {...}` and bare `data:`
    events without normalising bytes; any other SSE shape or line ending is framed exactly).
    """

    __slots__ = ("_sink", "_sse", "_started", "_done", "_kinds", "_thought", "_finished")

    def __init__(self, sink: ir.Sink) -> None:
        self._sink = sink
        self._sse = SSEDecoder(MAX_EVENT_BYTES)
        self._started = False
        self._done = False
        self._finished = False               # a message_delta carried the stop_reason
        self._kinds: dict[int, int] = {}     # block index -> kind (only non-text blocks)
        self._thought = False                # the open thinking block has had thinking text

    def feed(self, chunk: bytes) -> None:
        if self._done:
            return
        if self._started and self._sse.lf_idle():  # one text delta per chunk: no framing, no dict
            m = _TEXT_EVENT(chunk)
            if m is not None:
                try:
                    text = orjson.loads(m[1])
                except orjson.JSONDecodeError:  # (bad UTF-8, a lone surrogate: the general path says so)
                    pass
                else:
                    self._sink.text(text)
                    return
        try:
            events = self._sse.feed_data(chunk)
        except GatewayError as e:
            return self._fail(e)
        for data in events:
            self._event(data)
            if self._done:
                return

    def close(self, err: GatewayError | None = None) -> None:
        """The body ended (`err`: the read failed). Complete after the stop_reason, else a cut."""
        if self._done:
            return
        for data in self._sse.close_data():      # a last event without its blank line
            try:
                orjson.loads(data)
            except orjson.JSONDecodeError:
                break                            # cut inside the event: report the cut
            self._event(data)
            if self._done:
                return
        if self._finished:
            self._done = True
            self._sink.end()
        else:
            self._fail(err or stream_cut())

    def _fail(self, err: GatewayError) -> None:
        self._done = True
        self._sink.error(err)

    def _event(self, data: bytes) -> None:
        """One event's data."""
        if not data:
            return
        try:
            d = orjson.loads(data)
            t = d["type"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return self._fail(_sent(f"an unreadable stream event: {data[:200]!r}"))
        sink = self._sink
        try:
            if not self._started and t != "error":
                self._started = True
                if t == "message_start":
                    m = d["message"]
                    sink.start(opt_str(m.get("id")), opt_str(m.get("model")), _usage(m.get("usage")))
                    return
                sink.start(None, None, None)
            if t == "content_block_delta":
                delta = d["delta"]
                dt = delta["type"]
                if dt == "text_delta":
                    sink.text(need_str(delta["text"]))
                elif dt == "input_json_delta":
                    frag = need_str(delta["partial_json"])
                    i = d["index"]
                    if type(i) is not int:
                        raise TypeError("block index")
                    if frag and self._kinds.get(i) == _TOOL:
                        sink.tool_args(i, frag)
                elif dt == "thinking_delta":
                    s = need_str(delta["thinking"])
                    if s:
                        self._thought = True
                        sink.thinking(s)
                elif dt == "signature_delta":
                    sig = need_str(delta["signature"])
                    if not self._thought:
                        self._thought = True
                        sink.thinking("")
                    sink.signature(sig)
                return
            if t == "content_block_start":
                self._block_start(d["index"], d["content_block"])
            elif t == "content_block_stop":
                i = d["index"]
                if type(i) is not int:
                    raise TypeError("block index")
                if self._kinds.pop(i, None) != _SKIP:
                    sink.block_end()
            elif t == "message_delta":
                u = d.get("usage")
                if u:
                    sink.usage(_usage(u))
                delta = d["delta"]
                sr = delta.get("stop_reason")
                if sr is not None and not self._finished:
                    self._finished = True
                    sink.finish(_STOPS.to_ir(need_str(sr)), opt_str(delta.get("stop_sequence")))
            elif t == "message_stop":
                self._done = True
                sink.end()
            elif t == "error":
                self._fail(_upstream_error(d.get("error"), "upstream stream error"))
            # ping, message_start repeated, unknown event types: nothing
        except (KeyError, TypeError, AttributeError):
            self._fail(_sent(f"a malformed {t} event"))

    def _block_start(self, i, cb: dict) -> None:
        if type(i) is not int:
            raise TypeError("block index")
        bt = cb["type"]
        sink = self._sink
        if bt == "text":
            s = need_str(cb.get("text", ""))
            if s:
                sink.text(s)
        elif bt == "thinking":
            self._kinds[i] = _THINK
            s = need_str(cb.get("thinking", ""))
            self._thought = bool(s)
            if s:
                sink.thinking(s)
        elif bt == "tool_use":
            self._kinds[i] = _TOOL
            sink.tool_start(i, need_str(cb["id"]), need_str(cb["name"]))
            args = cb.get("input")
            if args:
                if not isinstance(args, dict):
                    raise TypeError("tool input")
                sink.tool_args(i, orjson.dumps(args).decode())
        elif bt == "redacted_thinking":
            self._kinds[i] = _THINK
            sink.redacted_thinking(need_str(cb["data"]))
        else:
            self._kinds[i] = _SKIP
