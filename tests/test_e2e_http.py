"""End-to-end HTTP/1.1 behaviour of the real Plexus process, on raw sockets.

Theory: SDKs only exercise the polite subset of HTTP, so here requests are written by hand and
responses parsed with an h11 client (it is told a request went out, then fed the socket bytes).
Covered: keep-alive, pipelining, chunked request bodies, a malformed request (400, and the server
keeps serving), the body limit (413, declared and chunked), concurrent streams, and a client that
disconnects mid-stream or mid-wait (the fake upstream must see its own connection closed promptly:
Plexus cancels the upstream call instead of finishing it for nobody).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import h11
import httpx
import pytest

from fake_upstream import CLIENT_KEY, DEFAULT_TEXT, Reply, openai_stream, parse_sse

AUTH = b"authorization: Bearer " + CLIENT_KEY.encode() + b"\r\n"


class Resp:
    def __init__(self, status: int, headers: dict[bytes, bytes], body: bytes, chunks: list[bytes]):
        self.status, self.headers, self.body, self.chunks = status, headers, body, chunks

    def json(self):
        return json.loads(self.body)


class Raw:
    """A hand-driven client connection: write any bytes, read responses with h11."""

    def __init__(self, port: int, timeout: float = 10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.h = h11.Connection(h11.CLIENT)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _expect(self) -> None:
        if self.h.our_state is h11.DONE and self.h.their_state is h11.DONE:
            self.h.start_next_cycle()
        self.h.send(h11.Request(method="GET", target="/", headers=[("host", "x"), ("content-length", "0")]))
        self.h.send(h11.EndOfMessage())

    def _event(self):
        while True:
            ev = self.h.next_event()
            if ev is not h11.NEED_DATA:
                return ev
            self.h.receive_data(self.sock.recv(65536))

    def head(self) -> h11.Response:
        self._expect()
        ev = self._event()
        while isinstance(ev, h11.InformationalResponse):
            ev = self._event()
        assert isinstance(ev, h11.Response), ev
        return ev

    def next_data(self) -> bytes | None:
        ev = self._event()
        if isinstance(ev, h11.Data):
            return bytes(ev.data)
        assert isinstance(ev, h11.EndOfMessage), ev
        return None

    def response(self) -> Resp:
        ev = self.head()
        chunks = []
        while (d := self.next_data()) is not None:
            chunks.append(d)
        return Resp(ev.status_code, dict(ev.headers), b"".join(chunks), chunks)

    def at_eof(self) -> bool:
        self.sock.settimeout(3)
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, socket.timeout):
            return False

    def close(self) -> None:
        self.sock.close()


def post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST %s HTTP/1.1\r\nhost: plexus\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s%s\r\n%s"
            % (path.encode(), len(body), AUTH, extra, body))


GET_HEALTH = b"GET /health HTTP/1.1\r\nhost: plexus\r\n\r\n"
CHAT = json.dumps({"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}).encode()
CHAT_STREAM = json.dumps({"model": "gpt", "messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()


@pytest.fixture
def raw(plexus):
    conns: list[Raw] = []

    def make() -> Raw:
        conns.append(Raw(plexus.port))
        return conns[-1]
    yield make
    for c in conns:
        c.close()


def test_keep_alive_mixed_requests_one_socket(fake, raw):
    c = raw()
    for _ in range(3):
        c.send(GET_HEALTH)
        r = c.response()
        assert r.status == 200 and r.body.strip() == b"OK"
    c.send(post("/v1/chat/completions", CHAT))
    r = c.response()
    assert r.status == 200 and r.json()["choices"][0]["message"]["content"] == DEFAULT_TEXT
    c.send(post("/v1/chat/completions", CHAT_STREAM))
    r = c.response()
    assert r.status == 200 and r.headers.get(b"transfer-encoding") == b"chunked"
    assert parse_sse(r.body)[-1] == (None, "[DONE]")
    c.send(GET_HEALTH)
    assert c.response().status == 200


def test_upstream_connection_reused(fake, http):
    for _ in range(5):
        assert http.post("/v1/chat/completions", content=CHAT, headers={"content-type": "application/json"}
                         ).status_code == 200
    assert len({r.conn_id for r in fake.requests}) == 1, "sequential upstream calls should share one connection"


def test_pipelined_requests_answered_in_order(fake, raw):
    c = raw()
    c.send(post("/v1/chat/completions", CHAT) + b"GET /v1/models HTTP/1.1\r\nhost: plexus\r\n\r\n" + GET_HEALTH)
    r1, r2, r3 = c.response(), c.response(), c.response()
    assert r1.status == 200 and r1.json()["model"] == "up-gpt"
    assert r2.status == 200 and r2.json()["object"] == "list"
    assert r3.status == 200 and r3.body.strip() == b"OK"


def test_chunked_request_body(fake, raw):
    body = json.dumps({"model": "gpt", "messages": [{"role": "user", "content": "héllo wörld"}],
                       "x_unknown": 1}, ensure_ascii=False).encode()
    c = raw()
    c.send(b"POST /v1/chat/completions HTTP/1.1\r\nhost: plexus\r\ncontent-type: application/json\r\n"
           + AUTH + b"transfer-encoding: chunked\r\n\r\n")
    cut = body.index("é".encode()) + 1  # split inside a UTF-8 sequence
    for piece in (body[:7], body[7:cut], body[cut:]):
        c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
    c.send(b"0\r\n\r\n")
    r = c.response()
    assert r.status == 200, r.body
    assert fake.last.json == {**json.loads(body), "model": "up-gpt"}


@pytest.mark.parametrize("garbage", [b"THIS IS NOT HTTP\r\n\r\n", b"GET / HTTP/1.1\r\nbad header line\r\n\r\n",
                                     b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n"
                                     b"transfer-encoding: chunked\r\n\r\n0\r\n\r\n"])
def test_malformed_request_400_then_still_serving(fake, raw, garbage):
    bystander = raw()
    c = raw()
    c.send(garbage)
    assert c.response().status == 400
    assert c.at_eof(), "the connection is closed after a malformed request"
    assert fake.requests == []
    bystander.send(GET_HEALTH)
    assert bystander.response().status == 200
    fresh = raw()
    fresh.send(GET_HEALTH)
    assert fresh.response().status == 200


def test_body_over_limit_413(fake, plexus, raw):
    c = raw()
    c.send(b"POST /v1/chat/completions HTTP/1.1\r\nhost: plexus\r\ncontent-type: application/json\r\n"
           b"content-length: %d\r\n\r\n" % (plexus.max_body + 1))
    assert c.response().status == 413  # answered without reading the body

    c = raw()
    c.send(b"POST /v1/chat/completions HTTP/1.1\r\nhost: plexus\r\ntransfer-encoding: chunked\r\n\r\n")
    piece = b"x" * 65536
    try:
        for _ in range(plexus.max_body // len(piece) + 2):
            c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
    except OSError:
        pass  # the server may stop reading once over the limit
    assert c.response().status == 413
    assert fake.requests == []
    ok = raw()
    ok.send(GET_HEALTH)
    assert ok.response().status == 200


def test_concurrent_streams(fake, base_url):
    def one(i):
        body = {"model": "gpt", "messages": [{"role": "user", "content": str(i)}], "stream": True}
        with httpx.Client(base_url=base_url, timeout=10) as c:
            r = c.post("/v1/chat/completions", json=body)
        text = "".join(json.loads(d)["choices"][0]["delta"].get("content") or ""
                       for _, d in parse_sse(r.content) if d != "[DONE]")
        return r.status_code, text

    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(one, range(16)))
    assert results == [(200, DEFAULT_TEXT)] * 16
    assert sorted(int(r.json["messages"][0]["content"]) for r in fake.requests) == list(range(16))


def test_client_disconnect_mid_stream_closes_upstream(fake, raw):
    hold = threading.Event()
    reply = Reply.sse(openai_stream("up-gpt"), hold=hold)
    fake.script(reply)
    try:
        c = raw()
        c.send(post("/v1/chat/completions", CHAT_STREAM))
        assert c.head().status_code == 200
        assert c.next_data()  # the first event is through; the upstream is now holding the rest
        c.close()
        req = fake.wait_requests(1)[0]
        assert req.closed.wait(3), "Plexus kept the upstream stream open after its client left"
        assert req.closed_by_peer
        assert reply.sent == 1
    finally:
        hold.set()


def test_client_disconnect_while_waiting_closes_upstream(fake, raw):
    fake.script(Reply(hang=True))
    c = raw()
    c.send(post("/v1/chat/completions", CHAT))
    req = fake.wait_requests(1)[0]
    c.close()
    assert req.closed.wait(3), "Plexus kept waiting on the upstream after its client left"
    assert req.closed_by_peer


@pytest.mark.parametrize("alias", ["gpt", "claude"])  # relayed, and translated to an OpenAI client
def test_client_that_reads_nothing_is_cut_after_write_timeout_and_upstream_released(fake, raw, alias):
    """server.write_timeout is 2 s in the test config. The client asks for a ~20 MB stream and
    never reads: Plexus pauses the upstream while the client's buffers are full, then after the
    write timeout drops the client and closes the upstream connection (it is never pooled)."""
    from fake_upstream import anthropic_stream

    pad = "x" * 65536
    if alias == "gpt":
        chunks = openai_stream("up-gpt", pieces=[pad] * 300)
    else:
        chunks = anthropic_stream("up-claude", pieces=[pad] * 300)
    reply = Reply.sse(chunks)
    fake.script(reply)
    c = raw()
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    body = json.dumps({"model": alias, "messages": [{"role": "user", "content": "hi"}], "stream": True,
                       "max_tokens": 10}).encode()
    c.send(post("/v1/chat/completions", body))
    req = fake.wait_requests(1)[0]
    started = time.monotonic()
    assert req.closed.wait(10), "Plexus held the upstream for a client that reads nothing"
    assert req.closed_by_peer and time.monotonic() - started >= 1.5  # not before the write timeout
    c.sock.settimeout(5)  # and the client's connection is gone: what it can still read ends in EOF/reset
    try:
        while c.sock.recv(1 << 20):
            pass
    except ConnectionResetError:
        pass
    # reset, not a graceful close: what was queued for it is dropped, not trickled out for minutes
    assert time.monotonic() - started < 8
