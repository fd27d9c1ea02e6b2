"""Config: one YAML file -> frozen, fully validated dataclasses, computed once at load.

Theory: every question the request path could ask of the config is answered here, at load
time, so the hot path does attribute reads only (no parsing, no defaults, no lookups that can
fail).  Everything that is wrong with a config is an error *now*, never a surprise at request
time: unknown keys (typos must not be silently ignored), duplicate YAML keys, wrong types,
unknown provider types, targets naming a model the provider does not list.  Every error is a
``ConfigError`` naming the file, the key path ("models.fast.targets[0].provider") and what to
do about it; errors never echo secret values (api keys, header values).

File shape: config/plexus.yaml is the documented, commented example of every key.

Environment: ``${VAR}`` anywhere in a string value is replaced from the environment (missing
VAR -> error naming the key path and VAR); ``${VAR:-default}`` gives default when VAR is unset
or empty; ``$${`` is a literal ``${``.  Numeric and boolean values may also come from
``${...}``.  The variables an api_key came from are kept (``Provider.api_key_env``) so a later
upstream 401 can say which variable to set.

``max_tokens``: the default injected when a request omits it.  Anthropic requires one, so
Anthropic providers default to 4096; other types default to 0, meaning "inject nothing".

``models: "*"`` on a provider accepts any model name (catalogues of hundreds, e.g. OpenRouter);
a provider with a list keeps target models strict.  Layout: this file holds server, upstream
and providers; config_models.py aliases, targets, timeouts and ``routing:``; config_control.py
``keys:``, ``admin_key:``, ``usage:``, ``metrics:``, ``debug:``, ``log:``, ``ui:`` and a provider's ``pricing:``;
config_stores.py ``usage_store:`` and ``state_store:`` (many instances sharing state); config_reader.py the typed value readers.

``server.host`` defaults to 127.0.0.1: listening on every interface is a decision to write
down (the CLI warns when it listens beyond loopback without ``keys:``).

Two entry points read the same way: ``parse_config``/``load_config`` raise the first problem
(the CLI prints one line); ``validate_text`` (the management API's POST /config) reports every
problem, each as {"path", "message"}: every section, provider, alias and key is read on its
own (``Reader.entry``), and an alias or key that names a provider or alias which failed is
not reported again.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .config_control import (
    DebugSettings, InboundKey, LogSettings, MetricsSettings, Price, UsageSettings, parse_admin_key, parse_debug,
    parse_keys, parse_log, UiSettings, parse_ui,
    parse_metrics, parse_networks, parse_pricing, parse_usage,
)
from .config_error import ConfigError
from .config_models import (
    TIMEOUT_DEFAULTS, TIMEOUT_SPELLINGS, Alias, RoutingSettings, Target, parse_aliases, parse_routing,
    read_timeouts,
)
from .config_reader import BAD_NAME_CHAR, Reader, join, kind
from .config_stores import StoreSettings, parse_stores
from .config_yaml import load_yaml
from .proxies import Proxy, ProxyError, parse_proxy, proxy_for

__all__ = ["Alias", "Config", "ConfigError", "DebugSettings", "InboundKey", "MetricsSettings", "Price",
           "Provider", "RoutingSettings", "ServerSettings", "Target", "UsageSettings", "empty_key_providers",
           "load_config", "parse_config", "validate_text"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    type: str                     # "openai" | "anthropic" | "gemini"
    base_url: str                 # api_base_url without trailing slash
    scheme: str                   # "http" | "https"
    host: str                     # hostname, lowercased, IPv6 without brackets
    port: int                     # explicit or the scheme default
    base_path: str                # e.g. "/v1"; "" for the root; never ends with "/"
    api_key: str = field(repr=False)  # "" = keyless (send no auth header); never in a repr
    api_key_env: tuple[str, ...]  # env variables api_key was built from
    models: tuple[str, ...]       # () when any_model
    headers: tuple[tuple[str, str], ...] = field(repr=False)  # lowercased names; values may be secrets
    connect_timeout: float
    ttfb_timeout: float
    read_timeout: float           # idle gap inside a body / stream (config key also idle_timeout)
    max_tokens: int               # 0 = do not inject a default
    stream_usage: bool
    reasoning: bool = True        # False: never send reasoning/thinking fields (non-reasoning models)
    responses: bool = False       # OpenAI type: also serves the Responses API (POST {base}/responses)
    max_response_bytes: int = 64 * 1024 * 1024  # non-stream upstream body cap; over it -> 502
    ca_file: str = ""             # extra CA bundle (PEM) trusted for this provider, "" = none
    tls_verify: bool = True       # False: no certificate check (warned about at startup)
    proxy: Proxy | None = None    # the outbound proxy (explicit or from the environment), None = direct
    first_event_timeout: float = TIMEOUT_DEFAULTS["first_event_timeout"]  # headers -> first body bytes
    total_timeout: float = 0.0    # the whole attempt; 0 = no limit
    any_model: bool = False       # `models: "*"`: any model name is accepted (catalogues, OpenRouter)
    pricing: dict[str, Price] = field(default_factory=dict, hash=False)  # upstream model -> $ per token
    max_inflight: int = 0         # attempts in flight to this provider; beyond: the next target (0 = no limit)


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str
    port: int
    max_body_bytes: int
    max_header_bytes: int
    keepalive_timeout: float
    header_timeout: float
    body_timeout: float = 60.0    # longest gap between two chunks of a request body
    write_timeout: float = 60.0   # longest a response write may wait for a client that reads nothing
    trusted_proxies: tuple[Network, ...] = ()  # peers whose X-Forwarded-For is believed
    shutdown_grace: float = 30.0  # SIGTERM/SIGINT: seconds requests in flight get to finish
    max_connections: int = 10000  # open client connections; beyond: 503 and close (0 = no limit)
    max_inflight: int = 0         # inference requests in flight, gateway-wide; beyond: 503 (0 = no limit)
    workers: int | str = 1        # worker processes (supervisor.py): a number or "auto" (--workers wins)


@dataclass(frozen=True, slots=True)
class Config:
    path: str
    server: ServerSettings
    providers: dict[str, Provider]
    aliases: dict[str, Alias]
    routing: RoutingSettings = RoutingSettings()
    keys: tuple[InboundKey, ...] = ()                # inbound API keys; () = no client auth
    admin_key: str = field(default="", repr=False)   # management API key; "" = management API off
    usage: UsageSettings = UsageSettings(enabled=False)  # a Config built in code records nothing
    metrics: MetricsSettings = MetricsSettings()
    debug: DebugSettings = DebugSettings()
    log: LogSettings = LogSettings()
    ui: UiSettings = UiSettings()
    stores: StoreSettings = StoreSettings()   # usage_store / state_store: shared by many instances


# --------------------------------------------------------------------------- defaults / tables

SERVER_DEFAULTS = {
    "host": "127.0.0.1", "port": 3000, "max_body_bytes": 32 * 1024 * 1024,
    "max_header_bytes": 32768, "keepalive_timeout": 75.0, "header_timeout": 30.0,
    "body_timeout": 60.0, "write_timeout": 60.0,
    "shutdown_grace": 30.0, "max_connections": 10000, "max_inflight": 0, "workers": 1,
}
UPSTREAM_DEFAULTS = TIMEOUT_DEFAULTS  # the five timeouts: config_models.py explains each
UPSTREAM_LIMITS = {"max_response_bytes": 64 * 1024 * 1024}
ANTHROPIC_DEFAULT_MAX_TOKENS = 4096

_TOP_KEYS = ("server", "upstream", "providers", "models", "routing", "keys", "admin_key", "usage", "metrics",
             "debug", "log", "ui", "usage_store", "state_store")
_SERVER_KEYS = (*SERVER_DEFAULTS, "trusted_proxies")
_PROVIDER_KEYS = ("type", "api_base_url", "api_key", "models", "headers", *TIMEOUT_SPELLINGS,
                  "max_response_bytes", "max_tokens", "stream_usage", "reasoning", "ca_file", "tls_verify",
                  "proxy", "pricing", "responses", "max_inflight")
_PROVIDER_REQUIRED = ("type", "api_base_url", "models")
_TYPES = {"openai": "openai", "anthropic": "anthropic", "gemini": "gemini"}
_TYPE_NAMES = "OpenAI, Anthropic, Gemini"
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Framing / hop-by-hop headers are Plexus's to set; a configured value would corrupt the message.
_FORBIDDEN_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive",
                                "te", "trailer", "upgrade"})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*\Z")


# --------------------------------------------------------------------------- sections

def _server(r: Reader, raw: object) -> ServerSettings:
    d = {} if raw is None else r.mapping(raw, "server", _SERVER_KEYS)
    get = lambda k: SERVER_DEFAULTS[k] if d.get(k) is None else d[k]  # noqa: E731
    host = r.string(get("host"), "server.host").strip()
    if not host:
        r.fail("server.host", "must not be empty")
    return ServerSettings(
        host=host,
        port=r.integer(get("port"), "server.port", 0, 65535),
        max_body_bytes=r.integer(get("max_body_bytes"), "server.max_body_bytes", 1),
        max_header_bytes=r.integer(get("max_header_bytes"), "server.max_header_bytes", 1024),
        keepalive_timeout=r.seconds(get("keepalive_timeout"), "server.keepalive_timeout"),
        header_timeout=r.seconds(get("header_timeout"), "server.header_timeout"),
        body_timeout=r.seconds(get("body_timeout"), "server.body_timeout"),
        write_timeout=r.seconds(get("write_timeout"), "server.write_timeout"),
        trusted_proxies=parse_networks(r, d.get("trusted_proxies"), "server.trusted_proxies"),
        shutdown_grace=r.number(get("shutdown_grace"), "server.shutdown_grace", "a number of seconds",
                                "0 (no wait) or a positive number of seconds", zero_ok=True),
        max_connections=r.integer(get("max_connections"), "server.max_connections", 0),
        max_inflight=r.integer(get("max_inflight"), "server.max_inflight", 0),
        workers=_workers(r, get("workers")),
    )


def _workers(r: Reader, v: object) -> int | str:
    if isinstance(v, str) and v.strip().lower() == "auto":
        return "auto"
    return r.integer(v, "server.workers", 1, 1024)


def _upstream(r: Reader, raw: object) -> dict:
    d = {} if raw is None else r.mapping(raw, "upstream", (*TIMEOUT_SPELLINGS, *UPSTREAM_LIMITS))
    out: dict = read_timeouts(r, d, "upstream", TIMEOUT_DEFAULTS)
    for k, dv in UPSTREAM_LIMITS.items():
        out[k] = dv if d.get(k) is None else r.integer(d[k], f"upstream.{k}", 1024)
    return out


def _url(r: Reader, value: object, path: str) -> tuple[str, str, str, int, str]:
    url = r.string(value, path).strip()
    if not url or BAD_NAME_CHAR.search(url):
        r.fail(path, "must be an http(s) URL without spaces")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.netloc:
        r.fail(path, f"must be an http:// or https:// URL, got {url!r}")
    if "@" in parts.netloc:
        r.fail(path, "credentials in the URL are not supported; use api_key or headers")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        r.fail(path, "must not contain a query string or fragment")
    try:
        port = parts.port
    except ValueError:
        r.fail(path, "has an invalid port")
    host = parts.hostname
    if not host:
        r.fail(path, "has no host")
    base_path = parts.path.rstrip("/")
    return f"{scheme}://{parts.netloc}{base_path}", scheme, host, port or _DEFAULT_PORTS[scheme], base_path


def _headers(r: Reader, raw: object, path: str) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        r.fail(path, f"must be a mapping of header name to value, got {kind(raw)}")
    out: dict[str, str] = {}
    for name, value in raw.items():
        hpath = join(path, name)
        if not isinstance(name, str) or not _TOKEN.match(name):
            r.fail(hpath, "is not a valid HTTP header name")
        lowered = name.lower()
        if lowered in _FORBIDDEN_HEADERS:
            r.fail(hpath, f"'{name}' is a framing header Plexus sets itself; remove it")
        if lowered in out:
            r.fail(hpath, f"header '{name}' is given twice (header names are case-insensitive)")
        text = r.string(value, hpath)
        if not _HEADER_VALUE.match(text):
            r.fail(hpath, "value must be printable ASCII on one line")
        out[lowered] = text.strip(" \t")
    return tuple(out.items())


def _tls_and_proxy(r: Reader, d: dict, path: str, scheme: str, host: str, port: int) -> dict:
    """ca_file (must be a readable file now), tls_verify, and the effective proxy."""
    ca_file = ""
    if d.get("ca_file") is not None:
        ca_file = r.string(d["ca_file"], f"{path}.ca_file").strip()
        if ca_file:
            ca_file = os.path.abspath(os.path.expanduser(ca_file))
            if not os.path.isfile(ca_file) or not os.access(ca_file, os.R_OK):
                r.fail(f"{path}.ca_file", f"no readable file at {ca_file!r}")
    tls_verify = True if d.get("tls_verify") is None else r.boolean(d["tls_verify"], f"{path}.tls_verify")
    raw = d.get("proxy", ...)
    try:
        if raw is ...:
            proxy = proxy_for(scheme, host, port, r.env)
        elif raw is None or raw is False or (isinstance(raw, str) and raw.strip().lower() in ("", "none")):
            proxy = None
        else:
            proxy = parse_proxy(r.string(raw, f"{path}.proxy"), f"{path}.proxy")
    except ProxyError as e:
        r.fail(f"{path}.proxy", str(e))
    return {"ca_file": ca_file, "tls_verify": tls_verify, "proxy": proxy}


def _provider(r: Reader, name: str, raw: object, upstream: dict) -> Provider:
    path = f"providers.{name}"
    d = r.mapping(raw, path, _PROVIDER_KEYS, _PROVIDER_REQUIRED)
    type_raw = r.string(d["type"], f"{path}.type")
    ptype = _TYPES.get(type_raw.strip().lower())
    if ptype is None:
        r.fail(f"{path}.type", f"unknown provider type '{type_raw}' (expected one of {_TYPE_NAMES})")
    base_url, scheme, host, port, base_path = _url(r, d["api_base_url"], f"{path}.api_base_url")

    api_key, api_key_env = "", ()
    if d.get("api_key") is not None:
        if not isinstance(d["api_key"], str):
            r.fail(f"{path}.api_key", f"must be a string, got {kind(d['api_key'])} (quote it)")
        api_key, api_key_env = r.substitute(d["api_key"], f"{path}.api_key")
        api_key = api_key.strip()
        if not _HEADER_VALUE.match(api_key):
            r.fail(f"{path}.api_key", "must be printable ASCII on one line")

    models, any_model = _models(r, d["models"], f"{path}.models")
    timeouts = read_timeouts(r, d, path, upstream)
    for k in UPSTREAM_LIMITS:
        timeouts[k] = upstream[k] if d.get(k) is None else r.integer(d[k], f"{path}.{k}", 1024)
    default_max = ANTHROPIC_DEFAULT_MAX_TOKENS if ptype == "anthropic" else 0
    max_tokens = default_max if d.get("max_tokens") is None else r.integer(d["max_tokens"], f"{path}.max_tokens", 1)
    stream_usage = True if d.get("stream_usage") is None else r.boolean(d["stream_usage"], f"{path}.stream_usage")
    reasoning = True if d.get("reasoning") is None else r.boolean(d["reasoning"], f"{path}.reasoning")
    responses = False if d.get("responses") is None else r.boolean(d["responses"], f"{path}.responses")
    max_inflight = 0 if d.get("max_inflight") is None else r.integer(d["max_inflight"], f"{path}.max_inflight", 0)
    if responses and ptype != "openai":
        r.fail(f"{path}.responses", "only an OpenAI-type provider can serve the Responses API")
    return Provider(
        name=name, type=ptype, base_url=base_url, scheme=scheme, host=host, port=port,
        base_path=base_path, api_key=api_key, api_key_env=api_key_env, models=models, any_model=any_model,
        headers=_headers(r, d.get("headers"), f"{path}.headers"), max_tokens=max_tokens,
        stream_usage=stream_usage, reasoning=reasoning, responses=responses, **timeouts,
        **_tls_and_proxy(r, d, path, scheme, host, port),
        pricing=parse_pricing(r, d.get("pricing"), f"{path}.pricing", models, any_model),
        max_inflight=max_inflight,
    )


def _models(r: Reader, raw: object, path: str) -> tuple[tuple[str, ...], bool]:
    """A provider's ``models``: a list of names, or ``"*"`` for any model (returns (), True)."""
    if isinstance(raw, str) and r.string(raw, path).strip() == "*":
        return (), True
    if not isinstance(raw, list):
        r.fail(path, f'must be a list of model names or "*" (any model), got {kind(raw)}')
    if not raw:
        r.fail(path, 'must list at least one model (or be "*" for any model)')
    models: dict[str, None] = {}
    for i, m in enumerate(raw):
        mpath = f"{path}[{i}]"
        model = r.name(r.string(m, mpath), mpath, "model name")
        if model == "*":
            r.fail(mpath, 'write models: "*" (not inside a list) to accept any model')
        if model in models:
            r.fail(mpath, f"model '{model}' is listed twice")
        models[model] = None
    return tuple(models), False


# --------------------------------------------------------------------------- entry points

def parse_config(data: object, path: str = "<config>", env: Mapping[str, str] | None = None) -> Config:
    """Validate an already-parsed YAML object and build the Config; the first problem raises."""
    errors: list[ConfigError] = []
    config = _build(data, path, env, errors)
    if errors:
        raise errors[0]
    return config


def validate_text(text: str, path: str, env: Mapping[str, str] | None = None) -> tuple[Config | None, list[dict]]:
    """(config, []) when ``text`` is a valid config, else (None, [{"path", "message"}, ...]) with
    every problem found; a YAML syntax error is one problem at path "" naming its line."""
    try:
        data = load_yaml(text.removeprefix("\ufeff"), path)
    except ConfigError as e:
        return None, [e.detail()]
    errors: list[ConfigError] = []
    config = _build(data, path, env, errors)
    if errors:
        return None, [e.detail() for e in errors]
    return config, []


def _build(data: object, path: str, env: Mapping[str, str] | None, errors: list[ConfigError]) -> Config | None:
    """Read every part, collecting problems into ``errors``; the Config when there are none."""
    r = Reader(path, os.environ if env is None else env, errors)
    with r.entry():
        if data is None:
            r.fail("", "config is empty; it needs 'providers' and 'models'")
        return _sections(r, data)
    return None


def _sections(r: Reader, data: object) -> Config | None:
    top = r.mapping(data, "", _TOP_KEYS, ("providers", "models"), what="a mapping with 'providers' and 'models'")
    server = usage = metrics = debug = None  # each set unless its section is bad (then r.errors is too)
    with r.entry():
        server = _server(r, top.get("server"))
    upstream = {**TIMEOUT_DEFAULTS, **UPSTREAM_LIMITS}  # what providers inherit if the section is bad
    with r.entry():
        upstream = _upstream(r, top.get("upstream"))
    routing = RoutingSettings()
    with r.entry():
        routing = parse_routing(r, top.get("routing"))

    providers: dict[str, Provider] = {}
    failed: set[str] = set()
    providers_raw = top["providers"]
    section_ok = False
    with r.entry():
        if not isinstance(providers_raw, dict) or not providers_raw:
            r.fail("providers", "must be a non-empty mapping of provider name to settings")
        section_ok = True
        for name, raw in providers_raw.items():
            failed.add(name)
            with r.entry():
                name = r.name(name, f"providers.{name}", "provider name")
                provider = _provider(r, name, raw, upstream)
                if routing.direct_addressing and "/" in name:
                    r.fail(f"providers.{name}", f"provider name '{name}' contains '/', which "
                                                "routing.direct_addressing (<provider>/<model>) cannot address; rename it")
                providers[name] = provider
                failed.discard(name)

    aliases: dict[str, Alias] = {}
    models_raw = top["models"]
    if section_ok:  # else every target would be "unknown provider": the providers error says it all
        with r.entry():
            aliases = parse_aliases(r, models_raw, providers, failed)
    declared = [n for n in models_raw if isinstance(n, str)] if isinstance(models_raw, dict) else []
    keys: tuple[InboundKey, ...] = ()
    with r.entry():
        keys = parse_keys(r, top.get("keys"), declared)
    admin_key = ""
    with r.entry():
        admin_key = parse_admin_key(r, top.get("admin_key"), keys)
    with r.entry():
        usage = parse_usage(r, top.get("usage"))
    with r.entry():
        metrics = parse_metrics(r, top.get("metrics"))
    with r.entry():
        debug = parse_debug(r, top.get("debug"))
    with r.entry():
        log_settings = parse_log(r, top.get("log"))
    ui = UiSettings()
    with r.entry():
        ui = parse_ui(r, top.get("ui"))
    stores = StoreSettings()
    with r.entry():
        stores = parse_stores(r, top)
    if r.errors:
        return None
    return Config(path=r.file, server=server, providers=providers, aliases=aliases, routing=routing, keys=keys,
                  admin_key=admin_key, usage=usage, metrics=metrics, debug=debug, log=log_settings, ui=ui,
                  stores=stores)


def load_config(path: str, env: Mapping[str, str] | None = None) -> Config:
    """Read, parse and validate the YAML file at ``path``; every problem is a ConfigError."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except IsADirectoryError:
        raise ConfigError(path, "", "is a directory, not a config file") from None
    except OSError as e:
        raise ConfigError(path, "", f"cannot read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(path, "", f"not valid UTF-8 (byte {e.start})") from None
    return parse_config(load_yaml(text, path), path, env)


def empty_key_providers(config: Config) -> list[Provider]:
    """Providers that will be called without auth (for the startup report)."""
    return [p for p in config.providers.values() if not p.api_key]
