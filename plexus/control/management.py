"""The management API (``/v0/management/...``) and ``/metrics``: a route table and its handlers.

Theory (Starlette's ``routing.py`` without the framework): one table maps a path pattern to a
handler per method; path parameters are cut out and percent-decoded once; every error is an
``ApiError`` rendered in one place as ``{"error": message[, "details": [...]]}`` JSON. The
gateway routes every path under ``/v0/management``, exactly ``/metrics``, and ``/ui[/...]`` (the
dashboard's static files, control/ui.py) here
(``Management.handle``); the handlers read the gateway's *current* state on each call
(``gateway.config``, ``gateway.router``, ``gateway.plane``), so a hot reload is seen at once.

Access, checked in this order:

    config.admin_key == ""        the management API is off: every path under the prefix is
                                  the gateway's own "no route" 404, as if it did not exist
    admin key missing or wrong    401 (x-admin-key: K, or Authorization: Bearer K), before any
                                  route is looked up (nothing is revealed without the key)
    unknown path / wrong method   404 / 405 with ``allow``

``/metrics`` (GET): the admin key, or a client address in ``config.metrics.allow``; with no
admin key and no allow list, loopback clients only. The client address is the one usage records
show (X-Forwarded-For is believed only from ``server.trusted_proxies``: a local reverse proxy
must not make every client look like loopback). Refused: 401 when an admin key is
configured (it would help), 403 when none is (no credential can help).

Blocking work (the usage store's queries, config file I/O) runs in the default executor; the
loop only parses, dispatches and writes. Handlers for one area each: config (reload.py does the
work), usage (the store; 503 while a PostgreSQL store cannot be read), events (SSE from events.py), cooldowns (the router), debug
(debug.py), metrics.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from urllib.parse import unquote

import orjson

from ..dialects import registry
from ..config_control import mask_config_text
from ..config_error import ConfigError
from ..errors import GatewayError
from ..gateway.handler import Gateway
from .events import DEFAULT_MAX_QUEUE
from .metrics import LATENCY_BUCKETS
from .store import StoreUnavailable
from .keys import check_admin
from .ui import UiFiles, is_ui_path
from .management_query import (
    ApiError, cooldown_query, debug_settings, parse_query, summary_query, usage_query,
)

__all__ = ["Management", "PREFIX", "ROUTES", "metrics_refusal"]

log = logging.getLogger("plexus.management")

PREFIX = b"/v0/management"
_JSON = (b"content-type", b"application/json")
_YAML = (b"content-type", b"application/yaml")
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no")]
_DROPPED = (b'event: dropped\ndata: {"error":"this client did not keep up with the events; '
            b'reconnect"}\n\n')
_WWW_AUTH = [(b"www-authenticate", b'Bearer realm="plexus-management"')]

# path pattern (after the prefix) -> {method: handler method name}
ROUTES = (
    ("config", {"GET": "get_config", "POST": "post_config"}),
    ("config/status", {"GET": "config_status"}),
    ("usage", {"GET": "usage"}),
    ("usage/summary", {"GET": "usage_summary"}),
    ("events", {"GET": "events"}),
    ("cooldowns", {"GET": "cooldowns", "DELETE": "clear_cooldowns"}),
    ("targets", {"GET": "targets"}),
    ("ratelimits", {"GET": "ratelimits"}),
    ("cooldowns/{provider}", {"DELETE": "clear_provider_cooldowns"}),
    ("debug", {"GET": "debug", "POST": "set_debug"}),
    ("debug/logs", {"GET": "debug_logs", "DELETE": "clear_debug_logs"}),
    ("debug/logs/{request_id}", {"GET": "debug_log"}),
)


def send_json(resp, status: int, obj, headers=()) -> None:
    resp.send(status, [_JSON, *headers], orjson.dumps(obj))


def _ip(text: str):
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    return getattr(ip, "ipv4_mapped", None) or ip  # ::ffff:127.0.0.1 is 127.0.0.1


def metrics_refusal(client_ip: str, admin_key: str, key_ok: bool, allow) -> ApiError | None:
    """None if this client may read /metrics, else the error to answer (see the module docstring)."""
    if admin_key and key_ok:
        return None
    ip = _ip(client_ip)
    if allow:
        if ip is not None and any(ip in net for net in allow):
            return None
    elif not admin_key and ip is not None and ip.is_loopback:
        return None
    if admin_key:
        return ApiError(401, "the admin key is required for /metrics from this address", headers=_WWW_AUTH)
    return ApiError(403, "/metrics is not allowed from this address (see metrics.allow in the config)")


class Management:
    """Handles ``/v0/management/*`` and ``/metrics`` for one gateway (``gateway.plane.management``)."""

    def __init__(self, gateway, plane, heartbeat: float = 15.0, max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        self.gateway = gateway
        self.plane = plane  # .store (None = usage storage off), .metrics, .events, .debug, .reloader
        self.heartbeat = heartbeat  # seconds between SSE comment pings on /events
        self.max_queue = max_queue  # records an /events client may fall behind before it is dropped
        self.ui = UiFiles()  # the dashboard's static files (control/ui.py), read at its first request
        self._routes = [(tuple(pattern.split("/")), {m: getattr(self, name) for m, name in methods.items()})
                        for pattern, methods in ROUTES]

    # ------------------------------------------------------------------ dispatch

    async def handle(self, req, resp) -> None:
        try:
            if req.path == b"/metrics":
                self.metrics(req, resp)
            elif is_ui_path(req.path):
                await self.dashboard(req, resp)
            else:
                await self.dispatch(req, resp)
        except ApiError as e:
            if resp.started:
                raise
            send_json(resp, e.status, e.body(), e.headers)
        except Exception:
            if resp.started:
                raise
            log.exception("management request %s %r failed", req.method.decode("latin-1"), req)
            send_json(resp, 500, {"error": "internal error (see the gateway log)"})

    def _not_found(self, req, resp) -> None:
        """Exactly the gateway's answer to an unknown path."""
        path = req.path
        status, headers, body = registry.guess(path, req.header).render_error(GatewayError(
            404, f"no route for {req.method.decode('latin-1')} {path.decode('latin-1')}", "not_found"))
        resp.send(status, headers, body)

    async def dashboard(self, req, resp) -> None:
        """``/ui[/<file>]``: the dashboard's files, when ``ui.enabled`` and an admin key is set
        (the page is useless without the management API); else the gateway's 404. The files
        are read once, off the loop, at the first request."""
        config = self.gateway.config
        if config.ui.enabled and config.admin_key and not self.ui.loaded:
            await resp.loop.run_in_executor(None, self.ui.load)
        if not (config.ui.enabled and config.admin_key and self.ui.serve(req, resp)):
            self._not_found(req, resp)

    async def dispatch(self, req, resp) -> None:
        admin_key = self.gateway.config.admin_key
        path = req.path
        if not admin_key:  # off: exactly the gateway's answer to an unknown path
            self._not_found(req, resp)
            return
        if not check_admin(req, admin_key):
            raise ApiError(401, "missing or wrong admin key (send x-admin-key: <key> or "
                                "Authorization: Bearer <key>)", headers=_WWW_AUTH)
        handlers, params = self.match(path)
        if handlers is None:
            raise ApiError(404, f"no management route {path.decode('latin-1')}")
        handler = handlers.get(req.method.decode("latin-1"))
        if handler is None:
            allow = ", ".join(handlers).encode()
            raise ApiError(405, f"method {req.method.decode('latin-1')} not allowed here; use {allow.decode()}",
                           headers=[(b"allow", allow)])
        await handler(req, resp, **params)

    def match(self, path: bytes):
        """(handlers by method, path parameters) for a full path, or (None, None)."""
        if not path.startswith(PREFIX + b"/"):
            return None, None
        segments = path[len(PREFIX) + 1:].decode("latin-1").split("/")
        for pattern, handlers in self._routes:
            if len(pattern) != len(segments):
                continue
            params = {}
            for p, s in zip(pattern, segments):
                if p[0] == "{":
                    if not s:
                        break
                    params[p[1:-1]] = unquote(s)
                elif p != s:
                    break
            else:
                return handlers, params
        return None, None

    # ------------------------------------------------------------------ config

    def _reloader(self):
        reloader = self.plane.reloader
        if reloader is None or not reloader.has_file:
            raise ApiError(409, "this gateway's config was not loaded from a file; nothing to show or replace")
        return reloader

    async def get_config(self, req, resp) -> None:
        parse_query(req.query, ())
        text = await self._reloader().applied_text()
        if text is None:
            raise ApiError(503, "the config file could not be read (see the gateway log)")
        try:
            masked = mask_config_text(text)
        except ConfigError:  # only if the file was edited badly between startup and its first read
            raise ApiError(500, "the applied config text cannot be shown masked (not valid YAML)") from None
        resp.send(200, [_YAML], masked.encode("utf-8"))

    async def post_config(self, req, resp) -> None:
        parse_query(req.query, ())
        reloader = self._reloader()
        try:
            text = req.body.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise ApiError(400, "Validation failed",
                           [{"path": "", "message": f"not valid UTF-8 (byte {e.start})"}]) from None
        try:
            details = await reloader.post(text)
        except OSError as e:
            log.error("POST /config: cannot write %s: %s", reloader.path, e)
            raise ApiError(500, f"cannot write the config file: {e.strerror or e}") from None
        if details:
            raise ApiError(400, "Validation failed", details)
        status = reloader.status()
        send_json(resp, 200, {"status": "ok", "path": status["path"], "loaded_at": status["loaded_at"],
                              "source": status["source"]})

    async def config_status(self, req, resp) -> None:
        parse_query(req.query, ())
        send_json(resp, 200, self._reloader().status())

    # ------------------------------------------------------------------ usage

    def _store(self):
        store = self.plane.store
        if store is None:
            raise ApiError(409, "usage storage is disabled in this gateway's config")
        return store

    async def usage(self, req, resp) -> None:
        filters, limit, offset = usage_query(req.query)
        store = self._store()
        try:
            rows, total = await resp.loop.run_in_executor(None, store.query, filters, limit, offset)
        except ValueError as e:
            raise ApiError(400, str(e)) from None
        except StoreUnavailable as e:
            raise ApiError(503, str(e), headers=[(b"retry-after", b"5")]) from None
        send_json(resp, 200, {"data": rows, "total": total, "limit": limit, "offset": offset})

    async def usage_summary(self, req, resp) -> None:
        group_by, filters = summary_query(req.query)
        store = self._store()
        try:
            rows = await resp.loop.run_in_executor(None, store.summary, group_by, filters)
        except ValueError as e:
            raise ApiError(400, str(e)) from None
        except StoreUnavailable as e:
            raise ApiError(503, str(e), headers=[(b"retry-after", b"5")]) from None
        send_json(resp, 200, {"data": rows, "group_by": group_by})

    # ------------------------------------------------------------------ events (SSE)

    async def events(self, req, resp) -> None:
        q = parse_query(req.query, ("max_rate",))
        rate = 0.0
        if "max_rate" in q:
            try:
                rate = float(q["max_rate"])
            except ValueError:
                rate = -1.0
            if not (0.0 <= rate <= 1e6):
                raise ApiError(400, "invalid parameter 'max_rate': records per second, 0 (all) or more")
        sub = self.plane.events.subscribe(self.max_queue, rate)
        try:
            resp.start(200, _SSE_HEADERS, b": connected\n\n")
            while True:
                data = await sub.get(self.heartbeat)
                if data is None:  # dropped: fell max_queue records behind
                    break
                await resp.write(data or b": ping\n\n")
            resp.end(_DROPPED)
        finally:  # also on a client disconnect, which cancels this task
            sub.close()

    # ------------------------------------------------------------------ cooldowns

    async def cooldowns(self, req, resp) -> None:
        parse_query(req.query, ())
        now, wall = resp.loop.time(), time.time()
        rows = self.gateway.router.snapshot(now)
        for row in rows:
            until, last = row.get("until"), row.get("last_failure")
            row["until_unix"] = wall + (until - now) if until else None
            row["last_failure_unix"] = wall + (last - now) if last else None
        send_json(resp, 200, {"data": rows})

    async def targets(self, req, resp) -> None:
        """Cumulative requests, errors and latency histograms per (provider, model), from the
        metrics (every worker's): cheap enough to poll, unlike a usage summary over a range."""
        parse_query(req.query, ())
        self._settle()  # every request that has ended is counted (its records are settled anyway)
        peers = self.plane.peers
        rows = self.plane.metrics.targets(peers.others() if peers is not None else ())
        send_json(resp, 200, {"data": rows, "buckets_ms": list(LATENCY_BUCKETS), "time": time.time()})

    async def ratelimits(self, req, resp) -> None:
        """Each key with an rpm/tpm: this minute's counts as this instance knows them, and the
        state store's link (shared through Redis, or counted here alone)."""
        parse_query(req.query, ())
        state = self.plane.state
        send_json(resp, 200, {"data": self.gateway.rate.snapshot(time.time()),
                              "state_store": state.status() if state is not None else None})

    async def clear_cooldowns(self, req, resp) -> None:
        parse_query(req.query, ())
        send_json(resp, 200, {"cleared": self.gateway.router.cooldowns.clear()})

    async def clear_provider_cooldowns(self, req, resp, provider: str) -> None:
        model = cooldown_query(req.query)
        if provider not in self.gateway.config.providers:
            raise ApiError(404, f"provider '{provider}' is not configured")
        send_json(resp, 200, {"cleared": self.gateway.router.cooldowns.clear(provider, model)})

    # ------------------------------------------------------------------ debug capture

    async def debug(self, req, resp) -> None:
        parse_query(req.query, ())
        send_json(resp, 200, self.plane.debug.settings())

    async def set_debug(self, req, resp) -> None:
        parse_query(req.query, ())
        enabled, aliases, keys = debug_settings(req.body)
        debug = self.plane.debug
        debug.configure(enabled, aliases, keys)
        send_json(resp, 200, debug.settings())

    def _settle(self) -> None:
        """Complete the records the plane has queued (it does every 50 ms), so what is read
        here includes every request that has ended."""
        settle_now = getattr(self.plane, "flush_pending", None)
        if settle_now is not None:
            settle_now()

    async def debug_logs(self, req, resp) -> None:
        parse_query(req.query, ())
        self._settle()
        send_json(resp, 200, {"data": self.plane.debug.list()})

    async def clear_debug_logs(self, req, resp) -> None:
        parse_query(req.query, ())
        send_json(resp, 200, {"cleared": self.plane.debug.clear()})

    async def debug_log(self, req, resp, request_id: str) -> None:
        parse_query(req.query, ())
        self._settle()
        capture = self.plane.debug.get(request_id)
        if capture is None:
            raise ApiError(404, f"no capture for request '{request_id}' (it may have left the ring)")
        providers = self.gateway.config.providers.values()
        secrets = [p.api_key for p in providers if p.api_key]
        secret_headers = {name for p in providers for name, _ in p.headers}
        send_json(resp, 200, capture.render(secrets, secret_headers))

    # ------------------------------------------------------------------ /metrics

    def metrics(self, req, resp) -> None:
        if req.method != b"GET":
            raise ApiError(405, f"method {req.method.decode('latin-1')} not allowed; use GET",
                           headers=[(b"allow", b"GET")])
        config = self.gateway.config
        admin_key = config.admin_key
        key_ok = bool(admin_key) and check_admin(req, admin_key)
        # the client address as usage records see it: X-Forwarded-For only from server.trusted_proxies
        client_ip = Gateway.client_ip(req, resp, self.gateway)
        refusal = metrics_refusal(client_ip, admin_key, key_ok, config.metrics.allow)
        if refusal is not None:
            raise refusal
        m = self.plane.metrics
        if m is None:
            raise ApiError(404, "metrics are disabled in this gateway's config")
        ctype = m.CONTENT_TYPE
        self._settle()  # a scrape sees every request that has ended
        peers = self.plane.peers  # other workers: their last snapshots are added (supervisor.py)
        body = m.render(peers.others()) if peers is not None else m.render()
        resp.send(200, [(b"content-type", ctype.encode() if isinstance(ctype, str) else ctype)], body)
