"""SSE framer: the same events whatever the split, CRLF/CR/LF line ends, flush at close."""

from hypothesis import given, settings, strategies as st

import pytest

from plexus.errors import GatewayError
from plexus.sse import SSEDecoder, encode

SAMPLE = (
    b"event: message_start\r\ndata: {\"a\":1}\r\n\r\n"
    b": keep-alive comment\n\n"
    b"data: line1\ndata: line2\n\n"
    b"id: 7\nretry: 100\ndata:no-space\r\r"
    b"event: ping\n\n"
    b"data: {\"t\":\"\xc3\xa9\xe2\x82\xac\"}\r\n\r\n"
    b"data: tail-without-blank-line"
)
EXPECTED = [
    (b"message_start", b'{"a":1}'),
    (b"", b"line1\nline2"),
    (b"", b"no-space"),
    (b"ping", b""),
    (b"", b'{"t":"\xc3\xa9\xe2\x82\xac"}'),
    (b"", b"tail-without-blank-line"),
]


def run(parts):
    d = SSEDecoder()
    out = []
    for p in parts:
        out += d.feed(p)
    return out + d.close()


def test_whole():
    assert run([SAMPLE]) == EXPECTED


def test_every_single_split():
    for i in range(len(SAMPLE) + 1):
        assert run([SAMPLE[:i], SAMPLE[i:]]) == EXPECTED, i


def test_every_double_split():
    n = len(SAMPLE)
    for i in range(0, n + 1, 3):
        for j in range(i, n + 1):
            assert run([SAMPLE[:i], SAMPLE[i:j], SAMPLE[j:]]) == EXPECTED, (i, j)


def test_byte_at_a_time():
    assert run([SAMPLE[i:i + 1] for i in range(len(SAMPLE))]) == EXPECTED


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, len(SAMPLE)), max_size=20))
def test_hypothesis_splits(cuts):
    cuts = sorted(cuts)
    parts = [SAMPLE[a:b] for a, b in zip([0] + cuts, cuts + [len(SAMPLE)])]
    assert run(parts) == EXPECTED


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=8))
def test_garbage_never_crashes_and_is_split_invariant(data, cuts):
    cuts = sorted(c for c in cuts if c <= len(data))
    parts = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
    assert run(parts) == run([data])


def test_oversized_event_is_bounded():
    d = SSEDecoder(max_event_bytes=100)
    with pytest.raises(GatewayError) as e:
        d.feed(b"data: " + b"x" * 200)
    assert e.value.status == 502


def test_encode_roundtrip():
    raw = encode(b"content_block_delta", b'{"x":1}') + encode(None, b"[DONE]")
    assert run([raw]) == [(b"content_block_delta", b'{"x":1}'), (b"", b"[DONE]")]
