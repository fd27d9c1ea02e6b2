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
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .config_error import ConfigError
from .config_yaml import load_yaml
from .proxies import Proxy, ProxyError, parse_proxy, proxy_for

__all__ = ["Alias", "Config", "ConfigError", "Provider", "ServerSettings", "Target",
           "empty_key_providers", "load_config", "parse_config"]


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
    models: tuple[str, ...]
    headers: tuple[tuple[str, str], ...] = field(repr=False)  # lowercased names; values may be secrets
    connect_timeout: float
    ttfb_timeout: float
    read_timeout: float
    max_tokens: int               # 0 = do not inject a default
    stream_usage: bool
    reasoning: bool = True        # False: never send reasoning/thinking fields (non-reasoning models)
    max_response_bytes: int = 64 * 1024 * 1024  # non-stream upstream body cap; over it -> 502
    ca_file: str = ""             # extra CA bundle (PEM) trusted for this provider, "" = none
    tls_verify: bool = True       # False: no certificate check (warned about at startup)
    proxy: Proxy | None = None    # the outbound proxy (explicit or from the environment), None = direct


@dataclass(frozen=True, slots=True)
class Target:
    provider: Provider
    model: str


@dataclass(frozen=True, slots=True)
class Alias:
    name: str
    targets: tuple[Target, ...]


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


@dataclass(frozen=True, slots=True)
class Config:
    path: str
    server: ServerSettings
    providers: dict[str, Provider]
    aliases: dict[str, Alias]


# --------------------------------------------------------------------------- defaults / tables

SERVER_DEFAULTS = {
    "host": "0.0.0.0", "port": 3000, "max_body_bytes": 32 * 1024 * 1024,
    "max_header_bytes": 32768, "keepalive_timeout": 75.0, "header_timeout": 30.0,
    "body_timeout": 60.0, "write_timeout": 60.0,
}
UPSTREAM_DEFAULTS = {"connect_timeout": 10.0, "ttfb_timeout": 300.0, "read_timeout": 300.0}
UPSTREAM_LIMITS = {"max_response_bytes": 64 * 1024 * 1024}
ANTHROPIC_DEFAULT_MAX_TOKENS = 4096

_TOP_KEYS = ("server", "upstream", "providers", "models")
_PROVIDER_KEYS = ("type", "api_base_url", "api_key", "models", "headers", "connect_timeout",
                  "ttfb_timeout", "read_timeout", "max_response_bytes", "max_tokens", "stream_usage",
                  "reasoning", "ca_file", "tls_verify", "proxy")
_PROVIDER_REQUIRED = ("type", "api_base_url", "models")
_ALIAS_KEYS = ("targets",)
_TARGET_KEYS = ("provider", "model")
_TYPES = {"openai": "openai", "anthropic": "anthropic", "gemini": "gemini"}
_TYPE_NAMES = "OpenAI, Anthropic, Gemini"
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Framing / hop-by-hop headers are Plexus's to set; a configured value would corrupt the message.
_FORBIDDEN_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive",
                                "te", "trailer", "upgrade"})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*\Z")
_BAD_NAME_CHAR = re.compile(r"[\s\x00-\x1f\x7f]")
_ENV_REF = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")


# --------------------------------------------------------------------------- value readers

def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


class _Reader:
    """Typed accessors that raise ConfigError with the key path; substitutes ${VAR}."""

    __slots__ = ("file", "env")

    def __init__(self, file: str, env: Mapping[str, str]) -> None:
        self.file = file
        self.env = env

    def fail(self, path: str, message: str):
        raise ConfigError(self.file, path, message)

    def mapping(self, value: object, path: str, allowed: tuple[str, ...],
                required: tuple[str, ...] = (), what: str = "a mapping") -> dict:
        if not isinstance(value, dict):
            self.fail(path, f"must be {what}, got {_kind(value)}")
        for key in value:
            if key not in allowed:
                hint = difflib.get_close_matches(str(key), allowed, n=1)
                suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
                self.fail(_join(path, key), f"unknown key '{key}' (allowed: {', '.join(allowed)}){suggestion}")
        for key in required:
            if key not in value:
                self.fail(_join(path, key), "missing required key")
        return value

    def substitute(self, text: str, path: str) -> tuple[str, tuple[str, ...]]:
        if "$" not in text:
            return text, ()
        used: list[str] = []

        def repl(m: re.Match) -> str:
            whole = m.group(0)
            if whole == "$${":
                return "${"
            name = m.group(1)
            if name is None:
                self.fail(path, "malformed '${' reference: use ${VAR} or ${VAR:-default} "
                                "(write $${ for a literal ${)")
            used.append(name)
            value = self.env.get(name)
            if m.group(2) is not None:
                return value if value else (m.group(2) or "")
            if value is None:
                self.fail(path, f"environment variable {name} is not set "
                                f"(set it, or write ${{{name}:-default}})")
            return value

        return _ENV_REF.sub(repl, text), tuple(dict.fromkeys(used))

    def string(self, value: object, path: str) -> str:
        if not isinstance(value, str):
            self.fail(path, f"must be a string, got {_kind(value)} (quote it)")
        return self.substitute(value, path)[0]

    def name(self, value: object, path: str, what: str) -> str:
        """A name used in URLs/headers: non-empty, no whitespace or control characters."""
        if not isinstance(value, str):
            self.fail(path, f"{what} must be a string, got {_kind(value)} (quote it)")
        if not value or _BAD_NAME_CHAR.search(value):
            self.fail(path, f"{what} {value!r} must be non-empty without spaces or control characters")
        return value

    def _from_env(self, value: object, path: str, what: str) -> tuple[object, bool]:
        """A quoted string is only accepted for a number/boolean when it is a ${...} reference."""
        if isinstance(value, str):
            if "${" not in value:
                self.fail(path, f"must be {what}, got a string")
            return self.substitute(value, path)[0].strip(), True
        return value, False

    def integer(self, value: object, path: str, lo: int, hi: int | None = None) -> int:
        value, from_env = self._from_env(value, path, "an integer")
        if from_env:
            try:
                value = int(value)
            except ValueError:
                self.fail(path, f"must be an integer, got {value!r} from the environment")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"must be an integer, got {_kind(value)}")
        if value < lo or (hi is not None and value > hi):
            self.fail(path, f"must be between {lo} and {hi}, got {value}" if hi is not None
                      else f"must be at least {lo}, got {value}")
        return value

    def seconds(self, value: object, path: str) -> float:
        value, from_env = self._from_env(value, path, "a number of seconds")
        if from_env:
            try:
                value = float(value)
            except ValueError:
                self.fail(path, f"must be a number of seconds, got {value!r} from the environment")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(path, f"must be a number of seconds, got {_kind(value)}")
        if not math.isfinite(value) or value <= 0:
            self.fail(path, f"must be a positive number of seconds, got {value}")
        return float(value)

    def boolean(self, value: object, path: str) -> bool:
        value, from_env = self._from_env(value, path, "true or false")
        if from_env:
            lowered = value.lower()
            if lowered in ("true", "yes", "on", "1"):
                return True
            if lowered in ("false", "no", "off", "0"):
                return False
        if not isinstance(value, bool):
            self.fail(path, f"must be true or false, got {_kind(value)}")
        return value


def _kind(value: object) -> str:
    if value is None:
        return "nothing (null)"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


# --------------------------------------------------------------------------- sections

def _server(r: _Reader, raw: object) -> ServerSettings:
    d = {} if raw is None else r.mapping(raw, "server", tuple(SERVER_DEFAULTS))
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
    )


def _upstream(r: _Reader, raw: object) -> dict:
    d = {} if raw is None else r.mapping(raw, "upstream", (*UPSTREAM_DEFAULTS, *UPSTREAM_LIMITS))
    out: dict = {k: (dv if d.get(k) is None else r.seconds(d[k], f"upstream.{k}"))
                 for k, dv in UPSTREAM_DEFAULTS.items()}
    for k, dv in UPSTREAM_LIMITS.items():
        out[k] = dv if d.get(k) is None else r.integer(d[k], f"upstream.{k}", 1024)
    return out


def _url(r: _Reader, value: object, path: str) -> tuple[str, str, str, int, str]:
    url = r.string(value, path).strip()
    if not url or _BAD_NAME_CHAR.search(url):
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


def _headers(r: _Reader, raw: object, path: str) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        r.fail(path, f"must be a mapping of header name to value, got {_kind(raw)}")
    out: dict[str, str] = {}
    for name, value in raw.items():
        hpath = _join(path, name)
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


def _tls_and_proxy(r: _Reader, d: dict, path: str, scheme: str, host: str, port: int) -> dict:
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


def _provider(r: _Reader, name: str, raw: object, upstream: dict) -> Provider:
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
            r.fail(f"{path}.api_key", f"must be a string, got {_kind(d['api_key'])} (quote it)")
        api_key, api_key_env = r.substitute(d["api_key"], f"{path}.api_key")
        api_key = api_key.strip()
        if not _HEADER_VALUE.match(api_key):
            r.fail(f"{path}.api_key", "must be printable ASCII on one line")

    models_raw = d["models"]
    if not isinstance(models_raw, list):
        r.fail(f"{path}.models", f"must be a list of model names, got {_kind(models_raw)}")
    if not models_raw:
        r.fail(f"{path}.models", "must list at least one model")
    models: list[str] = []
    for i, m in enumerate(models_raw):
        mpath = f"{path}.models[{i}]"
        model = r.name(r.string(m, mpath), mpath, "model name")
        if model in models:
            r.fail(mpath, f"model '{model}' is listed twice")
        models.append(model)

    timeouts = {k: (upstream[k] if d.get(k) is None else r.seconds(d[k], f"{path}.{k}"))
                for k in UPSTREAM_DEFAULTS}
    for k in UPSTREAM_LIMITS:
        timeouts[k] = upstream[k] if d.get(k) is None else r.integer(d[k], f"{path}.{k}", 1024)
    default_max = ANTHROPIC_DEFAULT_MAX_TOKENS if ptype == "anthropic" else 0
    max_tokens = default_max if d.get("max_tokens") is None else r.integer(d["max_tokens"], f"{path}.max_tokens", 1)
    stream_usage = True if d.get("stream_usage") is None else r.boolean(d["stream_usage"], f"{path}.stream_usage")
    reasoning = True if d.get("reasoning") is None else r.boolean(d["reasoning"], f"{path}.reasoning")
    return Provider(
        name=name, type=ptype, base_url=base_url, scheme=scheme, host=host, port=port,
        base_path=base_path, api_key=api_key, api_key_env=api_key_env, models=tuple(models),
        headers=_headers(r, d.get("headers"), f"{path}.headers"), max_tokens=max_tokens,
        stream_usage=stream_usage, reasoning=reasoning, **timeouts,
        **_tls_and_proxy(r, d, path, scheme, host, port),
    )


def _alias(r: _Reader, name: str, raw: object, providers: dict[str, Provider]) -> Alias:
    path = f"models.{name}"
    d = r.mapping(raw, path, _ALIAS_KEYS, _ALIAS_KEYS, what="a mapping with 'targets'")
    targets_raw = d["targets"]
    if not isinstance(targets_raw, list):
        r.fail(f"{path}.targets", f"must be a list of {{provider, model}}, got {_kind(targets_raw)}")
    if not targets_raw:
        r.fail(f"{path}.targets", "alias has no targets; list at least one {provider, model}")
    targets = []
    for i, t in enumerate(targets_raw):
        tpath = f"{path}.targets[{i}]"
        t = r.mapping(t, tpath, _TARGET_KEYS, _TARGET_KEYS, what="a mapping with 'provider' and 'model'")
        pname = r.string(t["provider"], f"{tpath}.provider")
        provider = providers.get(pname)
        if provider is None:
            known = ", ".join(providers)
            r.fail(f"{tpath}.provider", f"unknown provider '{pname}' (defined: {known})")
        model = r.string(t["model"], f"{tpath}.model")
        if model not in provider.models:
            r.fail(f"{tpath}.model", f"model '{model}' is not offered by provider '{pname}'; "
                                     f"add it to providers.{pname}.models")
        targets.append(Target(provider=provider, model=model))
    return Alias(name=name, targets=tuple(targets))


# --------------------------------------------------------------------------- entry points

def parse_config(data: object, path: str = "<config>", env: Mapping[str, str] | None = None) -> Config:
    """Validate an already-parsed YAML object and build the Config."""
    r = _Reader(path, os.environ if env is None else env)
    if data is None:
        r.fail("", "config is empty; it needs 'providers' and 'models'")
    top = r.mapping(data, "", _TOP_KEYS, ("providers", "models"),
                    what="a mapping with 'providers' and 'models'")
    server = _server(r, top.get("server"))
    upstream = _upstream(r, top.get("upstream"))

    providers_raw = top["providers"]
    if not isinstance(providers_raw, dict) or not providers_raw:
        r.fail("providers", "must be a non-empty mapping of provider name to settings")
    providers: dict[str, Provider] = {}
    for name, raw in providers_raw.items():
        name = r.name(name, f"providers.{name}", "provider name")
        providers[name] = _provider(r, name, raw, upstream)

    models_raw = top["models"]
    if not isinstance(models_raw, dict) or not models_raw:
        r.fail("models", "must be a non-empty mapping of alias name to {targets: [...]}")
    aliases: dict[str, Alias] = {}
    folded: dict[str, str] = {}
    for name, raw in models_raw.items():
        name = r.name(name, f"models.{name}", "alias name")
        other = folded.setdefault(name.casefold(), name)
        if other != name:
            r.fail(f"models.{name}", f"alias '{name}' collides with alias '{other}' "
                                     "(names differ only in case); rename one")
        aliases[name] = _alias(r, name, raw, providers)
    return Config(path=path, server=server, providers=providers, aliases=aliases)


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
