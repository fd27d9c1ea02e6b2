"""The inbound HTTP/1.1 server: one asyncio.Protocol per connection, h11 as the parser.

Theory (model: uvicorn ``protocols/http/h11_impl.py``, hypercorn ``protocol/h11.py``).

*Input* is parsed by h11 (RFC 9112 framing, header validation, chunked decoding, the 431 bound
on an incomplete head), except that a plain request whose head arrives whole in one read takes
``messages.parse_simple_head`` (same grammar and results as h11, ~7x cheaper; it only ever says
"mine" or "ask h11", so every error and every unusual request is still h11's; FAST_PATH turns it
off). Its Content-Length body is then collected here (phase BODY). *Output* is not sent through
h11: ``messages.py`` frames it from precomputed bytes. h11's state machine stays consistent
because each connection uses one ``h11.Connection`` per request/response cycle and only ever
*receives* on it; when a response completes on a keep-alive connection the unparsed bytes
(``trailing_data``, public API) move to a fresh ``h11.Connection``. That costs ~3 µs, against
~20 µs for sending h11 events.

A connection is always in one phase:

    IDLE   no byte of the next request yet          deadline: keepalive (header_timeout if new)
    RECV   head/body arriving, being parsed by h11   deadline: header_timeout from the first byte
                                                     until the head is parsed; then body_timeout
                                                     from the latest body bytes
    BODY   fast-path head parsed, body arriving      deadline: body_timeout from the latest bytes
    BUSY   request complete, handler task running    no deadline; input buffered, not parsed
    LINGER error response sent, write side shut      deadline: LINGER_SECONDS; input discarded
    OVER   accepted beyond ``max_connections``       deadline: min(LINGER_SECONDS, header_timeout);
                                                     its first bytes get a 503 (``overload_response``:
                                                     the dialect their path names), then LINGER
    CLOSED transport closed or lost

One task per request: created when the whole body has arrived. No task per connection; all
timing is one ``loop.call_at`` handle re-armed lazily (a deadline is a float assignment; the
handle re-checks it when it fires), so a busy keep-alive connection creates no timer per request.

Pipelining: bytes arriving in BUSY stay in h11's buffer (reading pauses past HIGH_WATER) and are
parsed after the response completes, so responses go out in request order.

Errors before a response starts become a JSON error response and a lingering close: 400
malformed (or h11's status hint), 400 Content-Length with Transfer-Encoding (smuggling), 413
body over ``max_body_bytes`` (declared: at once, unread; chunked: as soon as it passes),
431 head over ``max_header_bytes``, 408 head not received within ``header_timeout`` or a body
that stalls for ``body_timeout`` (a slow, large upload that keeps making progress is never cut). A
handler that fails before starting its response gets a 500; one that fails mid-stream gets its
connection closed, never a half response on a reusable connection. A client disconnect
(including its FIN: ``eof_received`` closes) cancels the handler task at once, and later writes
are dropped silently.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from dataclasses import dataclass
from typing import Awaitable, Callable

import h11

from .flow import FlowControl
from .messages import CONTINUE_100, Request, error_response, parse_simple_head
from .overload import overload_response
from .response import Response

__all__ = ["Handler", "ServerLimits", "Response", "HttpProtocol", "start_server"]

log = logging.getLogger("plexus.server")

Handler = Callable[[Request, "Response"], Awaitable[None]]


# open client connections, process-wide (read by the metrics gauge)
OPEN = [0]


@dataclass(frozen=True, slots=True)
class ServerLimits:
    max_body_bytes: int = 32 * 1024 * 1024
    max_header_bytes: int = 32 * 1024
    keepalive_timeout: float = 75.0  # idle keep-alive connection closed after this
    header_timeout: float = 30.0  # a request's head must arrive within this (from its first byte)
    body_timeout: float = 60.0  # longest gap between two pieces of a request body
    write_timeout: float = 60.0  # longest a response write waits for a client that reads nothing
    max_connections: int = 10000  # open connections (OPEN); one more gets a 503 and is closed; 0 = no limit


_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST and drops queued data
HIGH_WATER = 64 * 1024  # bytes read ahead while a handler runs before reading pauses
LINGER_SECONDS = 2.0  # after an error response: drain the client's unsent body this long
_IDLE, _RECV, _BODY, _BUSY, _LINGER, _CLOSED, _OVER = range(7)

FAST_PATH = True  # parse plain requests without h11 (messages.parse_simple_head)

_Request, _Data, _EndOfMessage = h11.Request, h11.Data, h11.EndOfMessage
_DONE, _IDLE_H11, _SERVER = h11.DONE, h11.IDLE, h11.SERVER
_RemoteProtocolError = h11.RemoteProtocolError


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    __slots__ = ("_handler", "_limits", "_loop", "_max_body", "_max_head", "transport", "flow",
                 "closing", "_conn", "_state", "_deadline", "_timer", "_timer_at", "_seen",
                 "_request", "_chunks", "_body_len", "_need", "_keep_alive", "_response", "_task",
                 "_fast", "peer_ip", "_holder", "_conns", "_draining")

    def __init__(self, handler: Handler, limits: ServerLimits, loop: asyncio.AbstractEventLoop,
                 fast_path: bool | None = None, holder: list | None = None, conns: set | None = None):
        self._handler = handler
        self._limits = limits
        self._loop = loop
        self._max_body = limits.max_body_bytes
        self._max_head = limits.max_header_bytes
        self.transport: asyncio.Transport | None = None
        self.flow: FlowControl | None = None
        self.closing = False  # no more responses: writes are dropped
        self._conn = h11.Connection(_SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self._state = _IDLE
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._seen = 0  # RECV: bytes of this cycle before the head parsed; BUSY: bytes read ahead
        self._request: Request | None = None
        self._chunks: list | None = None
        self._body_len = 0
        self._need = 0  # BODY: body bytes still to come
        self._keep_alive = True  # BODY: keep-alive of the fast-parsed request
        self._response: Response | None = None
        self._task: asyncio.Task | None = None
        self._fast = FAST_PATH if fast_path is None else fast_path
        self.peer_ip: str | None = None  # the client's address, read once (Response.client_ip)
        self._holder = holder if holder is not None else [limits]  # [the current limits] (reloads)
        self._conns = conns  # the server's open connections (shutdown: drain), or None
        self._draining = False  # shutdown began: close once the current response is done

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        OPEN[0] += 1
        if self._conns is not None:
            self._conns.add(self)
        self.transport = transport
        self.flow = FlowControl(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError):  # not TCP (e.g. a Unix socket)
                pass
        self._deadline = self._loop.time() + self._limits.header_timeout
        cap = self._limits.max_connections
        if cap and OPEN[0] > cap:  # one too many: its first request gets a 503 (_overloaded)
            self._state = _OVER
            self._deadline = self._loop.time() + min(LINGER_SECONDS, self._limits.header_timeout)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if not data:  # transports never do this; h11 would take b"" for EOF
            return
        state = self._state
        if state == _BUSY:
            self._conn.receive_data(data)
            self._seen += len(data)
            if self._seen > HIGH_WATER:
                self.flow.pause_reading()
            return
        if state == _IDLE:
            self._state = _RECV
            self._deadline = self._loop.time() + self._limits.header_timeout
            self._seen = 0
            if self._fast and self._fast_head(data):
                return
        elif state == _BODY:
            self._deadline = self._loop.time() + self._limits.body_timeout
            self._fast_body(data)
            return
        elif state != _RECV:
            if state == _OVER:
                self._overloaded(data)
            return  # LINGER/CLOSED: discard
        if self._request is None:
            self._seen += len(data)
        self._conn.receive_data(data)
        self._process()
        if self._state == _RECV:
            if self._request is not None:  # the head is parsed: the body's own idle timeout
                self._deadline = self._loop.time() + self._limits.body_timeout
            self._arm()

    def eof_received(self) -> None:
        # A FIN is how clients give up on a request; treat it as a disconnect (the transport
        # closes, connection_lost cancels the handler). Half-closed clients are not supported.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        OPEN[0] -= 1
        if self._conns is not None:
            self._conns.discard(self)
        self._state = _CLOSED
        self.closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task = self._task
        self._task = self._response = None
        if task is not None and not task.done():
            task.cancel()
        if self.flow is not None:
            self.flow.resume_writing()  # release any drain(); writes are dropped from now on

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()

    # --- input: fast path -----------------------------------------------------------------

    def _fast_head(self, data: bytes) -> bool:
        """Take a plain request at the start of a cycle; False leaves ``data`` to h11."""
        parsed = parse_simple_head(data, self._max_head)
        if parsed is None:
            return False
        request, keep_alive, start, length = parsed
        if length > self._max_body:
            return False  # h11's path answers 413
        end = start + length
        if end <= len(data):
            if length:
                request.body = data[start:end]
            if end < len(data):  # pipelined: parsed after this response
                self._conn.receive_data(data[end:])
            self._dispatch(request, keep_alive, True)
            return True
        self._request = request
        self._keep_alive = keep_alive
        self._chunks = [data[start:]] if start < len(data) else []
        self._need = end - len(data)
        self._state = _BODY
        self._deadline = self._loop.time() + self._limits.body_timeout
        self._arm()
        return True

    def _fast_body(self, data: bytes) -> None:
        need = self._need
        if len(data) < need:
            self._chunks.append(data)
            self._need = need - len(data)
            return
        chunks = self._chunks
        if len(data) == need:
            chunks.append(data)
        else:
            chunks.append(data[:need])
            self._conn.receive_data(data[need:])
        request = self._request
        request.body = b"".join(chunks)
        self._request = self._chunks = None
        self._dispatch(request, self._keep_alive, True)

    # --- input: h11 -------------------------------------------------------------------------

    def _process(self) -> None:
        """Pull events out of h11 until it needs data or one request is complete."""
        conn = self._conn
        while True:
            try:
                event = conn.next_event()
            except _RemoteProtocolError as exc:
                self._reject(exc.error_status_hint, "Malformed request: %s" % (exc,))
                return
            kind = type(event)
            if kind is _Data:
                data = event.data
                self._body_len += len(data)
                if self._body_len > self._max_body:
                    self._reject(413, "Request body exceeds %d bytes" % self._max_body)
                    return
                self._chunks.append(data)
            elif kind is _Request:
                if not self._on_head(event):
                    return
            elif kind is _EndOfMessage:
                request = self._request
                chunks = self._chunks
                self._request = self._chunks = None
                if chunks:
                    request.body = bytes(chunks[0]) if len(chunks) == 1 else b"".join(chunks)
                self._dispatch(
                    request,
                    conn.their_state is _DONE,  # else MUST_CLOSE: "Connection: close" or HTTP/1.0
                    conn.their_http_version != b"1.0",
                )
                return
            else:  # NEED_DATA (PAUSED and ConnectionClosed cannot occur before EndOfMessage)
                return

    def _on_head(self, event: h11.Request) -> bool:
        request = Request.from_h11(event)
        headers = request.headers
        max_head = self._max_head
        if self._seen > max_head:  # the head may be larger than the limit: measure it
            size = len(event.method) + len(event.target) + 13
            for name, value in headers:
                size += len(name) + len(value) + 4
            if size > max_head:
                self._reject(431, "Request header block exceeds %d bytes" % max_head)
                return False
        length = None
        chunked = False
        for name, value in headers:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
        if length is not None:
            if chunked:
                self._reject(400, "Content-Length and Transfer-Encoding together")
                return False
            if len(length) > 18 or int(length) > self._max_body:
                self._reject(413, "Request body exceeds %d bytes" % self._max_body)
                return False
        self._request = request
        self._chunks = []
        self._body_len = 0
        if self._conn.they_are_waiting_for_100_continue:
            self.transport.write(CONTINUE_100)
        return True

    def _dispatch(self, request: Request, keep_alive: bool, chunked_ok: bool) -> None:
        """The request is complete: one task runs the handler; input waits until it answers."""
        self._state = _BUSY
        self._deadline = None
        self._seen = 0
        response = Response(self, keep_alive and not self._draining, chunked_ok, request.method == b"HEAD")
        self._response = response
        self._task = self._loop.create_task(response._run(self._handler, request))

    # --- cycle end, errors, timers --------------------------------------------------------

    def _response_done(self, response: Response) -> None:
        """Called by the response once its last byte is written."""
        if response is not self._response or self.closing:
            return
        self._response = self._task = None
        if not response.keep_alive or self._draining:
            self._close()
            return
        conn = self._conn
        if conn.trailing_data[0]:
            # Pipelined bytes: parse them on the next loop pass, not inside the handler's
            # send(). Until then the phase stays BUSY, so new bytes queue up behind them.
            self._loop.call_soon(self._next_cycle)
            return
        limits = self._holder[0]
        if limits is not self._limits:  # a config reload changed them: from the next request on
            self._limits, self._max_body, self._max_head = limits, limits.max_body_bytes, limits.max_header_bytes
        if conn.their_state is not _IDLE_H11:  # h11 read this request: the next needs a fresh one
            self._conn = h11.Connection(_SERVER, max_incomplete_event_size=self._max_head)
        self._state = _IDLE
        self.flow.resume_reading()
        self._deadline = self._loop.time() + self._limits.keepalive_timeout
        self._arm()

    def _next_cycle(self) -> None:
        if self._state != _BUSY:
            return
        data = self._conn.trailing_data[0]
        self._conn = h11.Connection(_SERVER, max_incomplete_event_size=self._max_head)
        self._state = _IDLE
        self.flow.resume_reading()
        self.data_received(data)

    def _reject(self, status: int, message: str) -> None:
        """Answer a request we will not handle, then close (lingering: see _linger)."""
        self._request = self._chunks = None
        self.transport.write(error_response(status, message))
        self._linger()

    def _linger(self) -> None:
        # Closing with unread input makes the kernel send RST, which can destroy the error
        # response before the client reads it. So shut our side, then read and discard the
        # client's remaining bytes until it closes or LINGER_SECONDS pass.
        self.closing = True
        transport = self.transport
        if not transport.can_write_eof():
            self._close()
            return
        self._state = _LINGER
        transport.write_eof()
        self.flow.resume_reading()
        self._deadline = self._loop.time() + min(LINGER_SECONDS, self._limits.header_timeout)
        self._arm()

    def _close(self) -> None:
        if self._state != _CLOSED:
            self._state = _CLOSED
            self.closing = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self.transport.get_write_buffer_size():
                self.transport.abort()  # close() would wait for a flush a stuck client never allows
            else:
                self.transport.close()

    def drain(self) -> None:
        """Shutdown began: an idle keep-alive connection closes now; any other closes once its
        current request is answered (a response not started yet says ``connection: close``)."""
        self._draining = True
        if self._state == _IDLE:
            self._close()
        elif self._response is not None and not self._response.started:
            self._response.keep_alive = False

    def close(self) -> None:
        """Shutdown is over: close now (a handler still running is cancelled)."""
        if self.transport is not None:
            self._close()

    def _overloaded(self, data: bytes) -> None:
        """A connection over ``max_connections``: answer its first request (``data``, whatever
        of it arrived) with a 503 in the dialect its path suggests, then close (lingering when
        input came: its unread body must not turn into a reset that destroys the answer)."""
        self.transport.write(overload_response(data))
        if data:
            self._linger()
        else:
            self._close()

    def _abort_stalled(self) -> None:
        """The client read nothing for write_timeout: drop it (connection_lost cancels the handler)."""
        log.info("client %s read nothing for %g s; closing the connection",
                 self.transport.get_extra_info("peername"), self._limits.write_timeout)
        self._state = _CLOSED
        self.closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        sock = self.transport.get_extra_info("socket")
        if sock is not None:  # reset, so the kernel drops what is queued for it too
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            except (OSError, AttributeError):
                pass
        self.transport.abort()

    def _arm(self) -> None:
        """Make sure the timer fires no later than the current deadline."""
        deadline = self._deadline
        timer = self._timer
        if timer is not None:
            if self._timer_at <= deadline:
                return
            timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        state = self._state
        deadline = self._deadline
        if deadline is None or state == _BUSY or state == _CLOSED:
            return  # re-armed when the phase changes
        if self._loop.time() < deadline - 0.001:
            self._arm()
            return
        if state == _BODY or (state == _RECV and self._request is not None):  # stalled body
            self._reject(408, "Request body stalled: no bytes for %g s" % self._limits.body_timeout)
        elif state == _RECV:  # slow head
            self._reject(408, "Request head not received within %g s" % self._limits.header_timeout)
        elif state == _OVER:  # over the connection limit and silent: the 503 without a request
            self._overloaded(b"")
        else:  # idle keep-alive connection, or the linger period is over
            self._close()


async def start_server(
    handler: Handler, host: str, port: int, limits: ServerLimits | list = ServerLimits(),
    conns: set | None = None, sock=None,
) -> asyncio.base_events.Server:
    """Listen on host:port; every accepted connection gets an HttpProtocol. ``limits`` may be a
    one-element list holding the current limits: a config reload replaces its element, and
    every connection takes the new limits from its next request on. ``conns``: a set that holds
    the open connections (for a graceful shutdown: ``drain()`` each, later ``close()`` each).
    ``sock``: a listening socket to accept from instead (a worker's, inherited: supervisor.py)."""
    loop = asyncio.get_running_loop()
    holder = limits if isinstance(limits, list) else [limits]
    if sock is not None:
        return await loop.create_server(
            lambda: HttpProtocol(handler, holder[0], loop, holder=holder, conns=conns), sock=sock)
    return await loop.create_server(
        lambda: HttpProtocol(handler, holder[0], loop, holder=holder, conns=conns), host, port, reuse_address=True,
        backlog=1024,
    )
