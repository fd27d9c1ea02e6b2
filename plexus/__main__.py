"""CLI: ``plexus [--config PATH] [--host H] [--port N] [--log-level LEVEL] [--access-log FORMAT]
[--workers N|auto] [--shutdown-grace S]``, and ``plexus test-request ALIAS FILE`` (test_request.py).

Theory: the only place that reads process state (argv, environment, the config file) and turns
it into arguments for ``plexus.app.run``.  Precedence: --config > $PLEXUS_CONFIG >
config/plexus.yaml; --port > $PLEXUS_PORT > server.port > 3000; --host > server.host > 127.0.0.1;
--shutdown-grace > server.shutdown_grace (of the config in force at shutdown) > 30.
A bad config is a one-line message on stderr and exit code 2 (no traceback): the message is the
ConfigError itself, which names the file, the key path and the fix.  Providers without an API
key are reported once at startup, naming the environment variable to set; so is a listen
address beyond loopback with no ``keys:`` (anyone who reaches the port spends the provider keys).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import math
import os
import sys
from importlib import import_module

from .config import ConfigError, empty_key_providers, load_config
from .config_control import ACCESS_LOG_FORMATS as ACCESS_FORMATS
from .supervisor import worker_count

DEFAULT_CONFIG = os.path.join("config", "plexus.yaml")
LOG_LEVELS = ("debug", "info", "warning", "error")
log = logging.getLogger("plexus")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="plexus", description="Plexus: a fast LLM API gateway.")
    p.add_argument("--config", metavar="PATH",
                   help=f"config file (default: $PLEXUS_CONFIG, else {DEFAULT_CONFIG})")
    p.add_argument("--host", help="listen address (default: server.host, else 127.0.0.1; 0.0.0.0 = every interface)")
    p.add_argument("--port", type=int, metavar="N",
                   help="listen port (default: $PLEXUS_PORT, else server.port, else 3000)")
    p.add_argument("--log-level", choices=LOG_LEVELS, type=str.lower,
                   help="default: log.level in the config, else info")
    p.add_argument("--access-log", choices=ACCESS_FORMATS, type=str.lower,
                   help="one line per request on stdout (default: log.access in the config, else off)")
    p.add_argument("--workers", metavar="N|auto",
                   help="worker processes sharing the port (default: server.workers, else 1; auto = the CPUs)")
    p.add_argument("--shutdown-grace", type=_seconds, metavar="SECONDS",
                   help="on SIGTERM/SIGINT, how long requests in flight get to finish "
                        "(default: server.shutdown_grace, else 30; 0 = end them at once)")
    return p


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive number of seconds, got {text!r}")
    return value


def is_loopback(host: str) -> bool:
    """True for a loopback address or the name localhost (only the local machine can connect)."""
    name = host.strip().strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.partition("%")[0]).is_loopback
    except ValueError:
        return False  # another name: it may resolve to any interface


def _fail(message: str) -> int:
    print(f"plexus: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int | None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["test-request"]:  # plexus test-request <alias> <json_file> (plexus/test_request.py)
        from .test_request import main as test_request
        return test_request(argv[1:])
    args = _parser().parse_args(argv)
    path = args.config or os.environ.get("PLEXUS_CONFIG") or DEFAULT_CONFIG
    try:
        config = load_config(path)
    except ConfigError as e:
        if e.message == "file not found" and not args.config:
            e = ConfigError(e.file, "", "file not found (pass --config PATH or set PLEXUS_CONFIG)")
        return _fail(f"config error: {e}")

    port = args.port
    if port is None and os.environ.get("PLEXUS_PORT"):
        try:
            port = int(os.environ["PLEXUS_PORT"])
        except ValueError:
            return _fail(f"PLEXUS_PORT must be an integer, got {os.environ['PLEXUS_PORT']!r}")
    if port is None:
        port = config.server.port
    if not 0 <= port <= 65535:
        return _fail(f"port must be between 0 and 65535, got {port}")
    host = args.host or config.server.host

    try:
        workers = worker_count(args.workers if args.workers is not None else config.server.workers)
    except ValueError:
        return _fail(f"--workers must be a positive number or auto, got {args.workers!r}")
    level = getattr(logging, (args.log_level or config.log.level or "info").upper())
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(level)
    if not config.keys and not is_loopback(host):
        log.warning("listening on %s with no keys configured: anyone who can reach port %d can use this "
                    "gateway and spend your provider keys; add `keys:` to the config (or listen on 127.0.0.1)",
                    host, port)
    for p in empty_key_providers(config):
        hint = f" (set {' or '.join(p.api_key_env)})" if p.api_key_env else ""
        log.warning("provider '%s' has no API key%s; calling it without auth", p.name, hint)
    for p in config.providers.values():
        if not p.tls_verify:
            log.warning("provider '%s' has tls_verify: false: its TLS certificate is NOT checked "
                        "(anyone on the path can read and change its traffic)", p.name)
        if p.proxy is not None:
            log.info("provider '%s' connects through proxy %s (from %s)", p.name, p.proxy.display,
                     p.proxy.source)

    app = import_module("plexus.app")
    try:
        extra = {k: v for k, v in (("shutdown_grace", args.shutdown_grace), ("access_log", args.access_log),
                                   ("log_level", args.log_level)) if v is not None}
        if workers > 1:
            extra["workers"] = workers
        return app.run(config, host=host, port=port, **extra)
    except ConfigError as e:  # found while building the upstream side (e.g. a ca_file that is no PEM)
        return _fail(f"config error: {e}")
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
