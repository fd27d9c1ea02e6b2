"""Keep-alive HTTP/1.1 load generator for the bench: raw asyncio, precomputed request bytes.

Theory: the load generator must cost far less than the gateway, so a request is one
transport.write of precomputed bytes and a response is parsed incrementally by a minimal state
machine (status line, content-length or chunked body, chunk extensions and trailers skipped). It
never builds header dicts. Every response is judged: success means a 2xx status, the body complete
(content-length satisfied or the zero chunk seen), and for streams the terminal event
(`data: [DONE]` / `event: message_stop`) in the body's last bytes; for non-streams a marker key.

Clocks: time.perf_counter() (uvloop's loop.time() has 1 ms resolution). Timestamps taken on entry
to data_received. TTFB = first response *body* byte (after the headers) minus send time.

Three drivers, all bounded in time:
- closed_loop: `concurrency` connections, each sends back-to-back for warmup + duration. Latency and
  TTFB are recorded for requests *started* inside the measured window; throughput counts requests
  *completed* inside it. `sample()` is called exactly at the window's start and end (for CPU).
- open_loop: requests at a fixed rate on a pool of idle keep-alive connections (a new connection is
  opened when none is idle); latency counts from the SCHEDULED send time, so a late send or a
  queueing gateway shows up (no coordinated omission).
- probe: one request, returns the result and the first bytes of the body.
A watchdog fails any request older than `timeout` and closes its connection. Every driver takes
`tls=` (an ssl.SSLContext: the connections speak TLS, ALPN http/1.1; each connection does one
handshake and is then reused). Each connection counts its reads (data_received calls);
RunResult.reads sums them, so reads per response shows how the peer's writes arrived (a stream
written one event per segment arrives in about one read per event).
"""

from __future__ import annotations

import asyncio
import gc
import re
import ssl
from dataclasses import dataclass, field
from time import perf_counter
from typing import Callable

_CL = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)")
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[ \t]*[^\r]*chunked")
_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close")

HEAD, LENGTH, CHUNK_SIZE, CHUNK_DATA, CHUNK_CRLF, TRAILER, TO_CLOSE = range(7)
MAX_HEAD = 65536
TAIL = 512  # the terminal stream event must lie in the body's last TAIL bytes
# ... except a terminal event that carries the whole answer (Responses: response.completed)
MARKER_TAIL = {b"event: response.completed": 1 << 20}


@dataclass(slots=True)
class Response:
    ok: bool
    status: int
    t_send: float
    t_first: float  # first body byte (t_send if the body is empty)
    t_done: float
    reason: str  # "" when ok
    body: bytes  # the body (for probes and error reports)


class Conn(asyncio.Protocol):
    """One keep-alive client connection; at most one request in flight."""

    def __init__(self, keep_body: bool = False):
        self.transport = None
        self.closed = False
        self.buf = bytearray()
        self.fut: asyncio.Future | None = None
        self.keep_body = keep_body
        self.state = HEAD
        self.t_send = self.t_first = 0.0
        self.marker = self.expect = None
        self.status = 0
        self.remaining = 0
        self.body = bytearray()
        self.close_after = False
        self.reads = 0

    # --- asyncio.Protocol
    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.closed = True
        if self.fut is not None:
            if self.state == TO_CLOSE:
                self._finish(perf_counter())
            else:
                self._fail(perf_counter(), "connection closed mid-response" if self.state != HEAD
                           or self.buf else "connection closed before response")

    def data_received(self, data: bytes):
        if self.fut is None:  # unsolicited bytes: the peer is out of sync, drop the connection
            self.transport.close()
            return
        self.reads += 1
        self.buf += data
        self._parse(perf_counter())

    # --- client API
    def request(self, data: bytes, marker: bytes | None, expect: bytes | None) -> asyncio.Future:
        fut = self.fut = asyncio.get_running_loop().create_future()
        self.marker, self.expect = marker, expect
        self.state = HEAD
        self.status = 0
        self.t_first = 0.0
        self.body = bytearray()
        self.close_after = False
        self.t_send = perf_counter()
        self.transport.write(data)
        return fut

    def abort(self, reason: str) -> None:
        if self.fut is not None:
            self._fail(perf_counter(), reason)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # --- parsing
    def _parse(self, now: float) -> None:
        buf = self.buf
        pos = 0
        n = len(buf)
        while self.fut is not None:
            st = self.state
            if st == HEAD:
                end = buf.find(b"\r\n\r\n", pos)
                if end < 0:
                    if n - pos > MAX_HEAD:
                        return self._fail(now, "response head too large")
                    break
                if buf[pos:pos + 5] != b"HTTP/":
                    return self._fail(now, "not an HTTP response")
                try:
                    status = int(buf[pos + 9:pos + 12])
                except ValueError:
                    return self._fail(now, "bad status line")
                head = bytes(buf[pos:end + 2]).lower()
                pos = end + 4
                if 100 <= status < 200:
                    continue  # interim response
                self.status = status
                self.close_after = _CLOSE.search(head) is not None
                if _CHUNKED.search(head):
                    self.state = CHUNK_SIZE
                else:
                    m = _CL.search(head)
                    if m is not None:
                        self.remaining = int(m.group(1))
                        self.state = LENGTH
                        if self.remaining == 0:
                            self._finish(now)
                    elif status in (204, 304):
                        self._finish(now)
                    else:
                        self.state = TO_CLOSE
            elif st == LENGTH or st == CHUNK_DATA or st == TO_CLOSE:
                take = n - pos if st == TO_CLOSE else min(self.remaining, n - pos)
                if take <= 0:
                    break
                if not self.t_first:
                    self.t_first = now
                self.body += buf[pos:pos + take]
                pos += take
                if st == TO_CLOSE:
                    continue
                self.remaining -= take
                if self.remaining == 0:
                    if st == LENGTH:
                        self._finish(now)
                    else:
                        self.state = CHUNK_CRLF
            elif st == CHUNK_SIZE:
                # fast path: whole chunks already in the buffer are consumed in this inner loop
                find, body = buf.find, self.body
                while True:
                    eol = find(b"\r\n", pos)
                    if eol < 0:
                        break
                    try:
                        size = int(buf[pos:eol], 16)
                    except ValueError:
                        try:  # chunk extensions
                            size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
                        except ValueError:
                            return self._fail(now, "bad chunk size")
                    start = eol + 2
                    end = start + size
                    if not size or end + 2 > n:
                        break
                    if buf[end:end + 2] != b"\r\n":
                        return self._fail(now, "bad chunk terminator")
                    if not self.t_first:
                        self.t_first = now
                    body += buf[start:end]
                    pos = end + 2
                if eol < 0:
                    break
                pos = start
                if size:
                    self.remaining = size
                    self.state = CHUNK_DATA
                else:
                    self.state = TRAILER
            elif st == CHUNK_CRLF:
                if n - pos < 2:
                    break
                if buf[pos:pos + 2] != b"\r\n":
                    return self._fail(now, "bad chunk terminator")
                pos += 2
                self.state = CHUNK_SIZE
            else:  # TRAILER
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                done = eol == pos
                pos = eol + 2
                if done:
                    self._finish(now)
        if pos:
            del buf[:pos]
        if self.fut is None and buf:
            self.buf = bytearray()  # bytes after a complete response: not ours to keep

    def _finish(self, now: float) -> None:
        body = self.body
        reason = ""
        if not 200 <= self.status < 300:
            reason = f"HTTP {self.status}"
        elif self.marker is not None and self.marker not in body[-MARKER_TAIL.get(self.marker, TAIL):]:
            reason = "stream ended without its terminal event"
        elif self.expect is not None and self.expect not in body:
            reason = "body lacks " + self.expect.decode()
        keep = self.keep_body or bool(reason)
        self._resolve(Response(not reason, self.status, self.t_send, self.t_first or now, now,
                               reason, bytes(body) if keep else b""))
        self.state = HEAD
        if self.close_after:
            self.close()

    def _fail(self, now: float, reason: str) -> None:
        self._resolve(Response(False, self.status, self.t_send, self.t_first or now, now, reason,
                               bytes(self.body)))
        self.close()

    def _resolve(self, r: Response) -> None:
        fut, self.fut = self.fut, None
        self.body = bytearray()
        if not fut.done():
            fut.set_result(r)


async def connect(host: str, port: int, keep_body: bool = False,
                  tls: ssl.SSLContext | None = None) -> Conn:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: Conn(keep_body), host, port, ssl=tls,
                                           server_hostname=host if tls is not None else None)
    return conn


def client_tls(ca_file: str) -> ssl.SSLContext:
    """A verifying client context trusting `ca_file`, ALPN http/1.1."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


@dataclass(slots=True)
class RunResult:
    latencies: list[float] = field(default_factory=list)  # seconds, measured window only
    ttfbs: list[float] = field(default_factory=list)
    done_times: list[float] = field(default_factory=list)  # completion times of all successes
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    t_start: float = 0.0  # actual window start/end (perf_counter)
    t_end: float = 0.0
    mark_start: object = None  # sample() at window start/end
    mark_end: object = None
    requests: int = 0  # all requests sent, warm-up included
    ok_count: int = 0  # successful responses, warm-up included
    reads: int = 0  # data_received calls of every connection, warm-up included
    connections: int = 0  # connections opened

    @property
    def completed_in_window(self) -> int:
        a, b = self.t_start, self.t_end
        return sum(1 for t in self.done_times if a <= t <= b)

    def note_error(self, r: Response | str) -> None:
        self.errors += 1
        if len(self.error_samples) < 3:
            if isinstance(r, str):
                self.error_samples.append(r)
            else:
                self.error_samples.append(f"{r.reason}: {r.body[:160]!r}" if r.body else r.reason)


class _Watchdog:
    """Fails requests older than `timeout`; one timer for all connections."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.conns: set[Conn] = set()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(min(0.25, self.timeout / 4))
            now = perf_counter()
            for c in list(self.conns):
                if c.fut is not None and now - c.t_send > self.timeout:
                    c.abort(f"timeout after {self.timeout:g} s")

    def stop(self, res: RunResult) -> None:
        self.task.cancel()
        for c in self.conns:
            c.close()
        res.reads += sum(c.reads for c in self.conns)
        res.connections += len(self.conns)


async def _window(res: RunResult, warmup: float, duration: float, sample) -> None:
    if warmup > 0:
        await asyncio.sleep(warmup)
    res.t_start = perf_counter()
    res.mark_start = sample() if sample else None
    await asyncio.sleep(duration)
    res.t_end = perf_counter()
    res.mark_end = sample() if sample else None


async def closed_loop(host: str, port: int, wire, *, concurrency: int, warmup: float,
                      duration: float, timeout: float = 30.0,
                      sample: Callable[[], object] | None = None,
                      record: bool = True, result: RunResult | None = None,
                      stagger: float = 0.0, tls: ssl.SSLContext | None = None) -> RunResult:
    """`wire` is one Wire, or a list of Wires that each connection cycles through (a mix).
    With record=False only counters are kept (soak: memory must not grow with the run); pass
    `result` to watch the counters while the run goes on. stagger > 0 spreads the connections'
    first sends evenly over that many seconds (long paced responses otherwise stay in lockstep
    and every start would measure a burst of `concurrency` simultaneous requests)."""
    res = result if result is not None else RunResult()
    dog = _Watchdog(timeout)
    wires = list(wire) if isinstance(wire, (list, tuple)) else [wire]
    conns = await asyncio.gather(*(connect(host, port, tls=tls) for _ in range(concurrency)))
    dog.conns.update(conns)
    t0 = perf_counter()
    t_measure, t_stop = t0 + warmup, t0 + warmup + duration

    async def worker(conn: Conn, k: int) -> None:
        if stagger:
            await asyncio.sleep(k * stagger / concurrency)
        while True:
            w = wires[k % len(wires)]
            k += 1
            ts = perf_counter()
            if ts >= t_stop:
                return
            if conn.closed:
                try:
                    conn = await connect(host, port, tls=tls)
                except OSError as e:
                    res.note_error(f"connect: {e}")
                    await asyncio.sleep(0.05)
                    continue
                dog.conns.add(conn)
                ts = perf_counter()
            res.requests += 1
            r = await conn.request(w.data, w.marker, w.expect)
            if not r.ok:
                res.note_error(r)
                continue
            res.ok_count += 1
            if not record:
                continue
            res.done_times.append(r.t_done)
            if ts >= t_measure:
                res.latencies.append(r.t_done - ts)
                res.ttfbs.append(r.t_first - ts)

    gc_was = gc.isenabled()
    if record:  # a long soak keeps the collector (closed connections are reference cycles)
        gc.disable()
    try:
        window = asyncio.ensure_future(_window(res, warmup, duration, sample))
        await asyncio.gather(*(worker(c, i) for i, c in enumerate(conns)))
        await window
    finally:
        dog.stop(res)
        if gc_was:
            gc.enable()
    return res


async def open_loop(host: str, port: int, wire, *, rate: float, warmup: float, duration: float,
                    timeout: float = 30.0, preopen: int = 8,
                    sample: Callable[[], object] | None = None,
                    tls: ssl.SSLContext | None = None) -> RunResult:
    res = RunResult()
    dog = _Watchdog(timeout)
    data, marker, expect = wire.data, wire.marker, wire.expect
    idle: list[Conn] = list(await asyncio.gather(*(connect(host, port, tls=tls)
                                                   for _ in range(preopen))))
    dog.conns.update(idle)
    interval = 1.0 / rate
    total = int(round((warmup + duration) * rate))
    t0 = perf_counter() + 0.01
    t_measure = t0 + warmup
    tasks: set[asyncio.Task] = set()

    async def one(sched: float) -> None:
        conn = idle.pop() if idle else None
        if conn is None or conn.closed:
            try:
                conn = await connect(host, port, tls=tls)
            except OSError as e:
                res.note_error(f"connect: {e}")
                return
            dog.conns.add(conn)
        res.requests += 1
        r = await conn.request(data, marker, expect)
        if not conn.closed:
            idle.append(conn)
        if not r.ok:
            res.note_error(r)
            return
        res.ok_count += 1
        res.done_times.append(r.t_done)
        if sched >= t_measure:
            res.latencies.append(r.t_done - sched)
            res.ttfbs.append(r.t_first - sched)

    gc_was = gc.isenabled()
    gc.disable()
    loop = asyncio.get_running_loop()
    try:
        window = asyncio.ensure_future(_window(res, t0 + warmup - perf_counter(), duration,
                                               sample))
        for i in range(total):
            sched = t0 + i * interval
            delay = sched - perf_counter()
            if delay > 0.002:  # loop timers have ~1 ms granularity: sleep short, then yield-spin
                await asyncio.sleep(delay - 0.0015)
            while perf_counter() < sched:
                await asyncio.sleep(0)
            t = loop.create_task(one(sched))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*list(tasks))
        await window
    finally:
        dog.stop(res)
        if gc_was:
            gc.enable()
    return res


async def probe(host: str, port: int, wire, timeout: float = 30.0,
                tls: ssl.SSLContext | None = None) -> Response:
    """One request on a fresh connection; the body is kept."""
    try:
        conn = await asyncio.wait_for(connect(host, port, keep_body=True, tls=tls), timeout)
    except (OSError, asyncio.TimeoutError) as e:
        t = perf_counter()
        return Response(False, 0, t, t, t, f"connect: {e!r}", b"")
    try:
        return await asyncio.wait_for(conn.request(wire.data, wire.marker, wire.expect), timeout)
    except asyncio.TimeoutError:
        t = perf_counter()
        return Response(False, conn.status, t, t, t, f"timeout after {timeout:g} s",
                        bytes(conn.body))
    finally:
        conn.close()


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of unsorted values; None when empty."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-q * len(s) // 100)) - 1))
    return s[k]
