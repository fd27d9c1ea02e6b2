"""HttpProtocol driven by hand: a fake transport, data_received(bytes), and a fake clock.

Theory (model: uvicorn tests MockTransport/MockLoop): the protocol only talks to its transport
(write/close/pause) and to four loop methods (time, call_at, call_soon, create_task). Faking
both makes every behaviour deterministic: timeouts fire when the test advances the clock, and the
output is parsed back with an h11 *client*, so framing errors fail the test. Every test runs
twice, with the fast request parser and with h11 alone (fixture ``path``). Input is fed split at
every byte boundary (STYLE habit 2); hypothesis throws garbage at the protocol (only a
dispatched request or a 4xx and a closed connection may come out) and holds the fast parser to
h11's results (that property lives in test_messages.py).
"""

from __future__ import annotations

import asyncio

import h11
import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from plexus.server.messages import Request
from plexus.server.protocol import HIGH_WATER, HttpProtocol, ServerLimits

FAST = [True]


@pytest.fixture(autouse=True, params=[True, False], ids=["fast", "h11"])
def path(request):
    FAST[0] = request.param
    return request.param


class FakeTransport:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = self.eof = self.read_paused = False

    def write(self, data: bytes) -> None:
        assert not self.closed and not self.eof, "write after close/write_eof"
        self.data += data

    def writelines(self, items) -> None:
        for item in items:
            self.write(item)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None:
        self.read_paused = True

    def resume_reading(self) -> None:
        self.read_paused = False

    def get_extra_info(self, name, default=None):
        return default

    def take(self) -> bytes:
        out = bytes(self.data)
        self.data.clear()
        return out


class FakeTimer:
    def __init__(self, when, callback):
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """The real loop for tasks and call_soon; a hand-advanced clock for timers."""

    def __init__(self) -> None:
        self.real = asyncio.get_running_loop()
        self.now = 1000.0
        self.timers: list[FakeTimer] = []
        self.call_soon, self.create_task = self.real.call_soon, self.real.create_task

    def time(self) -> float:
        return self.now

    def call_at(self, when, callback):
        self.timers.append(FakeTimer(when, callback))
        return self.timers[-1]

    def pending(self) -> list[FakeTimer]:
        return [t for t in self.timers if not t.cancelled]

    def advance(self, seconds: float) -> None:
        self.now += seconds
        while due := sorted((t for t in self.pending() if t.when <= self.now), key=lambda t: t.when):
            for timer in due:
                self.timers.remove(timer)
                timer.callback()


async def settle(n: int = 10) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


class App:
    """A recording handler: echo by default; ``gate`` holds a handler until released."""

    def __init__(self, behaviour=None) -> None:
        self.requests: list[Request] = []
        self.behaviour = behaviour
        self.gate: asyncio.Event | None = None
        self.cancelled = self.active = 0

    async def __call__(self, req: Request, resp) -> None:
        self.requests.append(req)
        self.active += 1
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.behaviour is not None:
                await self.behaviour(req, resp)
            else:
                resp.send(200, [(b"content-type", b"application/json")],
                          orjson.dumps({"path": req.path.decode(), "n": len(self.requests), "len": len(req.body)}))
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.active -= 1


def make(app, limits: ServerLimits = ServerLimits()):
    loop = FakeLoop()
    proto = HttpProtocol(app, limits, loop, fast_path=FAST[0])
    transport = FakeTransport()
    proto.connection_made(transport)
    return proto, transport, loop


def parse(data: bytes, methods=(b"GET",)) -> list[tuple[int, dict, bytes]]:
    """Parse server output with an h11 client, one response per request method given."""
    client = h11.Connection(h11.CLIENT)
    client.receive_data(data)
    out = []
    for method in methods:
        if client.our_state is h11.DONE:
            client.start_next_cycle()
        client.send(h11.Request(method=method, target="/", headers=[("host", "x"), ("content-length", "0")]))
        client.send(h11.EndOfMessage())
        head, body = None, b""
        while not isinstance(ev := client.next_event(), h11.EndOfMessage):
            assert ev is not h11.NEED_DATA, "incomplete response in %r" % data
            if isinstance(ev, h11.Response):
                head = ev
            elif isinstance(ev, h11.Data):
                body += ev.data
        out.append((head.status_code, dict(head.headers), body))
    return out


def post(path: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n%s\r\n%s" % (path, len(body), extra, body)


GET = b"GET /a?q=1 HTTP/1.1\r\nhost: x\r\nX-Thing: One\r\n\r\n"
CHUNKED = (b"POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n")


def error_of(body: bytes) -> dict:
    err = orjson.loads(body)["error"]
    assert err["type"] == "invalid_request_error" and err["message"]
    return err


# --- requests ---------------------------------------------------------------------------------


async def test_request_fields_and_keep_alive():
    app = App()
    proto, t, loop = make(app)
    for i in range(3):
        proto.data_received(GET)
        await settle()
        [(status, headers, body)] = parse(t.take())
        assert status == 200 and orjson.loads(body)["n"] == i + 1
        assert headers[b"content-length"] == str(len(body)).encode() and b"connection" not in headers
    req = app.requests[0]
    assert (req.method, req.target, req.path, req.query) == (b"GET", b"/a?q=1", b"/a", b"q=1")
    assert req.headers == [(b"host", b"x"), (b"x-thing", b"One")]
    assert req.header(b"x-thing") == b"One" and req.header(b"missing") is None and req.body == b""
    assert not t.closed


async def test_pipelined_requests_answered_in_order_one_at_a_time():
    app = App()
    app.gate = asyncio.Event()
    proto, t, loop = make(app)
    proto.data_received(post(b"/one", b"abc") + post(b"/two", b"defgh") + GET)
    await settle()
    assert [r.path for r in app.requests] == [b"/one"], "second request must wait for the first response"
    assert t.data == b""
    app.gate.set()
    await settle(30)
    out = parse(t.take(), [b"POST", b"POST", b"GET"])
    assert [orjson.loads(b)["path"] for _, _, b in out] == ["/one", "/two", "/a"]
    assert [r.body for r in app.requests] == [b"abc", b"defgh", b""]


async def test_pipelined_input_while_busy_pauses_reading_then_resumes():
    app = App()
    app.gate = asyncio.Event()
    proto, t, loop = make(app)
    proto.data_received(GET)
    await settle()
    big = post(b"/big", b"x" * (HIGH_WATER + 10))
    for i in range(0, len(big), 8192):
        proto.data_received(big[i:i + 8192])
    assert t.read_paused
    app.gate.set()
    await settle(30)
    assert not t.read_paused
    assert [r.path for r in app.requests] == [b"/a", b"/big"] and len(app.requests[1].body) == HIGH_WATER + 10


@pytest.mark.parametrize("raw", [CHUNKED, post(b"/c", b"hello world", b"x-a: b\r\n") + GET, GET + GET],
                         ids=["chunked", "content-length", "two-requests"])
async def test_every_split_gives_the_same_requests(raw):
    async def requests_for(pieces):
        app = App()
        proto, t, loop = make(app)
        for piece in pieces:
            proto.data_received(piece)
            await settle(3)
        await settle()
        return [(r.method, r.target, r.headers, r.body) for r in app.requests], t

    whole, _ = await requests_for([raw])
    assert len(whole) == raw.count(b" HTTP/1.1")
    for i in range(1, len(raw)):
        got, t = await requests_for([raw[:i], raw[i:]])
        assert got == whole, "split at %d" % i
        assert not t.closed
    got, _ = await requests_for([raw[i:i + 1] for i in range(len(raw))])
    assert got == whole


async def test_expect_100_continue():
    app = App()
    proto, t, loop = make(app)
    proto.data_received(b"POST /e HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\nexpect: 100-continue\r\n\r\n")
    await settle()
    assert t.take() == b"HTTP/1.1 100 Continue\r\n\r\n" and app.requests == []
    proto.data_received(b"body")
    await settle()
    assert app.requests[0].body == b"body" and parse(t.take(), [b"POST"])[0][0] == 200


# --- rejected requests --------------------------------------------------------------------------


def assert_rejected(t: FakeTransport, status: int) -> dict:
    [(got, headers, body)] = parse(t.take(), [b"POST"])
    assert got == status and headers[b"connection"] == b"close"
    assert t.eof or t.closed
    return error_of(body)


async def test_declared_body_over_limit_is_413_at_once_without_reading_or_100():
    app = App()
    proto, t, loop = make(app, ServerLimits(max_body_bytes=100))
    proto.data_received(b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 101\r\nexpect: 100-continue\r\n\r\n")
    await settle()
    assert not t.data.startswith(b"HTTP/1.1 100")
    assert_rejected(t, 413)
    proto.data_received(b"x" * 101 + GET)  # lingering: the rest is read and discarded
    await settle()
    assert app.requests == [] and t.data == b""
    loop.advance(2.5)
    assert t.closed


async def test_absurd_content_length_is_413():
    proto, t, loop = make(App(), ServerLimits(max_body_bytes=100))
    proto.data_received(b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: " + b"9" * 19 + b"\r\n\r\n")
    assert_rejected(t, 413)


async def test_body_exactly_at_limit_is_accepted():
    app = App()
    proto, t, loop = make(app, ServerLimits(max_body_bytes=11))
    proto.data_received(post(b"/x", b"x" * 11) + CHUNKED)
    await settle(30)
    assert [len(r.body) for r in app.requests] == [11, 11]


async def test_chunked_body_over_limit_is_413_as_soon_as_it_passes():
    app = App()
    proto, t, loop = make(app, ServerLimits(max_body_bytes=10))
    proto.data_received(b"POST /x HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n8\r\n12345678\r\n")
    assert t.data == b""
    proto.data_received(b"8\r\n1234")  # the limit is passed here; the chunk is not complete
    assert_rejected(t, 413)
    await settle()
    assert app.requests == []


async def test_header_block_over_limit_is_431_incomplete_and_complete():
    for tail in (b"", b"\r\n"):  # still arriving (h11's bound) and complete in one read (ours)
        proto, t, loop = make(App(), ServerLimits(max_header_bytes=1024))
        proto.data_received(b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 2000 + b"\r\n" + tail)
        assert_rejected(t, 431)


async def test_body_in_same_read_does_not_count_as_header_bytes():
    app = App()
    proto, t, loop = make(app, ServerLimits(max_header_bytes=1024))
    proto.data_received(post(b"/x", b"b" * 5000))
    await settle()
    assert len(app.requests[0].body) == 5000


@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",  # no Host
    b"GET / HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n",
    b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
])
async def test_malformed_request_is_400_and_close(raw):
    app = App()
    proto, t, loop = make(app)
    proto.data_received(raw)
    await settle()
    assert_rejected(t, 400)
    assert app.requests == []


async def test_content_length_with_transfer_encoding_is_400_and_close():
    app = App()
    proto, t, loop = make(app)
    proto.data_received(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n"
                        b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n")
    await settle()
    assert "Transfer-Encoding" in assert_rejected(t, 400)["message"]
    assert app.requests == []


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.binary(max_size=200), cut=st.integers(0, 200))
async def test_garbage_never_escapes(junk, cut):
    """Any input: requests are dispatched or a 4xx closes the connection; data_received never raises."""
    app = App()
    proto, t, loop = make(app, ServerLimits(max_header_bytes=128, max_body_bytes=64))
    raw = GET[:cut] + junk
    proto.data_received(raw[:cut])
    proto.data_received(raw[cut:])
    await settle()
    statuses = all_statuses(bytes(t.data))
    n = len(app.requests)
    assert statuses[:n] == [200] * n
    if t.eof:  # rejected: exactly one error response, after the answered requests
        assert len(statuses) == n + 1 and statuses[-1] in (400, 413, 431, 501)
    else:
        assert len(statuses) == n


def all_statuses(data: bytes) -> list[int]:
    client = h11.Connection(h11.CLIENT)
    client.receive_data(data)
    out = []
    while client.trailing_data[0]:
        if out:
            if client.their_state is not h11.DONE:
                break
            client.start_next_cycle()
        client.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
        client.send(h11.EndOfMessage())
        while not isinstance(ev := client.next_event(), h11.EndOfMessage):
            assert ev is not h11.NEED_DATA, data
            if isinstance(ev, h11.Response):
                out.append(ev.status_code)
    assert not client.trailing_data[0], "bytes after a closing response: %r" % data
    return out


# --- the fast path inside the protocol (the parser itself: test_messages.py) --------------------


async def test_fast_path_is_used_and_h11_sees_only_the_rest(path):
    app = App()
    proto, t, loop = make(app)
    proto.data_received(post(b"/one", b"1") + b"GET / HTTP/1.1\r\n")  # + a partial pipelined head
    await settle()
    assert [r.path for r in app.requests] == [b"/one"]
    if path:  # the fast path answered without h11 parsing anything
        assert proto._conn.their_state is h11.IDLE
    proto.data_received(b"host: x\r\n\r\n")
    await settle()
    assert [r.path for r in app.requests] == [b"/one", b"/"]
    assert [s for s, _, _ in parse(t.take(), [b"POST", b"GET"])] == [200, 200]


# --- responses ----------------------------------------------------------------------------------


async def stream(req, resp):
    resp.start(200, [(b"content-type", b"text/event-stream")])
    await resp.write(b"data: 1\n\n")
    await resp.write(b"")  # no-op: an empty chunk would end the body
    await resp.write(b"x" * 300)
    resp.end()


async def test_streaming_response_bytes_exactly():
    proto, t, loop = make(App(stream))
    proto.data_received(GET)
    await settle()
    assert t.take() == (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                        b"9\r\ndata: 1\n\n\r\n12c\r\n" + b"x" * 300 + b"\r\n0\r\n\r\n")
    assert not t.closed


async def test_fixed_response_bytes_exactly_and_no_body_statuses():
    async def h(req, resp):
        if req.path == b"/204":
            resp.send(204, [(b"x-a", b"1")], b"")
        else:
            resp.send(404, [(b"x-a", b"1")], b"nope")
    proto, t, loop = make(App(h))
    proto.data_received(b"GET /204 HTTP/1.1\r\nhost: x\r\n\r\nGET /404 HTTP/1.1\r\nhost: x\r\n\r\n")
    await settle(30)
    assert t.take() == (b"HTTP/1.1 204 No Content\r\nx-a: 1\r\n\r\n"
                        b"HTTP/1.1 404 Not Found\r\nx-a: 1\r\ncontent-length: 4\r\n\r\nnope")


async def test_http10_and_connection_close_end_the_connection():
    proto, t, loop = make(App(stream))
    proto.data_received(b"GET / HTTP/1.0\r\n\r\n")
    await settle()
    out = t.take()
    assert out.startswith(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
    assert out.endswith(b"\r\n\r\ndata: 1\n\n" + b"x" * 300) and t.closed  # close-delimited body
    for pieces in ([b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"],
                   [b"POST / HTTP/1.1\r\nhost: x\r\nconnection: keep-alive, Close\r\ncontent-length: 4\r\n\r\n", b"body"]):
        proto, t, loop = make(App())
        for piece in pieces:
            proto.data_received(piece)
        await settle()
        assert parse(t.take(), [b"POST"])[0][1][b"connection"] == b"close" and t.closed


async def test_head_request_gets_headers_only():
    proto, t, loop = make(App())
    proto.data_received(b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\n" + GET)
    await settle(30)
    (s1, h1, b1), (s2, h2, b2) = parse(t.take(), [b"HEAD", b"GET"])
    assert (s1, b1) == (200, b"") and int(h1[b"content-length"]) > 0 and s2 == 200 and b2


async def test_backpressure_write_waits_while_paused():
    proceed = asyncio.Event()
    done = []

    async def h(req, resp):
        resp.start(200, [])
        await resp.write(b"a")
        await proceed.wait()
        await resp.write(b"b")
        done.append(1)
        resp.end()

    proto, t, loop = make(App(h))
    proto.data_received(GET)
    await settle()
    proto.pause_writing()
    proto.pause_writing()  # idempotent
    proceed.set()
    await settle(20)
    assert not done and t.data.endswith(b"1\r\na\r\n"), "write() must wait while the transport is paused"
    proto.resume_writing()
    await settle()
    assert done and t.data.endswith(b"1\r\nb\r\n0\r\n\r\n")


async def test_disconnect_cancels_handler_and_drops_writes():
    app = App()
    app.gate = asyncio.Event()
    proto, t, loop = make(app)
    proto.data_received(GET)
    await settle()
    assert app.active == 1
    proto.connection_lost(None)
    await settle()
    assert app.cancelled == 1 and app.active == 0

    wrote = []

    async def h(req, resp):  # a handler that keeps writing after the client left
        resp.start(200, [])
        await resp.write(b"x")
        proto.connection_lost(ConnectionResetError())
        for _ in range(3):
            await resp.write(b"y")  # dropped, and no exception
        resp.end()
        resp.send(200, [], b"")  # even misuse is silent once the client is gone
        wrote.append(1)

    proto, t, loop = make(App(h))
    proto.data_received(GET)
    await settle()
    assert wrote == [1] and t.data.endswith(b"\r\n1\r\nx\r\n")


@pytest.mark.parametrize("kind", ["raise", "return"])
async def test_handler_failure_before_start_is_500_and_connection_survives(kind, caplog):
    async def h(req, resp):
        if req.path == b"/ok":
            resp.send(200, [], b"fine")
        elif kind == "raise":
            raise ValueError("boom")

    proto, t, loop = make(App(h))
    proto.data_received(GET + b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n")
    await settle(30)
    (s1, h1, b1), (s2, _, b2) = parse(t.take(), [b"GET", b"GET"])
    assert s1 == 500 and orjson.loads(b1)["error"]["message"] and (s2, b2) == (200, b"fine")
    assert "boom" in caplog.text if kind == "raise" else "without finishing" in caplog.text


@pytest.mark.parametrize("kind", ["raise", "return"])
async def test_handler_failure_mid_stream_closes_connection(kind):
    async def h(req, resp):
        resp.start(200, [])
        await resp.write(b"partial")
        if kind == "raise":
            raise RuntimeError("upstream died")

    proto, t, loop = make(App(h))
    proto.data_received(GET + GET)
    await settle(30)
    assert t.closed and not t.data.endswith(b"0\r\n\r\n") and t.data.count(b"HTTP/1.1") == 1


async def test_misuse_raises():
    errors = []

    async def h(req, resp):
        for call in (lambda: resp.end(), lambda: asyncio.ensure_future(resp.write(b"x"))):
            try:
                r = call()
                if r is not None:
                    await r
            except RuntimeError as e:
                errors.append(str(e))
        resp.send(200, [], b"")
        try:
            resp.start(200, [])
        except RuntimeError as e:
            errors.append(str(e))

    proto, t, loop = make(App(h))
    proto.data_received(GET)
    await settle(20)
    assert len(errors) == 3 and parse(t.take())[0][0] == 200


# --- timers -------------------------------------------------------------------------------------


async def test_slow_head_gets_408_after_header_timeout_others_unaffected():
    limits = ServerLimits(header_timeout=5, keepalive_timeout=60)
    proto, t, loop = make(App(), limits)
    proto.data_received(b"GET / HTTP/1.1\r\n")
    for _ in range(4):
        loop.advance(1)
        proto.data_received(b"x-slow: 1\r\n")  # trickling bytes do not extend the deadline
    assert not t.closed
    loop.advance(1.01)
    assert t.eof and parse(t.take())[0][0] == 408
    app = App()
    other, t2, loop2 = make(app, limits)
    other.data_received(GET)
    await settle()
    assert parse(t2.take())[0][0] == 200 and not t2.closed


@pytest.mark.parametrize("chunked", [False, True])
async def test_stalled_body_gets_408_after_body_timeout(chunked):
    proto, t, loop = make(App(), ServerLimits(header_timeout=5, body_timeout=3))
    if chunked:
        proto.data_received(b"POST /x HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab")
    else:
        proto.data_received(post(b"/x", b"0123456789")[:-3])
    loop.advance(2.9)
    assert not t.eof
    loop.advance(0.2)
    out = t.take()
    assert t.eof and parse(out, [b"POST"])[0][0] == 408 and b"body stalled" in out


@pytest.mark.parametrize("chunked", [False, True])
async def test_slow_upload_that_makes_progress_is_not_cut(chunked):
    """header_timeout covers the head only: a large body trickling in for far longer is served."""
    app = App()
    proto, t, loop = make(app, ServerLimits(header_timeout=5, body_timeout=3))
    body = b"x" * 200
    if chunked:
        proto.data_received(b"POST /up HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
        pieces = [b"a\r\n" + body[i:i + 10] + b"\r\n" for i in range(0, 200, 10)] + [b"0\r\n\r\n"]
    else:
        proto.data_received(b"POST /up HTTP/1.1\r\nhost: x\r\ncontent-length: 200\r\n\r\n")
        pieces = [body[i:i + 10] for i in range(0, 200, 10)]
    for piece in pieces:  # 2 s between pieces: ~40 s in all, 8x the header timeout
        loop.advance(2)
        assert not t.eof and not t.closed
        proto.data_received(piece)
    await settle()
    assert parse(t.take(), [b"POST"])[0][0] == 200 and app.requests[0].body == body


async def test_client_that_reads_nothing_is_cut_after_write_timeout():
    """A stream to a client whose socket buffer stays full: after write_timeout with nothing
    drained the connection is aborted and the handler (so the upstream call) is cancelled."""
    got_to = []

    async def streaming(req, resp):
        resp.start(200, [(b"content-type", b"text/event-stream")])
        got_to.append("started")
        proto.pause_writing()  # the transport's buffer passed its high-water mark
        await resp.write(b"data: 1\n\n")
        got_to.append("never")

    app = App(streaming)
    proto, t, loop = make(app, ServerLimits(write_timeout=0.05))
    proto.data_received(GET)
    await asyncio.sleep(0.2)  # asyncio.timeout runs on the real loop
    await settle()
    assert got_to == ["started"]
    assert getattr(t, "aborted", False)
    proto.connection_lost(None)  # what the transport reports after abort()
    await settle()
    assert app.cancelled == 1 and app.active == 0


async def test_writer_waits_while_client_drains_within_write_timeout():
    done = []

    async def streaming(req, resp):
        resp.start(200, [(b"content-type", b"text/event-stream")])
        proto.pause_writing()
        await resp.write(b"data: 1\n\n")
        resp.end()
        done.append(True)

    proto, t, loop = make(App(streaming), ServerLimits(write_timeout=5))
    proto.data_received(GET)
    await asyncio.sleep(0.05)
    assert not done
    proto.resume_writing()
    await settle()
    assert done and not getattr(t, "aborted", False) and b"data: 1" in t.take()


async def test_idle_keepalive_timeout_and_new_connection_timeout():
    limits = ServerLimits(header_timeout=5, keepalive_timeout=60)
    proto, t, loop = make(App(), limits)
    loop.advance(4.9)
    proto.data_received(GET)
    await settle()
    assert parse(t.take())[0][0] == 200
    loop.advance(59)
    assert not t.closed
    proto.data_received(GET)  # activity restarts the idle clock
    await settle()
    loop.advance(59)
    assert not t.closed and len(loop.pending()) == 1, "one timer per connection"
    loop.advance(1.01)
    assert t.closed and t.take().count(b"HTTP/1.1 200") == 1  # closed silently
    fresh, t2, loop2 = make(App(), limits)
    loop2.advance(5.01)
    assert t2.closed and t2.data == b""


async def test_busy_connection_has_no_deadline():
    app = App()
    app.gate = asyncio.Event()
    proto, t, loop = make(app, ServerLimits(header_timeout=1, keepalive_timeout=1))
    proto.data_received(GET)
    await settle()
    loop.advance(100)
    assert not t.closed
    app.gate.set()
    await settle()
    assert parse(t.take())[0][0] == 200
    loop.advance(1.01)
    assert t.closed
