"""One request, start to finish: route → parse → pick a target → call upstream → relay.

`Gateway.handle(request, response)` is the server's handler. The flow of a completion:

    route (path → caller dialect)         endpoints below; anything else 404/405 in a guessed dialect
    parse JSON, check the minimal shape   400 in the caller's dialect
    alias → Router.pick → Target          404 naming the alias (the one place a target is chosen)
    same dialect?  passthrough: only `model` changes (Gemini: the model in the URL path)
    else           dialects/<caller>/request.parse_request → IR → dialects/<provider>/request.build_request
    upstream/call.open_upstream           httpx errors → GatewayError (502/504) at that one seam
    error status   → kept, with retry-after; passthrough relays the provider's own JSON error body
    non-stream     → relayed bytes (checked to be JSON) or decode → IR → encode
    stream         → stream.Passthrough / stream.Translator, each upstream chunk written at once
                     (body bytes that came with the upstream head go out in the same write as our
                     head, the last piece with the end of the stream: one syscall, not three);
                     a failure after the first byte ends the stream with the dialect's error event

Every GatewayError raised before the response started is rendered once, in `handle`, in the
caller's dialect. A client that goes away cancels this task; the `finally` closes the upstream
response, which closes (never pools) an unfinished upstream connection.

Everything that can be known before a request (auth headers, URLs, the models lists, the
x-plexus-* headers, the error mappers) is computed once per provider in `ProviderRuntime` /
`Gateway.__init__`. The upstream call builds no httpx objects (`PlexusTransport.open`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from urllib.parse import parse_qsl, unquote_to_bytes

import orjson

from .. import ir
from ..errors import GatewayError, from_upstream, invalid, render
from ..routing import Router
from ..stream import DECODE, ENCODE, REQUEST, Passthrough, Translator, content_type
from ..upstream.call import MAX_ERROR_BODY, open_upstream, read_all
from ..upstream.transport import RawResponse
from .endpoints import ProviderRuntime, models_response, guess_dialect
from .messages import Request

log = logging.getLogger("plexus")

_JSON = (b"content-type", b"application/json")
_LARGE_BODY = 1 << 20  # bodies above this yield to the loop between parsing and the rest of the work
_REQUIRED = {"openai": "messages", "anthropic": "messages", "gemini": "contents"}
_GEMINI_PREFIXES = (b"/v1beta/models/", b"/v1/models/")
_GEMINI_METHODS = {b"generateContent": False, b"streamGenerateContent": True}


class Gateway:
    def __init__(self, config, transports: dict) -> None:
        self.config = config
        self.router = Router(config)
        self.runtime = {name: ProviderRuntime(p, transports[name]) for name, p in config.providers.items()}
        self.models_bodies = models_response(self.router.aliases())
        self._record = log.isEnabledFor(logging.DEBUG)

    # ------------------------------------------------------------------ dispatch

    async def handle(self, req: Request, resp) -> None:
        path = req.path
        dialect = "openai"
        try:
            if path == b"/v1/chat/completions":
                self._method(req, b"POST")
                await self.complete(req, resp, "openai")
            elif path == b"/v1/messages":
                dialect = "anthropic"
                self._method(req, b"POST")
                await self.complete(req, resp, "anthropic")
            elif path.startswith(_GEMINI_PREFIXES) and b":" in path:
                dialect = "gemini"
                self._method(req, b"POST")
                prefix = _GEMINI_PREFIXES[0] if path.startswith(_GEMINI_PREFIXES[0]) else _GEMINI_PREFIXES[1]
                model, _, method = path[len(prefix):].rpartition(b":")
                if method not in _GEMINI_METHODS:
                    raise GatewayError(404, f"unknown method '{method.decode('latin-1')}'", "not_found")
                await self.complete(req, resp, "gemini", unquote_to_bytes(model).decode("utf-8", "replace"),
                                    _GEMINI_METHODS[method])
            elif path == b"/health":
                resp.send(200, [(b"content-type", b"text/plain; charset=utf-8")], b"OK")
            elif path in (b"/v1/models", b"/v1beta/models") or path.startswith((b"/v1/models/", b"/v1beta/models/")):
                self._method(req, b"GET")
                self.list_models(req, resp)
            else:
                dialect = guess_dialect(req)
                raise GatewayError(404, f"no route for {req.method.decode('latin-1')} "
                                        f"{path.decode('latin-1')}", "not_found")
        except GatewayError as e:
            if not resp.started:
                status, headers, body = render(e, dialect)
                resp.send(status, headers, body)
            else:  # a stream already began; the pump ends it itself, this is a last resort
                raise

    @staticmethod
    def _method(req: Request, want: bytes) -> None:
        if req.method != want:
            raise GatewayError(405, f"method {req.method.decode('latin-1')} not allowed; use {want.decode()}",
                               "invalid_request", headers=[(b"allow", want)])

    def list_models(self, req: Request, resp) -> None:
        if req.path.startswith(b"/v1beta/") or (req.path.startswith(b"/v1/models/") and b":" in req.path):
            shape = "gemini"
        elif req.header(b"anthropic-version") is not None:
            shape = "anthropic"
        else:
            shape = "openai"
        listing, items = self.models_bodies[shape]
        if req.path in (b"/v1/models", b"/v1beta/models"):
            resp.send(200, [_JSON], listing)
            return
        name = unquote_to_bytes(req.path.rpartition(b"/models/")[2]).decode("utf-8", "replace")
        if shape == "gemini" and name.startswith("models/"):
            name = name[7:]
        body = items.get(name)
        if body is None:
            raise GatewayError(404, f"model '{name}' not found", "not_found", code="model_not_found")
        resp.send(200, [_JSON], body)

    # ------------------------------------------------------------------ completions

    async def complete(self, req: Request, resp, dialect: str, gem_model: str | None = None,
                       gem_stream: bool = False) -> None:
        try:
            body = orjson.loads(req.body)
        except orjson.JSONDecodeError as e:
            raise invalid(f"request body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise invalid("request body must be a JSON object")
        if len(req.body) > _LARGE_BODY:  # a multi-MB parse just ran: let other clients go first
            await asyncio.sleep(0)
        query = dict(parse_qsl(req.query.decode("latin-1"))) if req.query else {}
        if dialect == "gemini":
            model, stream = gem_model, gem_stream
            if model.startswith("models/"):
                model = model[7:]
        else:
            model = body.get("model")
            if not isinstance(model, str) or not model:
                raise invalid("`model` is required and must be a non-empty string", param="model")
            stream = body.get("stream", False)
            if not isinstance(stream, bool):
                raise invalid("`stream` must be a boolean", param="stream")
        field = _REQUIRED[dialect]
        if not isinstance(body.get(field), list):
            raise invalid(f"`{field}` is required and must be an array", param=field)
        gem_sse = query.get("alt") == "sse"

        alias = self.router.resolve(model)
        if alias is None:
            raise GatewayError(404, f"The model '{model}' does not exist or is not configured on this gateway",
                               "not_found", param="model", code="model_not_found")
        target = self.router.pick(alias)
        prov = target.provider
        rt = self.runtime[prov.name]
        ctx = None
        if prov.type == dialect:
            url, out = rt.passthrough(dialect, req.body, body, target.model, stream, gem_sse, query)
        else:
            ireq = REQUEST[dialect].parse_request(body, model=model if dialect == "gemini" else None,
                                                  stream=stream if dialect == "gemini" else None)
            stream = ireq.stream
            path, out = REQUEST[prov.type].build_request(ireq, target.model, prov)
            url = rt.base_url + path
            ctx = ir.Context(model=target.model, id_seed=os.urandom(12).hex(), created=int(time.time()),
                             include_usage=ireq.include_usage, alias=alias.name, gemini_sse=gem_sse,
                             extra={"upstream": prov.type})
        headers = rt.request_headers(req) if prov.type == "anthropic" else rt.headers
        marks = rt.marks(alias.name, target.model)

        loop = resp.loop
        started = loop.time()
        up = None
        try:
            up = await open_upstream(rt.transport, prov, url, headers, out, loop, rt.map_ttfb)
            status = up.status_code
            if status >= 300:
                if status >= 500:
                    _warn(prov.name, target.model, status, loop.time() - started, f"HTTP {status}")
                elif log.isEnabledFor(logging.INFO):
                    log.info("upstream %s/%s answered %d in %.3f s", prov.name, target.model, status,
                             loop.time() - started)
                await self._upstream_error(resp, up, rt, dialect, ctx is None, marks)
            elif not stream:
                data = await read_all(up, prov, prov.max_response_bytes, rt.map_read)
                if ctx is None:
                    _check_json(data, prov.name)
                    resp.send(status, rt.forward_headers(up, marks), data)
                else:
                    ires = DECODE[prov.type].parse_response(data)
                    resp.send(200, [_JSON, *marks], ENCODE[dialect].render_response(ires, ctx))
            else:
                cut = await self._pump(resp, up, rt, dialect, ctx, gem_sse, marks)
                if cut is not None:
                    _warn(prov.name, target.model, status, loop.time() - started, cut)
        except GatewayError as e:
            if up is None or up.status_code < 300:  # connect, timeout, read, body cap, bad 2xx body
                _warn(prov.name, target.model, e.status if up is None else up.status_code,
                      loop.time() - started, e.message)
            raise
        finally:
            if up is not None:
                await up.aclose()
                if self._record:
                    self.record(alias.name, rt.provider.name, target.model, up.status_code, stream)

    def record(self, alias: str, provider: str, model: str, upstream_status: int, stream: bool) -> None:
        """The one place a finished upstream call is recorded (usage records and metrics come
        later; today a debug log line, and nothing at all unless debug logging is on)."""
        log.debug("%s -> %s/%s: upstream %d%s", alias, provider, model, upstream_status,
                  " (stream)" if stream else "")

    async def _upstream_error(self, resp, up, rt, dialect: str, passthrough: bool, marks) -> None:
        prov = rt.provider
        data = await read_all(up, prov, MAX_ERROR_BODY, truncate=True)
        if rt.key_bytes and rt.key_bytes in data:  # a provider that echoes our key back: never relay it
            data = data.replace(rt.key_bytes, b"[redacted]")
        status = up.status_code
        if status < 400:
            raise GatewayError(502, f"provider '{prov.name}' answered HTTP {status}", "bad_gateway")
        if passthrough and not (status == 401 and not prov.api_key):
            try:
                ok = isinstance(orjson.loads(data), (dict, list))
            except orjson.JSONDecodeError:
                ok = False
            if ok:
                resp.send(status, rt.forward_headers(up, marks), data)
                return
        err = from_upstream(status, data, up.raw_headers, prov.name)
        if status == 401 and not prov.api_key:
            env = " or ".join(prov.api_key_env) or f"providers.{prov.name}.api_key"
            err.message += f" (provider '{prov.name}' has no API key configured: set {env})"
        err.headers.extend(marks)
        raise err

    async def _pump(self, resp, up, rt, dialect: str, ctx, gem_sse: bool, marks) -> None:
        prov = rt.provider
        ctype = _content_type(up.raw_headers)
        expect_sse = not (ctx is None and dialect == "gemini" and not gem_sse)  # else a JSON array
        if expect_sse and "event-stream" not in ctype:
            data = await read_all(up, prov, MAX_ERROR_BODY, truncate=True)
            raise from_upstream(502, data, None, prov.name) if b"error" in data else GatewayError(
                502, f"provider '{prov.name}' answered a stream request with '{ctype or 'no content-type'}'",
                "bad_gateway")
        if ctx is None:
            tr = Passthrough(dialect, gem_sse)
            headers = rt.forward_headers(up, marks)
        else:
            tr = Translator(prov.type, dialect, ctx)
            headers = [(b"content-type", content_type(dialect, gem_sse)), (b"cache-control", b"no-cache"), *marks]
        # Body bytes that came with the upstream head go out with ours, and the last piece with the
        # end of the stream: a whole stream that arrived in one read leaves in one or two writes.
        early, pending = up.ready_chunk(), None
        out = b""
        if early:
            try:
                out = tr.feed(early)
            except Exception as e:  # handled below, as for any chunk, once the response started
                pending = e
        resp.start(200 if ctx is not None else up.status_code, headers, out)
        last = []
        try:
            if pending is not None:
                raise pending
            with rt.map_stream:
                if not up.at_end():
                    if type(up) is RawResponse:
                        await up.pipe(_relay(tr.feed, resp, up, last))
                    else:  # another httpx transport (tests): pull the chunks
                        async for chunk in up:
                            out = tr.feed(chunk)
                            if out:
                                await resp.write(out)
            tail = tr.close()
        except GatewayError as e:
            tail = tr.fail(e)
        except Exception as e:  # a translator bug must still end the stream properly
            log.exception("stream translation failed")
            tail = tr.fail(GatewayError(502, f"stream translation failed: {type(e).__name__}", "bad_gateway"))
        last = last[0] if last else b""
        resp.end(last + tail if tail else last)
        return tr.failure  # the message of the error event that ended the stream, else None


def _relay(feed, resp, up, last: list):
    """The body callback of a piped upstream stream: runs inside the upstream connection's
    data_received, so each event costs one translator feed and one client write, no task switch.
    The last piece is kept in ``last`` to leave with the end of the stream in one write. A client
    that stops reading pauses the upstream until it drains (or write_timeout cuts it off)."""
    write = resp.write_nowait

    def on_body(chunk: bytes, end: bool) -> None:
        out = feed(chunk)
        if out:
            if end:
                last.append(out)
            elif write(out):
                up.pause_reading()
                resp.when_writable(up.resume_reading)
    return on_body


def _warn(provider: str, model: str, status: int, seconds: float, message: str) -> None:
    """An upstream failure (connect error, timeout, 5xx, cut stream): visible at the default level."""
    log.warning("upstream failure: provider=%s model=%s status=%d duration=%.3fs: %s",
                provider, model, status, seconds, message)


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


def _check_json(data: bytes, provider: str) -> None:
    """A 2xx non-stream answer must be JSON: HTML, empty or truncated bodies become 502."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        snippet = data[:120].decode("utf-8", "replace").strip()
        raise GatewayError(502, f"provider '{provider}' returned an invalid response"
                                + (f": {snippet!r}" if snippet else " (empty body)"), "bad_gateway") from None
    if not isinstance(obj, (dict, list)):
        raise GatewayError(502, f"provider '{provider}' returned an invalid response", "bad_gateway")
