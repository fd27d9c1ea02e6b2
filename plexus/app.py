"""Wiring: config → one upstream transport per provider → Gateway handler → server.

`run(config, host, port)` installs uvloop, starts listening, prints the one startup line
("plexus listening on http://HOST:PORT (N aliases)") and serves until SIGINT/SIGTERM, then
closes the listener and the upstream pools. `serve(...)` is the same as a coroutine that
returns the started server, for tests that run Plexus in-process.

Once started, `run` moves everything allocated so far (modules, config, pools: ~26k objects) to
the garbage collector's permanent generation (`gc.freeze`): a full collection then scans only
what requests left behind, not the whole process (~18 ms here, a pause every request waiting
on the loop would see in its latency).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys

from .config_error import ConfigError
from .control.plane import Plane
from .gateway.handler import Gateway
from .server.protocol import ServerLimits, start_server
from .upstream.tls import TLSSetupError, contexts
from .upstream.transport import PlexusTransport

log = logging.getLogger("plexus")

SHUTDOWN_GRACE = 10.0  # seconds requests in flight get to finish on SIGTERM/SIGINT


def make_transports(config) -> dict:
    """One PlexusTransport per provider, with its TLS context (built here, once, shared between
    providers with the same trust settings) and its proxy. A CA bundle that cannot be loaded
    raises ConfigError naming the provider's ``ca_file`` key (or SSL_CERT_FILE/SSL_CERT_DIR)."""
    try:
        tls = contexts(config.providers.values())
    except TLSSetupError as e:
        key = f"providers.{e.provider}" + (".ca_file" if e.source == "ca_file" else "")
        raise ConfigError(config.path, key, str(e)) from None
    return {name: PlexusTransport(connect_timeout=p.connect_timeout, ttfb_timeout=p.ttfb_timeout,
                                  read_timeout=p.read_timeout, ssl_context=tls.get(name), proxy=p.proxy)
            for name, p in config.providers.items()}


def server_limits(config) -> ServerLimits:
    s = config.server
    return ServerLimits(max_body_bytes=s.max_body_bytes, max_header_bytes=s.max_header_bytes,
                        keepalive_timeout=s.keepalive_timeout, header_timeout=s.header_timeout,
                        body_timeout=s.body_timeout, write_timeout=s.write_timeout)


async def serve(config, host: str, port: int):
    """Start Plexus; returns (server, gateway). Close with `shutdown(server, gateway)`.

    A config reload (`Gateway.apply`) also applies the server limits (to connections accepted
    after it) and the usage settings; the listen address and port need a restart."""
    transports = make_transports(config)
    plane = Plane(config)
    gateway = Gateway(config, transports, plane, make_transports)
    plane.attach(gateway, asyncio.get_running_loop())
    plane.start()
    limits = [server_limits(config)]
    gateway.on_apply.append(lambda c: limits.__setitem__(0, server_limits(c)))
    gateway.on_apply.append(plane.reconfigure)
    server = await start_server(gateway.handle, host, port, limits)
    return server, gateway


async def shutdown(server, gateway, grace: float = SHUTDOWN_GRACE) -> None:
    """Stop listening; let requests in flight finish for up to ``grace`` seconds, then cancel
    the rest (each still leaves its usage record); flush the usage records; close the pools."""
    server.close()
    await gateway.drain(grace)
    if gateway.plane is not None:
        await gateway.plane.close()  # flushes the usage records still queued
    for rt in gateway.runtime.values():
        await rt.transport.aclose()


async def _main(config, host: str, port: int) -> None:
    server, gateway = await serve(config, host, port)
    gc.collect()
    gc.freeze()
    bound = server.sockets[0].getsockname()[1] if server.sockets else port
    print(f"plexus listening on http://{host}:{bound} ({len(config.aliases)} aliases)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await shutdown(server, gateway)


def run(config, host: str = "127.0.0.1", port: int = 3000) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a hard dependency
        uvloop = None
    try:
        if uvloop is not None:
            uvloop.run(_main(config, host, port))
        else:
            asyncio.run(_main(config, host, port))
    except OSError as e:
        print(f"plexus: cannot listen on {host}:{port}: {e.strerror or e}", file=sys.stderr)
        raise SystemExit(1) from None
