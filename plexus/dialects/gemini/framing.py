"""Byte framing of Gemini stream bodies (pure, sans-IO): feed(bytes) → complete payloads.

Two framers for decode.StreamDecoder, both independent of how the input is split:

- `CrlfFramer`: the `:streamGenerateContent?alt=sse` body. Gemini ends every line with CRLF
  and sends each event as one `data: ` line, so events are cut at "\\r\\n\\r\\n" with one split
  per chunk (about 3x cheaper than normalising every byte, which dominated the per-event cost);
  any other line ending hands the rest of the stream to plexus.sse.SSEDecoder (the general
  WHATWG framing), so the result is always that of a full SSE parser.
- `ArraySplitter`: the JSON-array body a request without alt=sse gets (`[{...}\\n,\\r\\n{...}]`):
  yields each top-level object's bytes.

Both bound their buffer (GatewayError 502 past `max_bytes`).
"""

from __future__ import annotations

import re

from ...errors import GatewayError
from ...sse import SSEDecoder


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


def _data_of(block: bytes) -> bytes | None:
    """The data of one CRLF-framed SSE event block (multi-line data joined with LF)."""
    data = None
    for line in block.split(b"\r\n"):
        if not line or line[0] == 58:  # ":" comment
            continue
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            data = value if data is None else data + b"\n" + value
    return data


def _regular(b: bytes) -> bool:
    """Every CR of `b` is followed by LF and every LF preceded by CR."""
    n = b.count(b"\r\n")
    return b.count(b"\r") == n and b.count(b"\n") == n


def _lone_break(tail: bytes) -> bool:
    """`tail` (bytes holding no CRLF CRLF) shows a blank line ended otherwise than by CRLF CRLF."""
    return b"\n\n" in tail or b"\r\r" in tail or b"\n\r\n" in tail


class CrlfFramer:
    """SSE framing for Gemini's streams, whose lines all end in CRLF; feed() → data payloads.

    A fast path for the common case (each event one `data: ` line): events are the blocks
    between "\r\n\r\n", split once per chunk instead of normalising every byte. At the first
    sign of other line endings (a block or the pending tail holding a lone CR or LF: LF-only or
    CR-only framing, a proxy re-framing), the bytes from that block on go to a fresh
    plexus.sse.SSEDecoder, which frames the rest of the stream; as they start at an event
    boundary, the result is the same as if it had framed the whole stream. Partial input is
    `_buf`: the bytes after the last complete event (a trailing CR waits there for its LF).
    """

    __slots__ = ("_buf", "_sse", "max_bytes")

    def __init__(self, max_bytes: int) -> None:
        self._buf = b""
        self._sse: SSEDecoder | None = None
        self.max_bytes = max_bytes

    def _fallback(self, rest: bytes) -> list[bytes]:
        self._sse = SSEDecoder(self.max_bytes)
        self._buf = b""
        return [d for _e, d in self._sse.feed(rest)]

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._sse is not None:
            return [d for _e, d in self._sse.feed(chunk)]
        buf = self._buf + chunk if self._buf else chunk
        if b"\r\n\r\n" not in buf:
            if (10 in buf or 13 in buf) and _lone_break(buf):
                return self._fallback(buf)
            if len(buf) > self.max_bytes:
                raise _bad("upstream sent an oversized SSE event")
            self._buf = buf
            return []
        blocks = buf.split(b"\r\n\r\n")
        tail = blocks.pop()
        out = []
        for i, b in enumerate(blocks):
            if b[:6] == b"data: " and 13 not in b and 10 not in b:
                out.append(b[6:])
            elif b:
                if not _regular(b):
                    out.extend(self._fallback(b"\r\n\r\n".join(blocks[i:]) + b"\r\n\r\n" + tail))
                    return out
                d = _data_of(b)
                if d is not None:
                    out.append(d)
        if (10 in tail or 13 in tail) and _lone_break(tail):
            out.extend(self._fallback(tail))
            return out
        self._buf = tail
        return out

    def close(self) -> list[bytes]:
        if self._sse is not None:
            return [d for _e, d in self._sse.close()]
        buf, self._buf = self._buf, b""
        if not buf.strip(b"\r\n"):
            return []
        if not _regular(buf.rstrip(b"\r")):
            self._sse = SSEDecoder(self.max_bytes)
            return [d for _e, d in self._sse.feed(buf)] + [d for _e, d in self._sse.close()]
        d = _data_of(buf.rstrip(b"\r"))
        return [] if d is None else [d]
