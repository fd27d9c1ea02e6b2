"""Backpressure for one connection, in one tiny idempotent object.

Theory (model: uvicorn ``flow_control.py``). The transport tells the protocol when its write
buffer passes the high-water mark (``pause_writing``) and when it drains below the low-water
mark (``resume_writing``); the protocol forwards both here. A streaming response awaits
``drain()`` before writing only while writing is paused, so a slow client stops the handler,
which stops reading upstream: the gateway never buffers a whole stream. Reading is paused and
resumed the same way when the inbound side runs ahead of the handler. Every method is
idempotent, so callers never track the transport's state themselves.
"""

from __future__ import annotations

import asyncio

__all__ = ["FlowControl"]


class FlowControl:
    __slots__ = ("_transport", "read_paused", "write_paused", "_writable", "on_writable")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self.read_paused = False
        self.write_paused = False
        # Created on the first pause only: most connections are never paused.
        self._writable: asyncio.Event | None = None
        self.on_writable = None  # called once at the next resume_writing (push-mode relays)

    async def drain(self) -> None:
        """Return once writing is allowed (at once if it is not paused)."""
        if self.write_paused:
            event = self._writable
            if event is None:
                event = self._writable = asyncio.Event()
            await event.wait()

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            if not self._transport.is_closing():
                self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            if not self._transport.is_closing():
                self._transport.resume_reading()

    def pause_writing(self) -> None:
        if not self.write_paused:
            self.write_paused = True
            if self._writable is not None:
                self._writable.clear()

    def resume_writing(self) -> None:
        if self.write_paused:
            self.write_paused = False
            if self._writable is not None:
                self._writable.set()
        hook = self.on_writable
        if hook is not None:
            self.on_writable = None
            hook()
