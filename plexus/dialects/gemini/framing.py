"""Byte framing of the Gemini JSON-array stream body (pure, sans-IO).

`ArraySplitter` takes the body a `:streamGenerateContent` request without `alt=sse` gets
(`[{...}\\n,\\r\\n{...}]`) exactly as it arrives and yields each top-level object's bytes,
independent of how the input is split; it bounds its buffer (GatewayError 502 past
`max_bytes`). The `alt=sse` body goes through the shared plexus.sse framer.
"""

from __future__ import annotations

import re

from ...errors import GatewayError


def _bad(msg: str) -> GatewayError:
    return GatewayError(502, msg, "bad_gateway")


# what may precede a JSON value in an array stream, and what may follow one
_ARRAY_SKIP = b" \t\r\n,[]"
_SCAN = re.compile(rb'[{}"\\]')


class ArraySplitter:
    """Incremental splitter of a JSON array of objects: feed(bytes) → complete object bytes.

    Partial input is kept in `_buf` with the scan state (`_pos`, `_depth`, `_in_str`,
    `_esc`), so no byte is scanned twice however the input is split.
    """

    __slots__ = ("_buf", "_pos", "_depth", "_in_str", "_esc", "_start", "max_bytes")

    def __init__(self, max_bytes: int) -> None:
        self._buf = b""
        self._pos = 0
        self._depth = 0
        self._in_str = False
        self._esc = False
        self._start = -1
        self.max_bytes = max_bytes

    def feed(self, chunk: bytes) -> list[bytes]:
        buf = self._buf + chunk if self._buf else chunk
        out = []
        i = self._pos
        n = len(buf)
        while i < n:
            if self._depth == 0:
                # between values: skip the array punctuation, find the next object
                while i < n and buf[i] in _ARRAY_SKIP:
                    i += 1
                if i >= n:
                    break
                if buf[i] != 123:  # "{"
                    raise _bad("Gemini stream: unexpected byte in the JSON array")
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
        if self._depth == 0 and not self._in_str:
            self._buf, self._pos = b"", 0
        else:
            keep = self._start
            self._buf = buf[keep:]
            self._pos = i - keep
            self._start = 0
            if len(self._buf) > self.max_bytes:
                raise _bad("upstream sent an oversized stream object")
        return out
