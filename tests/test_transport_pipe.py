"""RawResponse.pipe: the body pushed from the connection's callbacks (the gateway's stream relay).

Same harness as tests/test_transport.py (raw servers, both loops). What iteration guarantees,
push mode must too: every body byte once and in order, the connection pooled after a clean end
and aborted after anything else, the read timeout, and the consumer's pause holding the upstream.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from plexus.upstream.transport import PlexusTransport
from test_transport import Upstream, read_request, run, wait_close  # noqa: F401 (fixture)


def chunked_head() -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


async def events_server(reader, writer, n=20, gap=0.005, end=True):
    while (req := await read_request(reader)) is not None:
        writer.write(chunked_head())
        for i in range(n):
            writer.write(chunk(b"data: %d\n\n" % i))
            await writer.drain()
            await asyncio.sleep(gap)
        if not end:
            writer.close()
            return
        writer.write(b"0\r\n\r\n")


async def open_(t, url):
    return await t.open(b"POST", url, [(b"content-type", b"application/json")], b"{}")


def test_pipe_delivers_every_byte_in_order_then_pools(run):
    async def main():
        async with Upstream(events_server) as up:
            t = PlexusTransport()
            for _ in range(3):
                r = await open_(t, up.url())
                got, ends = [], []
                got.append(r.ready_chunk())
                await r.pipe(lambda data, end: (got.append(data), ends.append(end)))
                assert b"".join(got) == b"".join(b"data: %d\n\n" % i for i in range(20))
                assert ends.count(True) <= 1 and r.at_end()
                await r.aclose()
            assert up.accepted == 1  # the connection went back to the pool each time
            await t.aclose()
    run(main)


def test_pipe_read_timeout_and_cut(run):
    async def main():
        async def stalls(reader, writer):
            await read_request(reader)
            writer.write(chunked_head() + chunk(b"data: 0\n\n"))
            await wait_close(reader)

        async with Upstream(stalls) as up:
            t = PlexusTransport(read_timeout=0.2)
            r = await open_(t, up.url())
            with pytest.raises(httpx.ReadTimeout):
                await r.pipe(lambda data, end: None)
            await r.aclose()
        async with Upstream(lambda rd, wr: events_server(rd, wr, n=3, end=False)) as up:
            r = await open_(t, up.url())
            with pytest.raises(httpx.RemoteProtocolError):
                await r.pipe(lambda data, end: None)
            await r.aclose()
        await t.aclose()
    run(main)


def test_pipe_consumer_error_aborts_the_connection(run):
    async def main():
        async with Upstream(events_server) as up:
            t = PlexusTransport()
            r = await open_(t, up.url())
            seen = []

            def boom(data, end):
                seen.append(data)
                if len(seen) == 3:
                    raise ValueError("translator bug")
            with pytest.raises(ValueError, match="translator bug"):
                await r.pipe(boom)
            await r.aclose()
            r2 = await open_(t, up.url())  # a new connection: the broken one was not pooled
            await r2.pipe(lambda data, end: None)
            await r2.aclose()
            assert up.accepted == 2
            await t.aclose()
    run(main)


def test_pipe_pause_holds_the_upstream_without_timing_out(run):
    async def main():
        async with Upstream(lambda rd, wr: events_server(rd, wr, n=10, gap=0.01)) as up:
            t = PlexusTransport(read_timeout=0.15)
            r = await open_(t, up.url())
            got = []
            loop = asyncio.get_running_loop()

            def on_body(data, end):
                got.append(data)
                if len(got) == 3:  # the consumer cannot take more for 0.5 s (> read_timeout)
                    r.pause_reading()
                    loop.call_later(0.5, r.resume_reading)
            got.append(r.ready_chunk())
            await r.pipe(on_body)
            assert b"".join(got).count(b"data: ") == 10
            await r.aclose()
            await t.aclose()
    run(main)


def test_expire_ends_a_piped_body_with_a_read_timeout(run):
    """A target's total_timeout: the relay calls expire() when the whole exchange ran too long,
    however steadily the upstream keeps sending."""
    async def main():
        async with Upstream(lambda rd, wr: events_server(rd, wr, n=200, gap=0.01)) as up:
            t = PlexusTransport(read_timeout=5)
            r = await open_(t, up.url())
            got = []
            done = r.pipe(lambda data, end: got.append(data))
            asyncio.get_running_loop().call_later(0.2, r.expire)
            with pytest.raises(httpx.ReadTimeout, match="total timeout"):
                await done
            assert 0 < len(got) < 200
            await r.aclose()
            await t.aclose()
    run(main)
