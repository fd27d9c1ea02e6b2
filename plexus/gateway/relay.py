"""A streamed answer: hold the head until the first upstream event, then relay the rest.

Theory
------
* ``first_event``: before anything is sent to the client, the upstream body is read until its
  first SSE event is complete (a blank line; comment-only blocks such as ``: keep-alive`` do
  not count), within the target's ``first_event_timeout``. If that event is an error
  (Anthropic's ``event: error`` with ``overloaded_error``, an OpenAI ``data: {"error": …}``
  chunk), the attempt fails over like an HTTP error would, with the status its type maps to
  (``errors.ERROR_TYPE_KIND``), so the same upstream failure gets the same status whichever way
  it came; a body that ends before one complete event fails over as an invalid answer. The
  first event is needed to answer anyway, so holding the head costs no time to first token.
* Then the client's head goes out with the translated first event, and the rest of the body is
  piped: each upstream chunk goes from the connection's callback through the translator to the
  client write (``RawResponse.pipe``, no task switch per event). A client that stops reading
  pauses the upstream; ``server.write_timeout`` cuts it off; a target's ``total_timeout`` ends
  the piped body when the whole exchange has run that long. After the first byte nothing is
  retried: a failure ends the stream with the dialect's error event, is logged, and is reported
  to routing (the target cools down). A provider's own error event ending a relayed stream
  counts the same (classified like a first-event error: a request error cools nothing).
* A graceful shutdown whose grace period runs out cancels the relay mid-stream (Gateway.drain):
  the stream still ends with the dialect's error event (503 "the gateway is shutting down") and
  a complete body (the chunked terminator), never a bare cut. A client that went away gets
  nothing more (its writes are dropped).
"""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter

import orjson

from ..errors import ERROR_TYPE_KIND, KIND_STATUS, GatewayError, from_upstream, shutting_down
from ..routing import INVALID, STREAM_ERROR, classify
from ..routing.outcome import OK, RETRY
from ..stream import Passthrough, Translator
from ..upstream.call import MAX_ERROR_BODY, read_all
from ..upstream.transport import RawResponse
from .usage_tap import UsageStrip

log = logging.getLogger("plexus")

_BLANK = (b"\n\n", b"\r\n\r\n", b"\r\r")


def _has_event(buf: bytes) -> bool:
    for sep in _BLANK:
        if buf.find(sep) != -1:
            return True
    return False


def _first_block(buf: bytes) -> bytes | None:
    """The first complete SSE event of ``buf`` that is not only comments (``: keep-alive``,
    OpenRouter's ``: OPENROUTER PROCESSING``), line ends normalized; None if there is none yet."""
    text = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    start = 0
    while (end := text.find(b"\n\n", start)) != -1:
        block = text[start:end]
        for line in block.split(b"\n"):
            if line and line[:1] != b":":
                return block
        start = end + 2
    return None


def _error_event(block: bytes) -> tuple[int, str] | None:
    """(status, message) when the SSE event ``block`` is an error event, else None."""
    lines = block.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    event, data = b"", b""
    for line in lines:
        name, _, value = line.partition(b":")
        value = value[1:] if value[:1] == b" " else value
        if name == b"event":
            event = value
        elif name == b"data":
            data += value
    failed = event == b"response.failed"   # a Responses API stream that failed
    if event != b"error" and not failed and not data.startswith(b'{"error"'):
        return None
    try:
        obj = orjson.loads(data)
        if failed:
            r = obj.get("response") if isinstance(obj, dict) else None
            obj = r if isinstance(r, dict) else {}
        err = obj.get("error") if isinstance(obj, dict) else None
        if err is None and isinstance(obj, dict) and obj.get("type") == "error":
            err = obj            # a Responses API error event: {"type":"error","code","message"}
    except orjson.JSONDecodeError:
        err = None
    etype = err.get("type") if isinstance(err, dict) else None
    code = err.get("code") if isinstance(err, dict) else None
    kind = ERROR_TYPE_KIND.get(etype) if isinstance(etype, str) else None
    if kind is None and isinstance(code, str):
        kind = ERROR_TYPE_KIND.get(code)   # Responses: the kind is in `code` (rate_limit_exceeded, ...)
    status = KIND_STATUS.get(kind) if kind else (code if isinstance(code, int) and 400 <= code < 600 else 500)
    message = err.get("message") if isinstance(err, dict) else None
    name = etype if isinstance(etype, str) and etype != "error" else code if isinstance(code, str) else ""
    return status, f"error event {name}: {message or ''}".strip(": ")


def _content_type(raw: list[tuple[bytes, bytes]]) -> str:
    """The upstream content-type as httpx's ``headers.get`` gives it (repeated values joined)."""
    values = [v for k, v in raw if k.lower() == b"content-type"]
    if not values:
        return ""
    value = values[0] if len(values) == 1 else b", ".join(values)
    for encoding in ("ascii", "utf-8"):
        try:
            return value.decode(encoding)
        except UnicodeDecodeError:
            pass
    return value.decode("latin-1")


async def first_event(up, rt, target, started: float, loop) -> bytes:
    """Body bytes up to at least the first complete SSE event (or the whole body if it ends
    first), waiting at most ``first_event_timeout`` between reads (and never past the target's
    ``total_timeout`` counted from ``started``)."""
    buf = up.ready_chunk()
    if up.at_end() or (_has_event(buf) and _first_block(buf) is not None):
        return buf
    timeout_set = type(up) is RawResponse
    if timeout_set:
        wait = target.first_event_timeout
        if target.total_timeout:  # never past the whole exchange's limit
            wait = max(0.001, min(wait, started + target.total_timeout - loop.time()))
        up.set_read_timeout(wait)
    try:
        parts = [buf]
        it = aiter(up)
        with rt.map_stream:
            while True:
                try:
                    chunk = await anext(it)
                except StopAsyncIteration:
                    break
                parts.append(chunk)
                if (_has_event(chunk) or _has_event(b"".join(parts[-2:]))) \
                        and _first_block(b"".join(parts)) is not None:
                    break
        return b"".join(parts)
    finally:
        if timeout_set:
            up.set_read_timeout(target.read_timeout)


async def relay_stream(call, target, rt, up, ctx, marks, started: float, deliver: bool,
                       strip: bool = False) -> bool:
    """Relay or translate a 2xx stream (see the module doc); ``strip``: the relayed OpenAI
    stream carries usage the client did not ask for (usage_tap.UsageStrip removes it)."""
    resp = call.resp
    loop = resp.loop
    prov = rt.provider
    d = call.d
    ctype = _content_type(up.raw_headers)
    expect_sse = not (ctx is None and not call.sse)  # else Gemini's JSON-array stream, relayed
    if ("event-stream" not in ctype) if expect_sse else ("json" not in ctype):  # HTML, text: not an answer
        data = await read_all(up, prov, MAX_ERROR_BODY, truncate=True)
        err = from_upstream(502, data, None, prov.name) if b"error" in data else GatewayError(
            502, f"provider '{prov.name}' answered a stream request with '{ctype or 'no content-type'}'",
            "bad_gateway")
        call.failed(target, classify(None, INVALID), 502, err.message, started)
        if deliver:
            raise err
        return False
    early = up.ready_chunk() if not expect_sse else b""
    if expect_sse:
        try:
            early = await first_event(up, rt, target, started, loop)
        except GatewayError as e:
            return call.gave_up(target, e, INVALID, started, deliver)
        if not deliver:
            block = _first_block(early)
            if block is None:  # the body ended before one complete event: nothing to answer with
                call.failed(target, classify(None, INVALID), 502,
                            f"provider '{prov.name}' ended its stream before its first event", started)
                return False
            bad = _error_event(block)
            if bad is not None:
                status, what = bad
                outcome = classify(status, STREAM_ERROR)
                call.failed(target, outcome, status, what, started)
                if outcome.fail_over:
                    return False  # else (the request's own fault) the client gets the error event
    call.router.report(target, OK, loop.time(), ttfb=loop.time() - started)

    if ctx is None:
        tr = Passthrough(d, call.sse)
        headers = rt.forward_headers(up, marks)
    else:
        tr = Translator(rt.dialect, d, ctx)
        headers = [(b"content-type", d.content_type(call.sse)), (b"cache-control", b"no-cache"), *marks]
    feed = tr.feed
    us = None
    if strip:
        us = UsageStrip()
        feed = _chain(us.feed, tr.feed)
    cap = call.cap
    status = 200 if ctx is not None else up.status_code
    if cap is not None:
        feed = _captured(feed, cap, up, status, headers)
    # Body bytes already here go out with our head, and the last piece with the end of the
    # stream: a whole stream that arrived in one read leaves in one or two writes.
    pending, out = None, b""
    if early:
        try:
            out = feed(early)
        except Exception as e:  # handled below, as for any chunk, once the response started
            pending = e
    resp.start(status, headers, out)
    call.first_at = perf_counter()
    gw = call.gw
    gw.streams += 1
    last: list[bytes] = []
    # a relayed stream's last two upstream chunks are kept (references, no copy): the usage
    # record reads its usage there, and it may end with the provider's own error event (relayed
    # as is, so not a failure of the Passthrough), told apart as a translation would
    seen = [early, b""] if ctx is None else None
    timer = None
    try:
        if pending is not None:
            raise pending
        with rt.map_stream:
            if not up.at_end():
                if type(up) is RawResponse:
                    done = up.pipe(_relay(feed, resp, up, last, seen))
                    if target.total_timeout and not done.done():  # the whole exchange's limit
                        timer = loop.call_at(started + target.total_timeout, up.expire)
                    try:
                        await done
                    except Exception as e:  # an expired total limit says so, not "idle"
                        if timer is not None and timer.cancelled() is False and loop.time() >= timer.when():
                            raise GatewayError(504, f"provider '{prov.name}' did not finish within its "
                                                    f"total_timeout of {target.total_timeout:g} s",
                                               "timeout") from e
                        raise
                else:  # another httpx transport (tests): pull the chunks
                    async for chunk in up:
                        if seen is not None and chunk:
                            seen[1] = seen[0]
                            seen[0] = chunk
                        out = feed(chunk)
                        if out:
                            await resp.write(out)
        tail = tr.feed(us.close()) + tr.close() if us is not None else tr.close()
    except asyncio.CancelledError:  # the client went away, or shutdown: account for what it got
        if gw.stopping and not resp.finished:  # the grace period ran out: end the stream properly
            resp.end((last[0] if last else b"") + tr.fail(shutting_down()))  # (nothing if it ended)
        call.delivered = tr.finished
        _account(call.rec, tr, ctx, d.name, early, seen, us, tr.failure if gw.stopping else None)
        raise
    except GatewayError as e:
        tail = tr.fail(e)
    except Exception as e:  # a translator bug must still end the stream properly
        log.exception("stream translation failed")
        tail = tr.fail(GatewayError(502, f"stream translation failed: {type(e).__name__}", "bad_gateway"))
    finally:
        gw.streams -= 1
        if timer is not None:
            timer.cancel()
    piece = last[0] if last else b""
    resp.end(piece + tail if tail else piece)
    if cap is not None and tail:
        cap.client_response(status, (), tail)
    failure = tr.failure  # the message of the error event that ended the stream, else None
    outcome, status = RETRY, 502
    if failure is None and seen is not None and expect_sse:
        bad = _error_event(_last_event(seen[0]))
        if bad is not None:  # the provider's own error event, relayed: the same failure as translated
            status, failure = bad
            outcome = classify(status, STREAM_ERROR)
    _account(call.rec, tr, ctx, d.name, early, seen, us, failure)
    if failure is not None and outcome.cool_down:
        now = loop.time()
        call.router.report(target, outcome, now, status=status)
        log.warning("upstream failure: provider=%s model=%s status=%d duration=%.3fs attempt=%d/%d: %s",
                    prov.name, target.model, up.status_code, now - started, call.n, call.planned, failure)
    return True


def _account(rec, tr, ctx, dialect: str, early: bytes, seen, us, failure: str | None) -> None:
    """Keep where the stream's usage is (references only: it is read off the request path,
    gateway/accounting.py) and its outcome."""
    if rec is None:
        return
    if ctx is None:
        rec.src = ("stream", dialect, early, seen[1] + seen[0] if seen[1] else seen[0],
                   us.usage_event if us is not None else None, tr.finish)
    else:
        rec.src = ("encoder", tr.enc)
    if failure is not None:
        rec.status, rec.error = "error_stream", failure


def _last_event(buf: bytes) -> bytes:
    """The last SSE event block of ``buf`` (line ends normalized)."""
    body = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n").rstrip(b"\n")
    i = body.rfind(b"\n\n")
    return body[i + 2:] if i != -1 else body


def _relay(feed, resp, up, last: list, seen: list | None = None):
    """The body callback of a piped upstream stream: runs inside the upstream connection's
    data_received, so each event costs one translator feed and one client write, no task switch.
    The last piece is kept in ``last`` to leave with the end of the stream in one write (and the
    last upstream chunk in ``seen[0]``, when given). A client that stops reading pauses the
    upstream until it drains (or write_timeout cuts it off)."""
    write = resp.write_nowait

    def on_body(chunk: bytes, end: bool) -> None:
        if seen is not None:
            seen[1] = seen[0]
            seen[0] = chunk
        out = feed(chunk)
        if out:
            if end:
                last.append(out)
            elif write(out):
                up.pause_reading()
                resp.when_writable(up.resume_reading)
    return on_body


def _chain(first, second):
    """feed through ``first`` then ``second`` (the usage strip before the relay's Passthrough)."""
    def feed(chunk: bytes) -> bytes:
        out = first(chunk)
        return second(out) if out else b""
    return feed


def _captured(feed, cap, up, status: int, headers):
    """``feed`` that also hands what came in and what went out to a debug capture."""
    first = [True]

    def capture(chunk: bytes) -> bytes:
        if first[0]:
            first[0] = False
            cap.upstream_response(up.status_code, up.raw_headers, chunk)
            out = feed(chunk)
            cap.client_response(status, headers, out)
            return out
        cap.upstream_response(up.status_code, (), chunk)
        out = feed(chunk)
        cap.client_response(status, (), out)
        return out
    return capture
