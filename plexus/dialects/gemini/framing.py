"""Byte framing of the Gemini JSON-array stream body (pure, sans-IO).

`ArraySplitter` takes the body a `:streamGenerateContent` request without `alt=sse` gets
(`[{...}\\n,\\r\\n{...}]`) exactly as it arrives and yields each top-level object's bytes,
independent of how the input is split; it bounds its buffer (GatewayError 502 past
`max_bytes`). It also counts the bytes fed (`total`), where the last complete object ended
(`end`, a stream offset) and whether the array's closing `]` was seen (`closed`; `end` is
then just past it, and any later input is ignored).
The `alt=sse` body goes through the shared plexus.sse framer.

`ArrayRelay` is the same-dialect relay of that body (stream.Passthrough's array mode). The
client must always be able to parse what it got as one JSON array, so the relay forwards the
upstream bytes exactly, but only up to the end of the last complete top-level object: a partial
object (and the separator before it) waits for its closing brace. Once the upstream's `]`
arrives everything up to it is forwarded (bytes after it, which would break the client's JSON,
are not). The stream is finished when an object carries `"finishReason"` (or is the upstream's
own `{"error": ...}` element); ending the body then (close()/fail()) adds only `\\n]`. A body
cut before that gets `,` + the Gemini error object + `]` (`[` + error + `]` when no object was
complete yet): concatenated, the client body always parses as an array.
"""

from __future__ import annotations

import re

import orjson

from ...errors import GatewayError, bad_gateway, stream_cut
from .encode import error_object


# what may precede a JSON value in an array stream, and what may follow one
_ARRAY_SKIP = b" \t\r\n,[]"
_SCAN = re.compile(rb'[{}"\\]')


class ArraySplitter:
    """Incremental splitter of a JSON array of objects: feed(bytes) → complete object bytes.

    Partial input is kept in `_buf` with the scan state (`_pos`, `_depth`, `_in_str`,
    `_esc`), so no byte is scanned twice however the input is split.
    """

    __slots__ = ("_buf", "_pos", "_depth", "_in_str", "_esc", "_start", "max_bytes",
                 "total", "end", "closed")

    def __init__(self, max_bytes: int) -> None:
        self._buf = b""
        self._pos = 0
        self._depth = 0
        self._in_str = False
        self._esc = False
        self._start = -1
        self.max_bytes = max_bytes
        self.total = 0           # bytes fed
        self.end = 0             # stream offset just past the last complete object
        self.closed = False      # a `]` was seen between values (the array's end)

    def feed(self, chunk: bytes) -> list[bytes]:
        if self.closed:
            return []
        buf = self._buf + chunk if self._buf else chunk
        base = self.total - len(self._buf)      # stream offset of buf[0]
        self.total += len(chunk)
        out = []
        i = self._pos
        n = len(buf)
        while i < n:
            if self._depth == 0:
                # between values: skip the array punctuation, find the next object
                while i < n:
                    c = buf[i]
                    if c not in _ARRAY_SKIP:
                        break
                    if c == 93:  # "]": the array's end
                        self.closed = True
                        self.end = base + i + 1
                        self._buf, self._pos = b"", 0
                        return out
                    i += 1
                if i >= n:
                    break
                if buf[i] != 123:  # "{"
                    raise bad_gateway("Gemini stream: unexpected byte in the JSON array")
                self._start = i
            if self._in_str:
                if self._esc:
                    self._esc = False
                    i += 1
                    continue
                j = buf.find(b'"', i)
                k = buf.find(b"\\", i)
                if k != -1 and (j == -1 or k < j):
                    if k + 1 < n:
                        i = k + 2
                    else:
                        self._esc = True
                        i = n
                    continue
                if j == -1:
                    i = n
                    break
                self._in_str = False
                i = j + 1
                continue
            m = _SCAN.search(buf, i)
            if m is None:
                i = n
                break
            c = buf[m.start()]
            i = m.end()
            if c == 34:  # '"'
                self._in_str = True
            elif c == 123:
                self._depth += 1
            elif c == 125:
                self._depth -= 1
                if self._depth == 0:
                    out.append(buf[self._start:i])
                    self._start = -1
                    self.end = base + i
        if self._depth == 0 and not self._in_str:
            self._buf, self._pos = b"", 0
        else:
            keep = self._start
            self._buf = buf[keep:]
            self._pos = i - keep
            self._start = 0
            if len(self._buf) > self.max_bytes:
                raise bad_gateway("upstream sent an oversized stream object")
        return out


def _ends_stream(obj: bytes) -> bool:
    """A complete array element that finishes the stream: a candidate's finishReason (the key
    cannot occur inside a JSON string, whose quotes are escaped) or the upstream's error."""
    return obj.find(b'"finishReason"') != -1 or obj[1:].lstrip().startswith(b'"error"')


class ArrayRelay:
    """Passthrough of the Gemini JSON-array stream body (see the module docstring):
    feed(chunk) -> bytes for the client now, close() / fail(err) -> the final bytes."""

    __slots__ = ("_split", "_held", "_sent", "finished", "done", "failure")

    def __init__(self, max_bytes: int) -> None:
        self._split = ArraySplitter(max_bytes)
        self._held = b""          # upstream bytes not forwarded yet (after the last object)
        self._sent = False        # an object was forwarded (the client has `[{...}`)
        self.finished = False     # an object with finishReason (or an error) was forwarded
        self.done = False
        self.failure = None       # the message of the error object appended, if any

    def feed(self, chunk: bytes) -> bytes:
        if self.done or not chunk:
            return b""
        held = self._held + chunk if self._held else chunk
        sp = self._split
        try:
            objs = sp.feed(chunk)
        except GatewayError as e:
            return self.fail(e)
        k = len(held) - (sp.total - sp.end)    # held[:k] ends with the last complete object
        if sp.closed:                          # (or with the upstream's `]`)
            self.done = True
            self._held = b""
            return held[:k]
        if len(held) - max(k, 0) > sp.max_bytes:
            return self.fail(bad_gateway("upstream sent an oversized stream object"))
        if not objs:
            self._held = held
            return b""
        for o in objs:
            if _ends_stream(o):
                self.finished = True
        self._held = held[k:]
        self._sent = True
        return held[:k]

    def close(self) -> bytes:
        return self.fail(stream_cut())

    def fail(self, err: GatewayError) -> bytes:
        if self.done:
            return b""
        self.done = True
        self._held = b""
        if self.finished:
            return b"\n]"
        self.failure = err.message
        body = orjson.dumps(error_object(err))
        return (b",\r\n" if self._sent else b"[") + body + b"]"
