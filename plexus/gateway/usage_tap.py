"""Token usage and finish reasons read from what the provider sent, for the usage record.

Theory
------
* A translated answer is decoded anyway: its usage is the IR's (`ir.Response.usage`, or the
  stream encoder's `_usage` and `stop`). Nothing here runs for it.
* A relayed answer is not parsed beyond what the relay needs. Non-stream: the body was parsed
  once to check it is JSON (`attempt.check_json`); the usage object is read from that tree.
  Stream: no event is parsed on the way. The relay keeps references to the first upstream
  chunk and the last two (no copy); at the end, `stream_usage` looks in them for the dialect's
  usage object (`"usage"`, Gemini `"usageMetadata"`), cuts out the JSON object that follows the
  key with a small brace matcher and parses only that. Anthropic reports input tokens in
  `message_start` (the first event) and output tokens in `message_delta` (one of the last), so
  the first occurrence and the last are merged; OpenAI's usage chunk and Gemini's last chunk
  are at the end. A usage event split over more than the last two reads is not found (the
  record then has no tokens); providers send an event per read.
* `UsageStrip`: a relayed OpenAI stream whose client did not ask for usage gets
  `stream_options.include_usage` added upstream (`with_stream_usage`), so the record has tokens;
  the client must not see the difference. The strip removes the usage chunk (`"choices":[]`)
  and the `"usage":null` member OpenAI then adds to every other chunk, working on whole events
  (an incomplete event is held until its end arrives), so its output does not depend on how
  the input was split. It keeps the usage chunk for the record.
* Tokens go into the record in its own semantics (control/usage.py): input counts cached and
  cache-write tokens, output counts reasoning.
"""

from __future__ import annotations

import orjson

from .. import ir
from ..dialects.anthropic.decode import _usage as _anthropic_usage
from ..dialects.common import STOPS
from ..dialects.gemini.decode import usage_of as _gemini_usage
from ..dialects.openai.decode import parse_usage as _openai_usage

_KEYS = {"openai": b'"usage"', "anthropic": b'"usage"', "gemini": b'"usageMetadata"', "responses": b'"usage"'}
# a Responses answer: `incomplete_details.reason` when it has one, else the response's `status`
_FINISH = {"openai": b'"finish_reason"', "anthropic": b'"stop_reason"', "gemini": b'"finishReason"',
           "responses": b'"reason"'}
_WS = b" \t\r\n"


def _int(d, k: str) -> int | None:
    v = d.get(k) if isinstance(d, dict) else None
    return v if type(v) is int else None


def _responses_usage(u: dict) -> ir.Usage:
    """A Responses API `usage` (input counts cached tokens, output counts reasoning) in the IR."""
    total_in = _int(u, "input_tokens")
    cached = _int(u.get("input_tokens_details"), "cached_tokens")
    return ir.Usage(input_tokens=None if total_in is None else max(0, total_in - (cached or 0)),
                    output_tokens=_int(u, "output_tokens"), cache_read_tokens=cached,
                    reasoning_tokens=_int(u.get("output_tokens_details"), "reasoning_tokens"))


def _to_ir(dialect: str, u: dict) -> ir.Usage:
    if dialect == "openai":
        return _openai_usage(u)
    if dialect == "anthropic":
        return _anthropic_usage(u)
    if dialect == "responses":
        return _responses_usage(u)
    return _gemini_usage(u)


def fill(rec, u: ir.Usage | None, stop: str | None = None, cost: float | None = None) -> None:
    """Copy IR usage (Anthropic sense: input without cache) into the record's fields."""
    if u is not None:
        if u.input_tokens is not None or u.cache_read_tokens is not None or u.cache_creation_tokens is not None:
            rec.input_tokens = u.prompt_total
        rec.output_tokens = u.output_tokens
        rec.cached_tokens = u.cache_read_tokens
        rec.cache_write_tokens = u.cache_creation_tokens
        rec.reasoning_tokens = u.reasoning_tokens
    if stop is not None:
        rec.finish_reason = stop
    if cost is not None:
        rec.cost = cost


def _reported_cost(u: dict) -> float | None:
    """The provider's own cost figure (OpenRouter's `usage.cost`), when it sends one."""
    c = u.get("cost")
    return float(c) if type(c) in (int, float) and c >= 0 else None


def body_usage(dialect: str, obj) -> tuple[ir.Usage | None, str | None, float | None]:
    """(usage, IR stop reason, reported cost) of a parsed non-stream answer."""
    if not isinstance(obj, dict):
        return None, None, None
    stops = STOPS[dialect]
    if dialect == "gemini":
        um = obj.get("usageMetadata")
        cands = obj.get("candidates")
        fr = cands[0].get("finishReason") if isinstance(cands, list) and cands and isinstance(cands[0], dict) else None
        return (_gemini_usage(um) if isinstance(um, dict) else None,
                stops.to_ir(fr) if isinstance(fr, str) else None, None)
    u = obj.get("usage")
    if dialect == "openai":
        ch = obj.get("choices")
        fr = ch[0].get("finish_reason") if isinstance(ch, list) and ch and isinstance(ch[0], dict) else None
    elif dialect == "responses":
        inc = obj.get("incomplete_details")
        fr = inc.get("reason") if isinstance(inc, dict) else obj.get("status")
    else:
        fr = obj.get("stop_reason")
    if not isinstance(u, dict):
        return None, stops.to_ir(fr) if isinstance(fr, str) else None, None
    return (_to_ir(dialect, u), stops.to_ir(fr) if isinstance(fr, str) else None,
            _reported_cost(u) if dialect == "openai" else None)


def _object_at(buf: bytes, i: int) -> dict | None:
    """The JSON object that starts at the first `{` at or after ``i`` (skipping `:` and blanks),
    or None (a null value, or the object is cut)."""
    n = len(buf)
    while i < n and buf[i] in b": \t\r\n":
        i += 1
    if i >= n or buf[i] != 123:  # "{"
        return None
    depth, j, in_str = 0, i, False
    while j < n:
        c = buf[j]
        if in_str:
            if c == 92:      # backslash: skip the escaped byte
                j += 1
            elif c == 34:
                in_str = False
        elif c == 34:
            in_str = True
        elif c == 123:
            depth += 1
        elif c == 125:
            depth -= 1
            if depth == 0:
                try:
                    v = orjson.loads(buf[i:j + 1])
                except orjson.JSONDecodeError:
                    return None
                return v if isinstance(v, dict) else None
        j += 1
    return None


def _objects(buf: bytes, key: bytes, last: bool) -> dict | None:
    """The object value of the last (or first) ``key`` occurrence in ``buf`` that has one."""
    k = len(key)
    if last:
        i = buf.rfind(key)
        while i != -1:
            v = _object_at(buf, i + k)
            if v is not None:
                return v
            i = buf.rfind(key, 0, i)
    else:
        i = buf.find(key)
        while i != -1:
            v = _object_at(buf, i + k)
            if v is not None:
                return v
            i = buf.find(key, i + k)
    return None


def _finish_value(buf: bytes, key: bytes) -> str | None:
    """The last non-null string value of ``key`` in ``buf``."""
    i = buf.rfind(key)
    k = len(key)
    while i != -1:
        j = i + k
        n = len(buf)
        while j < n and buf[j] in b": \t":
            j += 1
        if j < n and buf[j] == 34:
            e = buf.find(b'"', j + 1)
            if e != -1:
                return buf[j + 1:e].decode("utf-8", "replace")
        i = buf.rfind(key, 0, i)
    return None


def stream_usage(dialect: str, first: bytes, tail: bytes,
                 stripped: bytes | None = None) -> tuple[ir.Usage | None, str | None, float | None]:
    """(usage, IR stop reason, reported cost) of a relayed stream from its first upstream bytes
    and its last two reads joined (``tail``); ``stripped``: the usage chunk a UsageStrip took out."""
    key = _KEYS[dialect]
    u = None
    cost = None
    obj = _objects(stripped or tail, key, last=True)
    if dialect == "anthropic":
        start = _objects(first, key, last=False)
        if start is not None:
            u = _anthropic_usage(start)
            if obj is not None and obj is not start:
                u.update(_anthropic_usage(obj))
        elif obj is not None:
            u = _anthropic_usage(obj)
    elif obj is not None:
        u = _to_ir(dialect, obj)
        if dialect == "openai":
            cost = _reported_cost(obj)
    fr = _finish_value(tail, _FINISH[dialect])
    if fr is None and dialect == "responses":
        # the usage comes with response.completed (incomplete ones name a reason), none with a failure
        fr = "failed" if tail.find(b"response.failed") != -1 else "completed" if obj is not None else None
    return u, STOPS[dialect].to_ir(fr) if fr is not None else None, cost


# ---------------------------------------------------------------- OpenAI: usage asked by us

def wants_stream_usage(body: dict) -> bool:
    """True when an OpenAI streaming request does not ask for usage itself."""
    so = body.get("stream_options")
    return not (isinstance(so, dict) and so.get("include_usage") is True)


def with_stream_usage(raw: bytes, body: dict) -> bytes:
    """The request bytes with `stream_options.include_usage: true` (an OpenAI stream request
    whose client did not ask for usage). A body without `stream_options` gets the member
    inserted after its opening brace (nothing else changes); one with `stream_options` is
    re-serialized with the flag set (rare: clients that set other stream options)."""
    if "stream_options" not in body:
        i = raw.find(b"{")
        return raw[:i + 1] + b'"stream_options":{"include_usage":true},' + raw[i + 1:]
    so = body.get("stream_options")
    out = dict(body)
    out["stream_options"] = {**so, "include_usage": True} if isinstance(so, dict) else {"include_usage": True}
    return orjson.dumps(out)


_SEPS = (b"\n\n", b"\r\n\r\n", b"\r\r")


def _event_end(buf: bytes, start: int = 0) -> int:
    """Index just past the last complete SSE event in ``buf`` (0 if none)."""
    a = buf.rfind(b"\n\n", start)
    b = buf.rfind(b"\r\n\r\n", start)
    c = buf.rfind(b"\r\r", start)
    return max(a + 2 if a != -1 else 0, b + 4 if b != -1 else 0, c + 2 if c != -1 else 0)


class UsageStrip:
    """Removes what `include_usage` added to a relayed OpenAI stream (see the module doc);
    `usage_event` keeps the removed usage chunk's bytes. A one-event read costs one search for
    the null member and a short one after it; the member's form (`,"usage":null` in OpenAI's
    compact JSON, or a spaced variant) is read from the first one seen and then fixed, so every
    read is searched for one form only."""

    __slots__ = ("_held", "usage_event", "_null", "_marker", "_known", "_seps")

    def __init__(self) -> None:
        self._held = b""
        self.usage_event = b""
        self._null = b',"usage":null'      # until the stream shows its own form
        self._marker = b'"choices":[]'
        self._known = False
        self._seps = _SEPS

    def feed(self, chunk: bytes) -> bytes:
        null = self._null
        i = chunk.find(null)
        if i != -1 and not self._held and chunk.find(b"\n\n", i) == len(chunk) - 2:
            # the usual read: whole events, the member in the last one (the events before it,
            # if any, are comments: a second data event would have its own member)
            return chunk[:i] + chunk[i + len(null):]
        if self._held:
            chunk = self._held + chunk
            self._held = b""
        end = len(chunk) if chunk.endswith(b"\n\n") else _event_end(chunk)
        if end != len(chunk):
            self._held = chunk[end:]
            chunk = chunk[:end]
            if not chunk:
                return b""
        return self._strip(chunk)

    def close(self) -> bytes:
        held, self._held = self._held, b""
        return self._strip(held) if held else b""

    def _learn(self, buf: bytes) -> None:
        """Take the member's form from the first `"usage":` in the stream."""
        i = buf.find(b'"usage":')
        if i == -1:
            return
        self._known = True
        j = i + 8
        spaced = buf[j:j + 1] == b" "
        value = b' null' if spaced else b'null'
        after = buf[j + len(value):j + len(value) + 1]
        before = buf[i - 2:i] if buf[i - 2:i] == b", " else buf[i - 1:i]
        key = b'"usage": null' if spaced else b'"usage":null'
        if before in (b",", b", "):
            self._null = before + key
        elif after == b",":
            self._null = key + (b", " if buf[j + len(value) + 1:j + len(value) + 2] == b" " else b",")
        else:
            self._null = key
        self._marker = b'"choices": []' if spaced else b'"choices":[]'
        k = buf.find(b"\n", j)  # the end of the line holding it: LF (OpenAI's), CRLF or CR?
        if k != -1 and buf[k - 1] != 13 and buf.find(b"\r", j, k) == -1:
            self._seps = (b"\n\n",)   # LF line ends: no CR separators to look for

    def _strip(self, buf: bytes) -> bytes:
        """Whole events in, the same without the usage chunk and the null members."""
        if not self._known:
            self._learn(buf)
        i = buf.rfind(self._marker)  # the usage chunk: one per stream, last (before [DONE])
        if i != -1:
            s, e = _event_bounds(buf, i, self._seps)
            self.usage_event += buf[s:e]
            buf = buf[:s] + buf[e:]
        return buf.replace(self._null, b"")




def _event_bounds(buf: bytes, i: int, seps=_SEPS) -> tuple[int, int]:
    """(start, end) of the SSE event holding position ``i``, its blank line included."""
    s = 0
    for sep in seps:
        j = buf.rfind(sep, 0, i)
        if j != -1 and j + len(sep) > s:
            s = j + len(sep)
    e = len(buf)
    for sep in seps:
        j = buf.find(sep, i)
        if j != -1 and j + len(sep) < e:
            e = j + len(sep)
    return s, e
