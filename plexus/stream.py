"""Stream translators: upstream bytes in, client bytes out (sans-IO).

Both kinds have the same three methods, so the handler's pump does not care which it has:

    feed(chunk: bytes) -> bytes    bytes to write to the client now (b"" if none yet)
    close() -> bytes               the upstream body ended: the final bytes; if the upstream
                                   had not finished (below), the caller dialect's error event
                                   (a cut stream never looks like a clean finish)
    fail(err) -> bytes             the upstream read failed (timeout, reset): the error event,
                                   unless the stream had already finished or ended

When a stream is over, the same rules for relay and translation, every dialect:
- finished: the dialect's finish was sent, a non-null `"finish_reason"` (OpenAI),
  `"stop_reason"` (Anthropic message_delta) or `"finishReason"` (Gemini). What may follow
  (the usage chunk, `[DONE]`, message_stop) may also be missing: vLLM, llama.cpp, Ollama and
  OpenRouter end OpenAI streams without `[DONE]`. A body ending after the finish is clean.
- ended: `data: [DONE]` (OpenAI), `event: message_stop` (Anthropic), `event: response.completed`
  / `response.failed` (Responses; `response.incomplete` is its finish: a non-null
  `"incomplete_details"`), or the upstream's own error event, relayed as is: `data: {"error"…`
  (OpenAI, Gemini), `event: error` (Anthropic, Responses). The space after the colon is
  optional (SSE allows `data:[DONE]`); lines end in LF, CRLF or CR.
- cut: anything else: the client gets the dialect's error event.

Each dialect's rules are its registry record's `stream_end` (dialects/registry.py), read once
when a Passthrough is made; nothing here names a dialect.

`Passthrough` (client dialect == provider type) returns every chunk untouched, the same object
(no copy, no parse), and applies those rules to the bytes: the finish counts once the line that
carries it has ended (a body cut inside that line is a cut). Line markers count only at a line
start (after LF, CRLF or a lone CR, or the stream start) and keys only with their quotes, so
text that merely mentions them inside a JSON string (where a newline and a quote are always
escaped) cannot fool it; a marker split across chunks is found by keeping the last `_KEEP`
bytes of the previous chunk (`_tail`). Per chunk the cost is a `bytes.find` per marker (a
second one for the finish key when it is there: OpenAI sends `"finish_reason":null` in every
chunk; OpenAI's usual one-event chunk takes a shorter path); `bytes in bytes` is slower in
CPython 3.11. The error event of a cut follows a line end or blank line when the upstream
stopped inside an event, so that it parses on its own. The Gemini JSON-array body (no
alt=sse) is relayed by the record's `array_relay` (gemini.framing.ArrayRelay) instead, which
forwards complete array elements only, so the client body always stays valid JSON.

`Translator` composes the source dialect's StreamDecoder with the client dialect's
StreamEncoder through the IR Sink (plexus/ir.py). Output does not depend on how the input
is split. close() and fail(err) both end the decoder (`dec.close(err)`), which flushes a last
event and ends cleanly if the upstream's finish was seen, else with the error (the cut, or
`err`): only a stream cut before its finish is an error, however it was cut.
"""

from __future__ import annotations

from . import ir
from .dialects.registry import Dialect, get
from .errors import GatewayError, stream_cut
from .sse import MAX_EVENT_BYTES

_KEEP = 64      # bytes of the previous chunk kept for markers split across chunks
_WS = b" \t"
_EVENT_END = (b"\n\n", b"\r\n\r\n", b"\r\r")


def _on_a_line(buf: bytes, value: bytes, field: bytes, i: int) -> bool:
    """`value` occurs (at `i` or later) right after `field` (+ one optional space) at the start
    of a line."""
    n = len(field)
    while i != -1:
        j = i - 1 if buf[i - 1:i] == b" " else i
        s = j - n
        if s >= 1 and buf[s - 1] in b"\r\n" and buf[s:j] == field:
            return True
        i = buf.find(value, i + 1)
    return False


def _string_at(buf: bytes, j: int) -> str | None:
    """The JSON string value starting at ``j`` (its opening quote), when whole in ``buf``."""
    if buf[j:j + 1] != b'"':
        return None
    e = buf.find(b'"', j + 1)
    return buf[j + 1:e].decode("utf-8", "replace") if e != -1 else None


class Passthrough:
    __slots__ = ("dialect", "_rules", "_third", "_counter_key", "_count", "_klen", "_fast", "_tail", "_pending", "_finishing", "done",
                 "_array", "_failure", "_error_event", "finish", "_ready", "_null_end")

    def __init__(self, dialect: str | Dialect, sse: bool = True) -> None:
        """`dialect`: its name or registry record; `sse` False: the dialect's non-SSE stream
        body (Gemini's JSON array, relayed by the record's `array_relay`)."""
        d = get(dialect)
        self.dialect = d.name
        end = d.stream_end
        self._rules = (end.marker, end.field, end.marker2, end.field2, end.finish_key)
        self._third = (end.marker3, end.field3) if end.marker3 is not None else None
        self._counter_key = end.counter_key
        self._count = -1             # the last value of the counter key seen (Responses)
        # the one-event fast path: the markers that can open a `data: ` line's value
        self._fast = tuple(m for m in (end.marker, end.marker2) if m and m[:1] == b"{") \
            if end.one_line_events else None
        self._error_event = d.stream_error_event
        self._klen = len(end.finish_key)
        self._tail = b"\n"           # the stream start counts as a line start
        self._pending = False        # the buffer ended between the finish key and its value
        self._finishing = False      # the finish key was seen, its line has not ended yet
        self.done = False
        self.finish: str | None = None  # the finish value as sent (e.g. "stop"), for the usage record
        self._failure = None
        self._array = d.array_relay(MAX_EVENT_BYTES) if not sse and d.array_relay else None
        # the one-event fast path may run: one-line events, not done, nothing pending, the last
        # chunk ended a line (recomputed after every chunk the slow path takes)
        self._ready = self._fast is not None and self._array is None
        # how the usual one-event chunk ends: its (last) finish key with a null value
        self._null_end = end.finish_key + b"null}]}\n\n"

    @property
    def failure(self) -> str | None:
        """After close()/fail(): the message of the error event we appended (None: ended cleanly)."""
        return self._array.failure if self._array is not None else self._failure

    @property
    def finished(self) -> bool:
        """The client has had the whole answer (the finish, or the end marker, went through)."""
        if self._array is not None:
            return self._array.finished or self._array.done
        return self.done and self._failure is None

    def feed(self, chunk: bytes) -> bytes:
        if self._ready and chunk.startswith(b"data: {"):
            # OpenAI's usual chunk, one whole event of one `data: {...}` line after a line end:
            # a line marker can only be at its start, and the key's line ends in it (this saves
            # two of the four searches; Anthropic and Gemini chunks gain nothing from it). Most
            # such chunks end in `"finish_reason":null}]}`: their last finish key is null.
            n = len(chunk)
            if chunk.find(b"\n") == n - 2 and 13 not in chunk and chunk[n - 1] == 10:
                if chunk.startswith(self._fast, 6):
                    self.done = True
                    self._ready = False
                    return chunk
                if not chunk.endswith(self._null_end):
                    key = self._rules[4]
                    i = chunk.rfind(key)
                    if i != -1 and not chunk.startswith(b"null", i + self._klen):
                        j = self._finish_value(chunk, chunk.find(key))
                        if j >= 0:
                            self.finish = _string_at(chunk, j)
                            self.done = True
                            self._ready = False
                            return chunk
                self._tail = b"\n"            # (an event boundary: the next line starts fresh)
                return chunk
        out = self._feed(chunk)
        self._ready = (self._fast is not None and not self.done and not self._pending and not self._finishing
                       and self._array is None and self._tail[-1] in b"\r\n")
        return out

    def _feed(self, chunk: bytes) -> bytes:
        if self._array is not None:
            return self._array.feed(chunk)
        if self.done or not chunk:
            return chunk
        if self._finishing:
            if 10 in chunk or 13 in chunk:
                self.done = True
            else:
                self._tail = (self._tail + chunk)[-_KEEP:]
            return chunk
        v1, f1, v2, f2, key = self._rules
        tail = self._tail
        buf = tail + chunk                    # one copy of the chunk, a few C-level searches
        find = buf.find
        i = find(v1)
        if i != -1 and _on_a_line(buf, v1, f1, i):
            self.done = True
            return chunk
        if v2 is not None:
            i = find(v2)
            if i != -1 and _on_a_line(buf, v2, f2, i):
                self.done = True
                return chunk
            if self._third is not None:
                v3, f3 = self._third
                i = find(v3)
                if i != -1 and _on_a_line(buf, v3, f3, i):
                    self.done = True
                    return chunk
        if self._counter_key is not None:
            self._counted(buf)
        # (a key wholly inside the tail was decided by the previous feed, unless `_pending`)
        t = len(tail) - self._klen
        self._pending, pending = False, self._pending
        i = find(key, 0 if pending or t < 0 else t)
        if i != -1:
            j = i + self._klen
            # the usual chunk has one `"finish_reason":null` (OpenAI sends it in every chunk)
            if not buf.startswith(b"null", j) or find(key, j) != -1:
                j = self._finish_value(buf, i)
                if j >= 0:
                    self.finish = _string_at(buf, j)
                    if find(b"\n", j) != -1 or find(b"\r", j) != -1:
                        self.done = True
                        return chunk
                    self._finishing = True
                self._pending = j == -2
        self._tail = buf[-_KEEP:]
        return chunk

    def _counted(self, buf: bytes) -> None:
        """Remember the last whole value of the counter key in ``buf``."""
        key = self._counter_key
        i = buf.rfind(key)
        while i != -1:
            j = i + len(key)
            while j < len(buf) and buf[j] in _WS:
                j += 1
            k = j
            while k < len(buf) and 48 <= buf[k] <= 57:
                k += 1
            if k > j and k < len(buf):   # digits ended inside the buffer: the whole number
                self._count = int(buf[j:k])
                return
            i = buf.rfind(key, 0, i)

    def _finish_value(self, buf: bytes, i: int) -> int:
        """Where the first non-null value of the finish key (at `i` or later) starts: -1 none,
        -2 not known yet (the buffer ends before it; the key stays in `_tail`)."""
        key, n, k = self._rules[4], len(buf), self._klen
        while i != -1:
            j = i + k
            while j < n and buf[j] in _WS:
                j += 1
            if j == n:
                return -2
            if buf[j] != 110:  # "n": null
                return j
            i = buf.find(key, j)
        return -1

    def close(self) -> bytes:
        if self._array is not None:
            return self._array.close()
        if self.done:
            return b""
        return self.fail(stream_cut())

    def fail(self, err: GatewayError) -> bytes:
        if self._array is not None:
            return self._array.fail(err)
        if self.done:
            return b""
        self.done = True
        self._ready = False
        self._failure = err.message
        ev = self._error_event(err) if self._counter_key is None else self._error_event(err, self._count + 1)
        t = self._tail
        if t == b"\n" or t.endswith(_EVENT_END):     # at an event boundary
            return ev
        # the upstream stopped inside an event: end it first, so the error event parses alone
        return (b"\n" if t[-1] == 10 else b"\r\n" if t[-1] == 13 else b"\n\n") + ev


class Translator:
    __slots__ = ("enc", "dec", "_closed", "_feed", "_take")

    def __init__(self, src: str | Dialect, dst: str | Dialect, ctx: ir.Context) -> None:
        """`src`: the provider's dialect, `dst`: the client's (names or registry records)."""
        self.enc = get(dst).encode.StreamEncoder(ctx)
        self.dec = get(src).decode.StreamDecoder(self.enc)
        self._closed = False
        self._feed = self.dec.feed         # bound once: feed() is the per-chunk hot path
        self._take = self.enc.take

    def feed(self, chunk: bytes) -> bytes:
        self._feed(chunk)
        return self._take()

    @property
    def failure(self) -> str | None:
        """After close()/fail(): the message of the error event written (None: ended cleanly)."""
        return self.enc.failure

    @property
    def finished(self) -> bool:
        """The client has had the whole answer (the encoder wrote the end of the stream)."""
        return self.enc._done and self.enc.failure is None

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
        try:
            self.dec.close(err)
        except Exception:      # (fail() is the handler's last resort: it must end the stream)
            self.enc.error(err)
        return self.enc.take() + self.enc.close()
