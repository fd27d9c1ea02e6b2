"""Byte-level Server-Sent Events framer (sans-IO).

`SSEDecoder.feed(chunk)` takes bytes exactly as they arrive and returns the complete events
they finish, as `(event, data)` pairs of bytes (`event` is b"" when the block has no `event:`
field; multi-line `data:` fields are joined with b"\n", per the WHATWG SSE spec). Partial input
is carried in two named fields: `_buf` (bytes after the last complete event) and `_cr` (a
trailing b"\r" that may be the first half of a CRLF split across chunks). `close()` flushes a
final event that lacks its blank line. The output is the same however the input is split.

Lines end in LF, CRLF or CR (Gemini sends CRLF). `id:` and `retry:` fields and `:` comments are
ignored: none of the three dialects uses them.

`encode(event, data)` is the inverse for LF-terminated output.

Bound: an event larger than `max_event_bytes` raises GatewayError 502 (a runaway upstream must
not make the gateway buffer without limit).
"""

from __future__ import annotations

from .errors import GatewayError

MAX_EVENT_BYTES = 16 * 1024 * 1024


class SSEDecoder:
    __slots__ = ("_buf", "_cr", "max_event_bytes")

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buf = b""
        self._cr = False
        self.max_event_bytes = max_event_bytes

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        if self._cr:
            chunk = b"\r" + chunk
            self._cr = False
        if b"\r" in chunk:
            if chunk.endswith(b"\r"):
                chunk = chunk[:-1]
                self._cr = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf = self._buf + chunk if self._buf else chunk
        if b"\n\n" not in buf:
            # (a pending CR after "...\n" may complete the event; it is resolved by the next
            # feed or by close(), so the result does not depend on where the input was split)
            if len(buf) > self.max_event_bytes:
                raise GatewayError(502, "upstream sent an oversized SSE event", "bad_gateway")
            self._buf = buf
            return []
        blocks = buf.split(b"\n\n")
        self._buf = blocks.pop()
        out = []
        for block in blocks:
            ev = _parse_block(block)
            if ev is not None:
                out.append(ev)
        return out

    def close(self) -> list[tuple[bytes, bytes]]:
        """Flush: a final event whose blank line never came is still delivered."""
        buf, self._buf, self._cr = self._buf, b"", False
        ev = _parse_block(buf) if buf.strip(b"\n") else None
        return [ev] if ev is not None else []

    @property
    def pending(self) -> bytes:
        return self._buf


def _parse_block(block: bytes) -> tuple[bytes, bytes] | None:
    event = b""
    data = None
    for line in block.split(b"\n"):
        if not line or line[0] == 58:  # b":" comment
            continue
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            data = value if data is None else data + b"\n" + value
        elif name == b"event":
            event = value
    if data is None:
        if event:
            return event, b""
        return None
    return event, data


def encode(event: bytes | None, data: bytes) -> bytes:
    if event:
        return b"event: " + event + b"\ndata: " + data + b"\n\n"
    return b"data: " + data + b"\n\n"
