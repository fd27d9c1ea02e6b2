"""End-of-stream rules, relay (stream.Passthrough) and translation (stream.Translator) alike.

Theory: a stream is complete once the upstream sent its finish (OpenAI a non-null
finish_reason or `[DONE]`, Anthropic a message_delta with stop_reason or message_stop, Gemini a
candidate's finishReason), whatever follows (usage chunk, `[DONE]`, message_stop) and however the
SSE lines end (LF, CRLF, lone CR; `data:` with or without the space). Only a body that ends
before the finish is a cut, and gets the client dialect's error event; an upstream error event
is relayed as is (translated: re-rendered). Each case is checked at every byte split, and every
prefix of each complete stream is checked as a cut: before the finish an error, after the
finish event a clean ending, in between either — but always a well-formed client stream.
"""

from __future__ import annotations

import json
import re

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plexus.errors import GatewayError
from plexus.stream import Passthrough, Translator
from test_stream_matrix import check, ctx

DIALECTS = ("openai", "anthropic", "gemini")


def oa(delta: dict, finish=None, **extra) -> bytes:
    obj = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
    return orjson.dumps(obj)


OA_USAGE = orjson.dumps({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                         "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})
OA_BODY = [oa({"role": "assistant", "content": ""}), oa({"content": "Hi [DONE] there"}),
           oa({"content": "!"})]
OA_FIN = oa({}, "stop")


def sse(payloads, sep=b"\n", field=b"data: ") -> bytes:
    return b"".join(field + p + sep + sep for p in payloads)


def an(t: str, **kw) -> tuple[bytes, bytes]:
    return t.encode(), orjson.dumps({"type": t, **kw})


AN_BODY = [an("message_start", message={"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
                                        "content": [], "stop_reason": None, "stop_sequence": None,
                                        "usage": {"input_tokens": 3, "output_tokens": 1}}),
           an("content_block_start", index=0, content_block={"type": "text", "text": ""}),
           an("content_block_delta", index=0, delta={"type": "text_delta", "text": "event: message_stop"}),
           an("content_block_stop", index=0)]
AN_FIN = an("message_delta", delta={"stop_reason": "end_turn", "stop_sequence": None}, usage={"output_tokens": 4})
AN_STOP = an("message_stop")


def anth(events, sep=b"\n", space=b" ") -> bytes:
    return b"".join(b"event:" + space + e + sep + b"data:" + space + d + sep + sep for e, d in events)


def gm(parts, finish=None, usage=None) -> bytes:
    c = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        c["finishReason"] = finish
    obj = {"candidates": [c], "modelVersion": "g", "responseId": "r1"}
    if usage:
        obj["usageMetadata"] = usage
    return orjson.dumps(obj)


GM_BODY = [gm([{"text": 'say "finishReason"'}]), gm([{"text": " ok"}])]
GM_FIN = gm([{"text": "."}], "STOP", {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5})
GM_USAGE = orjson.dumps({"usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5},
                         "modelVersion": "g", "responseId": "r1"})
OA_ERR = b'{"error":{"message":"boom","type":"server_error","code":500}}'
AN_ERR = (b"error", b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}')
GM_ERR = b'{"error":{"code":503,"message":"overloaded","status":"UNAVAILABLE"}}'

# (dialect, name, body, outcome, finish): outcome "end" (clean), "error" (cut) or "upstream"
# (the upstream's own error event); finish: the bytes whose end completes the stream.
CASES = [
    ("openai", "done", sse(OA_BODY + [OA_FIN, b"[DONE]"]), "end", OA_FIN + b"\n"),
    ("openai", "done_no_space", sse(OA_BODY + [OA_FIN], field=b"data:") + b"data:[DONE]\n\n", "end", OA_FIN + b"\n"),
    ("openai", "no_done", sse(OA_BODY + [OA_FIN]), "end", OA_FIN + b"\n"),
    ("openai", "no_done_usage", sse(OA_BODY + [OA_FIN, OA_USAGE]), "end", OA_FIN + b"\n"),
    ("openai", "usage_in_finish", sse(OA_BODY + [oa({}, "length", usage={"prompt_tokens": 1})]), "end",
     b'"prompt_tokens":1}}\n'),
    ("openai", "no_done_crlf", sse(OA_BODY + [OA_FIN, OA_USAGE], b"\r\n"), "end", OA_FIN + b"\r"),
    ("openai", "done_lone_cr", sse(OA_BODY, b"\r") + b"data:[DONE]\r\r", "end", b"data:[DONE]"),
    ("openai", "spaced_json", sse(OA_BODY + [b'{"id": "chatcmpl-1", "object": "chat.completion.chunk", '
                                             b'"created": 1, "model": "m", "choices": [{"index": 0, "delta": {}, '
                                             b'"finish_reason":  "stop"}]}']), "end", b'"stop"}]}\n'),
    ("openai", "python_json", sse([json.dumps(orjson.loads(x)).encode() for x in OA_BODY + [OA_FIN, OA_USAGE]]),
     "end", b'"finish_reason": "stop"}]}\n'),
    ("openai", "cut", sse(OA_BODY), "error", None),
    ("openai", "cut_in_finish", sse(OA_BODY) + b"data: " + OA_FIN[:-3], "error", None),
    ("openai", "error_no_space", sse(OA_BODY) + b"data:" + OA_ERR + b"\n\n", "upstream", None),
    ("anthropic", "stop", anth(AN_BODY + [AN_FIN, AN_STOP]), "end", AN_FIN[1] + b"\n"),
    ("anthropic", "no_message_stop", anth(AN_BODY + [AN_FIN]), "end", AN_FIN[1] + b"\n"),
    ("anthropic", "no_space", anth(AN_BODY + [AN_FIN, AN_STOP], space=b""), "end", AN_FIN[1] + b"\n"),
    ("anthropic", "crlf", anth(AN_BODY + [AN_FIN, AN_STOP], b"\r\n"), "end", AN_FIN[1] + b"\r"),
    ("anthropic", "lone_cr_no_stop", anth(AN_BODY + [AN_FIN], b"\r"), "end", AN_FIN[1] + b"\r"),
    ("anthropic", "cut", anth(AN_BODY), "error", None),
    ("anthropic", "error_no_space", anth(AN_BODY) + b"event:error\ndata:" + AN_ERR[1] + b"\n\n", "upstream", None),
    ("gemini", "finish", sse(GM_BODY + [GM_FIN], b"\r\n"), "end", GM_FIN + b"\r"),
    ("gemini", "finish_then_usage", sse(GM_BODY + [GM_FIN, GM_USAGE], b"\r\n"), "end", GM_FIN + b"\r"),
    ("gemini", "lf_no_space", sse(GM_BODY + [GM_FIN], field=b"data:"), "end", GM_FIN + b"\n"),
    ("gemini", "cut", sse(GM_BODY, b"\r\n"), "error", None),
    ("gemini", "error_no_space", sse(GM_BODY, b"\r\n") + b"data:" + GM_ERR + b"\r\n\r\n", "upstream", None),
]
IDS = [f"{c[0]}-{c[1]}" for c in CASES]
TRANSLATIONS = [(c, dst) for c in CASES for dst in DIALECTS if dst != c[0]]


def relay(dialect: str, chunks) -> tuple[bytes, bytes]:
    p = Passthrough(dialect)
    out = b"".join(p.feed(c) for c in chunks)
    tail = p.close()
    assert p.close() == b"" and p.fail(GatewayError(504, "late")) == b""
    return out, tail


def translate(src: str, dst: str, chunks) -> bytes:
    tr = Translator(src, dst, ctx(src, dst))
    out = b"".join(tr.feed(c) for c in chunks) + tr.close()
    assert tr.close() == b""
    return out


def assert_error_event(dialect: str, tail: bytes) -> None:
    ev = tail.lstrip(b"\r\n")
    assert ev.endswith(b"\r\n\r\n" if dialect == "gemini" else b"\n\n")
    if dialect == "anthropic":
        assert ev.startswith(b"event: error\ndata: ")
    obj = orjson.loads(ev.split(b"data: ", 1)[1])
    assert "error" in obj and obj["error"]["message"] == "upstream stream ended early"


def finish_at(body: bytes, finish: bytes) -> int:
    return body.index(finish) + len(finish)


def test_cases_are_what_they_say():
    for dialect, name, body, outcome, finish in CASES:
        assert (finish is not None) == (outcome == "end"), name
        if finish is not None:
            assert body.count(finish) == 1, name


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_relay_at_every_split(case):
    dialect, _, body, outcome, _ = case
    for i in range(len(body) + 1):
        out, tail = relay(dialect, [body[:i], body[i:]])
        assert out == body, i
        if outcome == "error":
            assert_error_event(dialect, tail)
        else:
            assert tail == b"", (i, tail)
    assert relay(dialect, [body[i:i + 1] for i in range(len(body))]) == relay(dialect, [body])
    events = re.findall(rb".*?(?:\r\n\r\n|\n\n|\r\r)|.+\Z", body, re.S)   # one chunk per event: the usual case
    assert b"".join(events) == body and len(events) >= 2
    assert relay(dialect, events) == relay(dialect, [body])


@pytest.mark.parametrize("case", CASES, ids=IDS)
@settings(max_examples=25, deadline=None, derandomize=True)
@given(cuts=st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=12))
def test_relay_hypothesis_splits(case, cuts):
    dialect, _, body, _, _ = case
    pts = sorted({c % (len(body) + 1) for c in cuts})
    chunks = [body[a:b] for a, b in zip([0] + pts, pts + [len(body)])]
    assert relay(dialect, chunks) == relay(dialect, [body])


@pytest.mark.parametrize("case,dst", TRANSLATIONS, ids=[f"{c[0]}-{c[1]}>{d}" for c, d in TRANSLATIONS])
def test_translation_at_every_split(case, dst):
    src, _, body, outcome, _ = case
    whole = translate(src, dst, [body])
    check(dst, whole, "error" if outcome in ("error", "upstream") else "end")
    if outcome == "upstream":
        assert b"upstream stream ended early" not in whole
    for i in range(len(body) + 1):
        assert translate(src, dst, [body[:i], body[i:]]) == whole, i
    assert translate(src, dst, [body[i:i + 1] for i in range(len(body))]) == whole


@pytest.mark.parametrize("case", [c for c in CASES if c[3] == "end"], ids=[i for i, c in zip(IDS, CASES) if c[3] == "end"])
def test_every_cut_of_a_complete_stream(case):
    """Cut at every byte: an error before the finish, clean once its line ended, relay and every
    translation agree on both sides of that window and stay well formed inside it."""
    src, _, body, _, finish = case
    fin = finish_at(body, finish)
    start = body.index(finish)
    for n in range(len(body) + 1):
        cut = body[:n]
        out, tail = relay(src, [cut[: n // 2], cut[n // 2:]])
        assert out == cut
        relay_clean = tail == b""
        if not relay_clean:
            assert_error_event(src, tail)
        assert relay_clean == (n >= fin), (n, tail)
        for dst in DIALECTS:
            if dst == src:
                continue
            want = "error" if n <= start else "end" if n >= fin else None
            check(dst, translate(src, dst, [cut[: n // 2], cut[n // 2:]]), want)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_read_failure_after_the_finish_is_a_clean_end(case):
    src, _, body, outcome, finish = case
    err = GatewayError(504, "upstream read timed out", "timeout")
    n = finish_at(body, finish) if finish else len(body)
    p = Passthrough(src)
    assert p.feed(body[:n]) == body[:n]
    tail = p.fail(err)
    assert (tail == b"") == (outcome != "error")
    for dst in DIALECTS:
        if dst == src:
            continue
        tr = Translator(src, dst, ctx(src, dst))
        out = tr.feed(body[:n]) + tr.fail(err)
        assert tr.close() == b"" and tr.fail(err) == b""
        if outcome == "end":
            assert out == translate(src, dst, [body[:n]])
            check(dst, out, "end")
        else:
            check(dst, out, "error")
