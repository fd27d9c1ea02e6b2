"""The server on real sockets (127.0.0.1, ephemeral ports, uvloop), clients written by hand.

Theory: test_protocol.py proves the state machine against fakes; this file proves the same
behaviour survives a real transport: TCP_NODELAY, write_eof/lingering close, pause_writing from a
real socket buffer, EOF from a client that goes away. Each test runs its own uvloop loop
(``uvloop.run``), so nothing depends on the pytest-asyncio loop policy. Responses are parsed with
an h11 client; timeouts use sub-second limits and only bound waits, never measure speed.
"""

from __future__ import annotations

import asyncio
import socket

import h11
import orjson
import uvloop

from plexus.server.protocol import ServerLimits, start_server

FAST = ServerLimits(max_body_bytes=1000, max_header_bytes=2048, keepalive_timeout=0.3, header_timeout=0.3)
GET = b"GET /g HTTP/1.1\r\nhost: x\r\n\r\n"


def post(path: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n%s\r\n%s" % (path, len(body), extra, body)


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.h = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, port: int) -> "Client":
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def _event(self):
        while (ev := self.h.next_event()) is h11.NEED_DATA:
            data = await asyncio.wait_for(self.reader.read(65536), 5)
            self.h.receive_data(data)
        return ev

    async def response(self, method: bytes = b"GET", raw: bool = False):
        """(status, headers, body[, raw chunks as received]) of the next response."""
        if self.h.our_state is h11.DONE and self.h.their_state is h11.DONE:
            self.h.start_next_cycle()
        self.h.send(h11.Request(method=method, target="/", headers=[("host", "x"), ("content-length", "0")]))
        self.h.send(h11.EndOfMessage())
        while not isinstance(ev := await self._event(), h11.Response):
            assert isinstance(ev, h11.InformationalResponse), ev
        body = b""
        while isinstance(data := await self._event(), h11.Data):
            body += data.data
        assert isinstance(data, h11.EndOfMessage), data
        return ev.status_code, dict(ev.headers), body

    async def at_eof(self) -> bool:
        try:
            return await asyncio.wait_for(self.reader.read(1), 5) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.writer.close()


async def echo(req, resp):
    if req.path == b"/stream":
        resp.start(200, [(b"content-type", b"text/event-stream")])
        for i in range(3):
            await resp.write(b"data: %d\n\n" % i)
        resp.end()
    elif req.path == b"/boom":
        raise ValueError("handler bug (expected by the test)")
    elif req.path == b"/nodelay":
        sock = resp._transport.get_extra_info("socket")
        resp.send(200, [], b"%d" % sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    else:
        resp.send(200, [(b"content-type", b"application/json")],
                  orjson.dumps({"path": req.path.decode(), "body": req.body.decode()}))


def serve(scenario, handler=echo, limits: ServerLimits = FAST):
    async def main():
        server = await start_server(handler, "127.0.0.1", 0, limits)
        try:
            await asyncio.wait_for(scenario(server.sockets[0].getsockname()[1]), 20)
        finally:
            server.close()
    uvloop.run(main())


def test_keep_alive_pipelining_chunked_and_nodelay():
    async def scenario(port):
        c = await Client.open(port)
        for i in range(3):
            await c.send(post(b"/k%d" % i, b"b%d" % i))
            status, _, body = await c.response(b"POST")
            assert status == 200 and orjson.loads(body) == {"path": "/k%d" % i, "body": "b%d" % i}
        await c.send(post(b"/p1", b"one") + post(b"/p2", b"two"))  # one write, two requests
        assert [orjson.loads((await c.response(b"POST"))[2])["path"] for _ in range(2)] == ["/p1", "/p2"]
        await c.send(b"POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
                     b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        assert orjson.loads((await c.response(b"POST"))[2])["body"] == "abcde"
        await c.send(b"GET /nodelay HTTP/1.1\r\nhost: x\r\n\r\n")
        assert (await c.response())[2] == b"1"
        c.close()
    serve(scenario)


def test_expect_100_continue():
    async def scenario(port):
        c = await Client.open(port)
        await c.send(b"POST /e HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nexpect: 100-continue\r\n\r\n")
        assert await asyncio.wait_for(c.reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
        await c.send(b"abc")
        c.h.receive_data(b"HTTP/1.1 100 Continue\r\n\r\n")  # what the raw read consumed
        assert orjson.loads((await c.response(b"POST"))[2])["body"] == "abc"
        c.close()
    serve(scenario)


def test_streaming_response_framing():
    async def scenario(port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        expected = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                    b"9\r\ndata: 0\n\n\r\n9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\n0\r\n\r\n")
        assert await asyncio.wait_for(reader.readexactly(len(expected)), 5) == expected
        writer.close()
    serve(scenario)


def test_rejections_close_and_server_keeps_serving():
    cases = [
        (post(b"/big", b"x" * 1001), 413),  # declared
        (b"POST /big HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n" + b"100\r\n" + b"x" * 256 + b"\r\n"
         + b"300\r\n" + b"x" * 768 + b"\r\n0\r\n\r\n", 413),  # chunked, passes the limit mid-body
        (b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 3000 + b"\r\n\r\n", 431),
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ]

    async def scenario(port):
        good = await Client.open(port)
        for raw, status in cases:
            bad = await Client.open(port)
            await bad.send(raw)
            got, headers, body = await bad.response(b"POST")
            assert (got, headers[b"connection"]) == (status, b"close"), raw[:60]
            assert orjson.loads(body)["error"]["type"] == "invalid_request_error"
            assert await bad.at_eof()
            bad.close()
            await good.send(GET)  # the other connection is unaffected
            assert (await good.response())[0] == 200
        good.close()
    serve(scenario)


def test_slow_headers_and_idle_connections_are_closed():
    async def scenario(port):
        slow = await Client.open(port)
        other = await Client.open(port)
        await slow.send(b"GET / HTTP/1.1\r\n")
        for _ in range(10):  # trickle for 0.5 s (> header_timeout) on one connection, serve another
            await asyncio.sleep(0.05)
            try:
                await slow.send(b"x: y\r\n")
            except ConnectionError:
                break
            await other.send(GET)
            assert (await other.response())[0] == 200
        assert (await slow.response())[0] == 408
        assert await slow.at_eof()
        idle = await Client.open(port)
        await idle.send(GET)
        assert (await idle.response())[0] == 200
        assert await idle.at_eof()  # keepalive_timeout 0.3 s later
    serve(scenario)


def test_handler_exception_is_500_and_connection_stays_usable():
    async def scenario(port):
        c = await Client.open(port)
        await c.send(b"GET /boom HTTP/1.1\r\nhost: x\r\n\r\n" + GET)
        status, _, body = await c.response()
        assert status == 500 and orjson.loads(body)["error"]["message"]
        assert (await c.response())[0] == 200
        c.close()
    serve(scenario)


def test_client_disconnect_cancels_handler():
    events: list[str] = []
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def handler(req, resp):
        resp.start(200, [])
        await resp.write(b"first")
        started.set()
        try:
            await asyncio.Event().wait()  # an upstream that never answers
        except asyncio.CancelledError:
            events.append("cancelled")
            cancelled.set()
            raise

    async def scenario(port):
        c = await Client.open(port)
        await c.send(GET)
        await asyncio.wait_for(started.wait(), 5)
        c.writer.transport.abort()
        await asyncio.wait_for(cancelled.wait(), 5)

    serve(scenario, handler)
    assert events == ["cancelled"]


def test_slow_reader_backpressure_blocks_the_handler():
    progress = {"written": 0}
    chunk = b"z" * (1 << 20)
    total = 32  # MiB; the kernel send buffer holds at most 4 MiB (tcp_wmem max) of it

    async def handler(req, resp):
        resp.start(200, [])
        for _ in range(total):
            await resp.write(chunk)
            progress["written"] += 1
        resp.end()

    async def scenario(port):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(GET)
        for _ in range(30):  # the client reads nothing for a while
            await asyncio.sleep(0.01)
        assert 1 <= progress["written"] <= 8, "write() kept going while the client was not reading"
        received, tail = 0, b""
        while not tail.endswith(b"\r\n0\r\n\r\n"):
            data = await asyncio.wait_for(reader.read(1 << 20), 5)
            assert data, "connection closed before the end of the stream"
            received += len(data)
            tail = (tail + data)[-16:]
        assert progress["written"] == total and received > total * len(chunk)
        writer.close()

    serve(scenario, handler)
