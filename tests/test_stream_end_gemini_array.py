"""The Gemini JSON-array stream (`:streamGenerateContent` without alt=sse) stays valid JSON.

Theory: the relay (stream.Passthrough array mode, gemini.framing.ArrayRelay) forwards the
upstream's bytes exactly, but never past the last complete top-level object, so whatever it has
sent plus what close()/fail() adds always parses as one JSON array: the complete objects before
the cut, in order, then (a cut before the finishReason) one Gemini error object. Uncut, the output
is the input byte for byte at every split. The translated path (another provider → a Gemini
client without alt=sse) writes whole elements only, so it too parses at every cut.
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from plexus.dialects.gemini.framing import ArrayRelay
from plexus.errors import GatewayError
from plexus.stream import Passthrough, Translator
from test_stream_matrix import check, check_gemini, ctx, raw, split_points

RECORDED = (Path(__file__).parent / "fixtures" / "gemini" / "array_text.json").read_bytes()


def _obj(text: str, finish: bool = False) -> dict:
    c = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
    if finish:
        c["finishReason"] = "STOP"
    return {"candidates": [c], "usageMetadata": {"promptTokenCount": 2, "totalTokenCount": 2},
            "modelVersion": "gemini-2.5-flash", "responseId": "arr-2"}


# Gemini's own framing ("\r\n,\r\n" between compact objects) and text full of JSON punctuation
SYNTHETIC = (b"[" + b"\r\n,\r\n".join(orjson.dumps(_obj(t, i == 2)) for i, t in enumerate(
    ['}{ ]["\\', 'say "finishReason" ]', "\u00e9\u2728 {"])) + b"]")
STREAMS = {"recorded": RECORDED, "synthetic": SYNTHETIC}


def elements(data: bytes) -> list[tuple[dict, int]]:
    """Each top-level element of a complete array body with the offset just past it."""
    text = data.decode()
    dec, out, i = json.JSONDecoder(), [], text.index("[") + 1
    while True:
        while text[i] in " \t\r\n,":
            i += 1
        if text[i] == "]":
            return out
        obj, i = dec.raw_decode(text, i)
        out.append((obj, len(text[:i].encode())))


def relay(chunks) -> tuple[list[bytes], bytes]:
    p = Passthrough("gemini", sse=False)
    outs = [p.feed(c) for c in chunks]
    tail = p.close()
    assert p.close() == b"" and p.fail(GatewayError(504, "late")) == b"" and p.feed(b"x") == b""
    return outs, tail


def expected(data: bytes, n: int) -> tuple[list[dict], bool]:
    """(the elements the client must get for a cut at n, whether an error object follows)."""
    els = elements(data)
    if n >= data.rindex(b"]") + 1:
        return [o for o, _ in els], False
    done = [o for o, end in els if end <= n]
    return done, not any("finishReason" in o["candidates"][0] for o in done)


@pytest.mark.parametrize("name", STREAMS)
def test_uncut_is_byte_identical_at_every_split(name):
    data = STREAMS[name]
    for i in range(len(data) + 1):
        outs, tail = relay([data[:i], data[i:]])
        assert b"".join(outs) == data and tail == b"", i
    outs, tail = relay([data[i:i + 1] for i in range(len(data))])
    assert b"".join(outs) == data and tail == b""
    sent = b""
    for piece in outs:                    # every prefix the client has ends with a whole element
        sent += piece
        if sent and not sent.rstrip().endswith(b"]"):
            json.loads(sent + b"]")


@pytest.mark.parametrize("name", STREAMS)
def test_cut_at_every_byte_parses(name):
    data = STREAMS[name]
    for n in range(len(data) + 1):
        cut = data[:n]
        runs = [[cut], [cut[: n // 2], cut[n // 2:]]]
        if n % 11 == 0:
            runs.append([cut[i:i + 1] for i in range(n)])
        want, err = expected(data, n)
        for chunks in runs:
            outs, tail = relay(chunks)
            body = b"".join(outs) + tail
            assert data.startswith(b"".join(outs)), n
            got = json.loads(body)
            if err:
                assert got[:-1] == want and got[-1]["error"]["code"] == 502, n
                assert got[-1]["error"]["message"] == "upstream stream ended early"
            else:
                assert got == want, n


def test_fail_keeps_the_error_and_nothing_follows():
    data = SYNTHETIC
    n = elements(data)[0][1] + 5
    p = Passthrough("gemini", sse=False)
    out = p.feed(data[:n])
    tail = p.fail(GatewayError(504, "upstream read timed out", "timeout"))
    assert p.feed(data[n:]) == b"" and p.close() == b""
    got = json.loads(out + tail)
    assert got[-1]["error"] == {"code": 504, "message": "upstream read timed out", "status": "DEADLINE_EXCEEDED"}
    assert len(got) == 2


def test_upstream_error_element_is_relayed_as_the_end():
    data = b'[{"candidates":[{"content":{"parts":[{"text":"a"}]}}]}\r\n,\r\n{\n  "error": {"code": 503}\n}'
    outs, tail = relay([data])
    assert b"".join(outs) == data and tail == b"\n]"
    assert json.loads(b"".join(outs) + tail)[-1] == {"error": {"code": 503}}


@pytest.mark.parametrize("garbage", [b"data: {}\r\n\r\n", b"[{}\n, oops", b"[1]"])
def test_garbage_becomes_an_error_element(garbage):
    outs, tail = relay([garbage[:3], garbage[3:]])
    got = json.loads(b"".join(outs) + tail)
    assert got[-1]["error"]["code"] == 502


def test_held_bytes_are_bounded():
    r = ArrayRelay(max_bytes=64)
    assert r.feed(b'[{"a":1}') == b'[{"a":1}'
    out = r.feed(b" " * 100)
    assert json.loads(b'[{"a":1}' + out) == [{"a": 1}, {"error": {
        "code": 502, "message": "upstream sent an oversized stream object", "status": "UNAVAILABLE"}}]
    assert r.close() == b""


CROSS = [("openai", "text.sse"), ("openai", "parallel_tools.sse"), ("openai", "cut.sse"),
         ("anthropic", "text.sse"), ("anthropic", "tools_parallel.sse")]


@pytest.mark.parametrize("src,name", CROSS)
def test_translated_array_output_parses_at_every_cut(src, name):
    data = raw(src, name)
    err = GatewayError(504, "upstream read timed out", "timeout")
    for n in split_points(len(data)):
        tr = Translator(src, "gemini", ctx(src, "gemini", gemini_sse=False))
        out = tr.feed(data[:n]) + tr.close()
        check_gemini(out, "end" if n == len(data) and not name.startswith("cut") else None, sse=False)
        tr = Translator(src, "gemini", ctx(src, "gemini", gemini_sse=False))
        out = tr.feed(data[:n]) + tr.fail(err)
        check_gemini(out, None, sse=False)


def test_array_input_translated_at_every_cut():
    """The other direction: a Gemini array body cut anywhere, translated, ends cleanly iff the
    finishReason element was complete."""
    data = RECORDED
    fin = next(end for o, end in elements(data) if "finishReason" in o["candidates"][0])
    for n in range(len(data) + 1):
        for dst in ("openai", "anthropic"):
            tr = Translator("gemini", dst, ctx("gemini", dst))
            out = tr.feed(data[:n]) + tr.close()
            check(dst, out, "end" if n >= fin else "error")
