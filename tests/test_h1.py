"""plexus.upstream.h1, the sans-IO HTTP/1.1 client codec.

Theory: h11 is the oracle. Every sample response must parse to the same status, reason, headers, body
and keep-alive verdict as h11 gives. The same must hold when the input is split at every byte
position, and when it is fed one byte at a time (the h11 test_io.py habit). Hypothesis builds
chunked bodies and split points, and fuzzes garbage: nothing but ProtocolError may escape the
parser. Errors are checked by message, and the no-copy promise is checked with `is`.
"""

from __future__ import annotations

import h11
import httpx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from plexus.upstream.h1 import MAX_HEAD, ProtocolError, ResponseParser, encode_head


def parse(pieces, head_request=False, eof=False):
    p = ResponseParser(head_request)
    body = []
    for piece in pieces:
        if not p.status:
            piece = p.feed_head(piece)
            if piece is None:
                continue
        if piece:
            body.append(p.feed(piece))
    if eof:
        p.feed_eof()
    return p.status, p.reason, p.headers, b"".join(body), p.keep_alive and p.done, p.done


def oracle(data, head_request=False, eof=False):
    c = h11.Connection(h11.CLIENT)
    c.send(h11.Request(method=b"HEAD" if head_request else b"GET", target=b"/", headers=[(b"Host", b"x")]))
    c.send(h11.EndOfMessage())
    c.receive_data(data)
    if eof:
        c.receive_data(b"")
    resp, body, done = None, [], False
    while True:
        e = c.next_event()
        if e is h11.NEED_DATA or e is h11.PAUSED or type(e) is h11.ConnectionClosed:
            break
        if type(e) is h11.Response:
            resp = e
        elif type(e) is h11.Data:
            body.append(bytes(e.data))
        elif type(e) is h11.EndOfMessage:
            done = True
            break
    return (resp.status_code, resp.reason, resp.headers.raw_items(), b"".join(body),
            done and c.their_state is h11.DONE and not eof, done)  # after EOF nothing is reusable


SSE = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in (b"data: {\"a\":%d}\n\n" % i for i in range(12)))
SAMPLES = {  # name: (response bytes, HEAD request?, needs EOF?)
    "content-length": (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello", False, False),
    "chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n"
                b"1A\r\n" + b"z" * 26 + b"\r\n0\r\nX-Trailer: t\r\n\r\n", False, False),
    "sse-chunks": (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                   + SSE + b"0\r\n\r\n", False, False),
    "close-delimited": (b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nuntil the end", False, True),
    "close-delimited-1.1": (b"HTTP/1.1 200 OK\r\n\r\nuntil the end", False, True),
    "no-content": (b"HTTP/1.1 204 No Content\r\nX: y\r\n\r\n", False, False),
    "not-modified": (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", False, False),
    "head": (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", True, False),
    "continue-then-ok": (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", False, False),
    "connection-close": (b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 2\r\n\r\nok",
                         False, False),
    "ows-and-empty": (b"HTTP/1.1 404 \r\nA:   spaced  \t\r\nB:\r\nContent-Length:  3 \r\n\r\nabc", False, False),
    "bare-lf": (b"HTTP/1.1 200 OK\nContent-Length: 2\nX: y\n\nok", False, False),
    "empty-body": (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", False, False),
    "http10-keepalive-ignored": (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False, False),
}


@pytest.mark.parametrize("name", SAMPLES)
def test_matches_h11_at_every_split(name):
    data, head_request, eof = SAMPLES[name]
    expected = oracle(data, head_request, eof)
    assert parse([data], head_request, eof) == expected
    for k in range(len(data) + 1):
        assert parse([data[:k], data[k:]], head_request, eof) == expected, k
    assert parse([data[i:i + 1] for i in range(len(data))], head_request, eof) == expected


def test_body_bytes_are_not_copied():
    p = ResponseParser()
    assert p.feed_head(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n") == b""
    piece = bytes(b"abcd")
    assert p.feed(piece) is piece  # a Content-Length piece comes back as the same object
    p = ResponseParser()
    p.feed_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert p.feed(b"10\r\n") == b""
    piece = bytes(b"0123456789abcdef")
    assert p.feed(piece) is piece  # a piece that is all payload comes back as the same object
    assert p.feed(b"\r\n0\r\n\r\n") == b"" and p.done and p.keep_alive


def test_bytes_after_the_message_are_extra():
    p = ResponseParser()
    rest = p.feed_head(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1")
    assert p.feed(rest) == b"ok" and p.done and p.extra == b"HTTP/1.1"


@pytest.mark.parametrize("data, eof, message", [
    (b"FOO BAR\r\n\r\n", False, "illegal status line"),
    (b"HTTP/2 200 OK\r\n\r\n", False, "illegal status line"),
    (b"HTTP/1.1 20 OK\r\n\r\n", False, "illegal status line"),
    (b"HTTP/1.1 200 OK\r\nNo colon\r\n\r\n", False, "illegal header line"),
    (b"HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n", False, "illegal header line"),
    (b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", False, "illegal header line"),
    (b"HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n", False, "illegal header line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", False, "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", False, "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0x1\r\n\r\n", False, "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", False, "both"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", False, "unsupported Transfer-Encoding"),
    (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", False, "101"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n", False, "illegal chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\n", False, "illegal chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXX", False, "missing CRLF"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * (9 * 1024), False, "too long"),
    (b"", True, "Server disconnected without sending a response."),
    (b"HTTP/1.1 200 OK\r\nContent-", True, "mid-headers"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc", True, "(received 3 bytes, expected 5)"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", True, "incomplete chunked read"),
    (b"HTTP/1.1 200 OK\r\n" + b"X: " + b"y" * MAX_HEAD, False, "too large"),
])
def test_protocol_errors(data, eof, message):
    with pytest.raises(ProtocolError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse([data], eof=eof)
    if len(data) < 400:  # the same verdict however the bytes arrive
        with pytest.raises(ProtocolError):
            parse([data[i:i + 1] for i in range(len(data))], eof=eof)


@settings(max_examples=150, deadline=None)
@given(chunks=st.lists(st.binary(min_size=1, max_size=40), max_size=8),
       exts=st.lists(st.sampled_from([b"", b";a=b", b" ;x", b"\t"]), min_size=8, max_size=8),
       upper=st.booleans(), cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=6))
def test_chunked_any_split(chunks, exts, upper, cuts):
    size = b"%X" if upper else b"%x"
    body = b"".join(size % len(c) + exts[i] + b"\r\n" + c + b"\r\n" for i, c in enumerate(chunks))
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body + b"0\r\nT: 1\r\n\r\n"
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    pieces = [data[a:b] for a, b in zip(bounds, bounds[1:])]
    status, _, _, got, keep_alive, done = parse(pieces)
    assert (status, got, keep_alive, done) == (200, b"".join(chunks), True, True)
    if all(e in (b"", b";a=b") for e in exts):  # h11 rejects the BWS that RFC 9112 7.1.1 allows
        assert oracle(data)[3] == b"".join(chunks)


_PAYLOAD = st.lists(st.sampled_from([b"a", b"0", b"f", b"data: x\n\n"] * 30
                                    + [b"\r", b"\n", b"\r\n", b"\r\n1\r\n", b"\r\nf\r\n"]), max_size=12).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(_PAYLOAD.filter(bool), min_size=2, max_size=40),
       sizes=st.lists(st.sampled_from([b"%x"] * 150 + [b"%X", b"0%x", b"%x;e", b"%x ", b"%d"]), min_size=40, max_size=40),
       cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=4), trailer=st.booleans())
@example(chunks=[b"data: x\n\n"] * 40, sizes=[b"%x"] * 40, cuts=[], trailer=False)
@example(chunks=[b"data: x\n\n"] * 40, sizes=[b"%x"] * 40, cuts=[300], trailer=True)
def test_many_chunks_per_piece(chunks, sizes, cuts, trailer):
    """Pieces of >= 256 bytes holding many chunks take the many-at-once path (h1._units): whatever
    the payloads (CRLFs and hex digits in them) and size lines, the body is the one the
    chunk-by-chunk path reads from the same bytes fed one at a time."""
    body = b"".join(sizes[i] % len(c) + b"\r\n" + c + b"\r\n" for i, c in enumerate(chunks))
    data = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body
            + (b"0\r\nT: 1\r\n\r\n" if trailer else b"0\r\n\r\n") + b"extra")
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    bytewise = [data[i:i + 1] for i in range(len(data))]
    for pieces in ([data[a:b] for a, b in zip(bounds, bounds[1:])], bytewise):
        try:
            got = parse(pieces)
        except ProtocolError:  # its message quotes what the split let it see: compare the verdict
            got = "error"
        if pieces is bytewise:
            assert got == want
        else:
            want = got
    if all(s in (b"%x", b"%X", b"0%x") for s in sizes[:len(chunks)]):
        assert want[3] == b"".join(chunks)


@settings(max_examples=300, deadline=None)
@given(prefix=st.sampled_from([b"", b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                               b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"]),
       junk=st.binary(max_size=120), cut=st.integers(min_value=0, max_value=200), eof=st.booleans())
def test_garbage_only_raises_protocol_error(prefix, junk, cut, eof):
    data = prefix + junk
    try:
        parse([data[:cut], data[cut:]], eof=eof)
    except ProtocolError:
        pass


def test_encode_head():
    head = encode_head(b"POST", b"/v1/x?y=1", b"api.example.com",
                       [(b"Host", b"h"), (b"Content-Length", b"999"), (b"transfer-encoding", b"chunked"),
                        (b"Authorization", b"Bearer k")], 3)
    assert head == (b"POST /v1/x?y=1 HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer k\r\n"
                    b"Content-Length: 3\r\n\r\n")
    assert encode_head(b"GET", b"/", b"h:8080", [], 0) == b"GET / HTTP/1.1\r\nHost: h:8080\r\n\r\n"
    assert encode_head(b"POST", b"/", b"h", [(b"Host", b"h")], 0).endswith(b"Content-Length: 0\r\n\r\n")
    for bad in ([(b"X", b"a\r\nInjected: 1")], [(b"X\n", b"a")]):
        with pytest.raises(httpx.LocalProtocolError):
            encode_head(b"GET", b"/", b"h", bad, 0)
    with pytest.raises(httpx.LocalProtocolError):
        encode_head(b"GET", b"/ HTTP/1.1\r\nX: y", b"h", [], 0)


def test_encode_head_proxy_form_and_extra_lines():
    head = encode_head(b"POST", b"http://api.example.com:8080/v1/x", b"api.example.com:8080", [], 2,
                       b"Proxy-Authorization: Basic dTpw\r\n")
    assert head == (b"POST http://api.example.com:8080/v1/x HTTP/1.1\r\nHost: api.example.com:8080\r\n"
                    b"Content-Length: 2\r\nProxy-Authorization: Basic dTpw\r\n\r\n")
    with pytest.raises(httpx.LocalProtocolError):  # a CR/LF smuggled into a header still counts
        encode_head(b"GET", b"/", b"h", [(b"X", b"a\rb")], 0, b"Proxy-Authorization: x\r\n")


def test_content_length_is_declared_before_the_body_arrives():
    p = ResponseParser()
    assert p.feed_head(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n") == b""
    assert p.content_length() == 10
    p.feed(b"12345")
    assert p.content_length() == 10
    p = ResponseParser()
    p.feed_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert p.content_length() is None
