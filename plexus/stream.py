"""Stream translators: upstream bytes in, client bytes out (sans-IO).

Both kinds have the same three methods, so the handler's pump does not care which it has:

    feed(chunk: bytes) -> bytes    bytes to write to the client now (b"" if none yet)
    close() -> bytes               the upstream body ended: the final bytes; if the upstream
                                   never sent its terminal event, the caller dialect's error
                                   event (a cut stream never looks like a clean finish)
    fail(err) -> bytes             the upstream read failed (timeout, reset): the error event,
                                   unless the stream already ended

`Passthrough` (client dialect == provider type) returns every chunk untouched, the same object
(no copy, no parse), and only watches for the dialect's terminal marker. The markers are
matched at a line start, so text that merely mentions them inside a JSON string (where a
newline is always escaped) cannot fool it; a marker split across chunks is found by keeping
the last few bytes of the previous chunk (`_tail`). Each dialect has exactly two markers,
searched with `bytes.find` (`bytes in bytes` is slower in CPython 3.11).

`Translator` composes the source dialect's StreamDecoder with the client dialect's
StreamEncoder through the IR Sink (plexus/ir.py). Output does not depend on how the input
is split.
"""

from __future__ import annotations

from . import ir
from .dialects.anthropic import decode as _ad, encode as _ae, request as _ar
from .dialects.gemini import decode as _gd, encode as _ge, request as _gr
from .dialects.openai import decode as _od, encode as _oe, request as _or
from .errors import GatewayError, error_object, stream_cut, stream_error_event

import orjson

# A line-start marker per dialect that proves the upstream finished the stream (or ended it
# with an error event of its own, which is relayed as is).
_TERMINALS = {
    "openai": (b"\ndata: [DONE]", b'\ndata: {"error"'),
    "anthropic": (b"\nevent: message_stop", b"\nevent: error"),
    "gemini": (b'"finishReason"', b'data: {"error"'),
}


class Passthrough:
    __slots__ = ("dialect", "_markers", "_keep", "_tail", "done", "gemini_array")

    def __init__(self, dialect: str, gemini_sse: bool = True) -> None:
        self.dialect = dialect
        self._markers = _TERMINALS[dialect]
        self._keep = max(len(m) for m in self._markers) - 1
        self._tail = b"\n"           # the stream start counts as a line start
        self.done = False
        self.gemini_array = dialect == "gemini" and not gemini_sse

    def feed(self, chunk: bytes) -> bytes:
        if not self.done and chunk:
            buf = self._tail + chunk           # one copy of the chunk, two searches
            m1, m2 = self._markers
            if buf.find(m1) != -1 or buf.find(m2) != -1:
                self.done = True
            else:
                self._tail = buf[-self._keep:]
        return chunk

    def close(self) -> bytes:
        if self.done:
            return b""
        return self.fail(stream_cut())

    def fail(self, err: GatewayError) -> bytes:
        if self.done:
            return b""
        self.done = True
        if self.gemini_array:
            return b",\r\n" + orjson.dumps(error_object(err, "gemini")) + b"]"
        return stream_error_event(err, self.dialect)


# dialect name → module, for each of the three jobs
REQUEST = {"openai": _or, "anthropic": _ar, "gemini": _gr}
DECODE = {"openai": _od, "anthropic": _ad, "gemini": _gd}
ENCODE = {"openai": _oe, "anthropic": _ae, "gemini": _ge}


class Translator:
    __slots__ = ("enc", "dec", "_closed", "_feed", "_take")

    def __init__(self, src: str, dst: str, ctx: ir.Context) -> None:
        self.enc = ENCODE[dst].StreamEncoder(ctx)
        self.dec = DECODE[src].StreamDecoder(self.enc)
        self._closed = False
        self._feed = self.dec.feed         # bound once: feed() is the per-chunk hot path
        self._take = self.enc.take

    def feed(self, chunk: bytes) -> bytes:
        self._feed(chunk)
        return self._take()

    def close(self) -> bytes:
        if self._closed:
            return b""
        self._closed = True
        self.dec.close()
        return self.enc.take() + self.enc.close()

    def fail(self, err: GatewayError) -> bytes:
        if self._closed:
            return b""
        self._closed = True
        self.enc.error(err)
        return self.enc.take() + self.enc.close()


def content_type(dialect: str, gemini_sse: bool = True) -> bytes:
    if dialect == "gemini" and not gemini_sse:
        return b"application/json"
    return b"text/event-stream"
