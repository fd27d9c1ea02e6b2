"""HTTP/1.1 client codec, sans-IO: request head bytes out, response head + body bytes in (RFC 9112).

Theory
------
``encode_head`` builds the request head. ``ResponseParser`` reads one response:

* ``feed_head(bytes)`` returns ``None`` (need more data) until the final, non-1xx head is complete,
  and then the bytes that follow it. 1xx heads are skipped.
* ``feed(bytes)`` returns the body bytes in that piece (possibly b"") and sets ``done`` at the end
  of the message. Bytes past the end go to ``extra``, and the connection must not be reused.
* ``feed_eof()`` ends a close-delimited body. Any other EOF before ``done`` raises ``ProtocolError``.

A Content-Length or close-delimited piece is returned as the *same object* that was fed, so it is
not copied. A chunked piece becomes one slice, or one join of slices, per piece fed. Partial input
(the head, a chunk-size line, a chunk's CRLF, the trailer) is carried in named fields. Every buffer
is bounded. Framing follows RFC 9112 section 6.3: a response to HEAD, a 204 and a 304 have no body,
then Transfer-Encoding: chunked, then Content-Length, else the body runs until the connection closes.
Anything ambiguous (TE together with CL, conflicting CLs, a coding other than chunked, obs-fold,
which a gateway may reject under RFC 9112 section 5.2, a 101 we never asked for) is a ProtocolError.

Chunked bodies are decoded four ways, fastest first, each falling back to the next at the point
where it stops: a piece that is exactly one whole chunk (strict size line, payload, CRLF: how a
stream sent one event per segment arrives) with one regex match and one slice; many whole chunks
at once without a Python loop per chunk (``_units``: split at CRLF, then check every size line
against its payload's length in C-level map/compare; exact, because a parse that passes the check
is the only parse); one regex match per chunk; and a line-at-a-time state machine for anything
partial, lenient or malformed.

Why not h11: on this machine h11 costs ~100 us per exchange (Request validation plus head parsing)
and ~18 us per SSE-sized chunk, and it copies each body byte three times. Our budget for a whole
proxied request is 250 us. tests/test_h1.py checks this parser against h11 with inputs
split at every byte.
"""

from __future__ import annotations

import re
from itertools import repeat

import httpx

MAX_HEAD = 64 * 1024  # response status line + headers
MAX_LINE = 8 * 1024  # chunk-size line, trailer section

_BLANK = re.compile(rb"\n\r?\n")  # the empty line that ends a head
_STATUS = rb"HTTP/1\.([01]) ([1-9][0-9][0-9])(?: ([^\r\n\0]*))?\r\n"
_STATUS_LINE = re.compile(_STATUS)
# One C pass checks the whole head: status line, then field lines "token:value" (no CR/LF/NUL in a value,
# so no obs-fold either); _FIELD then cuts the checked section into (name, value) pairs, OWS trimmed.
_HEAD = re.compile(_STATUS + rb"((?:[-!#$%&'*+.^_`|~0-9A-Za-z]+:[^\r\n\0]*\r\n)*)")
_FIELD = re.compile(rb"([^:]+):[ \t]*([^\r]*?)[ \t]*\r\n")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
_CHUNK = re.compile(rb"[ \t]*([0-9A-Fa-f]{1,15})[ \t]*(?:;[^\n]*)?\r?\n")  # same rule as the slow path
_NEXT = re.compile(rb"\r\n([0-9A-Fa-f]{1,15})\r\n")  # end of one chunk's payload + the next size line
_ONE = re.compile(rb"([0-9A-Fa-f]{1,15})\r\n").match  # a strict size line at the start of a piece
_HEXES = re.compile(rb"[0-9A-Fa-f]*")
_UNITS_MIN = 256  # below this many bytes a piece holds one or two chunks: the regex path is as fast
_BODY_METHODS = frozenset((b"POST", b"PUT", b"PATCH"))

# body framing (RFC 9112 section 6.3) and chunked sub-states
_NONE, _LENGTH, _CHUNKED, _EOF = 0, 1, 2, 3
_SIZE, _DATA, _CRLF, _TRAILER = 0, 1, 2, 3


class ProtocolError(Exception):
    """The peer sent something that is not a valid HTTP/1.x response (-> httpx.RemoteProtocolError)."""


def encode_head(method: bytes, target: bytes, host: bytes, headers, body_len: int, extra: bytes = b"") -> bytes:
    """Request head. The caller's framing headers are dropped; we send Content-Length for the bytes body.

    ``extra``: ready header lines ("Name: value\\r\\n" each) appended as they are (a proxy's
    Proxy-Authorization, built once per transport).
    """
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    lines = 2  # request line + final blank line
    has_host = False
    for name, value in headers:
        n = len(name)
        if n == 14 or n == 17 or n == 4:
            lower = name.lower()
            if lower == b"content-length" or lower == b"transfer-encoding":
                continue
            if lower == b"host":
                has_host = True
        parts += (name, b": ", value, b"\r\n")
        lines += 1
    if not has_host:
        parts += (b"Host: ", host, b"\r\n")
        lines += 1
    if body_len or method in _BODY_METHODS:
        parts += (b"Content-Length: ", b"%d" % body_len, b"\r\n")
        lines += 1
    if extra:
        parts.append(extra)
        lines += extra.count(b"\n")
    parts.append(b"\r\n")
    head = b"".join(parts)
    # A CR or LF inside a method, target, name or value would smuggle a header or a request.
    if head.count(b"\n") != lines or head.count(b"\r") != lines:
        raise httpx.LocalProtocolError("CR/LF in request method, target or header")
    return head


def _content_length(value: bytes, prev: int | None) -> int:
    for part in value.split(b","):  # "5, 5" and repeated headers are legal only when all agree
        part = part.strip(b" \t")
        if not part.isdigit() or len(part) > 18 or (prev is not None and int(part) != prev):
            raise ProtocolError(f"bad Content-Length: {value[:40]!r}")
        prev = int(part)
    return prev  # type: ignore[return-value]


def _units(data: bytes) -> tuple[list[bytes], int] | bool | None:
    """(payloads, end) of the whole "size CRLF payload CRLF" units at the start of ``data`` (strict
    size lines: hex digits only), up to the last-chunk; None if there are fewer than two, False if
    they do not read this way.

    Split at CRLF, unit t is (parts[2t], parts[2t+1]). If every size line is hex and every payload
    has its size's length, that reading is the parse (a size line holds no CRLF, so each payload
    starts where this reading says and, being as long as its size, ends where it says); otherwise
    (a CRLF inside a payload, an extension, junk) the caller parses chunk by chunk.
    """
    parts = data.split(b"\r\n")
    q = (len(parts) - 1) >> 1  # units followed by their CRLF
    if q < 2:
        return None
    sizes = parts[0:2 * q:2]
    if _HEXES.fullmatch(b"".join(sizes)) is None or max(map(len, sizes)) > 15:
        return False
    try:
        lengths = list(map(int, sizes, repeat(16)))
    except ValueError:  # an empty size line
        return False
    payloads = parts[1:2 * q:2]
    if 0 in lengths:  # the last-chunk and its trailer are the state machine's
        q = lengths.index(0)
        if q == 0:
            return None
        del lengths[q:], payloads[q:], sizes[q:]
    if list(map(len, payloads)) != lengths:
        return False
    return payloads, sum(map(len, sizes)) + sum(lengths) + 4 * q


class ResponseParser:
    """Sans-IO reader for one HTTP/1.x response. See the module docstring for the protocol."""

    __slots__ = ("head_request", "buf", "scan", "status", "reason", "version", "headers", "keep_alive",
                 "mode", "need", "received", "cstate", "line", "done", "extra", "units")

    def __init__(self, head_request: bool = False) -> None:
        self.head_request = head_request  # a response to HEAD never has a body
        self.buf = b""  # partial head
        self.scan = 0  # where to resume searching buf for the blank line
        self.status = 0  # 0 until the final (non-1xx) head has been parsed
        self.reason = b""
        self.version = b"HTTP/1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = False
        self.mode = _NONE
        self.need = 0  # bytes left: whole body (_LENGTH) or current chunk (_CHUNKED)
        self.received = 0
        self.cstate = _SIZE
        self.line = b""  # partial chunk-size/CRLF/trailer line
        self.done = False
        self.extra = b""  # bytes after the end of the message: the connection is not reusable
        self.units = True  # try _units; off once a piece did not read that way (CRLF in payloads...)

    # -- head ------------------------------------------------------------------------------------------
    def feed_head(self, data: bytes) -> bytes | None:
        buf = self.buf + data if self.buf else data
        while True:
            if buf[:1] in (b"\r", b"\n"):  # tolerate blank lines before the status line (RFC 9112 2.2)
                buf = buf.lstrip(b"\r\n")
                self.scan = 0
            m = _BLANK.search(buf, self.scan)
            if m is None:
                if len(buf) > MAX_HEAD:
                    raise ProtocolError("response head too large")
                self.buf = buf
                self.scan = max(0, len(buf) - 2)
                return None
            if m.start() > MAX_HEAD:
                raise ProtocolError("response head too large")
            self.scan = 0
            self._parse_head(buf, m.start() + 1)
            buf = buf[m.end():]
            if self.status:
                self.buf = b""
                return buf
            if not buf:  # that was a 1xx: the final head is still to come
                self.buf = b""
                return None

    def _parse_head(self, buf: bytes, end: int) -> None:
        m = _HEAD.fullmatch(buf, 0, end)
        if m is None:  # bare-LF line ends are tolerated (RFC 9112 2.2); anything else is an error
            buf = buf[:end].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            end = len(buf)
            m = _HEAD.fullmatch(buf)
            if m is None:
                first = buf.partition(b"\r")[0][:80]
                if _STATUS_LINE.match(buf) is None:
                    raise ProtocolError(f"illegal status line: {first!r}")
                raise ProtocolError(f"illegal header line in: {buf[:200]!r}")
        minor, code, reason, _ = m.groups()
        status = int(code)
        headers = _FIELD.findall(buf, m.start(4), end)
        length = te = None
        close = minor == b"0"  # HTTP/1.0: no keep-alive
        for name, value in headers:
            n = len(name)
            if n == 14 or n == 17 or n == 10:
                lower = name.lower()
                if lower == b"content-length":
                    length = _content_length(value, length)
                elif lower == b"transfer-encoding":
                    te = value if te is None else te + b"," + value
                elif lower == b"connection":
                    close = close or b"close" in [t.strip(b" \t") for t in value.lower().split(b",")]
        if status < 200:
            if status == 101:
                raise ProtocolError("unexpected 101 Switching Protocols")
            return  # 100 Continue, 103 Early Hints...: skipped
        self.status, self.reason, self.headers = status, reason or b"", headers
        self.version = b"HTTP/1.0" if minor == b"0" else b"HTTP/1.1"
        if self.head_request or status == 204 or status == 304:
            self.mode, self.done = _NONE, True
        elif te is not None:
            if length is not None:
                raise ProtocolError("both Transfer-Encoding and Content-Length")
            if te.strip(b" \t").lower() != b"chunked":
                raise ProtocolError(f"unsupported Transfer-Encoding: {te[:40]!r}")
            self.mode = _CHUNKED
        elif length is not None:
            self.mode, self.need, self.done = _LENGTH, length, length == 0
        else:
            self.mode, close = _EOF, True
        self.keep_alive = not close

    def content_length(self) -> int | None:
        """The body's declared length (Content-Length framing), else None (chunked, until close, none)."""
        return self.received + self.need if self.mode == _LENGTH else None

    # -- body ------------------------------------------------------------------------------------------
    def feed(self, data: bytes) -> bytes:
        mode = self.mode
        if mode == _CHUNKED and self.cstate == _SIZE and not self.line:
            # A stream that arrives one event per segment comes one whole chunk per piece: the
            # size line (strict), the payload and its CRLF, nothing after. (cstate _SIZE: not done.)
            m = _ONE(data)
            if m is not None:
                j = m.end()
                k = j + int(m[1], 16)
                if k + 2 == len(data) and k != j and data[k] == 13 and data[k + 1] == 10:
                    return data[j:k]
            return self._chunked(data)
        if self.done:
            self.extra += data
            return b""
        if mode == _LENGTH:
            need = self.need
            if len(data) < need:
                self.need = need - len(data)
                self.received += len(data)
                return data
            self.received += need
            self.need, self.done = 0, True
            if len(data) > need:
                self.extra = data[need:]
                return data[:need]
            return data
        if mode == _CHUNKED:
            return self._chunked(data)
        return data  # _EOF

    def feed_eof(self) -> None:
        if self.done:
            return
        if self.mode == _EOF and self.status:
            self.done = True
        elif not self.status:
            raise ProtocolError("peer closed connection mid-headers" if self.buf
                                else "Server disconnected without sending a response.")
        elif self.mode == _LENGTH:
            raise ProtocolError("peer closed connection without sending complete message body "
                                f"(received {self.received} bytes, expected {self.received + self.need})")
        else:
            raise ProtocolError("peer closed connection without sending complete message body "
                                "(incomplete chunked read)")

    def _chunked(self, data: bytes) -> bytes:
        out = []
        i, n = 0, len(data)
        if n >= _UNITS_MIN and self.units and self.cstate == _SIZE and not self.line:
            found = _units(data)
            if found:
                out, i = found
                if i >= n:
                    return b"".join(out)
            elif found is False:
                self.units = False
        while i < n:
            if self.cstate == _SIZE and not self.line:
                # Fast path: whole "size CRLF payload" units, one regex match each: the first size line
                # with the lenient rule, then each "CRLF size CRLF" that ends one payload and starts the
                # next (strict: no extension, no bare LF). Anything partial, lenient or malformed drops
                # to the one-line-at-a-time state machine below, at the state where the fast path stopped.
                m = _CHUNK.match(data, i)
                start = i
                while m is not None:
                    j = m.end()
                    k = j + int(m[1], 16)
                    if k == j or k + 2 > n:  # the last-chunk, or a payload (+ CRLF) not all here
                        i = start
                        break
                    out.append(data[j:k])
                    i = k
                    m = _NEXT.match(data, k)
                    if m is None:
                        if data.startswith(b"\r\n", k):  # the payload's CRLF; the next size line is not simple
                            i = k + 2
                        else:  # CRLF split, bare LF or garbage: the slow path checks it
                            self.cstate = _CRLF
                        break
                    start = k + 2
                if i >= n:
                    break
            if self.cstate == _DATA:
                take = min(self.need, n - i)
                out.append(data[i:i + take])  # whole-object slice when the chunk is all payload: no copy
                i += take
                self.need -= take
                if not self.need:
                    self.cstate = _CRLF
                continue
            j = data.find(b"\n", i)
            if j < 0:
                self.line += data[i:]
                if len(self.line) > MAX_LINE:
                    raise ProtocolError("chunk-size line or trailer too long")
                if self.cstate == _CRLF and self.line != b"\r":
                    raise ProtocolError(f"missing CRLF after chunk data: {self.line[:40]!r}")
                break
            line = self.line + data[i:j] if self.line else data[i:j]
            i = j + 1
            self.line = b""
            if self.cstate == _TRAILER:
                if line and line != b"\r":  # trailer fields are read and dropped
                    self.need += len(line)  # ... but still bounded
                    if self.need > MAX_LINE:
                        raise ProtocolError("chunked trailer too long")
                    continue
                self.done = True
                if i < n:
                    self.extra = data[i:]
                break
            if line[-1:] == b"\r":
                line = line[:-1]
            if self.cstate == _CRLF:
                if line:
                    raise ProtocolError(f"missing CRLF after chunk data: {line[:40]!r}")
                self.cstate = _SIZE
                continue
            size = line.split(b";", 1)[0].strip(b" \t")  # chunk extensions are ignored
            if _HEX.fullmatch(size) is None:
                raise ProtocolError(f"illegal chunk size line: {line[:40]!r}")
            self.need = int(size, 16)
            self.cstate = _DATA if self.need else _TRAILER
        if len(out) == 1:
            return out[0]
        return b"".join(out)
