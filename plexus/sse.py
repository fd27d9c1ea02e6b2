"""Byte-level Server-Sent Events framer (sans-IO), shared by every dialect's stream decoder.

`SSEDecoder.feed(chunk)` takes bytes exactly as they arrive and returns the complete events
they finish, as `(event, data)` pairs of bytes (`event` is b"" when the block has no `event:`
field; multi-line `data:` fields are joined with b"\n", per the WHATWG SSE spec). `feed_data`
/ `close_data` are the hot-path twins the decoders use: the same events, data only (b"" for a
block with an `event:` but no `data:` field). `close()` flushes a final event that lacks its
blank line. The output is the same however the input is split.

Lines end in LF, CRLF or CR. `id:` and `retry:` fields and `:` comments are ignored: none of
the three dialects uses them.

Speed (this is the per-event cost floor of every translated stream): real upstreams frame
every line the same way, OpenAI and Anthropic with LF, Gemini with CRLF, and nearly every event
is one `data: ` line (Anthropic: `event: X` + one `data: ` line). So the decoder picks a mode
from the first line end it sees and frames without normalising bytes:
- LF: blocks are cut at b"\n\n" (one split per chunk); a chunk holding a CR ends the mode.
- CRLF: blocks are cut at b"\r\n\r\n"; a block or pending tail with any other line break (a
  lone CR or LF; a tail's last CR may be half of a CRLF) ends the mode.
- general: every CRLF/CR is rewritten to LF (the trailing CR of a chunk waits in `_cr`, as it
  may be the first half of a CRLF), then blocks are cut at b"\n\n".
A mode only ever gives way to the general one, at an event boundary (its pending bytes `_buf`
always start at one), so the events are those of the general framer on the whole stream.
A block is read by slicing when it is one `data: ` line (or `event: ` + one `data: ` line),
else line by line (`_parse_block`).

Bytes membership is tested with an int (`13 in b`, memchr) or `find`, never `bytes in bytes`
(CPython 3.11 first tries the needle as an int and pays for a raised TypeError).

`encode(event, data)` is the inverse for LF-terminated output.

Bound: an event larger than `max_event_bytes` raises GatewayError 502 (a runaway upstream must
not make the gateway buffer without limit), checked when a feed completes no event.
"""

from __future__ import annotations

from .errors import GatewayError

MAX_EVENT_BYTES = 16 * 1024 * 1024

_NEW, _LF, _CRLF, _GEN = 0, 1, 2, 3


def _oversized() -> GatewayError:
    return GatewayError(502, "upstream sent an oversized SSE event", "bad_gateway")


class SSEDecoder:
    __slots__ = ("_buf", "_cr", "_mode", "max_event_bytes")

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buf = b""          # bytes after the last complete event (an event boundary)
        self._cr = False         # general mode: a trailing CR held back from the last chunk
        self._mode = _NEW
        self.max_event_bytes = max_event_bytes

    # ------------------------------------------------------------ API

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        out = []
        for block in self._blocks(chunk):
            ev = _parse_block(block)
            if ev is not None:
                out.append(ev)
        return out

    def close(self) -> list[tuple[bytes, bytes]]:
        """Flush: a final event whose blank line never came is still delivered."""
        out = []
        for block in self._final():
            ev = _parse_block(block)
            if ev is not None:
                out.append(ev)
        return out

    def feed_data(self, chunk: bytes) -> list[bytes]:
        """feed(), data only: the hot path (the common cases of _blocks inline)."""
        mode = self._mode
        if mode == _LF and 13 not in chunk:
            buf = self._buf + chunk if self._buf else chunk
            blocks = buf.split(b"\n\n")
            if len(blocks) == 1:
                if len(buf) > self.max_event_bytes:
                    raise _oversized()
                self._buf = buf
                return []
            self._buf = blocks.pop()
        elif mode == _CRLF:
            buf = self._buf + chunk if self._buf else chunk
            blocks = buf.split(b"\r\n\r\n")
            n = 2 * len(blocks) - 2
            if n and buf.count(13) == n and buf.count(10) == n:
                self._buf = blocks.pop()        # every CR/LF is a separator's: one-line blocks
            else:
                blocks = self._crlf_split(blocks)
        else:
            blocks = self._blocks(chunk)
        out = []
        for b in blocks:
            if b[:6] == b"data: ":
                if 10 not in b:
                    out.append(b[6:])
                    continue
            else:   # `event: X` + one `data: ` line (Anthropic)
                head, sep, data = b.partition(b"\ndata: ")
                if sep and head[:7] == b"event: " and 10 not in head and 10 not in data:
                    out.append(data)
                    continue
            ev = _parse_block(b)
            if ev is not None:
                out.append(ev[1])
        return out

    def close_data(self) -> list[bytes]:
        return [ev[1] for ev in self.close()]

    def lf_idle(self) -> bool:
        """LF mode with no pending bytes: a chunk that is one whole event (one blank line, at its
        end; no CR) frames as that one event and leaves the framer as it is (a decoder's fast
        path may then read the chunk itself and skip feed_data)."""
        return self._mode == _LF and not self._buf

    @property
    def pending(self) -> bytes:
        return self._buf

    # ------------------------------------------------------------ framing

    def _final(self) -> list[bytes]:
        """close(): the pending bytes as blocks, line ends normalised (a held CR ends nothing)."""
        buf, self._buf, self._cr, self._mode = self._buf, b"", False, _GEN
        if 13 in buf:
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return [b for b in buf.split(b"\n\n") if b.strip(b"\n")]

    def _blocks(self, chunk: bytes) -> list[bytes]:
        """The complete blocks `chunk` finishes, lines separated by LF."""
        mode = self._mode
        if mode == _LF:
            if 13 in chunk:
                return self._to_general(chunk)
            buf = self._buf + chunk if self._buf else chunk
            blocks = buf.split(b"\n\n")
        elif mode == _CRLF:
            return self._crlf(chunk)
        elif mode == _GEN:
            return self._general(chunk)
        else:                  # _NEW: the first line end decides
            buf = self._buf + chunk if self._buf else chunk
            lf = buf.find(b"\n")
            cr = buf.find(b"\r")
            if lf == -1 and cr == -1:
                if len(buf) > self.max_event_bytes:
                    raise _oversized()
                self._buf = buf
                return []
            self._buf = b""
            if cr == -1 or (lf != -1 and lf < cr):
                self._mode = _LF
                return self._blocks(buf)
            self._mode = _CRLF
            return self._crlf(buf)
        if len(blocks) == 1:
            if len(buf) > self.max_event_bytes:
                raise _oversized()
            self._buf = buf
            return []
        self._buf = blocks.pop()
        return blocks

    def _to_general(self, rest: bytes, check: bool = True) -> list[bytes]:
        """Hand the stream to the general framer from the pending event boundary on."""
        buf, self._buf = self._buf, b""
        self._mode = _GEN
        return self._general(buf + rest if buf else rest, check)

    def _crlf(self, chunk: bytes) -> list[bytes]:
        buf = self._buf + chunk if self._buf else chunk
        return self._crlf_split(buf.split(b"\r\n\r\n"))

    def _crlf_split(self, blocks: list[bytes]) -> list[bytes]:
        """CRLF mode: `blocks` is the pending bytes split at CRLF CRLF (the last one partial)."""
        tail = blocks.pop()
        for i, b in enumerate(blocks):
            if 13 in b or 10 in b:          # more than one line (rare): only CRLF line ends allowed
                if not _regular(b):
                    self._buf = b""
                    rest = b"\r\n\r\n".join(blocks[i:]) + b"\r\n\r\n" + tail
                    del blocks[i:]
                    return blocks + self._to_general(rest, not blocks)
                blocks[i] = b.replace(b"\r\n", b"\n")
        if (13 in tail or 10 in tail) and not _regular(tail[:-1] if tail[-1] == 13 else tail):
            self._buf = b""
            return blocks + self._to_general(tail, not blocks)
        if not blocks and len(tail) > self.max_event_bytes:
            # the bound counts LF-normalised bytes, as the general framer does
            if len(tail) - tail.count(b"\r\n") - (tail[-1] == 13) > self.max_event_bytes:
                raise _oversized()
        self._buf = tail
        return blocks

    def _general(self, chunk: bytes, check: bool = True) -> list[bytes]:
        """`check`: apply the bound (not when this feed already completed an event)."""
        if self._cr:
            chunk = b"\r" + chunk
            self._cr = False
        if 13 in chunk:
            if chunk[-1] == 13:
                chunk = chunk[:-1]
                self._cr = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf = self._buf + chunk if self._buf else chunk
        blocks = buf.split(b"\n\n")
        if len(blocks) == 1:
            # (a pending CR after "...\n" may complete the event; it is resolved by the next
            # feed or by close(), so the result does not depend on where the input was split)
            if check and len(buf) > self.max_event_bytes:
                raise _oversized()
            self._buf = buf
            return []
        self._buf = blocks.pop()
        return blocks


def _regular(b: bytes) -> bool:
    """Every CR of `b` is followed by LF and every LF preceded by CR."""
    n = b.count(b"\r\n")
    return b.count(b"\r") == n and b.count(b"\n") == n


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
