"""PlexusTransport against small raw asyncio servers on 127.0.0.1, on both asyncio and uvloop.

Theory: every property of the transport can be seen from the server side. The server counts accepted
connections (keep-alive reuse, the pool's bound), sees the close (cancellation, aclose, errors never
pool a connection) and decides when each byte goes out (streaming, timeouts, cut bodies, a request
that must not be sent twice). Each test runs once on each loop through `run`, its own
asyncio.Runner, with a hard 10 s cap so that a regression fails instead of hanging. No assertion
depends on speed. The only durations are timeouts, set well apart from the delays around them.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import ssl
import time

import httpx
import pytest
import uvloop

from plexus.upstream import transport as tmod
from plexus.upstream.pool import make_client, open_stream
from plexus.upstream.transport import HIGH_WATER, PlexusTransport


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def _run(main):
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(asyncio.wait_for(main(), 10))
    return _run


def reply(body: bytes = b"ok", status: str = "200 OK", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n%s\r\n%s" % (status.encode(), len(body), extra, body)


async def read_request(reader):
    """(method, target, headers, body) or None at EOF/reset."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)}
    body = await reader.readexactly(int(headers.get("content-length", 0)))
    return method, target, headers, body


async def wait_close(reader) -> bool:
    """True once the peer has closed (EOF or reset)."""
    try:
        while await reader.read(65536):
            pass
    except ConnectionError:
        pass
    return True


class Upstream:
    """A raw server: `handler(reader, writer)` per connection; counts connections and closes."""

    def __init__(self, handler):
        self.handler, self.accepted, self.closed, self.writers = handler, 0, 0, []

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _conn(self, reader, writer):
        self.accepted += 1
        self.writers.append(writer)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def __aexit__(self, *exc):
        self.server.close()
        for w in self.writers:
            w.close()


async def keep_alive(reader, writer, body=b"ok"):
    while (req := await read_request(reader)) is not None:
        writer.write(reply(body + req[3]))


async def fetch(t, url, method=b"GET", body=b"", **kw):
    r = await open_stream(t, method, url, [(b"accept", b"*/*")], body, **kw)
    try:
        return r, b"".join([c async for c in r.aiter_raw()])
    finally:
        await r.aclose()


def test_keep_alive_reuses_one_socket(run):
    async def main():
        async with Upstream(keep_alive) as up:
            t = PlexusTransport()
            for i in range(20):
                r, body = await fetch(t, up.url(f"/n{i}"), b"POST", b"-%d" % i)
                assert (r.status_code, body) == (200, b"ok-%d" % i)
                assert r.extensions["http_version"] == b"HTTP/1.1" and r.extensions["reason_phrase"] == b"OK"
            big = bytes(range(256)) * 1024  # over the single-write threshold: head and body go out apart
            assert (await fetch(t, up.url("/big"), b"POST", big))[1] == b"ok" + big
            assert up.accepted == 1
            await t.aclose()
    run(main)


def test_concurrency_bounded_and_all_returned(run):
    async def main():
        async def slow(reader, writer):
            while (req := await read_request(reader)) is not None:
                await asyncio.sleep(0.02)
                writer.write(reply(req[1].encode()))
        async with Upstream(slow) as up:
            t = PlexusTransport()
            key = (b"http", b"127.0.0.1", up.port)
            for _ in range(2):
                results = await asyncio.gather(*(fetch(t, up.url(f"/{i}")) for i in range(16)))
                assert [b for _, b in results] == [b"/%d" % i for i in range(16)]
                assert up.accepted <= 16 and t._pool.idle(key) == up.accepted == len(t._conns)
            assert up.accepted <= 16  # the second burst opened nothing new
            await t.aclose()
    run(main)


def test_body_framings(run):
    async def main():
        async def server(reader, writer):
            while (req := await read_request(reader)) is not None:
                if req[1] == "/chunked":
                    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
                elif req[1] == "/close":
                    writer.write(b"HTTP/1.0 200 OK\r\n\r\nuntil close")
                    return
                else:  # no body: HEAD, 204, 304
                    status = {"/204": "204 No Content", "/304": "304 Not Modified"}.get(req[1], "200 OK")
                    writer.write(b"HTTP/1.1 %s\r\nContent-Length: 7\r\n\r\n" % status.encode())
        async with Upstream(server) as up:
            t = PlexusTransport()
            assert (await fetch(t, up.url("/chunked")))[1] == b"hello world"
            assert (await fetch(t, up.url("/close")))[1] == b"until close"
            for path, method in (("/204", b"GET"), ("/304", b"GET"), ("/head", b"HEAD")):
                r, body = await fetch(t, up.url(path), method)
                assert body == b"" and r.headers["content-length"] == "7"
            assert up.accepted == 2 and t._pool.idle((b"http", b"127.0.0.1", up.port)) == 1
            await t.aclose()
    run(main)


def test_streaming_first_chunk_before_second_is_sent(run):
    async def main():
        got_first = asyncio.Event()

        async def server(reader, writer):
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst \r\n")
            await got_first.wait()  # the client must see "first " while we hold the rest back
            writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        async with Upstream(server) as up:
            t = PlexusTransport()
            r = await open_stream(t, b"GET", up.url(), [], b"")
            it = r.aiter_raw()
            assert await it.__anext__() == b"first "
            got_first.set()
            assert [c async for c in it] == [b"second"]
            await t.aclose()
    run(main)


def test_request_is_never_sent_twice(run):
    async def main():
        seen = []

        async def one_per_conn(reader, writer):  # answers once, then drops the next request unanswered
            seen.append(await read_request(reader))
            writer.write(reply())
            if (req := await read_request(reader)) is not None:
                seen.append(req)
        async with Upstream(one_per_conn) as up:
            t = PlexusTransport()
            assert (await fetch(t, up.url()))[1] == b"ok"
            with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
                await fetch(t, up.url())  # it reached the server: an error, not a second call
            assert up.accepted == 1 and len(seen) == 2
            await t.aclose()

        async def close_when_idle(reader, writer):  # closes right after answering (noticed while idle)
            await read_request(reader)
            writer.write(reply())
        async with Upstream(close_when_idle) as up:
            t = PlexusTransport()
            await fetch(t, up.url())
            await asyncio.sleep(0.05)
            assert t._pool.idle((b"http", b"127.0.0.1", up.port)) == 1
            assert (await fetch(t, up.url()))[1] == b"ok" and up.accepted == 2
            await t.aclose()
    run(main)


def test_fresh_connection_closed_without_response_is_not_retried(run):
    async def main():
        async def drop(reader, writer):  # reads the request, closes without a word
            await read_request(reader)
        async with Upstream(drop) as up:
            t = PlexusTransport()
            with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
                await fetch(t, up.url())
            assert up.accepted == 1
            await t.aclose()
    run(main)


def test_connect_refused_is_connect_error(run):
    async def main():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # bound, never listening: connection refused
            t = PlexusTransport()
            start = time.monotonic()
            with pytest.raises(httpx.ConnectError) as err:
                await fetch(t, f"http://127.0.0.1:{port}/")
            assert time.monotonic() - start < 5 and err.value.request.url.port == port
            await t.aclose()
    run(main)


def test_timeouts(run):
    async def main():
        async def stall_head(reader, writer):
            await read_request(reader)
            await wait_close(reader)

        async def stall_body(reader, writer):
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
            await wait_close(reader)
        async with Upstream(stall_head) as up:
            t = PlexusTransport(ttfb_timeout=0.2)
            with pytest.raises(httpx.ReadTimeout):
                await fetch(t, up.url())
            t2 = PlexusTransport()  # per-request ttfb from open_stream
            with pytest.raises(httpx.ReadTimeout):
                await fetch(t2, up.url(), ttfb=0.2)
            await t.aclose()
            await t2.aclose()
        async with Upstream(stall_body) as up:
            t = PlexusTransport(read_timeout=0.2)
            r = await open_stream(t, b"GET", up.url(), [], b"")
            it = r.aiter_raw()
            assert await it.__anext__() == b"half"
            with pytest.raises(httpx.ReadTimeout):
                await it.__anext__()
            assert up.accepted == 1 and not t._conns  # the timed-out connection was closed
            async with make_client(PlexusTransport(), up.url()) as client:  # httpx's own timeout dict
                with pytest.raises(httpx.ReadTimeout):
                    await client.get("/", timeout=httpx.Timeout(5, read=0.2))
            await t.aclose()
    run(main)


@pytest.mark.parametrize("response, message", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "received 5 bytes, expected 10"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "incomplete chunked read"),
    (b"HTTP/1.1 200 OK\r\nContent-", "mid-headers"),
    (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "illegal status line"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "illegal chunk size"),
])
def test_cut_and_garbage_responses(run, response, message):
    async def main():
        async def server(reader, writer):
            await read_request(reader)
            writer.write(response)
        async with Upstream(server) as up:
            t = PlexusTransport()
            with pytest.raises(httpx.RemoteProtocolError, match=message) as err:
                await fetch(t, up.url())
            assert err.value.request.url == up.url() and not t._conns
            await t.aclose()
    run(main)


def test_cancel_or_aclose_mid_body_closes_the_connection(run):
    async def main():
        seen_close = []

        async def server(reader, writer):
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n")
            seen_close.append(await wait_close(reader))
        async with Upstream(server) as up:
            t = PlexusTransport()
            key = (b"http", b"127.0.0.1", up.port)

            async def consume():
                async for _ in (await open_stream(t, b"GET", up.url(), [], b"")).aiter_raw():
                    pass
            task = asyncio.create_task(consume())
            while not t._conns or not next(iter(t._conns)).got:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.02)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await closed_count(seen_close, 1)
            kept = await open_stream(t, b"GET", up.url(), [], b"")  # aclose() before the end
            assert await kept.aiter_raw().__anext__() == b"one"
            await kept.aclose()
            await closed_count(seen_close, 2)
            r = await open_stream(t, b"GET", up.url(), [], b"")  # dropped without aclose(): GC closes it
            del r
            gc.collect()
            await closed_count(seen_close, 3)
            assert up.accepted == 3 and t._pool.idle(key) == 0 and not t._conns
            await t.aclose()
    run(main)


async def closed_count(seen: list, n: int) -> None:
    while len(seen) < n:
        await asyncio.sleep(0.01)


def test_bytes_after_the_response_forbid_reuse(run):
    async def main():
        async def server(reader, writer):
            while await read_request(reader) is not None:
                writer.write(reply(b"ok") + b"HTTP/1.1 200 OK\r\n")  # junk after a complete response
        async with Upstream(server) as up:
            t = PlexusTransport()
            assert (await fetch(t, up.url()))[1] == b"ok"
            await asyncio.sleep(0.02)
            assert (await fetch(t, up.url()))[1] == b"ok" and up.accepted == 2
            await t.aclose()
    run(main)


def test_slow_consumer_pauses_reading(run):
    async def main():
        size = 24 * 1024 * 1024
        blob = bytes(range(256)) * (size // 256)
        server_writer = []

        async def server(reader, writer):
            await read_request(reader)
            server_writer.append(writer)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + blob)
            await writer.drain()
        async with Upstream(server) as up:
            t = PlexusTransport()
            r = await open_stream(t, b"GET", up.url(), [], b"")
            conn = next(iter(t._conns))
            while not conn.paused:  # nobody reads: the deque fills up to the high-water mark
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.05)
            assert conn.paused and conn.buffered <= HIGH_WATER + 1024 * 1024
            assert server_writer[0].transport.get_write_buffer_size() > 0  # backpressure reached the server
            got = bytearray()
            async for chunk in r.aiter_raw():
                got += chunk
            assert len(got) == size and got == blob and t._pool.idle((b"http", b"127.0.0.1", up.port)) == 1
            await t.aclose()
    run(main)


def test_through_httpx_async_client(run):
    async def main():
        async def server(reader, writer):
            while (req := await read_request(reader)) is not None:
                if req[1] == "/json":
                    writer.write(reply(b'{"echo": "%s", "ua": "%s"}' % (req[3], req[2]["user-agent"].encode()),
                                       extra=b"Content-Type: application/json\r\nSet-Cookie: s=1\r\n"))
                else:
                    writer.write(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n")
        async with Upstream(server) as up:
            t = PlexusTransport()
            async with make_client(t, up.url()) as client:
                r = await client.post("/json", content=b"hi")
                assert r.json()["echo"] == "hi" and r.json()["ua"].startswith("python-httpx")
                assert not client.cookies  # no cookie carried from one end user to the next
                async with client.stream("GET", "/stream") as s:
                    assert s.status_code == 201 and [c async for c in s.aiter_raw()] == [b"abcd"]
            assert up.accepted == 1
            await t.aclose()
    run(main)


def test_idle_expiry_and_aclose_close_sockets(run):
    async def main():
        closes = []

        async def server(reader, writer):
            await read_request(reader)
            writer.write(reply())
            closes.append(await wait_close(reader))
        async with Upstream(server) as up:
            t = PlexusTransport(idle_ttl=0.05)
            await fetch(t, up.url())
            while not closes:  # the sweep closes the idle socket
                await asyncio.sleep(0.01)
            await fetch(t, up.url())
            await t.aclose()  # closes what is idle
            while len(closes) < 2:
                await asyncio.sleep(0.01)
            assert up.accepted == 2
            with pytest.raises(RuntimeError):
                await fetch(t, up.url())
    run(main)


def test_tls(run, tmp_path):
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    import datetime
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))

    async def main():
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
        server = await asyncio.start_server(keep_alive, "127.0.0.1", 0, ssl=server_ctx)
        url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        trusting = PlexusTransport(ssl_context=ssl.create_default_context(cafile=str(tmp_path / "c.pem")))
        for _ in range(3):
            assert (await fetch(trusting, url))[1] == b"ok"
        assert len(trusting._conns) == 1
        default = PlexusTransport()  # certifi roots: a self-signed certificate must be refused
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await fetch(default, url)
        await trusting.aclose()
        await default.aclose()
        server.close()
    run(main)


def test_watchdog_expires_only_what_is_due(run):
    async def main():
        loop = asyncio.get_running_loop()
        wd = tmod.Watchdog(loop)
        conns = [tmod.Conn(("k",), loop, set(), wd) for _ in range(3)]
        tasks = [asyncio.create_task(c.read(loop.time() + d)) for c, d in zip(conns, (0.05, 5, 0.1))]
        await asyncio.sleep(0.2)
        assert [t.done() for t in tasks] == [True, False, True]
        conns[1].data_received(b"late")
        assert await tasks[1] == b"late" and not wd.waiting
        for task in (tasks[0], tasks[2]):
            with pytest.raises(tmod.TimedOut):
                await task
        wd.cancel()
    run(main)


def test_idle_pool_bookkeeping():
    from plexus.upstream.pool import IdlePool

    class C:
        def __init__(self):
            self.key, self.closed, self.chunks, self.idle_since = ("k",), False, (), 0.0

        def close(self):
            self.closed = True
    pool = IdlePool(max_idle_per_host=3, idle_ttl=10)
    a, b, c, d = C(), C(), C(), C()
    assert [pool.push(x, now) for x, now in ((a, 0), (b, 1), (c, 2), (d, 3))] == [True, True, True, False]
    assert pool.pop(("k",), 5) is c  # LIFO: the warmest first
    b.closed = True  # the peer closed it while idle
    assert pool.pop(("k",), 5) is a and pool.pop(("k",), 5) is None
    pool.push(a, 0), pool.push(c, 8)
    assert pool.sweep(11) == 1 and a.closed and not c.closed  # the cold end was trimmed
    pool.push(a, 1)
    assert pool.pop(("k",), 20) is None and c.closed  # expired on top: everything below goes too
