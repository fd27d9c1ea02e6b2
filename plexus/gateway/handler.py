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

Limits (API.md "Limits"): after the key check, a key at its ``max_inflight`` gets 429 and a
gateway at ``server.max_inflight`` (this gateway's handler tasks, every generation) 503, both
with ``retry-after: 1``; a provider at its ``max_inflight`` is skipped per target (attempt.py).
Each is one integer test when unset (``State.max_inflight``, ``KeyRing.limits``). A key's
``rpm``/``tpm`` (control/ratelimit.py, shared through Redis with ``state_store:``) gets 429 with
``retry-after`` = seconds to the next minute window; one boolean test when no key has one.

Every inference request leaves one usage record (control/usage.py), whatever its outcome: the
request fills in what it knows and references to where the usage is, and hands the record to
the control plane at its end (`Plane.record`, O(1)), which completes and stores it off the
request path (gateway/accounting.py). Inbound keys are checked before the body is parsed.

Hot reload (`apply`): a config generation is a `State` (config, router, runtimes, model
listings, keys); a request reads the current one once and keeps it to its end, so running
streams finish on the old config while new requests see the new one. Unchanged providers keep
their runtime and connection pool; a replaced pool closes once no request of its generation
runs. `drain` is the graceful shutdown.

A single-target plan keeps the provider's own answer: its error status, headers and body
(relayed as is when the client speaks the provider's dialect). Every GatewayError raised before
the response started is rendered once, in `handle`, in the caller's dialect. A client that goes
away cancels this task at any stage; the attempt's `finally` closes the upstream response.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import itertools
import logging
import os
import re
import time
from time import perf_counter
from urllib.parse import parse_qsl, unquote_to_bytes

import orjson

from ..dialects import registry
from ..errors import GatewayError, invalid, shutting_down
from ..routing import Router
from ..server.messages import Request
from ..control.keys import KeyRing
from ..control.ratelimit import RateLimits
from ..control.stores import health_answer
from ..control.usage import Usage
from .attempt import Call, attempt, request_ids
from .runtime import ProviderRuntime, models_listing, models_response

log = logging.getLogger("plexus")

_JSON = (b"content-type", b"application/json")
_LARGE_BODY = 1 << 20  # bodies above this yield to the loop between parsing and the rest of the work
_MODEL_PATHS = (b"/v1/models", b"/v1beta/models")
_MODEL_PREFIXES = (b"/v1/models/", b"/v1beta/models/")
# request ids: this process's random prefix + a counter. 64 random bits: instances and restarts
# sharing one PostgreSQL store never draw the same prefix (a duplicate id would be one record lost
# to ON CONFLICT DO NOTHING), ~1e-9 after 200,000 process starts
_BOOT = os.urandom(8).hex()
_SEQ = itertools.count(1)


def _new_boot() -> None:
    """A forked worker (supervisor.py) gets its own prefix: ids stay unique across workers."""
    global _BOOT, _SEQ
    _BOOT = os.urandom(8).hex()
    _SEQ = itertools.count(1)


os.register_at_fork(after_in_child=_new_boot)
_RETRY_1 = (b"retry-after", b"1")  # a limit's answer: slots free as requests end (API.md "Limits")
# a client's x-request-id is taken when it is 1-128 visible ASCII characters without quotes,
# backslashes or commas (UUIDs, ULIDs, "req_..." ids); else the request gets its own id
_REQUEST_ID = re.compile(rb'[!#-+\--\[\]-~]{1,128}')


class State:
    """Everything a request reads from one config generation. A reload builds a new State and
    swaps it in; a request keeps the State it started with to its end (its attempts, reports
    and relay), so in-flight streams finish on the old config."""

    __slots__ = ("config", "router", "runtime", "models_bodies", "keys", "active", "max_inflight")

    def __init__(self, config, runtime: dict, cooldowns=None) -> None:
        self.config = config
        self.active = 0  # requests running on this generation
        self.router = Router(config, cooldowns=cooldowns)
        self.runtime = runtime
        self.models_bodies = models_response(self.router.aliases())
        self.keys = KeyRing(config.keys)
        self.max_inflight = config.server.max_inflight  # gateway-wide; 0 = no limit


class Gateway:
    def __init__(self, config, transports: dict, plane=None, make_transports=None) -> None:
        self.state = State(config, {name: ProviderRuntime(p, transports[name])
                                    for name, p in config.providers.items()})
        self.plane = plane                  # control plane (usage, metrics, management); None in bare tests
        self._make_transports = make_transports
        self._retired: list = []            # runtimes of replaced providers, closed when idle
        self._old: list[State] = []         # replaced generations that may still have requests
        self._tasks: set = set()            # handler tasks of the requests in flight
        self.stopping = False               # shutdown began: requests cancelled now say so
        self.on_apply: list = []            # callables(config) run after each apply
        self.streams = 0                    # streamed answers in progress (a metrics gauge)
        self.key_inflight: dict = {}        # key name -> its requests in flight (keys with max_inflight)
        self.rate = RateLimits()            # keys' rpm/tpm windows (kept across reloads; Redis shares them)
        self.rate.configure(_rate_limits(config))
        self.debug = log.isEnabledFor(logging.DEBUG)

    # the current generation's parts (a request reads them once, through its Call)
    config = property(lambda self: self.state.config)
    router = property(lambda self: self.state.router)
    runtime = property(lambda self: self.state.runtime)
    inflight = property(lambda self: len(self._tasks))  # inference requests in flight (server.max_inflight)

    def apply(self, config) -> None:
        """Hot reload: new requests see ``config``; running ones finish on the old State.
        Providers whose settings did not change keep their runtime and connection pool; new or
        changed ones get a new transport (a ConfigError from building it leaves the old config
        serving); cooldowns carry over when the schedule is the same."""
        old = self.state
        keep = {name: rt for name, rt in old.runtime.items()
                if name in config.providers and _same_provider(config.providers[name], rt.provider)}
        fresh = {name: p for name, p in config.providers.items() if name not in keep}
        if fresh:
            if self._make_transports is None:
                raise RuntimeError("this gateway cannot build transports for new providers")
            from ..config import Config
            sub = Config(path=config.path, server=config.server, providers=fresh, aliases={},
                         routing=config.routing)
            transports = self._make_transports(sub)
            keep.update({name: ProviderRuntime(p, transports[name]) for name, p in fresh.items()})
        runtime = {name: keep[name] for name in config.providers}
        for name, rt in runtime.items():  # a kept provider may have a new max_inflight (its count stays)
            rt.provider, rt.max_inflight = config.providers[name], config.providers[name].max_inflight
        same = config.routing.cooldown == old.config.routing.cooldown
        self.state = State(config, runtime, old.router.cooldowns if same else None)
        self.rate.configure(_rate_limits(config))
        if old.active:
            self._old.append(old)
        if self.plane is not None:
            self.plane.debug.resize(config.debug.max_entries)
        for fn in self.on_apply:
            fn(config)
        gone = [rt for name, rt in old.runtime.items() if runtime.get(name) is not rt]
        self._retired.extend(gone)
        if gone:
            asyncio.get_running_loop().create_task(self._close_retired())
        log.info("config applied: %d providers (%d new or changed), %d aliases",
                 len(runtime), len(fresh), len(config.aliases))

    async def _close_retired(self, poll: float = 1.0) -> None:
        """Close the pools of replaced providers once nothing can use them: no attempt running on
        them, and no request still running on a generation that names them (it may fail over
        to them yet; streams may run long)."""
        while self._retired:
            self._old = [st for st in self._old if st.active]
            held = {id(rt) for st in self._old for rt in st.runtime.values()}
            for rt in [rt for rt in self._retired if rt.inflight == 0 and id(rt) not in held]:
                self._retired.remove(rt)
                await rt.transport.aclose()
            if self._retired:
                await asyncio.sleep(poll)

    async def drain(self, grace: float, cut: asyncio.Event | None = None) -> int:
        """Shutdown: wait up to ``grace`` s for the requests in flight (less if ``cut`` is set
        meanwhile: a second signal), then cancel the rest and wait for them to end. Each leaves
        its usage record; a stream ends with its dialect's error event (relay.py), a request not
        answered yet gets a 503 (`handle`). Returns how many were cancelled."""
        self.stopping = True
        if self._tasks and grace > 0:
            wait = asyncio.ensure_future(asyncio.wait(list(self._tasks), timeout=grace))
            if cut is None:
                await wait
            else:
                stop = asyncio.ensure_future(cut.wait())
                await asyncio.wait((wait, stop), return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                wait.cancel()  # (stops the waiting only: the requests go on until cancelled below)
        left = [t for t in self._tasks if not t.done()]
        for t in left:
            t.cancel()
        if left:
            await asyncio.wait(left, timeout=2.0)
        return len(left)

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
                resp.send(200, *health_answer(self.plane, req.query))
            elif path in _MODEL_PATHS or path.startswith(_MODEL_PREFIXES):
                self._method(req, b"GET")
                d = registry.guess(path, req.header)
                key = self.state.keys.check(req, d, None)
                self.list_models(req, resp, self.state.keys.allowed(key) if key is not None else None)
            elif self.plane is not None and (path.startswith(b"/v0/management") or path == b"/metrics"
                                             or path == b"/ui" or path.startswith(b"/ui/")):
                await self.plane.management.handle(req, resp)
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
        except asyncio.CancelledError:
            if self.stopping and not resp.started:  # shutdown cut the request short: say so
                status, headers, body = d.render_error(shutting_down())
                resp.send(status, headers, body)
            raise

    @staticmethod
    def _method(req: Request, want: bytes) -> None:
        if req.method != want:
            raise GatewayError(405, f"method {req.method.decode('latin-1')} not allowed; use {want.decode()}",
                               "invalid_request", headers=[(b"allow", want)])

    def list_models(self, req: Request, resp, allowed: frozenset | None = None) -> None:
        """GET /v1/models[/{alias}] in the caller's shape; ``allowed``: the aliases a restricted
        inbound key may call (it sees only those; others are 404 to it)."""
        if req.path.startswith(b"/v1beta/") or (req.path.startswith(b"/v1/models/") and b":" in req.path):
            shape = "gemini"
        elif req.header(b"anthropic-version") is not None:
            shape = "anthropic"
        else:
            shape = "openai"
        listing, items = self.state.models_bodies[shape]
        if allowed is not None:
            items = {a: b for a, b in items.items() if a in allowed}
            listing = models_listing(shape, items)
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
        st = self.state
        loop = resp.loop
        t0 = perf_counter()  # (loop.time() is uvloop's millisecond clock: too coarse for records)
        rec = Usage(f"{_BOOT}{next(_SEQ):x}", time.time(), self.client_ip(req, resp, st), d.name,
                    req.path.decode("latin-1"))
        rid = req.header(b"x-request-id")
        if rid is not None and _REQUEST_ID.fullmatch(rid):  # else (absent or unfit) our own id
            rec.request_id = rid.decode("ascii")
        call = None
        st.active += 1
        task = asyncio.current_task()
        self._tasks.add(task)
        held = None  # the inbound key whose in-flight slot this request holds (keys with max_inflight)
        try:
            key = rec.key = st.keys.check(req, d, None)
            if key is not None and st.keys.limits:  # (no dict lookup unless a key has max_inflight)
                held = self._hold_key(st.keys.limits, key)
            if key is not None and self.rate.enabled:  # (one attribute test unless a key has rpm/tpm)
                refused = self.rate.admit(key, rec.time)
                if refused is not None:
                    if refused.__class__ is not tuple:  # Redis is granting this instance more permits
                        refused = await refused
                    if refused is not None:
                        raise _rate_limited(key, *refused)
            if st.max_inflight and len(self._tasks) > st.max_inflight:  # (0: no limit)
                raise GatewayError(503, f"Plexus is at its limit of {st.max_inflight} requests in flight "
                                        "(server.max_inflight); retry shortly", headers=[_RETRY_1])
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
            rec.stream = stream
            if key is not None:
                st.keys.allow(key, model)
            alias = st.router.resolve(model)
            if alias is None:
                raise GatewayError(404, f"The model '{model}' does not exist or is not configured on this gateway",
                                   "not_found", param="model", code="model_not_found")
            rec.alias = alias.name
            plan = st.router.plan(alias, loop.time())
            call = Call(self, st, req, resp, d, body, model, stream, d.sse(query), query, alias, len(plan), rec)
            plane = self.plane
            if plane is not None and plane.debug.enabled:
                call.cap = plane.debug.begin(rec.id, alias.name, key)
                if call.cap is not None:
                    call.cap.client_request(req.method, req.target, req.headers, req.body)
            for target in plan:
                if await attempt(call, target):
                    return
            raise call.final_error()
        except GatewayError as e:
            rec.status, rec.http_status, rec.error = "error", e.status, e.message
            if not any(k == b"x-plexus-request-id" for k, _ in e.headers):
                e.headers.extend(call.ids if call is not None else request_ids(rec))
            if call is not None and call.cap is not None and not resp.started:
                call.cap.client_response(e.status, [], e.message.encode())
            raise
        except BaseException as e:  # the client went away (cancelled), or a bug (a 500 follows)
            if not isinstance(e, asyncio.CancelledError):
                rec.status, rec.http_status, rec.error = "error", 500, f"{type(e).__name__}"
            elif call is not None and call.delivered:
                pass  # the client had the whole answer and hung up (SDKs stop at [DONE]): a success
            elif self.stopping:
                rec.status, rec.http_status, rec.error = "error", 503, "the gateway shut down"
            else:
                rec.status, rec.http_status = "client_closed", 499
            raise
        finally:
            st.active -= 1
            self._tasks.discard(task)
            if held is not None:
                n = self.key_inflight[held] - 1
                if n:
                    self.key_inflight[held] = n
                else:
                    del self.key_inflight[held]
            if call is not None:
                rec.attempts, rec.passthrough, rec.capture = call.n, call.passthrough, call.cap
                rec.facts = (t0, perf_counter(), call.first_at, call.upstream_s, call.target, resp)
            else:
                rec.facts = (t0, perf_counter(), None, 0.0, None, resp)
            if self.plane is not None:
                self.plane.record(rec)

    def _hold_key(self, limits: dict, key: str) -> str | None:
        """Count one more request of inbound key ``key`` in flight (its name: the caller releases
        it); None when the key has no max_inflight; 429 when it is at its limit."""
        limit = limits.get(key)
        if limit is None:
            return None
        n = self.key_inflight.get(key, 0)
        if n >= limit:
            raise GatewayError(429, f"API key '{key}' is at its limit of {limit} requests in flight "
                                    f"(keys.{key}.max_inflight); retry when one of them has finished",
                               "rate_limit", headers=[_RETRY_1])
        self.key_inflight[key] = n + 1
        return key

    @staticmethod
    def client_ip(req: Request, resp, st) -> str:
        """The socket peer; with ``server.trusted_proxies``, X-Forwarded-For's last address that
        is not a trusted proxy (when the peer itself is one)."""
        ip = resp.client_ip
        trusted = st.config.server.trusted_proxies
        if not trusted or not _in(ip, trusted):
            return ip
        xff = b",".join(v for k, v in req.headers if k == b"x-forwarded-for")  # every line: one list
        if not xff:
            return ip
        for hop in reversed(xff.decode("latin-1").split(",")):
            hop = hop.strip()
            if not hop:
                continue
            try:
                addr = ipaddress.ip_address(hop)
            except ValueError:
                return ip  # not an address: nothing to the left of it can be believed
            if not any(addr in n for n in trusted):
                return hop
        return ip


def _rate_limits(config) -> dict:
    """key name -> (rpm, tpm) of the keys that have either."""
    return {k.name: (k.rpm, k.tpm) for k in config.keys if k.rpm or k.tpm}


def _rate_limited(key: str, retry_after: float, which: str, limit: int) -> GatewayError:
    what = "requests" if which == "rpm" else "tokens"
    wait = max(1, int(retry_after + 0.999))
    return GatewayError(429, f"API key '{key}' is over its limit of {limit} {what} per minute "
                             f"(keys.{key}.{which}); retry in {wait} s", "rate_limit",
                        headers=[(b"retry-after", str(wait).encode())])


def _same_provider(new, old) -> bool:
    """Equal settings but perhaps max_inflight: the runtime (its pool and its count) is kept."""
    return new == old or (new.max_inflight != old.max_inflight
                          and dataclasses.replace(new, max_inflight=old.max_inflight) == old)


def _in(ip: str, networks) -> bool:
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(a in n for n in networks)
