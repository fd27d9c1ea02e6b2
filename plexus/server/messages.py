"""Inbound HTTP/1.1 messages: the parsed request, and the bytes of every response.

Theory. h11 is the parser of record (see ``protocol.py``); this module owns the pure edges:

* ``Request.from_h11`` turns an ``h11.Request`` event plus the collected body into one slotted
  ``Request``, built once per request.
* ``parse_simple_head`` is a fast path for the one shape nearly every API request has: a
  complete HTTP/1.1 head, CRLF line ends, one Host, at most one plain Content-Length, and no
  Transfer-Encoding, Expect, Upgrade or CONNECT. It uses h11's own grammar (``h11/_abnf.py``:
  token, field-value, request-target) and returns exactly what h11 would (same headers, same
  framing, same keep-alive), or None for anything else, which then goes to h11 unchanged. It
  never rejects: every error is h11's. A differential hypothesis test holds it to that. h11
  spends ~100 µs on such a head (event objects, per-line validation, its state machine); this
  costs ~12 µs (both on the 2-core test machine; ~8x).
* The ``*_head``/``chunk``/``error_response`` helpers turn status, headers and body chunks into
  wire bytes (RFC 9112 section 4 status line, section 5 fields, section 7.1 chunked coding).
  Output bypasses h11 on purpose: building ``h11.Response`` events revalidates every header and
  costs tens of µs per response, while the handler's headers are ours and already valid.
  Everything that can be computed at import time (status lines, framing lines, error
  responses) is.

Contract for callers: header names are lowercase tokens and values contain no CR/LF (they are
written as given; nothing here re-validates them). ``content-length``, ``transfer-encoding``
and ``connection`` are framing headers and are added here, never by the handler.
"""

from __future__ import annotations

import re
from http import HTTPStatus

import h11
import orjson

__all__ = [
    "Request",
    "header_list",
    "parse_simple_head",
    "STATUS_LINES",
    "CONTINUE_100",
    "LAST_CHUNK",
    "status_line",
    "fixed_head",
    "chunked_head",
    "close_delimited_head",
    "bodyless_head",
    "has_body",
    "chunk",
    "error_body",
    "error_response",
]


class Request:
    """One inbound request, complete (the body has fully arrived, dechunked)."""

    __slots__ = ("method", "target", "path", "query", "headers", "body")

    def __init__(
        self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b""
    ) -> None:
        self.method = method
        self.target = target
        self.path, _, self.query = target.partition(b"?")
        self.headers = headers
        self.body = body

    @classmethod
    def from_h11(cls, event: h11.Request) -> "Request":
        """The request head of an h11 event; ``body`` is filled in when the body is complete."""
        return cls(event.method, event.target, header_list(event.headers))

    def header(self, name: bytes) -> bytes | None:
        """First value of header ``name`` (which must be given lowercased), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def __repr__(self) -> str:  # the query may hold a credential (?key=): only its presence shows
        return "<Request %s %s%s (%d headers, %d body bytes)>" % (
            self.method.decode("latin-1"),
            self.path.decode("latin-1"),
            "?…" if self.query else "",
            len(self.headers),
            len(self.body),
        )


# h11.Headers is a Sequence of (lowercased name, value) whose generic __iter__ goes through
# __getitem__ once per item. Its storage, ``_full_items`` (raw name, name, value), has been the
# same since h11 0.9; use it when present (decided once, at import) and the public API if not.
def _probe_full_items() -> bool:
    headers = h11.Request(method="GET", target="/", headers=[("Host", "x")]).headers
    items = getattr(headers, "_full_items", None)
    return isinstance(items, list) and items == [(b"Host", b"host", b"x")]


if _probe_full_items():

    def header_list(headers) -> list[tuple[bytes, bytes]]:
        """h11 headers as a plain list of (lowercased name, value)."""
        return [(name, value) for _, name, value in headers._full_items]

else:  # pragma: no cover - only for an h11 that changed its internals

    def header_list(headers) -> list[tuple[bytes, bytes]]:
        """h11 headers as a plain list of (lowercased name, value)."""
        return list(headers)


# --- fast path for plain requests -----------------------------------------------------------

# The grammar of h11/_abnf.py (RFC 9110 token, field-value; request-target = 1*VCHAR).
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
_VALUE = rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/1\.1")
_HEADER_LINES = re.compile(rb"(?:" + _TOKEN + rb":[ \t]*" + _VALUE + rb"[ \t]*\r\n)+")
# Headers that change framing or the exchange: these always defer to h11 (content-length, host
# and connection are read here).
_DEFER = frozenset({b"transfer-encoding", b"expect", b"upgrade"})
# One field line of a block _HEADER_LINES has validated: name, then the value without OWS.
_FIELD = re.compile(rb"([^:]+):[ \t]*([^\r]*?)[ \t]*\r\n")
# Heads longer than this go to h11 directly: real API request heads are well under 2 KiB, and a
# hostile long head then costs one regex pass (h11's), not two.
FAST_HEAD_MAX = 8192


def parse_simple_head(data: bytes, max_head: int) -> tuple[Request, bool, int, int] | None:
    """(request, keep_alive, body_start, body_length) for a plain request head at data[0:], or None.

    None means "not simple or not complete: ask h11", never "invalid". The header block is
    validated in one regex pass; as no line may hold a bare CR or LF, the first CRLFCRLF is also
    where h11 ends the head, and cutting lines at CRLF and the first ':' gives h11's fields (a
    second regex pass, ``_FIELD.findall``, so no Python loop runs per header line).
    """
    end = data.find(b"\r\n\r\n", 0, min(max_head, FAST_HEAD_MAX))
    if end < 0:
        return None
    first = data.find(b"\r\n")
    match = _REQUEST_LINE.fullmatch(data, 0, first)
    if match is None or _HEADER_LINES.fullmatch(data, first + 2, end + 2) is None:
        return None
    method, target = match.groups()
    if method == b"CONNECT":
        return None
    pairs = _FIELD.findall(data, first + 2, end + 2)  # [(name, value OWS-trimmed)], one C pass
    if not pairs:
        return None
    names, values = zip(*pairs)
    names = b"\n".join(names).lower().split(b"\n")  # tokens hold no "\n": lowercase them all at once
    if not _DEFER.isdisjoint(names) or names.count(b"host") != 1:
        return None
    length = 0
    if b"content-length" in names:
        if names.count(b"content-length") > 1:
            return None  # repeated: h11 decides
        value = values[names.index(b"content-length")]
        if len(value) > 18 or not value.isdigit():
            return None  # comma list or huge: h11 decides
        length = int(value)
    keep_alive = True
    if b"connection" in names:  # h11 _keep_alive(): get_comma_header() has "close"
        for name, value in zip(names, values):
            if name == b"connection" and b"close" in [token.strip() for token in value.lower().split(b",")]:
                keep_alive = False
    return Request(method, target, list(zip(names, values))), keep_alive, end + 4, length


# --- output -------------------------------------------------------------------------------


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <code> <reason>\\r\\n``; an unknown code gets an empty reason, as h11 does."""
    try:
        reason = HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        reason = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, reason)


STATUS_LINES: dict[int, bytes] = {code: status_line(code) for code in range(100, 600)}

CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"  # last-chunk, no trailers, end of chunked body

_CL = b"content-length: %d\r\n\r\n"
_CL_CLOSE = b"content-length: %d\r\nconnection: close\r\n\r\n"
_CHUNKED = b"transfer-encoding: chunked\r\n\r\n"
_CHUNKED_CLOSE = b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
_CLOSE = b"connection: close\r\n\r\n"
_END = b"\r\n"


def has_body(status: int) -> bool:
    """RFC 9112 section 6.3: 1xx, 204 and 304 responses never carry a body (nor its framing)."""
    return status >= 200 and status != 204 and status != 304


def _head(status: int, headers: list[tuple[bytes, bytes]], framing: bytes) -> bytes:
    head = STATUS_LINES.get(status) or status_line(status)
    for name, value in headers:
        head += name + b": " + value + b"\r\n"
    return head + framing


def fixed_head(status: int, headers: list[tuple[bytes, bytes]], length: int, keep_alive: bool) -> bytes:
    """Head of a response whose body is ``length`` bytes (Content-Length framing)."""
    return _head(status, headers, (_CL if keep_alive else _CL_CLOSE) % length)


def chunked_head(status: int, headers: list[tuple[bytes, bytes]], keep_alive: bool) -> bytes:
    """Head of a streamed response (Transfer-Encoding: chunked, HTTP/1.1 peers only)."""
    return _head(status, headers, _CHUNKED if keep_alive else _CHUNKED_CLOSE)


def close_delimited_head(status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
    """Head of a streamed response to an HTTP/1.0 peer: the body ends when we close."""
    return _head(status, headers, _CLOSE)


def bodyless_head(status: int, headers: list[tuple[bytes, bytes]], keep_alive: bool) -> bytes:
    """Head of a 1xx/204/304 response: no body and no framing headers."""
    return _head(status, headers, _END if keep_alive else _CLOSE)


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body; ``data`` must be non-empty (empty is the last-chunk)."""
    return (b"%x\r\n" % len(data)) + data + b"\r\n"


def error_body(message: str, error_type: str = "invalid_request_error") -> bytes:
    return orjson.dumps({"error": {"message": message, "type": error_type}})


def error_response(
    status: int, message: str, error_type: str = "invalid_request_error", keep_alive: bool = False
) -> bytes:
    """A complete JSON error response (by default one that closes the connection)."""
    body = error_body(message, error_type)
    return fixed_head(status, [(b"content-type", b"application/json")], len(body), keep_alive) + body
