"""The fast request-head parser (``messages.parse_simple_head``) held to h11's results.

Theory: ``parse_simple_head`` may only ever say "the same as h11" or "ask h11" (None), never
reject and never differ. Hypothesis generates plain requests with every part sometimes bent out
of the fast path's shape or out of spec (names, values, line ends, folding, repeated and framing
headers, a random byte flip), and wherever the fast parser answers, its request, body,
keep-alive and bytes used must equal h11's. The protocol's use of the fast path (h11 sees only
what follows) is tested in test_protocol.py.
"""

from __future__ import annotations

import h11
import pytest
from hypothesis import example, given, settings, strategies as st

from plexus.server.messages import header_list, parse_simple_head


def post(path: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n%s\r\n%s" % (path, len(body), extra, body)


GET = b"GET /a?q=1 HTTP/1.1\r\nhost: x\r\nX-Thing: One\r\n\r\n"


def h11_reading(data: bytes):
    """What h11 makes of data: the request, its body, keep-alive and bytes used; or None."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)
    conn.receive_data(data)
    try:
        head = conn.next_event()
        if type(head) is not h11.Request:
            return None
        body = b""
        while type(ev := conn.next_event()) is h11.Data:
            body += ev.data
    except h11.RemoteProtocolError:
        return None
    if type(ev) is not h11.EndOfMessage:
        return None
    used = len(data) - len(conn.trailing_data[0])
    return head.method, head.target, header_list(head.headers), body, conn.their_state is h11.DONE, used


def fast_reading(data: bytes):
    parsed = parse_simple_head(data, 1 << 20)
    if parsed is None:
        return None
    req, keep_alive, start, length = parsed
    return req.method, req.target, req.headers, data[start:start + length], keep_alive, start + length


_HEADERS = {  # name -> values that matter for it (any name also gets generic and broken values)
    b"Connection": [b"close", b"Close", b"keep-alive, CLOSE", b"a, close", b"closed", b"keep-alive", b"x,close"],
    b"Content-Length": [b"0", b"5", b"005", b"5, 5", b"-1", b"", b"1" * 19, b"+5"],
    b"Host": [b"h", b"", b"a b"], b"Transfer-Encoding": [b"chunked", b"identity"],
    b"Expect": [b"100-continue"], b"Upgrade": [b"websocket"],
    b"X-Api-Key": [b"k"], b"accept": [b"*/*"], b"x": [b"a\tb", b"a  b", b"\x80\xff"],
}
_NAME_WEIGHTS = [*_HEADERS] + [b"Connection", b"Content-Length", b"X-Api-Key", b"accept", b"x"] * 3
_ODD_NAMES = [b"", b"a b", b"x\x00", b"a:b", b"\xe9"]
_ODD_VALUES = [b"\x00", b"a\x0bb", b"a\x0cb", b"\x7f", b"a\rb", b"a\nb", b"\x1f", b"\xff\x00"]


def mostly(valid: list, invalid: list):
    return st.sampled_from(valid * 20 + invalid)


@st.composite
def requests(draw):
    """Plain requests, with every part sometimes bent out of the fast path's shape or out of spec."""
    line = b"%s %s %s" % (
        draw(mostly([b"GET", b"POST", b"HEAD", b"CONNECT"], [b"PO ST", b"", b"x\x7f"])),
        draw(mostly([b"/", b"/v1/messages?beta=true", b"*", b"http://x/y"], [b"/a b", b"", b"/\x80"])),
        draw(mostly([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"], [b"HTTP/2.0", b"http/1.1", b"HTTP/1.1 "])))
    body = draw(st.binary(max_size=8))
    lines = [line]
    for _ in range(draw(st.integers(0, 5))):
        name = draw(st.sampled_from(_NAME_WEIGHTS))
        value = draw(st.binary(max_size=4) if draw(st.integers(0, 7)) == 0 else mostly(_HEADERS[name], _ODD_VALUES))
        name = draw(mostly([name, name.lower(), name.upper()], _ODD_NAMES))
        lines.append(name + draw(mostly([b":", b": ", b":\t"], [b" :", b":  "])) + value
                     + draw(mostly([b""], [b" ", b"\t"])))
        if draw(st.integers(0, 19)) == 0:
            lines.append(b" folded")
    if draw(st.integers(0, 9)):
        lines.insert(draw(st.integers(1, len(lines))), b"host: h")
    if draw(st.booleans()):
        lines.append(b"content-length: %d" % (len(body) + draw(mostly([0], [1, -1]))))
    if draw(st.integers(0, 9)) == 0:
        lines.append(lines[-1])  # a repeated header (Host, Content-Length...)
    eol = draw(mostly([b"\r\n"], [b"\n", b"\r", b"\r\r\n"]))
    raw = eol.join(lines) + eol + eol + body + draw(st.sampled_from([b"", GET, b"junk"]))
    if draw(st.integers(0, 9)) == 0:  # and a random byte flip anywhere
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + bytes([draw(st.integers(0, 255))]) + raw[i + 1:]
    return raw


_EDGES = [b"connection: Close", b"Connection: keep-alive, CLOSE", b"connection: a,  close ", b"connection: closed",
          b"content-length: 0\r\ncontent-length: 0", b"host: y", b"transfer-encoding: chunked",
          b"expect: 100-continue", b"upgrade: h2c", b"x: a\x0bb", b"x: \x00", b"x:\t a \t b \t", b" folded",
          b"x : y", b"content-length: 00", b"content-length: 1, 1"]


@settings(max_examples=600, deadline=None)
@given(raw=requests())
@example(raw=b"GET / HTTP/1.0\r\nhost: h\r\n\r\n")
@example(raw=b"CONNECT h:1 HTTP/1.1\r\nhost: h\r\n\r\n")
@example(raw=b"GET / HTTP/1.1\nhost: h\n\n")
@example(raw=b"GET / HTTP/1.1\r\nhost: h\r\nx: a\nb\r\n\r\n")
def test_fast_parser_agrees_with_h11(raw):
    fast = fast_reading(raw)
    if fast is not None and fast[5] <= len(raw):
        assert fast == h11_reading(raw)


@pytest.mark.parametrize("line", _EDGES)
def test_fast_parser_agrees_with_h11_on_edges(line):
    raw = b"GET / HTTP/1.1\r\nhost: h\r\n" + line + b"\r\n\r\n" + GET
    fast = fast_reading(raw)
    assert fast is None or fast == h11_reading(raw)


@pytest.mark.parametrize("raw", [GET, post(b"/p", b"xyz"), b"POST /v1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
                                 b"Content-Length: 2\r\nx-a:\t v v \r\nx-e:\r\n\r\nhi" + GET])
def test_fast_parser_takes_plain_requests(raw):
    assert fast_reading(raw) is not None and fast_reading(raw) == h11_reading(raw)
