"""One request, start to finish: route → parse → plan targets → attempt each → relay.

`Gateway.handle(request, response)` is the server's handler:

    route (path → dialect record)         dialects.registry.match: no per-dialect branching here;
                                          anything else 404/405 in the dialect the path suggests
    parse JSON, model and stream          400 in the caller's dialect (the record's checks)
    alias → Router.resolve                404 naming the alias
    Router.plan(alias, now)               the ordered targets to try (routing/: selectors,
                                          cooldowns, max_attempts); never empty
    for each planned target               gateway/attempt.py: prepare (pure) → open → classify
                                          → relay; a failure before the first byte reached the
                                          client moves on to the next target (failover)
    all attempts failed                   the most meaningful error (429 with retry-after, else
                                          502/503/504) in the caller's dialect, naming the alias
                                          and each attempt (provider/model and what happened)

A single-target plan keeps the provider's own answer: its error status, headers and body
(relayed as is when the client speaks the provider's dialect). Every GatewayError raised before
the response started is rendered once, in `handle`, in the caller's dialect. A client that goes
away cancels this task at any stage; the attempt's `finally` closes the upstream response.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import parse_qsl, unquote_to_bytes

import orjson

from ..dialects import registry
from ..errors import GatewayError, invalid
from ..routing import Router
from ..server.messages import Request
from .attempt import Call, attempt
from .runtime import ProviderRuntime, models_response

log = logging.getLogger("plexus")

_JSON = (b"content-type", b"application/json")
_LARGE_BODY = 1 << 20  # bodies above this yield to the loop between parsing and the rest of the work
_MODEL_PATHS = (b"/v1/models", b"/v1beta/models")
_MODEL_PREFIXES = (b"/v1/models/", b"/v1beta/models/")


class Gateway:
    def __init__(self, config, transports: dict) -> None:
        self.config = config
        self.router = Router(config)
        self.runtime = {name: ProviderRuntime(p, transports[name]) for name, p in config.providers.items()}
        self.models_bodies = models_response(self.router.aliases())
        self.debug = log.isEnabledFor(logging.DEBUG)

    # ------------------------------------------------------------------ dispatch

    async def handle(self, req: Request, resp) -> None:
        path = req.path
        d = registry.DEFAULT
        try:
            m = registry.match(path)
            if m is not None:
                d = m.dialect
                self._method(req, m.method)
                await self.complete(req, resp, d, d.path_args(m.rest))
            elif path == b"/health":
                resp.send(200, [(b"content-type", b"text/plain; charset=utf-8")], b"OK")
            elif path in _MODEL_PATHS or path.startswith(_MODEL_PREFIXES):
                self._method(req, b"GET")
                self.list_models(req, resp)
            else:
                d = registry.guess(path, req.header)
                raise GatewayError(404, f"no route for {req.method.decode('latin-1')} "
                                        f"{path.decode('latin-1')}", "not_found")
        except GatewayError as e:
            if not resp.started:
                status, headers, body = d.render_error(e)
                resp.send(status, headers, body)
            else:  # a stream already began; the relay ends it itself, this is a last resort
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
        if req.path in _MODEL_PATHS:
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

    async def complete(self, req: Request, resp, d, path_args) -> None:
        try:
            body = orjson.loads(req.body)
        except orjson.JSONDecodeError as e:
            raise invalid(f"request body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise invalid("request body must be a JSON object")
        if len(req.body) > _LARGE_BODY:  # a multi-MB parse just ran: let other clients go first
            await asyncio.sleep(0)
        query = dict(parse_qsl(req.query.decode("latin-1"))) if req.query else {}
        model, stream = d.model_and_stream(body, path_args, query)
        alias = self.router.resolve(model)
        if alias is None:
            raise GatewayError(404, f"The model '{model}' does not exist or is not configured on this gateway",
                               "not_found", param="model", code="model_not_found")
        plan = self.router.plan(alias, resp.loop.time())
        call = Call(self, req, resp, d, body, model, stream, d.sse(query), query, alias, len(plan))
        for target in plan:
            if await attempt(call, target):
                return
        raise call.final_error()
