"""The response side of one inbound request: ``Response``, handed to the handler.

Theory: output bypasses h11 (see ``messages.py``). A response is either sent whole (``send``:
content-length added, head and body in one write) or streamed (``start`` / ``write`` / ``end``:
chunked for HTTP/1.1 peers, close-delimited for HTTP/1.0). ``write`` waits only while the
transport has paused writing (backpressure, ``flow.FlowControl``), and at most
``write_timeout`` seconds: a client that reads nothing for that long is cut off (the
connection is aborted, which cancels the handler task, so the upstream call is released at
once rather than held by a client that went away without closing). ``_run`` wraps the handler:
a failure before the response started becomes a 500, after it a closed connection, never a
half response on a reusable connection.
"""

from __future__ import annotations

import asyncio
import logging

from .messages import (
    LAST_CHUNK,
    bodyless_head,
    chunked_head,
    close_delimited_head,
    error_response,
    fixed_head,
)

log = logging.getLogger("plexus.server")

_SINGLE_WRITE_MAX = 64 * 1024  # up to this, head + body are joined into one write

# Response streaming modes.
_NONE, _CHUNKED, _RAW, _NOBODY = range(4)

_ERROR_500 = {
    keep_alive: error_response(500, "Internal server error", "server_error", keep_alive)
    for keep_alive in (True, False)
}


class Response:
    """The response to one request; handed to the handler with the request."""

    __slots__ = ("_proto", "_transport", "_flow", "loop", "started", "finished", "keep_alive",
                 "_chunked_ok", "_head_only", "_mode", "sent")

    def __init__(self, proto: "HttpProtocol", keep_alive: bool, chunked_ok: bool, head_only: bool):
        self._proto = proto
        self._transport = proto.transport
        self._flow = proto.flow
        self.loop = proto._loop  # the connection's event loop (asyncio.get_running_loop() costs a getpid())
        self.started = False
        self.finished = False
        self.keep_alive = keep_alive  # the connection may carry another request afterwards
        self._chunked_ok = chunked_ok  # HTTP/1.1 peer
        self._head_only = head_only  # HEAD request: headers only
        self._mode = _NONE
        self.sent = 0  # body bytes handed to the transport (for the access log / usage record)

    @property
    def client_ip(self) -> str:
        """The peer's IP address as the socket reports it ("" when unknown, e.g. a Unix socket);
        read once per connection."""
        ip = self._proto.peer_ip
        if ip is None:
            peer = self._transport.get_extra_info("peername") if self._transport is not None else None
            ip = self._proto.peer_ip = peer[0] if isinstance(peer, tuple) and peer else ""
        return ip

    def send(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """A complete response; content-length is added here."""
        if self._proto.closing:
            self.started = self.finished = True
            return
        if self.started:
            raise RuntimeError("response already started")
        self.started = self.finished = True
        write = self._transport.write
        self.sent = len(body)
        if status >= 200 and status != 204 and status != 304:
            head = fixed_head(status, headers, len(body), self.keep_alive)
            if self._head_only or not body:
                write(head)
            elif len(body) <= _SINGLE_WRITE_MAX:
                write(head + body)
            else:
                self._transport.writelines([head, body])
        else:
            write(bodyless_head(status, headers, self.keep_alive))
        self._proto._response_done(self)

    def start(self, status: int, headers: list[tuple[bytes, bytes]], data: bytes = b"") -> None:
        """Begin a streamed response (chunked; close-delimited for an HTTP/1.0 peer). ``data``, the
        first piece of the body if it is already known, goes out in the same write as the head."""
        if self._proto.closing:
            self.started = True
            return
        if self.started:
            raise RuntimeError("response already started")
        self.started = True
        if not (status >= 200 and status != 204 and status != 304):
            self._mode = _NOBODY
            head = bodyless_head(status, headers, self.keep_alive)
        elif self._chunked_ok:
            self._mode = _NOBODY if self._head_only else _CHUNKED
            head = chunked_head(status, headers, self.keep_alive)
        else:
            self._mode = _NOBODY if self._head_only else _RAW
            self.keep_alive = False
            head = close_delimited_head(status, headers)
        if data:
            self.sent += len(data)
            if self._mode == _CHUNKED:
                head += b"%x\r\n%b\r\n" % (len(data), data)
            elif self._mode == _RAW:
                head += data
        self._transport.write(head)

    async def write(self, data: bytes) -> None:
        """Write one chunk now; waits first only while the client is not reading (backpressure)."""
        if not data or self._proto.closing:
            return
        mode = self._mode
        if mode == _NONE:
            raise RuntimeError("write() outside a started, unfinished streamed response")
        flow = self._flow
        if flow.write_paused:
            try:
                async with asyncio.timeout(self._proto._limits.write_timeout):
                    await flow.drain()
            except TimeoutError:
                self._proto._abort_stalled()
                await flow.drain()  # connection_lost cancels this task and releases the upstream
                raise asyncio.CancelledError()
            if self._proto.closing or self._mode != mode:
                return
        self.sent += len(data)
        if mode == _CHUNKED:
            self._transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        elif mode == _RAW:
            self._transport.write(data)

    def write_nowait(self, data: bytes) -> bool:
        """Write one chunk now, from a callback (no await); True when the client's transport has
        paused writing: the caller should stop producing and call ``when_writable``."""
        if self._proto.closing:
            return False
        mode = self._mode
        self.sent += len(data)
        if mode == _CHUNKED:
            self._transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        elif mode == _RAW:
            self._transport.write(data)
        elif mode == _NONE:
            raise RuntimeError("write_nowait() outside a started, unfinished streamed response")
        return self._flow.write_paused

    def when_writable(self, resume) -> None:
        """Call ``resume()`` once the client drained its buffer; if it reads nothing for
        ``write_timeout``, the connection is aborted instead (which cancels the handler)."""
        proto = self._proto
        timer = self.loop.call_later(proto._limits.write_timeout, proto._abort_stalled)

        def writable() -> None:
            timer.cancel()
            if not proto.closing:
                resume()
        self._flow.on_writable = writable
        if not self._flow.write_paused:  # drained in the meantime
            self._flow.on_writable = None
            writable()

    def end(self, data: bytes = b"") -> None:
        """Finish a streamed response; ``data``, a last piece of body, goes out in the same write as the
        end of the body (without waiting on backpressure: it is one piece, the transport buffers it)."""
        if self._proto.closing:
            self.finished = True
            return
        mode = self._mode
        if mode == _NONE:
            raise RuntimeError("end() without a started, unfinished streamed response")
        self._mode = _NONE
        self.finished = True
        self.sent += len(data)
        if mode == _CHUNKED:
            self._transport.write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(data), data) if data else LAST_CHUNK)
        elif mode == _RAW and data:
            self._transport.write(data)
        self._proto._response_done(self)

    async def _run(self, handler: Handler, request: Request) -> None:
        try:
            await handler(request, self)
        except asyncio.CancelledError:
            if not self.finished:  # disconnect (nothing to do) or shutdown: drop the connection
                self.finished = True
                self._mode = _NONE
                self._proto._close()
            raise
        except Exception:
            log.exception("handler failed on %r", request)
            self._abandon()
        else:
            if not self.finished:
                log.error("handler returned without finishing the response to %r", request)
                self._abandon()

    def _abandon(self) -> None:
        """The handler is gone and the response is incomplete: 500 if possible, else close."""
        if self.finished:
            return
        if self._proto.closing:
            self.started = self.finished = True
        elif not self.started:
            self.started = self.finished = True
            data = _ERROR_500[self.keep_alive]
            if self._head_only:
                data = data[: data.index(b"\r\n\r\n") + 4]
            self._transport.write(data)
            self._proto._response_done(self)
        else:
            self.finished = True
            self._mode = _NONE
            self._proto._close()
