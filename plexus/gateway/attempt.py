"""One attempt of a request at one target: prepare → open → classify → relay.

Theory
------
* ``prepare`` is pure: the upstream URL, headers and body for *that* target, never mutating
  the client's parsed request (the IR is parsed once per request, in ``Call.ir_request``, and
  each target builds its own body from it). Same dialect on both sides is a byte relay with only
  the model changed, unless the history holds another provider type's signatures
  (``_FOREIGN``): then it goes through parse/build, which drops what the target cannot verify.
* ``attempt`` returns True once the client has its answer (success, or an error it must see) and
  False when the attempt failed before anything reached the client, so the caller moves on to
  the next planned target. Every outcome is classified once (``routing.classify``) and reported
  to the router (cooldowns, latency), whichever way the failure came: connect error, timeout, an
  HTTP error status, an answer not valid for its dialect, or an error as the first event of a
  200 stream (``relay.first_event``: the response head is held until that event is in, which
  costs nothing to the time to first token).
* What is returned at once, whatever the plan: FATAL outcomes (400, 413, 422, …: the request
  itself is wrong), and everything when the plan has a single target (the provider's own answer,
  status, headers and body, as before failover existed).
* A target whose provider has ``max_inflight`` attempts running (``ProviderRuntime.inflight``) is
  skipped like a cooling one (``Call.full``): no attempt, no cooldown, no log line; when every
  target was skipped that way the answer is 503 with ``retry-after: 1``.
* The log: one WARNING line per failed attempt (connect error, timeout, 5xx, invalid answer, error
  event, cut stream) with provider, model, status, duration and attempt number; 4xx at INFO.
"""

from __future__ import annotations

import logging
import os
import time
from time import perf_counter

import orjson

from .. import ir
from ..dialects.gemini import encode as _gemini_encode
from ..dialects.responses.names import REASONING_MARK
from ..dialects.signatures import ID_SEP, SIG_PREFIX
from ..errors import GatewayError, from_upstream
from ..routing import CONNECT, INVALID, STREAM_ERROR, TIMEOUT, classify
from ..routing.outcome import FATAL, OK
from ..routing.cooldowns import retry_after
from ..upstream.call import MAX_ERROR_BODY, open_upstream, read_all
from ..upstream.transport import RawResponse
from .relay import relay_stream
from .usage_tap import wants_stream_usage, with_stream_usage

log = logging.getLogger("plexus")

_JSON = (b"content-type", b"application/json")
_ATTEMPTS = tuple((b"x-plexus-attempts", str(i).encode()) for i in range(17))

# Markers of another provider type's signatures in a client's history, per dialect: such a body
# is rebuilt (parse/build drops what the target cannot verify), never relayed byte for byte.
_FOREIGN = {
    "openai": (ID_SEP.encode(), b'"thinking_blocks"'),       # Gemini signatures in tool ids; Claude's
    "anthropic": (SIG_PREFIX.encode(),),                      # Gemini signatures as thinking blocks
    "gemini": tuple(p.encode() for p in _gemini_encode.CLAUDE_SIGNATURE_PREFIXES),  # wrapped Claude
    "responses": (REASONING_MARK,),                           # Claude/Gemini signatures in reasoning items
}


def _foreign(dialect: str, raw: bytes) -> bool:
    for marker in _FOREIGN[dialect]:
        if raw.find(marker) != -1:
            return True
    return False


def _no_address(what: str, prov) -> str:
    """A failure's description fit for a client: the provider's (and its proxy's) host and port
    taken out, in the forms error messages use (``host:port``, ``[v6]:port``, ``('host', port)``,
    ``'host'``)."""
    places = [(prov.host, prov.port)]
    if prov.proxy is not None:
        places.append((prov.proxy.host, prov.proxy.port))
    for host, port in places:
        if host and host in what:
            for form in (f"[{host}]:{port}", f"{host}:{port}", f"('{host}', {port})", f"'{host}'", f"[{host}]"):
                what = what.replace(form, "<upstream>")
            if "." in host or ":" in host:  # an IP or a qualified name, never a word of the message
                what = what.replace(host, "<upstream>")
    return what


class Failure:
    __slots__ = ("target", "status", "what", "retry_after")

    def __init__(self, target, status: int, what: str, retry_after: float | None) -> None:
        self.target, self.status, self.what, self.retry_after = target, status, what, retry_after


class Full(Failure):
    """A target skipped because its provider was at its ``max_inflight`` (no attempt was made)."""
    __slots__ = ()


class Call:
    """One client request across its attempts (the pipeline's per-request state)."""

    __slots__ = ("gw", "router", "runtime", "req", "resp", "d", "body", "model", "stream", "sse", "query",
                 "alias", "planned", "n", "failures", "_ireq", "rec", "cap", "target", "passthrough",
                 "upstream_s", "first_at", "delivered", "ids")

    def __init__(self, gw, state, req, resp, d, body: dict, model: str, stream: bool, sse: bool, query: dict,
                 alias, planned: int, rec=None) -> None:
        self.gw, self.req, self.resp, self.d, self.body = gw, req, resp, d, body
        self.router, self.runtime = state.router, state.runtime  # this request's config generation
        self.model, self.stream, self.sse, self.query, self.alias = model, stream, sse, query, alias
        self.planned, self.n = planned, 0
        self.failures: list[Failure] = []
        self._ireq = None
        self.rec = rec            # the usage record (control/usage.py), filled as the request goes
        self.cap = None           # a debug capture (control/debug.py) when debug logging matches
        self.target = None        # the target of the latest attempt
        self.passthrough = False
        self.upstream_s = 0.0     # seconds spent in upstream exchanges, all attempts
        self.first_at = None      # perf_counter() when the client's first answer bytes were written
        self.delivered = False    # a stream's whole answer reached the client (set if it then hangs up)
        self.ids = request_ids(rec) if rec is not None else ()  # x-plexus-request-id, x-request-id

    def ir_request(self) -> ir.Request:
        """The client's request in the IR, parsed once however many targets need it."""
        if self._ireq is None:
            in_path = self.d.parse_path is not None  # the model came from the URL (Gemini)
            self._ireq = self.d.request.parse_request(self.body, model=self.model if in_path else None,
                                                      stream=self.stream if in_path else None)
            dropped = self._ireq.extra.get("dropped_tools")
            if dropped:
                log.info("model '%s': hosted tools dropped (no provider of another type runs them): %s",
                         self.alias.name, ", ".join(dropped))
        return self._ireq

    def failed(self, target, outcome, status: int, what: str, started: float,
               ra: float | None = None) -> None:
        """Report a failed attempt to routing, log it, remember it for the final error."""
        loop = self.resp.loop
        now = loop.time()
        self.router.report(target, outcome, now, retry_after=ra, status=status)
        key = self.runtime[target.provider.name].key_bytes
        if key and key.decode() in what:  # a provider that echoes our key back (in an error event)
            what = what.replace(key.decode(), "[redacted]")
        if status >= 500 or status == 429 or outcome is not FATAL:
            log.warning("upstream failure: provider=%s model=%s status=%d duration=%.3fs attempt=%d/%d: %s",
                        target.provider.name, target.model, status, now - started, self.n, self.planned, what)
        self.failures.append(Failure(target, status, _no_address(what, target.provider), ra))

    def gave_up(self, target, e: GatewayError, kind: str, started: float, deliver: bool) -> bool:
        """An attempt that raised ``e`` before anything reached the client (504: a timeout, else
        ``kind``): reported and logged; re-raised for a lone target, else False (next target)."""
        self.failed(target, classify(e.status, TIMEOUT if e.status == 504 else kind), e.status,
                    e.message, started)
        if deliver:
            raise e
        return False

    def final_error(self) -> GatewayError:
        """Every planned attempt failed: the most meaningful status (429 when every attempt was
        rate-limited, else 504 if all timed out, 503 if any was overloaded, unavailable or
        rate-limited, else 502; the soonest retry-after of a 429 kept), naming the alias and what
        each attempt came to; no upstream address, no secret."""
        statuses = [f.status for f in self.failures]
        headers = []
        waits = [f.retry_after for f in self.failures
                 if (f.status == 429 or type(f) is Full) and f.retry_after is not None]
        if waits:
            headers.append((b"retry-after", str(max(1, int(min(waits) + 0.999))).encode()))
        if all(s == 429 for s in statuses):
            status = 429
        elif all(s == 504 for s in statuses):
            status = 504
        elif any(s in (503, 529, 429) for s in statuses):
            status = 503
        else:
            status = 502
        parts = "; ".join(f"{f.target.provider.name}/{f.target.model}: {f.what}" for f in self.failures)
        n = len(self.failures)
        if all(type(f) is Full for f in self.failures):
            return GatewayError(503, f"every target of model '{self.alias.name}' is at its provider's "
                                     f"max_inflight: {parts}; retry shortly", headers=headers)
        return GatewayError(status, f"all {n} attempt{'s' if n != 1 else ''} for model '{self.alias.name}' "
                                    f"failed: {parts}", headers=headers)

    def full(self, target, limit: int) -> bool:
        """``target``'s provider has ``limit`` attempts in flight (its max_inflight): skipped like
        a cooling target, no attempt made and no cooldown; for the plan's only target a 503 at once."""
        what = f"provider '{target.provider.name}' is at its limit of {limit} requests in flight"
        if self.planned == 1:
            raise GatewayError(503, f"model '{self.alias.name}': {what} (providers.{target.provider.name}"
                                    ".max_inflight); retry shortly", headers=[(b"retry-after", b"1")])
        self.failures.append(Full(target, 503, what, 1.0))
        return False


async def attempt(call: Call, target) -> bool:
    """Try ``target``; True once the client has its answer, False to try the next target."""
    gw = call.gw
    prov = target.provider
    rt = call.runtime[prov.name]
    if rt.max_inflight and rt.inflight >= rt.max_inflight:  # (0: no limit; counted below, no await between)
        return call.full(target, rt.max_inflight)
    pd, d = rt.dialect, call.d
    resp = call.resp
    loop = resp.loop
    call.n += 1
    deliver = call.planned == 1  # a lone target's own answer goes to the client, as it is

    # ---- prepare (pure)
    strip = False  # a relayed OpenAI stream whose usage we asked for (the client did not)
    if pd is not d and d.relay_to is not None and getattr(prov, d.relay_to) and not _foreign(d.name, call.req.body):
        pd = d  # a dialect some providers of another type also serve (Responses at OpenAI: `responses: true`)
    if pd is d and not _foreign(d.name, call.req.body):
        stream, ctx = call.stream, None
        url = rt.url(target.model, stream, call.sse, call.query, d)
        out = rt.relay_body(call.req.body, call.body, target.model, d.parse_path is not None)
        if stream and d.name == "openai" and prov.stream_usage and wants_stream_usage(call.body):
            out, strip = with_stream_usage(out, call.body), True
    else:
        ireq = call.ir_request()
        stream = ireq.stream
        out = pd.build.build_request(ireq, target.model, prov)
        url = rt.url(target.model, stream, True)
        ctx = ir.Context(model=target.model, id_seed=os.urandom(12).hex(), created=int(time.time()),
                         include_usage=ireq.include_usage, alias=call.alias.name, gemini_sse=call.sse,
                         extra={"upstream": pd.name, **ireq.extra["ctx"]} if "ctx" in ireq.extra
                         else {"upstream": pd.name})
    headers = rt.request_headers(call.req)
    marks = rt.marks(call.alias.name, target.model) + (_ATTEMPTS[call.n] if call.n < 17 else
                                                       (b"x-plexus-attempts", str(call.n).encode()),)
    if call.rec is not None:
        marks += call.ids
        headers = [*headers, call.ids[1]]  # the request id goes upstream too
    call.target, call.passthrough = target, ctx is None
    if call.cap is not None:
        call.cap.upstream_request(prov.name, url, headers, out)

    # ---- open, classify, relay
    started = loop.time()
    began = perf_counter()
    up = None
    rt.inflight += 1
    try:
        try:
            up = await open_upstream(rt.transport, prov, url, headers, out, loop, rt.map_ttfb, target)
        except GatewayError as e:
            return call.gave_up(target, e, CONNECT, started, deliver)
        status = up.status_code
        if strip and status == 400:
            # A server that rejects the stream_options we added refused the request without
            # running it: send the client's own request once more, without them.
            data = await read_all(up, prov, MAX_ERROR_BODY, truncate=True)
            if data.find(b"stream_options") == -1:
                return await _error_answer(call, target, rt, up, True, marks, started, deliver, data)
            await up.aclose()
            up, strip = None, False
            out = rt.relay_body(call.req.body, call.body, target.model, False)
            if call.cap is not None:
                call.cap.upstream_request(prov.name, url, headers, out)
            try:
                up = await open_upstream(rt.transport, prov, url, headers, out, loop, rt.map_ttfb, target)
            except GatewayError as e:
                return call.gave_up(target, e, CONNECT, started, deliver)
            status = up.status_code
        if status >= 300:
            return await _error_answer(call, target, rt, up, ctx is None, marks, started, deliver)
        if not stream:
            return await _whole_answer(call, target, rt, up, ctx, marks, started, deliver)
        return await relay_stream(call, target, rt, up, ctx, marks, started, deliver, strip)
    finally:
        rt.inflight -= 1
        call.upstream_s += perf_counter() - began
        if up is not None:
            await up.aclose()
            if gw.debug:
                log.debug("%s -> %s/%s: upstream %d%s (attempt %d/%d)", call.alias.name, prov.name,
                          target.model, up.status_code, " (stream)" if stream else "", call.n, call.planned)


async def _error_answer(call, target, rt, up, passthrough: bool, marks, started, deliver: bool,
                        data: bytes | None = None) -> bool:
    """An upstream error status: fail over (RETRY/AUTH), or hand it to the client (FATAL, or the
    plan's only target): a JSON error body relayed as is to a same-dialect client, else re-rendered
    in the caller's dialect with the status and retry-after kept. ``data``: the body, if read."""
    prov = rt.provider
    status = up.status_code
    ra = retry_after(up.raw_headers, time.time())
    outcome = classify(status)
    if data is None:
        data = await read_all(up, prov, MAX_ERROR_BODY, truncate=True)
    if rt.key_bytes and rt.key_bytes in data:  # a provider that echoes our key back: never relay it
        data = data.replace(rt.key_bytes, b"[redacted]")
    if call.cap is not None:
        call.cap.upstream_response(status, up.raw_headers, data)
    call.failed(target, outcome, status, f"HTTP {status}", started, ra)
    if not deliver and outcome is not FATAL:
        return False
    if status < 400:
        raise GatewayError(502, f"provider '{prov.name}' answered HTTP {status}", "bad_gateway")
    if passthrough and not (status == 401 and not prov.api_key):
        try:
            ok = isinstance(orjson.loads(data), (dict, list))
        except orjson.JSONDecodeError:
            ok = False
        if ok:
            rec = call.rec
            if rec is not None:
                rec.status, rec.http_status, rec.error = "error", status, f"provider answered HTTP {status}"
            if call.cap is not None:
                call.cap.client_response(status, [], data)
            call.resp.send(status, rt.forward_headers(up, marks), data)
            return True
    err = from_upstream(status, data, up.raw_headers, prov.name)
    if status == 401 and not prov.api_key:
        env = " or ".join(prov.api_key_env) or f"providers.{prov.name}.api_key"
        err.message += f" (provider '{prov.name}' has no API key configured: set {env})"
    err.headers.extend(marks)
    raise err


async def _whole_answer(call, target, rt, up, ctx, marks, started, deliver: bool) -> bool:
    """A non-stream 2xx: checked (JSON for a relay; decoded for a translation) before it is sent,
    so an invalid answer can still fail over."""
    prov = rt.provider
    loop = call.resp.loop
    head = loop.time()
    if target.total_timeout and type(up) is RawResponse:  # no read may wait past the total limit
        up.set_read_timeout(max(0.001, min(target.read_timeout, started + target.total_timeout - head)))
    try:
        data = await read_all(up, prov, prov.max_response_bytes, rt.map_read)
        if ctx is None:
            obj = check_json(data, prov.name)
            status, headers, payload = up.status_code, rt.forward_headers(up, marks), data
            usage = (call.d.name, obj)           # (read off the request: gateway/accounting.py)
        else:
            ires = rt.dialect.decode.parse_response(data)
            status, headers, payload = 200, [_JSON, *marks], call.d.encode.render_response(ires, ctx)
            usage = (None, ires)
    except GatewayError as e:
        return call.gave_up(target, e, INVALID, started, deliver)
    call.router.report(target, OK, loop.time(), ttfb=head - started)
    if call.rec is not None:
        call.rec.http_status = status
        call.rec.src = usage
    if call.cap is not None:
        call.cap.upstream_response(up.status_code, up.raw_headers, data)
        call.cap.client_response(status, headers, payload)
    call.resp.send(status, headers, payload)
    return True


def request_ids(rec) -> tuple:
    """The response headers naming the request: its record id and its x-request-id (the
    client's, or the same id)."""
    rid = rec.id.encode()
    return ((b"x-plexus-request-id", rid),
            (b"x-request-id", rid if rec.request_id is rec.id else rec.request_id.encode()))


def check_json(data: bytes, provider: str):
    """A 2xx non-stream answer must be JSON: HTML, empty or truncated bodies become 502.
    Returns the parsed tree (read for the usage record)."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        snippet = data[:120].decode("utf-8", "replace").strip()
        raise GatewayError(502, f"provider '{provider}' returned an invalid response"
                                + (f": {snippet!r}" if snippet else " (empty body)"), "bad_gateway") from None
    if not isinstance(obj, (dict, list)):
        raise GatewayError(502, f"provider '{provider}' returned an invalid response", "bad_gateway")
    return obj


__all__ = ["Call", "attempt", "check_json", "request_ids", "STREAM_ERROR"]
