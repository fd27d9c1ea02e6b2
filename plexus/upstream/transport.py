"""Upstream HTTP/1.1 transport: httpx's Request/Response API over asyncio (uvloop), with an O(1) keep-alive pool.

Theory
------
* Two entrances, one exchange. ``handle_async_request`` is the httpx transport API (tests, clients).
  ``open(method, url, headers, body)`` is the gateway's: it builds no httpx.Request, URL, Headers or
  Response (together ~30 us per request here) and returns the ``RawResponse`` itself: status, the
  raw header list as parsed, and the body as an async iterator of raw chunks. URLs are parsed once
  per distinct string.
* ``_Conn`` is one TCP/TLS connection, an ``asyncio.Protocol``. Its callbacks only *record*:
  ``data_received`` appends the raw chunk to a deque and wakes the one waiter, and
  ``eof_received``/``connection_lost`` set ``closed``. All parsing (``h1.ResponseParser``, sans-IO)
  runs in the consumer's task, one socket chunk at a time. So the body stream yields exactly what
  each read delivered, with no coalescing buffer of our own. The deque is the only place where bytes
  wait, and its byte count is the consumer's lag: above HIGH_WATER we call ``pause_reading()``, and
  once the consumer has pulled the count under LOW_WATER we call ``resume_reading()``.
* Ownership: a connection is either idle in the pool (``pool.IdlePool``, a stack per origin, with
  liveness read from the flags above, so there is no polling and no scan) or owned by exactly one
  exchange. It goes back only when the response ended cleanly on a keep-alive connection with
  nothing unread. Every other exit (error, timeout, ``aclose`` before the end, cancellation at any
  await, garbage collection of an unfinished stream) aborts it.
* Stale keep-alive: a *reused* connection that closes or resets before any response byte arrives
  is retried once on a fresh connection. This is the race with a server that closes an idle
  connection. RFC 9112 section 9.3.1 restricts automatic retries of non-idempotent requests; we
  accept that because the retry happens only when not one response byte arrived.
* Timeouts: connect (create_connection + TLS); ttfb, a deadline for the whole response head; read,
  the longest silence between body reads. A read that has to wait registers its deadline with the
  loop's ``_Watchdog``, so there is one shared timer and no timer per read.
* Errors: codec errors, OSError and timeouts become httpx's own exceptions in ``_to_httpx``, the one
  boundary.
"""

from __future__ import annotations

import asyncio
import math
import socket
import ssl
from collections import deque

import httpx

from plexus.upstream.h1 import ProtocolError, ResponseParser, encode_head
from plexus.upstream.pool import IdlePool

HIGH_WATER = 256 * 1024  # unconsumed socket bytes above which we pause reading
LOW_WATER = 64 * 1024  # ... and below which we resume


class _Timeout(Exception):
    """An awaited read did not complete in time (-> httpx.ReadTimeout)."""


class _Stale(Exception):
    """A reused connection died before any response byte arrived: retry on a fresh one."""


class _Watchdog:
    """Timeouts for every pending read on one loop, using one timer.

    A call_later per read costs ~10 us on uvloop (a libuv timer handle is created, started, stopped
    and closed). Instead, a waiting read records its deadline here with a set add/discard, which is
    O(1). One timer is armed for the earliest deadline. When it fires, it expires the overdue reads
    and re-arms for the next deadline. With uniform timeouts it fires about once per timeout period,
    not once per request.
    """

    __slots__ = ("loop", "waiting", "handle", "at")

    def __init__(self, loop) -> None:
        self.loop = loop
        self.waiting: set[_Conn] = set()
        self.handle: asyncio.TimerHandle | None = None
        self.at = 0.0

    def add(self, conn: _Conn) -> None:
        self.waiting.add(conn)
        if self.handle is None or conn.deadline < self.at:
            if self.handle is not None:
                self.handle.cancel()
            self.at = conn.deadline
            self.handle = self.loop.call_at(self.at, self._fire)

    def _fire(self) -> None:
        self.handle = None
        now = self.loop.time()
        nxt = None
        for conn in list(self.waiting):
            if conn.deadline <= now:
                self.waiting.discard(conn)
                w = conn.waiter
                if w is not None and not w.done():
                    w.set_result(False)
            elif nxt is None or conn.deadline < nxt:
                nxt = conn.deadline
        if nxt is not None:
            self.at = nxt
            self.handle = self.loop.call_at(nxt, self._fire)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


class _Conn(asyncio.Protocol):
    """One upstream connection. The callbacks record. ``read()`` is the single consumer."""

    __slots__ = ("key", "loop", "registry", "watchdog", "transport", "chunks", "buffered", "paused",
                 "waiter", "deadline", "closed", "exc", "got", "idle_since")

    def __init__(self, key, loop, registry: set, watchdog: _Watchdog) -> None:
        self.key, self.loop, self.registry, self.watchdog = key, loop, registry, watchdog
        self.deadline = 0.0  # loop time at which the pending read times out
        self.transport = None
        self.chunks: deque[bytes] = deque()  # raw socket chunks not yet consumed, oldest first
        self.buffered = 0  # their total size
        self.paused = False
        self.waiter: asyncio.Future | None = None
        self.closed = False  # EOF, connection lost or aborted: never reuse
        self.exc: BaseException | None = None
        self.got = False  # any byte received since the current request was written
        self.idle_since = 0.0

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError):
                pass
        self.registry.add(self)

    def data_received(self, data: bytes) -> None:
        self.got = True
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > HIGH_WATER and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> None:
        self.closed = True
        self._wake()  # returning None lets the transport close itself

    def connection_lost(self, exc) -> None:
        self.closed = True
        if exc is not None and self.exc is None:
            self.exc = exc
        self.registry.discard(self)
        self._wake()

    def _wake(self) -> None:
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(True)

    def pop(self) -> bytes:
        data = self.chunks.popleft()
        self.buffered -= len(data)
        if self.paused and self.buffered < LOW_WATER:
            self.paused = False
            if not self.closed:
                self.transport.resume_reading()
        return data

    async def read(self, until: float | None) -> bytes:
        """The next raw chunk; b"" at EOF; raises the socket error, or _Timeout if none by loop time `until`."""
        while not self.chunks:
            if self.closed:
                if self.exc is not None:
                    raise self.exc
                return b""
            w = self.waiter = self.loop.create_future()
            if until is None:
                await w
                continue
            if until <= self.loop.time():
                raise _Timeout()
            self.deadline = until
            watchdog = self.watchdog
            watchdog.add(self)
            try:
                ok = await w
            finally:
                watchdog.waiting.discard(self)
            if not ok:
                raise _Timeout()
        return self.pop()

    def abort(self) -> None:
        self.closed = True
        self.registry.discard(self)
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:  # graceful: idle expiry, end of a close-delimited body
        self.closed = True
        self.registry.discard(self)
        if self.transport is not None:
            self.transport.close()


def _to_httpx(exc: Exception, request: httpx.Request) -> Exception:
    """The one error boundary: everything below surfaces as one of httpx's own exceptions."""
    if isinstance(exc, httpx.HTTPError):
        return exc
    if isinstance(exc, ProtocolError):
        return httpx.RemoteProtocolError(str(exc), request=request)
    if isinstance(exc, _Timeout):
        return httpx.ReadTimeout("timed out waiting for the upstream response", request=request)
    if isinstance(exc, OSError):
        return httpx.ReadError(str(exc) or type(exc).__name__, request=request)
    return exc


class RawResponse(httpx.AsyncByteStream):
    """One upstream response: status, raw headers, and the body as an async iterator of raw chunks
    (one item per socket chunk, as it arrives). Ends by releasing or aborting the connection.

    ``PlexusTransport.open`` returns it as is (no httpx.Request/Response/Headers objects on the
    gateway's hot path); ``handle_async_request`` wraps it as the stream of an ``httpx.Response``.
    """

    __slots__ = ("_conn", "_parser", "_first", "_timeout", "_request", "_owner", "status_code",
                 "raw_headers", "http_version", "reason_phrase")

    def __init__(self, owner, conn, parser, first: bytes, timeout, request) -> None:
        self._owner, self._conn, self._parser = owner, conn, parser
        self._first, self._timeout, self._request = first, timeout, request
        self.status_code = parser.status
        self.raw_headers: list[tuple[bytes, bytes]] = parser.headers  # (name as sent, value)
        self.http_version = parser.version
        self.reason_phrase = parser.reason

    def __aiter__(self):
        return self

    def ready_chunk(self) -> bytes:
        """Body bytes already here (those that came with the head), without waiting; b"" if none."""
        first, self._first = self._first, b""
        return first

    def at_end(self) -> bool:
        """True once the body has been read to its end (iterating further only stops)."""
        return self._conn is None and not self._first

    def complete_body(self) -> bytes | None:
        """The whole body if it already arrived with the head (consumes it), else None."""
        if self._conn is None:
            first, self._first = self._first, b""
            return first
        return None

    async def __anext__(self) -> bytes:
        first = self._first
        if first:
            self._first = b""
            return first
        conn = self._conn
        if conn is None:
            raise StopAsyncIteration
        parser = self._parser
        try:
            while True:
                if conn.chunks:
                    data = conn.pop()
                else:
                    t = self._timeout
                    data = await conn.read(None if t is None else conn.loop.time() + t)
                if data:
                    out = parser.feed(data)
                else:
                    parser.feed_eof()
                    out = b""
                if parser.done:
                    self._conn = None
                    self._owner._finish(conn, parser)
                    if not out:
                        raise StopAsyncIteration
                if out:
                    return out
        except StopAsyncIteration:
            raise
        except BaseException as exc:
            self._conn = None
            conn.abort()
            if isinstance(exc, Exception):
                raise _to_httpx(exc, self._request) from exc
            raise

    async def aclose(self) -> None:
        conn = self._conn
        if conn is not None:  # closed before the end: the connection's state is unknown
            self._conn = None
            conn.abort()

    def __del__(self) -> None:  # dropped without aclose(): never leak the socket
        conn = self._conn
        if conn is not None:
            self._conn = None
            try:
                conn.abort()
            except Exception:  # the loop may already be closed
                pass


_TARGETS: dict[str, tuple] = {}  # url -> ((scheme, host, port), netloc, target): parsed once
_MAX_TARGETS = 4096  # distinct upstream URLs are few (base URL x endpoint x model); bound it anyway


def _target(url: str) -> tuple:
    u = httpx.URL(url)
    scheme, port = u.raw_scheme, u.port
    if port is None:
        port = 443 if scheme == b"https" else 80
    target = ((scheme, u.raw_host, port), u.netloc, u.raw_path)
    if len(_TARGETS) >= _MAX_TARGETS:
        _TARGETS.clear()
    _TARGETS[url] = target
    return target


def _seconds(value) -> float | None:
    return None if value is None or value == math.inf else float(value)


class PlexusTransport(httpx.AsyncBaseTransport):
    """httpx transport: HTTP/1.1 over asyncio, O(1) idle pool per (scheme, host, port)."""

    def __init__(self, *, connect_timeout: float = 10.0, ttfb_timeout: float = 300.0,
                 read_timeout: float = 300.0, max_idle_per_host: int = 64, idle_ttl: float = 60.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._connect_timeout = _seconds(connect_timeout)
        self._ttfb_timeout = _seconds(ttfb_timeout)
        self._read_timeout = _seconds(read_timeout)
        self._pool = IdlePool(max_idle_per_host, idle_ttl)
        self._sweep_every = max(idle_ttl / 2, 0.01)
        self._sweeper: asyncio.TimerHandle | None = None
        self._conns: set[_Conn] = set()  # every open connection, idle or busy (for aclose)
        self._watchdog: _Watchdog | None = None
        if ssl_context is not None:
            ssl_context.set_alpn_protocols(["http/1.1"])
        self._ssl = ssl_context
        self._closed = False

    async def open(self, method: bytes, url: str, headers: list[tuple[bytes, bytes]], body: bytes,
                   ttfb: float | None = None, loop: asyncio.AbstractEventLoop | None = None) -> RawResponse:
        """The gateway's call: send one request, return once the response head has arrived.

        The same exchange as ``handle_async_request`` with no httpx objects built: ``url`` is
        parsed once per distinct string (cached), ``headers`` go to the wire as given (plus Host
        and Content-Length), connect and read timeouts are the transport's, ``ttfb`` overrides its
        default. Errors are httpx's own exceptions, as from ``handle_async_request``.
        """
        if self._closed:
            raise RuntimeError("PlexusTransport is closed")
        target = _TARGETS.get(url)
        if target is None:
            target = _target(url)
        key, netloc, path = target
        return await self._send(loop or asyncio.get_running_loop(), key, netloc, path, method, headers, body,
                                self._ttfb_timeout if ttfb is None else _seconds(ttfb),
                                self._connect_timeout, self._read_timeout, None)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("PlexusTransport is closed")
        url = request.url
        scheme, host, port = url.raw_scheme, url.raw_host, url.port
        if port is None:
            port = 443 if scheme == b"https" else 80
        key = (scheme, host, port)
        connect_t, read_t = self._connect_timeout, self._read_timeout
        ext = request.extensions
        t = ext.get("timeout")
        if t:
            if t.get("connect") is not None:
                connect_t = _seconds(t["connect"])
            if t.get("read") is not None:
                read_t = _seconds(t["read"])
        ttfb = ext.get("plexus_ttfb")
        ttfb = self._ttfb_timeout if ttfb is None else _seconds(ttfb)
        try:
            body = request.content
        except httpx.RequestNotRead:
            body = await request.aread()
        raw = await self._send(asyncio.get_running_loop(), key, url.netloc, url.raw_path,
                               request.method.encode("ascii"), request.headers.raw, body, ttfb, connect_t,
                               read_t, request)
        return httpx.Response(raw.status_code, headers=raw.raw_headers, stream=raw,
                              extensions={"http_version": raw.http_version, "reason_phrase": raw.reason_phrase},
                              request=request)

    async def _send(self, loop, key, netloc: bytes, path: bytes, method: bytes, headers, body: bytes, ttfb,
                    connect_t, read_t, request) -> RawResponse:
        head = encode_head(method, path, netloc, headers, len(body))
        if body and len(body) < 16384:
            head, body = head + body, b""
        is_head = method == b"HEAD"
        conn = self._pool.pop(key, loop.time())
        if conn is not None and conn.loop is not loop:  # created on another event loop: unusable here
            conn.abort()
            conn = None
        if conn is not None:
            try:
                return await self._exchange(conn, True, head, body, is_head, ttfb, read_t, request)
            except _Stale:
                pass
        conn = await self._connect(key, connect_t, request, loop)
        return await self._exchange(conn, False, head, body, is_head, ttfb, read_t, request)

    async def _connect(self, key, timeout, request, loop) -> _Conn:
        scheme, host, port = key
        watchdog = self._watchdog
        if watchdog is None or watchdog.loop is not loop:
            watchdog = self._watchdog = _Watchdog(loop)
        conn = _Conn(key, loop, self._conns, watchdog)
        tls = self._ssl_context() if scheme == b"https" else None
        hostname = host.decode("ascii")
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(lambda: conn, hostname, port, ssl=tls,
                                             server_hostname=hostname if tls else None)
        except BaseException as exc:
            conn.abort()
            if isinstance(exc, TimeoutError):
                raise httpx.ConnectTimeout(f"connect to {hostname}:{port} timed out", request=request) from exc
            if isinstance(exc, OSError):  # refused, DNS (gaierror), TLS (SSLError)
                raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
            raise
        return conn

    async def _exchange(self, conn: _Conn, reused: bool, head: bytes, body: bytes, is_head: bool,
                        ttfb, read_t, request) -> RawResponse:
        loop = conn.loop
        parser = ResponseParser(is_head)
        conn.got = False
        try:
            conn.transport.write(head)
            if body:
                conn.transport.write(body)
            deadline = None if ttfb is None else loop.time() + ttfb
            while True:
                if conn.chunks:
                    data = conn.pop()
                else:
                    data = await conn.read(deadline)
                if not data:
                    if reused and not conn.got:
                        raise _Stale()
                    parser.feed_eof()  # raises: no complete head
                rest = parser.feed_head(data)
                if rest is not None:
                    break
            first = parser.feed(rest) if rest else b""
        except BaseException as exc:
            conn.abort()
            if reused and not conn.got and isinstance(exc, (OSError, RuntimeError)):
                raise _Stale() from exc  # reset / write on a dead socket
            if isinstance(exc, Exception) and not isinstance(exc, _Stale):
                raise _to_httpx(exc, request) from exc
            raise
        if parser.done:
            self._finish(conn, parser)
            conn = None
        return RawResponse(self, conn, parser, first, read_t, request)

    def _finish(self, conn: _Conn, parser: ResponseParser) -> None:
        """End of one response: back to the pool if clean and keep-alive, else close."""
        if (parser.keep_alive and not parser.extra and not conn.chunks and not conn.closed
                and not self._closed and self._pool.push(conn, conn.loop.time())):
            if self._sweeper is None:
                self._sweeper = conn.loop.call_later(self._sweep_every, self._sweep, conn.loop)
            return
        conn.close()

    def _sweep(self, loop) -> None:
        self._sweeper = None
        if self._pool.sweep(loop.time()) and not self._closed:
            self._sweeper = loop.call_later(self._sweep_every, self._sweep, loop)

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:  # built on first https use: loading the CA bundle costs ~20 ms
            self._ssl = httpx.create_ssl_context()
            self._ssl.set_alpn_protocols(["http/1.1"])
        return self._ssl

    async def aclose(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._pool.clear()
        for conn in list(self._conns):
            conn.abort()
