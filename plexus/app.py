"""Wiring: config → one upstream transport per provider → Gateway handler → server; the process
lifecycle (signals, systemd readiness).

`run(config, host, port)` installs uvloop, starts listening, prints the one startup line
("plexus listening on http://HOST:PORT (N aliases)") and serves until SIGTERM/SIGINT.
`serve(...)` is the same as a coroutine that returns the started server, for tests that run
Plexus in-process; `shutdown(...)` ends it.

Signals (the nginx model):

    SIGTERM, SIGINT   graceful shutdown: the listener closes at once (new connections are
                      refused), idle keep-alive connections are closed, requests in flight get
                      ``server.shutdown_grace`` seconds (--shutdown-grace overrides) to finish,
                      answering with ``connection: close``. Then what is left is ended: a stream
                      with its dialect's error event and a complete body (gateway/relay.py), a
                      request not answered yet with a 503 in its dialect; the usage records
                      are flushed, the upstream pools closed, and the process exits 0. A second
                      SIGTERM/SIGINT during the grace period ends it at once (same ending).
    SIGHUP            reload the config file: the same validation as the management API and the
                      file watcher (control/reload.py, whether or not the management API is on);
                      a bad file changes nothing and is logged at ERROR with every problem.

Workers (``--workers N``/``auto``, or ``server.workers``): the parent binds once and forks N
processes that listen on the same port (SO_REUSEPORT on Linux; supervisor.py); each runs `_main` with its
``worker`` link, and the parent prints the startup line, restarts a worker that dies and
passes SIGTERM/SIGINT/SIGHUP on.

Under systemd (``Type=notify``, config/plexus.service) the process reports READY=1 once it
listens, RELOADING=1 then READY=1 around a SIGHUP reload, and STOPPING=1 when the shutdown
begins (plexus/sdnotify.py; nothing outside systemd).

Once started, `run` moves everything allocated so far (modules, config, pools: ~26k objects) to
the garbage collector's permanent generation (`gc.freeze`): a full collection then scans only
what requests left behind, not the whole process (~18 ms here, a pause every request waiting
on the loop would see in its latency).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys

from . import sdnotify, supervisor
from .config_error import ConfigError
from .control.peers import Peers
from .control.plane import Plane
from .gateway.handler import Gateway
from .server.protocol import ServerLimits, start_server
from .upstream.tls import TLSSetupError, contexts
from .upstream.transport import PlexusTransport

log = logging.getLogger("plexus")

class Listener:
    """What `serve` started: the listening server and its open client connections."""

    __slots__ = ("server", "connections")

    def __init__(self, server, connections: set) -> None:
        self.server = server
        self.connections = connections  # HttpProtocol objects (server/protocol.py)

    @property
    def sockets(self):
        return self.server.sockets

    def close(self) -> None:
        """Stop listening (new connections are refused); open connections stay."""
        self.server.close()


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
                        body_timeout=s.body_timeout, write_timeout=s.write_timeout,
                        max_connections=s.max_connections)


async def serve(config, host: str, port: int, sock=None, access_log: str | None = None,
                log_level: str | None = None):
    """Start Plexus; returns (listener, gateway). Close with `shutdown(listener, gateway)`.
    ``sock``: accept from this listening socket (a worker's, inherited from the parent);
    ``access_log`` / ``log_level``: the command line's choice (it wins over the config's `log:`).

    A config reload (`Gateway.apply`) also applies the server limits (to connections accepted
    after it) and the usage settings; the listen address and port need a restart."""
    transports = make_transports(config)
    plane = Plane(config, access_log=access_log, log_level=log_level)
    gateway = Gateway(config, transports, plane, make_transports)
    plane.attach(gateway, asyncio.get_running_loop())
    plane.start()
    limits = [server_limits(config)]
    gateway.on_apply.append(lambda c: limits.__setitem__(0, server_limits(c)))
    gateway.on_apply.append(plane.reconfigure)
    conns: set = set()
    server = await start_server(gateway.handle, host, port, limits, conns, sock=sock)
    return Listener(server, conns), gateway


async def shutdown(listener, gateway, grace: float | None = None, cut: asyncio.Event | None = None) -> int:
    """Stop listening and close idle keep-alive connections; let requests in flight finish for
    up to ``grace`` seconds (default: the current config's ``server.shutdown_grace``; ``cut``,
    once set, ends the wait early), then end the rest (a stream with its dialect's error event,
    an unanswered request with a 503; each leaves its usage record) and close every connection;
    flush the usage records; close the pools. Returns how many requests were ended early."""
    if grace is None:
        grace = gateway.config.server.shutdown_grace
    listener.close()
    conns = getattr(listener, "connections", None) or ()
    for proto in list(conns):
        proto.drain()
    ended = await gateway.drain(grace, cut)
    for proto in list(conns):
        proto.close()
    if gateway.plane is not None:
        await gateway.plane.close()  # flushes the usage records still queued
    for rt in gateway.runtime.values():
        await rt.transport.aclose()
    return ended


async def reload_config(gateway) -> list[dict]:
    """SIGHUP: re-read the config file and apply it (control/reload.py: validated first; a bad
    file keeps the old config serving and is logged at ERROR). [] if applied or unchanged, else
    the problems. Tells systemd RELOADING=1 before and READY=1 after."""
    reloader = gateway.plane.reloader if gateway.plane is not None else None
    if reloader is None or not reloader.has_file:
        log.warning("SIGHUP: the config was not loaded from a file; nothing to reload")
        return []
    sdnotify.notify("RELOADING=1", f"MONOTONIC_USEC={sdnotify.monotonic_usec()}",
                    f"STATUS=reloading {reloader.path}")
    log.info("SIGHUP: reloading %s", reloader.path)
    before = reloader.loaded_at
    try:
        problems = await reloader.reload_file()
    except Exception as e:  # a bug must not take the gateway down: the old config serves on
        log.exception("SIGHUP: reloading %s failed", reloader.path)
        problems = [{"path": "", "message": f"{type(e).__name__}: {e}"}]
    if problems:
        status = f"config reload FAILED ({len(problems)} problems; the previous config keeps serving)"
    elif reloader.loaded_at != before:
        status = f"config reloaded ({len(gateway.config.aliases)} aliases)"
    else:
        status = "config unchanged"
        log.info("SIGHUP: %s is unchanged; nothing to apply", reloader.path)
    sdnotify.notify("READY=1", f"STATUS={status}")
    return problems


async def _main(config, host: str, port: int, shutdown_grace: float | None = None, opts: dict | None = None,
                worker: tuple | None = None) -> None:
    """One serving process. ``worker``: (socket, channel, slot, shared dir) when this is one of
    several workers (supervisor.py): then the parent prints the startup line and talks to
    systemd, and this process links to the others (control/peers.py)."""
    opts = opts or {}
    loop = asyncio.get_running_loop()
    stop, cut = asyncio.Event(), asyncio.Event()
    reloads: set = set()
    gateway = None

    def on_stop(name: str) -> None:
        if not stop.is_set():
            log.info("%s: shutting down", name)
            stop.set()
        elif not cut.is_set():
            log.warning("%s again: ending the requests still running now", name)
            cut.set()

    def on_hup() -> None:
        if gateway is None or stop.is_set():
            log.warning("SIGHUP ignored: %s", "still starting" if gateway is None else "shutting down")
            return
        task = loop.create_task(reload_config(gateway))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    for sig in (signal.SIGINT, signal.SIGTERM):  # before listening: a stop while starting is clean too
        loop.add_signal_handler(sig, on_stop, sig.name)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    listener, gateway = await serve(config, host, port, sock=worker[0] if worker else None, **opts)
    gc.collect()
    gc.freeze()
    if worker is None:
        bound = listener.sockets[0].getsockname()[1] if listener.sockets else port
        line = startup_line(config, host, bound)
        print(line, flush=True)
        sdnotify.notify("READY=1", f"STATUS={line[7:]}")
    else:
        _, chan, slot, shared = worker
        peers = gateway.plane.peers = Peers(chan, slot, shared, gateway, gateway.plane.metrics, loop)
        peers.start()
    await stop.wait()
    grace = shutdown_grace if shutdown_grace is not None else gateway.config.server.shutdown_grace
    sdnotify.notify("STOPPING=1", f"STATUS=shutting down: requests in flight get up to {grace:g} s")
    log.info("no longer accepting connections; requests in flight get up to %g s to finish", grace)
    for task in list(reloads):
        task.cancel()
    ended = await shutdown(listener, gateway, grace, cut)
    if ended:
        log.warning("shutdown: %d requests still running were ended (streams with an error event, "
                    "others with 503)", ended)
    log.info("plexus stopped")


def startup_line(config, host: str, port: int) -> str:
    return f"plexus listening on http://{host}:{port} ({len(config.aliases)} aliases)"


def _loop_run(coro) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a hard dependency
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def run(config, host: str = "127.0.0.1", port: int = 3000, shutdown_grace: float | None = None,
        workers: int = 1, access_log: str | None = None, log_level: str | None = None) -> int | None:
    """Serve until SIGTERM/SIGINT: in this process, or in ``workers`` forked processes that
    share one listening socket (supervisor.py)."""
    opts = {k: v for k, v in (("access_log", access_log), ("log_level", log_level)) if v is not None}
    if workers <= 1:
        try:
            _loop_run(_main(config, host, port, shutdown_grace, opts))
        except OSError as e:
            print(f"plexus: cannot listen on {host}:{port}: {e.strerror or e}", file=sys.stderr)
            raise SystemExit(1) from None
        return None
    try:
        sock = supervisor.bind(host, port)
    except OSError as e:
        print(f"plexus: cannot listen on {host}:{port}: {e.strerror or e}", file=sys.stderr)
        raise SystemExit(1) from None
    bound = sock.getsockname()[1]

    def run_worker(sock, chan, slot: int, shared: str) -> int:
        os.environ.pop("NOTIFY_SOCKET", None)   # the parent speaks to systemd (NotifyAccess=main)
        own = supervisor.worker_socket(sock)
        _loop_run(_main(config, host, port, shutdown_grace, opts, (own, chan, slot, shared)))
        return 0

    def ready() -> None:
        line = startup_line(config, host, bound)
        print(line, flush=True)
        log.info("%d worker processes share the port", workers)
        sdnotify.notify("READY=1", f"STATUS={line[7:]}, {workers} workers")

    def grace() -> float:
        return shutdown_grace if shutdown_grace is not None else config.server.shutdown_grace

    try:
        return supervisor.supervise(workers, sock, run_worker, grace, ready,
                                    notify=lambda state: sdnotify.notify(state))
    finally:
        sock.close()
