"""Self-tests of tests/fake_upstream.py, with no Plexus involved.

Theory: the e2e suite is only as trustworthy as its fake. Its default replies must be what the
official SDKs accept (so the SDKs are pointed straight at the fake here), and each scripted reply
kind (status + headers, raw bytes, streams with delay/hold/cut, hang, close) must do on the wire
what its name says, as seen by a plain httpx client.
"""

from __future__ import annotations

import socket
import threading

import httpx
import pytest

from fake_upstream import (DEFAULT_PIECES, DEFAULT_TEXT, FakeUpstream, Reply, anthropic_error, gemini_sse,
                           openai_error, openai_stream, parse_sse)


@pytest.fixture(scope="module")
def fake():
    """The fake's own wire behaviour is the same with or without TLS: test it in plain HTTP
    (overrides the session fixture that runs the e2e suites over both)."""
    with FakeUpstream() as f:
        yield f


@pytest.fixture
def fx(fake):
    with httpx.Client(base_url=fake.base_url, timeout=5) as c:
        yield c


def test_openai_default_non_stream_and_record(fake, fx):
    body = {"model": "m1", "messages": [{"role": "user", "content": "hi"}], "x_unknown": [1, {"a": None}]}
    r = fx.post("/v1/chat/completions?q=1&q=2", json=body, headers={"Authorization": "Bearer k", "X-Two": "a"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json()["model"] == "m1" and r.json()["choices"][0]["message"]["content"] == DEFAULT_TEXT
    req = fake.last
    assert (req.method, req.path, req.query) == ("POST", "/v1/chat/completions", {"q": ["1", "2"]})
    assert req.json == body and req.headers["authorization"] == "Bearer k" and req.headers.get("x-two") == "a"
    assert "X-TWO" in req.headers and "nope" not in req.headers


def test_openai_default_stream_with_usage(fx):
    body = {"model": "m", "messages": [], "stream": True, "stream_options": {"include_usage": True}}
    with fx.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.headers["transfer-encoding"] == "chunked"
        raw = list(r.iter_raw())
    events = parse_sse(b"".join(raw))
    assert events[-1] == (None, "[DONE]")
    assert '"choices":[]' in events[-2][1] and '"usage"' in events[-2][1]
    assert len(raw) >= len(events)  # written one event per chunk


def test_openai_sdk_against_fake(fake):
    import openai

    c = openai.OpenAI(base_url=fake.base_url + "/v1", api_key="k", max_retries=0)
    r = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == DEFAULT_TEXT and r.usage.total_tokens == 18
    s = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True,
                                  stream_options={"include_usage": True})
    chunks = list(s)
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == DEFAULT_TEXT
    assert chunks[-1].usage.completion_tokens == 6
    with c.chat.completions.stream(model="m", messages=[{"role": "user", "content": "hi"}]) as st:
        assert st.get_final_completion().choices[0].message.content == DEFAULT_TEXT


def test_anthropic_sdk_against_fake(fake):
    import anthropic

    c = anthropic.Anthropic(base_url=fake.base_url, api_key="k", max_retries=0)
    m = c.messages.create(model="c", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert m.content[0].text == DEFAULT_TEXT and m.model == "c"
    with c.messages.stream(model="c", max_tokens=10, messages=[{"role": "user", "content": "hi"}]) as st:
        final = st.get_final_message()
    assert final.content[0].text == DEFAULT_TEXT and final.usage.output_tokens == 6
    # anthropic 2.x sends the key as "authorization: Bearer" (older SDKs: x-api-key)
    h = fake.last.headers
    assert fake.last.path == "/v1/messages" and "k" in (h.get("x-api-key"), h.get("authorization", "")[7:])


@pytest.mark.parametrize("version", [None, "v1beta"])
def test_genai_sdk_against_fake(fake, version):
    from google import genai
    from google.genai import types

    c = genai.Client(api_key="k", vertexai=False, http_options=types.HttpOptions(
        base_url=fake.base_url, api_version=version))
    r = c.models.generate_content(model="g1", contents="hi")
    assert r.text == DEFAULT_TEXT
    assert fake.last.path == f"/{version or 'v1'}/models/g1:generateContent"
    parts = [ch.text for ch in c.models.generate_content_stream(model="g1", contents="hi")]
    assert parts == list(DEFAULT_PIECES)
    assert fake.last.query == {"alt": ["sse"]}


def test_gemini_sse_is_crlf_and_array_form(fx):
    with fx.stream("POST", "/v1beta/models/g:streamGenerateContent?alt=sse", json={"contents": []}) as r:
        data = r.read()
    assert data == b"".join(gemini_sse("g")) and data.endswith(b"}\r\n\r\n")
    r = fx.post("/v1beta/models/g:streamGenerateContent", json={"contents": []})
    arr = r.json()
    assert [o["candidates"][0]["content"]["parts"][0]["text"] for o in arr] == list(DEFAULT_PIECES)
    assert b"\n,\r\n" in r.content


def test_script_fifo_status_headers_raw(fake, fx):
    fake.script(Reply(429, json=openai_error("slow down", "rate_limit_exceeded"), headers={"retry-after": "7"}),
                Reply(body=b"<html>oops</html>", content_type="text/html"),
                lambda req: Reply(529, json=anthropic_error("overloaded_error", req.path)))
    r1 = fx.post("/v1/chat/completions", json={})
    r2 = fx.post("/v1/chat/completions", json={})
    r3 = fx.post("/x/messages", json={})
    r4 = fx.post("/v1/chat/completions", json={"model": "d"})
    assert (r1.status_code, r1.headers["retry-after"], r1.json()["error"]["message"]) == (429, "7", "slow down")
    assert (r2.status_code, r2.content, r2.headers["content-type"]) == (200, b"<html>oops</html>", "text/html")
    assert r3.status_code == 529 and r3.json()["error"]["message"] == "/x/messages"
    assert r4.json()["model"] == "d"  # queue empty: default again
    assert fake.connections_opened >= 1 and len({q.conn_id for q in fake.requests}) == 1  # keep-alive


def test_stream_delay_and_cut(fake, fx):
    chunks = openai_stream("m")[:3]
    fake.script(Reply.sse(chunks, delay=0.01, cut=True))
    got = []
    with pytest.raises(httpx.RemoteProtocolError):
        with fx.stream("POST", "/v1/chat/completions", json={}) as r:
            for c in r.iter_raw():
                got.append(c)
    assert b"".join(got) == b"".join(chunks)
    assert fake.last.closed.wait(2) and not fake.last.closed_by_peer


def test_hold_gate_and_peer_close(fake, fx):
    hold = threading.Event()
    reply = Reply.sse(openai_stream("m"), hold=hold)
    fake.script(reply)
    with fx.stream("POST", "/v1/chat/completions", json={}) as r:
        it = r.iter_raw()
        first = next(it)
        assert first == openai_stream("m")[0] and reply.sent == 1
        hold.set()
        rest = b"".join(it)
    assert first + rest == b"".join(openai_stream("m")) and not reply.hold_timed_out

    # a client that goes away mid-stream: the fake sees its connection closed by the peer
    reply = Reply.sse(openai_stream("m"), hold=threading.Event())
    fake.script(reply)
    s = socket.create_connection(("127.0.0.1", fake.port))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
    assert s.recv(65536).startswith(b"HTTP/1.1 200 OK")
    s.close()
    req = fake.wait_requests(2)[-1]
    assert req.closed.wait(2) and req.closed_by_peer
    assert reply.done.wait(2) and reply.sent == 1


def test_hang_close_chunked_request_and_pipelining(fake, fx):
    fake.script(Reply(hang=True))
    with pytest.raises(httpx.ReadTimeout):
        fx.post("/v1/chat/completions", json={}, timeout=0.3)
    fake.script(Reply(close=True))
    with pytest.raises(httpx.RemoteProtocolError):
        fx.post("/v1/chat/completions", json={})

    def gen():
        yield b'{"model":'
        yield b'"chunky"}'
    r = fx.post("/v1/chat/completions", content=gen())
    assert r.json()["model"] == "chunky" and fake.last.headers["transfer-encoding"] == "chunked"

    s = socket.create_connection(("127.0.0.1", fake.port), timeout=5)
    one = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s"
    s.sendall(one % (13, b'{"model":"a"}') + one % (13, b'{"model":"b"}'))
    data = b""
    while data.count(b"chatcmpl-fake") < 2:
        data += s.recv(65536)
    s.close()
    assert data.index(b'"model":"a"') < data.index(b'"model":"b"')
    s = socket.create_connection(("127.0.0.1", fake.port), timeout=5)
    s.sendall(b"garbage\r\n\r\n")
    assert s.recv(1000).startswith(b"HTTP/1.1 400")
    s.close()
