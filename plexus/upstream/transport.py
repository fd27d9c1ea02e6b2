"""Upstream HTTP/1.1 transport: httpx's Request/Response API over asyncio (uvloop), with an O(1) keep-alive pool.

Theory
------
* Two entrances, one exchange. ``handle_async_request`` is the httpx transport API (tests, clients).
  ``open(method, url, headers, body)`` is the gateway's: it builds no httpx.Request, URL, Headers or
  Response (together ~30 us per request here) and returns the ``RawResponse`` itself: status, the
  raw header list as parsed, and the body as an async iterator of raw chunks. URLs are parsed once
  per distinct string.
* ``conn.Conn`` is one TCP/TLS connection, an ``asyncio.Protocol`` whose callbacks only record. All
  parsing (``h1.ResponseParser``, sans-IO) runs in the consumer's task, one socket chunk at a time,
  so the body stream yields exactly what each read delivered (see conn.py for backpressure).
* Ownership: a connection is either idle in the pool (``pool.IdlePool``, a stack per pool key) or
  owned by exactly one exchange. It goes back only when the response ended cleanly on a keep-alive
  connection with nothing unread. Every other exit (error, timeout, ``aclose`` before the end,
  cancellation at any await, garbage collection of an unfinished stream) aborts it.
* A request is sent at most once. It may go out on another connection only when it provably never
  reached the provider: the pooled connection picked for it was already dead. ``Conn.dead()``
  checks that right before the write (the ``closed`` flag, ``transport.is_closing()``, one
  zero-timeout ``poll()`` of the socket: a single syscall, only on reused connections). An idle
  connection that is readable holds the peer's FIN or reset (not yet processed by the loop) or
  bytes nobody asked for; either way it is dead: abort it and pick the next. A first
  ``transport.write`` that raises means the same. Once the request is written, a connection lost
  before or during the response head is an error (RemoteProtocolError/ReadError, so a 502), never
  a silent second call: the provider may have run (and billed) it already. RFC 9110 section 9.2.2
  allows automatic retries of idempotent requests only, and ours are POSTs.
* TLS contexts come from ``tls.py``, built once at startup and passed in. A transport may send
  through one HTTP proxy (``tunnel.py``): a CONNECT tunnel for https, absolute-form for http. The
  proxy is part of the pool key, so direct and proxied connections never mix.
* Timeouts: connect (proxy, CONNECT and TLS included); ttfb, a deadline for the whole response
  head; read, the longest silence between body reads; all on one shared timer (``conn.Watchdog``).
* Errors: codec errors, OSError and timeouts become httpx's own exceptions in ``_to_httpx``, the one
  boundary. Connect and proxy errors name the proxy by ``display`` only, never its credentials.
"""

from __future__ import annotations

import asyncio
import math
import ssl

import httpx

from plexus.upstream import tls as _tls
from plexus.upstream.conn import HIGH_WATER, LOW_WATER, Conn, TimedOut, Watchdog  # noqa: F401 (re-exported)
from plexus.upstream.h1 import ProtocolError, ResponseParser, encode_head
from plexus.upstream.pool import IdlePool
from plexus.upstream.tunnel import Route, open_connection


def _to_httpx(exc: Exception, request: httpx.Request) -> Exception:
    """The one error boundary: everything below surfaces as one of httpx's own exceptions."""
    if isinstance(exc, httpx.HTTPError):
        return exc
    if isinstance(exc, ProtocolError):
        return httpx.RemoteProtocolError(str(exc), request=request)
    if isinstance(exc, TimedOut):
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
                 "raw_headers", "http_version", "reason_phrase", "_on_body", "_done", "_held")

    def __init__(self, owner, conn, parser, first: bytes, timeout, request) -> None:
        self._owner, self._conn, self._parser = owner, conn, parser
        self._first, self._timeout, self._request = first, timeout, request
        self.status_code = parser.status
        self.raw_headers: list[tuple[bytes, bytes]] = parser.headers  # (name as sent, value)
        self.http_version = parser.version
        self.reason_phrase = parser.reason
        self._on_body = self._done = None  # pipe(): the body callback and the end future
        self._held = False  # pipe(): reading paused by the consumer

    # ---- push mode: the body delivered from the connection's callbacks (no task per chunk)

    def pipe(self, on_body) -> asyncio.Future:
        """Deliver the rest of the body as ``on_body(data, end)`` calls made from the connection's
        own callbacks (``end``: this is the last piece); the returned future resolves when the body
        ended, or fails with the httpx error (read timeout, cut, malformed) or with whatever
        ``on_body`` raised. The connection is released or aborted exactly as by iteration. Bytes
        from ``ready_chunk()`` are not repeated. ``pause_reading``/``resume_reading`` hold the
        upstream while the consumer cannot take more (its read timeout does not run meanwhile)."""
        conn = self._conn
        done = self._done = (conn.loop if conn is not None else asyncio.get_running_loop()).create_future()
        self._on_body = on_body
        if conn is None:
            done.set_result(None)
            return done
        while conn.chunks and self._conn is not None:
            self._push(conn.pop())
        if self._conn is None:
            return done
        if conn.paused:  # the queue had filled up before the pipe started
            conn.paused = False
            conn.transport.resume_reading()
        if conn.closed:
            self._push(b"")
            return done
        conn.sink = self._push
        if self._timeout is not None:
            conn.deadline = conn.loop.time() + self._timeout
            conn.watchdog.add(conn)
        return done

    def _push(self, data) -> None:
        conn = self._conn
        if conn is None:
            return
        parser = self._parser
        try:
            if data:
                out = parser.feed(data)
            elif data is None:
                raise TimedOut()
            else:
                if conn.exc is not None:
                    raise conn.exc
                parser.feed_eof()
                out = b""
        except BaseException as exc:
            self._stop(conn, _to_httpx(exc, self._request) if isinstance(exc, Exception) else exc)
            return
        if parser.done:
            self._conn = None
            conn.sink = None
            conn.watchdog.waiting.discard(conn)
            self._owner._finish(conn, parser)
            if out:
                try:
                    self._on_body(out, True)
                except BaseException as exc:
                    if not self._done.done():
                        self._done.set_exception(exc)
                    return
            if not self._done.done():
                self._done.set_result(None)
            return
        if self._timeout is not None and not self._held:
            conn.deadline = conn.loop.time() + self._timeout
        if out:
            try:
                self._on_body(out, False)
            except BaseException as exc:
                self._stop(conn, exc)

    def _stop(self, conn, exc: BaseException) -> None:
        self._conn = None
        conn.sink = None
        conn.watchdog.waiting.discard(conn)
        conn.abort()
        done = self._done
        if done is not None and not done.done():
            done.set_exception(exc)

    def expire(self, message: str = "the response took longer than its total timeout") -> None:
        """End a piped body now with httpx.ReadTimeout (a total-time limit ran out)."""
        conn = self._conn
        if conn is not None and self._done is not None:
            self._stop(conn, httpx.ReadTimeout(message, request=self._request))

    def set_read_timeout(self, seconds: float | None) -> None:
        """The longest wait for the next body bytes from now on (e.g. a first-event timeout)."""
        self._timeout = _seconds(seconds)

    def pause_reading(self) -> None:
        conn = self._conn
        if conn is not None and not self._held:
            self._held = True
            conn.watchdog.waiting.discard(conn)  # waiting on our consumer, not on the upstream
            if not conn.closed:
                conn.transport.pause_reading()

    def resume_reading(self) -> None:
        conn = self._conn
        if conn is not None and self._held:
            self._held = False
            if not conn.closed:
                conn.transport.resume_reading()
            if self._timeout is not None:
                conn.deadline = conn.loop.time() + self._timeout
                conn.watchdog.add(conn)

    def __aiter__(self):
        return self

    def ready_chunk(self) -> bytes:
        """Body bytes already here (those that came with the head), without waiting; b"" if none."""
        first, self._first = self._first, b""
        return first

    def at_end(self) -> bool:
        """True once the body has been read to its end (iterating further only stops)."""
        return self._conn is None and not self._first

    def declared_length(self) -> int | None:
        """The body size the head announced (Content-Length), or None."""
        return self._parser.content_length()

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
            conn.sink = None
            conn.watchdog.waiting.discard(conn)
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
    """httpx transport: HTTP/1.1 over asyncio, O(1) idle pool per (scheme, host, port[, proxy]).

    ``ssl_context``: for https (``tls.client_context``, built at startup; its ALPN is set to
    http/1.1 here). ``proxy``: a ``plexus.proxies.Proxy`` every connection goes through, or None.
    """

    def __init__(self, *, connect_timeout: float = 10.0, ttfb_timeout: float = 300.0,
                 read_timeout: float = 300.0, max_idle_per_host: int = 64, idle_ttl: float = 60.0,
                 ssl_context: ssl.SSLContext | None = None, proxy=None) -> None:
        self._connect_timeout = _seconds(connect_timeout)
        self._ttfb_timeout = _seconds(ttfb_timeout)
        self._read_timeout = _seconds(read_timeout)
        self._pool = IdlePool(max_idle_per_host, idle_ttl)
        self._sweep_every = max(idle_ttl / 2, 0.01)
        self._sweeper: asyncio.TimerHandle | None = None
        self._conns: set[Conn] = set()  # every open connection, idle or busy (for aclose)
        self._watchdog: Watchdog | None = None
        if ssl_context is not None:
            ssl_context.set_alpn_protocols(_tls.ALPN)
        self._ssl = ssl_context
        self._route = None if proxy is None else Route(proxy)
        self._closed = False

    async def open(self, method: bytes, url: str, headers: list[tuple[bytes, bytes]], body: bytes,
                   ttfb: float | None = None, loop: asyncio.AbstractEventLoop | None = None,
                   connect: float | None = None, read: float | None = None) -> RawResponse:
        """The gateway's call: send one request, return once the response head has arrived.

        The same exchange as ``handle_async_request`` with no httpx objects built: ``url`` is
        parsed once per distinct string (cached), ``headers`` go to the wire as given (plus Host
        and Content-Length), connect and read timeouts are the transport's, ``ttfb`` overrides its
        default (and ``connect``/``read`` theirs: a target's own timeouts). Errors are httpx's own
        exceptions, as from ``handle_async_request``.
        """
        if self._closed:
            raise RuntimeError("PlexusTransport is closed")
        target = _TARGETS.get(url)
        if target is None:
            target = _target(url)
        key, netloc, path = target
        return await self._send(loop or asyncio.get_running_loop(), key, netloc, path, method, headers, body,
                                self._ttfb_timeout if ttfb is None else _seconds(ttfb),
                                self._connect_timeout if connect is None else _seconds(connect),
                                self._read_timeout if read is None else _seconds(read), None)

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
        route = self._route
        if route is None:
            head = encode_head(method, path, netloc, headers, len(body))
        else:
            key = key + route.tag
            if key[0] == b"http":  # to the proxy in absolute-form, with its credentials
                head = encode_head(method, b"http://" + netloc + path, netloc, headers, len(body), route.auth_line)
            else:  # inside the CONNECT tunnel: exactly what goes to the origin directly
                head = encode_head(method, path, netloc, headers, len(body))
        if body and len(body) < 16384:
            head, body = head + body, b""
        is_head = method == b"HEAD"
        pool = self._pool
        now = loop.time()
        while (conn := pool.pop(key, now)) is not None:
            # The request may go out on another connection only while not one byte of it has been sent.
            if conn.loop is loop and not conn.dead(now):
                try:
                    conn.transport.write(head)
                except Exception:  # a closed handle: nothing was sent
                    conn.abort()
                    continue
                return await self._exchange(conn, body, is_head, ttfb, read_t, request)
            conn.abort()  # dead, or made on another event loop: unusable here
        conn = await self._connect(key, connect_t, request, loop)
        try:
            conn.transport.write(head)
        except Exception as exc:
            conn.abort()
            raise _to_httpx(exc, request) from exc
        return await self._exchange(conn, body, is_head, ttfb, read_t, request)

    async def _connect(self, key, timeout, request, loop) -> Conn:
        scheme, host, port = key[0], key[1], key[2]
        watchdog = self._watchdog
        if watchdog is None or watchdog.loop is not loop:
            watchdog = self._watchdog = Watchdog(loop)
        conn = Conn(key, loop, self._conns, watchdog)
        tls = self._ssl_context() if scheme == b"https" else None
        hostname = host.decode("ascii")
        route = self._route
        try:
            async with asyncio.timeout(timeout):
                if route is None:
                    await loop.create_connection(lambda: conn, hostname, port, ssl=tls,
                                                 server_hostname=hostname if tls else None)
                else:
                    await open_connection(loop, conn, route, hostname, port, tls, request)
        except BaseException as exc:
            conn.abort()
            if isinstance(exc, TimeoutError):
                via = "" if route is None else f" through proxy {route.proxy.display}"
                raise httpx.ConnectTimeout(f"connect to {hostname}:{port}{via} timed out", request=request) from exc
            if isinstance(exc, OSError):  # refused, DNS (gaierror), TLS (SSLError)
                raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
            raise
        return conn

    async def _exchange(self, conn: Conn, body: bytes, is_head: bool, ttfb, read_t, request) -> RawResponse:
        """The head is written: send the rest of the body, read the response head. Never retried."""
        loop = conn.loop
        parser = ResponseParser(is_head)
        conn.got = False
        try:
            if body:
                conn.transport.write(body)
            deadline = None if ttfb is None else loop.time() + ttfb
            while True:
                if conn.chunks:
                    data = conn.pop()
                else:
                    data = await conn.read(deadline)
                if not data:
                    parser.feed_eof()  # raises: no complete head
                rest = parser.feed_head(data)
                if rest is not None:
                    break
            first = parser.feed(rest) if rest else b""
        except BaseException as exc:
            conn.abort()
            if isinstance(exc, Exception):
                raise _to_httpx(exc, request) from exc
            raise
        if parser.done:
            self._finish(conn, parser)
            conn = None
        return RawResponse(self, conn, parser, first, read_t, request)

    def _finish(self, conn: Conn, parser: ResponseParser) -> None:
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
        if self._ssl is None:  # no context given (tests, scripts): the default trust, built once
            self._ssl = _tls.client_context()
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
