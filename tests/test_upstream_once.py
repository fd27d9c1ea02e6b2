"""The upstream call's two promises: a request is never sent twice, and a non-stream body is bounded.

Theory: "sent once" is seen from the server, which records every request it read. A request that
reached the server on a reused keep-alive connection and got no answer (close, late close, reset,
a cut head) must surface as a 502 through ``call.mapped``, with the server's log showing it once.
A pooled connection that was already dead when picked must be replaced without the caller noticing,
both when the loop has processed the peer's FIN and when it has not yet. The second case needs a
server outside the loop: a blocking socket server in a thread closes (or resets, or writes stray
bytes) while the test blocks the loop with ``time.sleep``, so the FIN is in the socket but no
callback has seen it; only the transport's socket probe can tell. The body cap is checked at the
``call.read_all`` level: with a fake response (how much was pulled before giving up) and against
the real transport (the connection is aborted, never pooled).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time

import httpx
import pytest

from plexus.errors import GatewayError
from plexus.upstream.call import MAX_ERROR_BODY, open_upstream, read_all
from plexus.upstream.transport import PlexusTransport
from test_transport import Upstream, read_request, reply, run, wait_close  # noqa: F401 (run: fixture)
from test_upstream_tls import provider


async def call_once(t, url: str, p=None) -> bytes:
    p = p or provider()
    r = await open_upstream(t, p, url, [(b"content-type", b"application/json")], b'{"n":1}')
    try:
        return await read_all(r, p)
    finally:
        await r.aclose()


def rst(writer) -> None:
    """Close with a TCP reset (SO_LINGER 0) instead of a FIN."""
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# -- a request that reached the server is never re-sent ------------------------------------------

@pytest.mark.parametrize("how", ["close", "late-close", "reset", "cut-head"])
def test_lost_answer_on_a_reused_connection_is_an_error_not_a_second_call(run, how):
    async def main():
        seen = []

        async def server(reader, writer):
            seen.append(await read_request(reader))
            writer.write(reply(b"first"))
            seen.append(await read_request(reader))  # the second request arrives ...
            if how == "late-close":  # ... the provider works on it for a while, then the connection dies
                await asyncio.sleep(0.1)
            elif how == "reset":
                rst(writer)
            elif how == "cut-head":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-")
        async with Upstream(server) as up:
            t = PlexusTransport()
            assert await call_once(t, up.url("/v1/a")) == b"first"
            with pytest.raises(GatewayError) as err:
                await call_once(t, up.url("/v1/b"))
            assert err.value.status == 502 and "provider 'p' connection failed" in err.value.message
            await asyncio.sleep(0.05)  # time for a retry to show up, if there were one
            assert up.accepted == 1 and [r[1] for r in seen] == ["/v1/a", "/v1/b"]
            await t.aclose()
    run(main)


def test_idle_close_seen_by_the_loop_is_replaced(run):
    async def main():
        seen = []

        async def server(reader, writer):
            seen.append(await read_request(reader))
            writer.write(reply(b"ok"))  # then the handler returns: the connection closes while idle
        async with Upstream(server) as up:
            t = PlexusTransport()
            assert await call_once(t, up.url("/a")) == b"ok"
            conn = next(iter(t._conns))
            while not conn.closed:
                await asyncio.sleep(0.005)
            assert await call_once(t, up.url("/b")) == b"ok"
            assert up.accepted == 2 and [r[1] for r in seen] == ["/a", "/b"]
            await t.aclose()
    run(main)


def _recv_request(c: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += c.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    n = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
              if line.lower().startswith(b"content-length:")), 0)
    while len(body) < n:
        body += c.recv(65536)
    return head.split(b" ")[1]


class ThreadServer:
    """Blocking server: connection 1 answers once, then on `release` closes/resets/sends junk."""

    def __init__(self, what: str) -> None:
        self.what, self.seen, self.accepted = what, [], 0
        self.release, self.done = threading.Event(), threading.Event()
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        first, _ = self.lsock.accept()
        self.accepted += 1
        self.seen.append(_recv_request(first))
        first.sendall(reply(b"one"))
        self.release.wait(5)
        if self.what == "rst":
            first.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if self.what == "junk":
            first.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")
        else:
            first.close()
        self.done.set()
        second, _ = self.lsock.accept()
        self.accepted += 1
        with second:
            self.seen.append(_recv_request(second))
            second.sendall(reply(b"two"))
            second.recv(1)  # until the client closes
        first.close()

    def close(self) -> None:
        self.lsock.close()
        self.thread.join(5)


@pytest.mark.parametrize("what", ["fin", "rst", "junk"])
def test_idle_death_the_loop_has_not_seen_yet_is_replaced(run, what):
    async def main():
        srv = ThreadServer(what)
        t = PlexusTransport()
        url = f"http://127.0.0.1:{srv.port}"
        assert await call_once(t, url + "/a") == b"one"
        conn = next(iter(t._conns))
        srv.release.set()
        srv.done.wait(5)
        time.sleep(0.05)  # blocks the loop: the FIN/RST/bytes reach the socket, no callback runs
        assert not conn.closed and not conn.chunks and not conn.transport.is_closing()
        assert conn.dead()  # only the socket probe knows
        assert not conn.dead(conn.idle_since + 0.001)  # just released: not probed (PROBE_AFTER)
        assert await call_once(t, url + "/b") == b"two"
        assert conn.closed and srv.seen == [b"/a", b"/b"] and srv.accepted == 2
        await t.aclose()
        await asyncio.to_thread(srv.close)  # (the loop must run for the abort to reach the server)
    run(main)


def test_live_idle_connection_is_not_dead(run):
    async def main():
        async def server(reader, writer):
            while (req := await read_request(reader)) is not None:
                writer.write(reply(req[1].encode()))
        async with Upstream(server) as up:
            t = PlexusTransport()
            for i in range(5):
                assert await call_once(t, up.url(f"/{i}")) == b"/%d" % i
            conn = next(iter(t._conns))
            assert not conn.dead() and conn.fd >= 0 and up.accepted == 1
            await t.aclose()
    run(main)


class WriteFails:
    """A transport whose write raises (a handle closed under us), everything else forwarded."""

    def __init__(self, real) -> None:
        self.real = real

    def write(self, data) -> None:
        raise RuntimeError("unable to perform operation: handle is closed")

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_write_that_raises_before_sending_picks_another_connection(run):
    async def main():
        seen = []

        async def server(reader, writer):
            while (req := await read_request(reader)) is not None:
                seen.append(req[1])
                writer.write(reply(b"ok"))
        async with Upstream(server) as up:
            t = PlexusTransport()
            await call_once(t, up.url("/a"))
            conn = next(iter(t._conns))
            conn.transport = WriteFails(conn.transport)
            assert await call_once(t, up.url("/b")) == b"ok"
            assert conn.closed and seen == ["/a", "/b"] and up.accepted == 2
            await t.aclose()
    run(main)


# -- call.read_all: the non-stream body cap ---------------------------------------------------------

class FakeBody:
    """A response whose body is `n` chunks of `size` bytes; counts what was pulled."""

    def __init__(self, n: int, size: int = 1000, declared: int | None = None) -> None:
        self.n, self.size, self.declared = n, size, declared
        self.pulled, self.closed, self.status_code, self.raw_headers = 0, False, 200, []

    def declared_length(self):
        return self.declared

    def complete_body(self):
        return None

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        if self.pulled >= self.n:
            raise StopAsyncIteration
        self.pulled += 1
        return b"x" * self.size

    async def aclose(self) -> None:
        self.closed = True


async def test_cap_stops_one_chunk_past_the_limit():
    body = FakeBody(10 ** 6)
    with pytest.raises(GatewayError) as err:
        await read_all(body, provider("big", max_response_bytes=5000))
    assert err.value.status == 502 and err.value.kind == "bad_gateway"
    assert err.value.message == "provider 'big' sent a response larger than 5000 bytes"
    assert body.pulled == 6 and body.closed


async def test_cap_edges_and_error_bodies():
    assert len(await read_all(FakeBody(5), provider(max_response_bytes=5000))) == 5000  # exactly the cap: fine
    declared = FakeBody(10 ** 6, declared=10 ** 9)
    with pytest.raises(GatewayError, match="larger than 5000 bytes"):  # Content-Length says so: read nothing
        await read_all(declared, provider(max_response_bytes=5000))
    assert declared.pulled == 0 and declared.closed
    explicit = FakeBody(10 ** 6)  # an explicit limit is a cap too
    with pytest.raises(GatewayError, match="larger than 3500 bytes"):
        await read_all(explicit, provider(max_response_bytes=10), 3500)
    assert explicit.pulled == 4 and explicit.closed
    truncated = FakeBody(10 ** 6)  # truncate=True (error bodies): the first ~limit bytes, no error
    assert len(await read_all(truncated, provider(max_response_bytes=10), 3500, truncate=True)) == 4000
    assert not truncated.closed  # the caller's aclose() aborts the rest


def test_cap_against_the_real_transport_aborts_the_connection(run):
    async def main():
        closed = []

        async def server(reader, writer):
            try:
                while (req := await read_request(reader)) is not None:
                    if req[1] == "/chunked":  # 64 KiB chunks, more than the cap
                        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                        for _ in range(64):
                            writer.write(b"10000\r\n" + b"y" * 65536 + b"\r\n")
                            await writer.drain()
                        writer.write(b"0\r\n\r\n")
                    elif req[1] == "/declared":  # announces 1 GiB, sends 1 byte, waits
                        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\ny")
                    else:  # small, but over a tiny cap, all in the first read
                        writer.write(reply(b"z" * 300))
            finally:
                closed.append(True)
        async with Upstream(server) as up:
            t = PlexusTransport()
            for path, cap in (("/chunked", 200_000), ("/declared", 200_000), ("/small", 100)):
                with pytest.raises(GatewayError, match=f"larger than {cap} bytes") as err:
                    await call_once(t, up.url(path), provider(max_response_bytes=cap))
                assert err.value.status == 502
            await asyncio.sleep(0.05)
            key = (b"http", b"127.0.0.1", up.port)
            # /chunked and /declared were aborted mid-body; /small had arrived whole: its connection is pooled
            assert len(closed) == 2 and up.accepted == 3 and t._pool.idle(key) == 1
            await t.aclose()
    run(main)


async def test_cap_through_a_plain_httpx_transport():
    t = httpx.MockTransport(lambda request: httpx.Response(
        200, headers={"content-length": "5000"}, stream=httpx.ByteStream(b"w" * 5000)))
    p = provider(max_response_bytes=4096)
    r = await open_upstream(t, p, "http://up.test/v1/x", [], b"{}")
    with pytest.raises(GatewayError, match="larger than 4096 bytes"):
        await read_all(r, p)
    r = await open_upstream(t, p, "http://up.test/v1/x", [], b"{}")
    assert len(await read_all(r, p, MAX_ERROR_BODY)) == 5000  # an explicit, larger limit
    r = await open_upstream(t, p, "http://up.test/v1/x", [], b"{}")
    assert len(await read_all(r, p, 100, truncate=True)) == 5000  # one chunk: truncated after it
