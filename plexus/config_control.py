"""Config, control part: who may call, what is recorded, what a call costs, and a safe view.

Sections (all optional; config/plexus.yaml documents each key):

    keys:         name -> {secret, models, max_inflight, rpm, tpm}: the inbound API keys. No keys =
                  anyone who reaches the port may call (the CLI warns when that port is not loopback).
    admin_key:    the management API's key; absent or empty -> $PLEXUS_ADMIN_KEY (read from
                  the same env mapping as every ``${VAR}``); "" = management API off.
    usage:        {enabled, path, retention_days, buffer_records, spool_path}: the usage
                  database.  A relative ``path`` (or ``spool_path``) is resolved against the
                  config file's directory ("<...>" in-memory configs: the current directory), so
                  the database does not move with the cwd.  ``buffer_records`` and ``spool_path``
                  serve a PostgreSQL ``usage_store`` (config_stores.py) while it is unreachable.
    metrics:      {allow: [IP or CIDR]}: peers that may scrape /metrics without the admin key.
    debug:        {max_entries}: how many debug captures are kept.
    ui:           {enabled}: serve the dashboard at /ui (default true; only with an admin key).
    server.trusted_proxies, a provider's pricing: read here, attached to ServerSettings and
    Provider by config.py.

Secrets (a key's ``secret``, ``admin_key``) are ``repr=False`` fields and never part of a
message: errors name the key path and the key's name only.  Two keys with one secret would
make the key name (and its ``models`` limit) depend on dict order, so that is an error; so is
an admin key equal to an inbound key (every client holding it would be an administrator).

Prices are given in $ per 1M tokens and stored per token (``Price``), so ``cost`` multiplies
only.  Token semantics are plexus/control/usage.py's: ``input_tokens`` counts every prompt
token, cached reads and cache writes included, so the fresh share is input − cached − written.

``mask_config_text`` is the config text as written with every secret literal replaced by
"****" (comments and layout kept): see its docstring for the rules.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Collection
from dataclasses import dataclass, field

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from .config_error import ConfigError
from .config_reader import Reader, join, kind

__all__ = ["DebugSettings", "InboundKey", "LogSettings", "MetricsSettings", "Price", "UsageSettings", "USAGE_DEFAULTS",
           "LOG_LEVELS", "ACCESS_LOG_FORMATS", "parse_log", "UiSettings", "parse_ui",
           "ADMIN_KEY_ENV", "config_dir", "cost", "mask_config_text", "parse_admin_key", "parse_debug",
           "parse_keys", "parse_metrics", "parse_networks", "parse_pricing", "parse_usage"]

ADMIN_KEY_ENV = "PLEXUS_ADMIN_KEY"
USAGE_DEFAULTS = {"enabled": True, "path": "plexus-usage.db", "retention_days": 30.0,
                  "buffer_records": 50_000, "spool_path": "plexus-usage.spool"}
DEBUG_MAX_ENTRIES = 100
DEBUG_LIMIT = 10_000           # each capture may hold whole request/response bodies
PER_MILLION = 1_000_000

_KEY_KEYS = ("secret", "models", "max_inflight", "rpm", "tpm")
_USAGE_KEYS = tuple(USAGE_DEFAULTS)
_METRICS_KEYS = ("allow",)
_DEBUG_KEYS = ("max_entries",)
_PRICE_KEYS = ("input", "output", "cached_input", "cache_write")
_SECRET = re.compile(r"[\x21-\x7e]+\Z")   # printable ASCII, no spaces: it travels in a header


@dataclass(frozen=True, slots=True)
class InboundKey:
    name: str
    secret: str = field(repr=False)
    models: frozenset[str] | None = None   # the aliases this key may call; None = all
    max_inflight: int = 0                  # its requests in flight; beyond: 429 (0 = no limit)
    rpm: int = 0                           # its requests per minute; beyond: 429 (control/ratelimit.py)
    tpm: int = 0                           # its tokens (input + output) per minute; beyond: 429


@dataclass(frozen=True, slots=True)
class UsageSettings:
    enabled: bool = True
    path: str = ""                # absolute after parsing; "" only in a Config built in code
    retention_days: float = 30.0  # 0 = keep forever
    buffer_records: int = 50_000  # PostgreSQL unreachable: records held in memory, then spooled
    spool_path: str = ""          # ... to this file (absolute after parsing; a suffix per process)


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()  # scrape without the admin key


@dataclass(frozen=True, slots=True)
class DebugSettings:
    max_entries: int = DEBUG_MAX_ENTRIES


LOG_LEVELS = ("debug", "info", "warning", "error")
ACCESS_LOG_FORMATS = ("off", "text", "json")


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str | None = None     # the plexus loggers' level (None: info; the --log-level flag wins)
    access: str = "off"          # one line per request on stdout: off | text | json (--access-log wins)


@dataclass(frozen=True, slots=True)
class UiSettings:
    enabled: bool = True         # serve the dashboard at /ui (only when an admin key is set too)


@dataclass(frozen=True, slots=True)
class Price:
    """$ per token (the config's $ per 1M tokens, divided once at load)."""
    input: float
    output: float
    cached_input: float
    cache_write: float


def cost(price: Price, input_tokens: int | None, output_tokens: int | None,
         cached_tokens: int | None, cache_write_tokens: int | None) -> float:
    """The $ cost of one call: fresh input, cache reads, cache writes and output, each at its
    price (None counts 0; input_tokens includes the cached and written tokens; never negative)."""
    i = input_tokens if input_tokens and input_tokens > 0 else 0
    c = cached_tokens if cached_tokens and cached_tokens > 0 else 0
    w = cache_write_tokens if cache_write_tokens and cache_write_tokens > 0 else 0
    o = output_tokens if output_tokens and output_tokens > 0 else 0
    fresh = i - c - w
    if fresh < 0:
        fresh = 0
    return fresh * price.input + c * price.cached_input + w * price.cache_write + o * price.output


# --------------------------------------------------------------------------- readers

def _secret(r: Reader, raw: object, path: str) -> str:
    """A secret: a string (usually ${VAR}), substituted and stripped; "" when empty."""
    if not isinstance(raw, str):
        r.fail(path, f"must be a string, got {kind(raw)} (quote it)")
    value = r.substitute(raw, path)[0].strip()
    if value and not _SECRET.match(value):
        r.fail(path, "must be printable ASCII without spaces (it is sent in a header)")
    return value


def parse_keys(r: Reader, raw: object, aliases: Collection[str]) -> tuple[InboundKey, ...]:
    """``keys:``; ``aliases``: the alias names a key's ``models`` may name.  Each key is one
    entry for ``r.entry()`` (a collecting Reader reports every bad key)."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        r.fail("keys", f"must be a mapping of key name to {{secret, models}}, got {kind(raw)}")
    keys: list[InboundKey] = []
    owner: dict[str, str] = {}    # secret -> key name
    for name, body in raw.items():
        with r.entry():
            key = _key(r, name, body, aliases)
            other = owner.setdefault(key.secret, key.name)
            if other != key.name:
                r.fail(f"keys.{key.name}.secret", f"same secret as key '{other}'; every key needs its own secret")
            keys.append(key)
    return tuple(keys)


def _key(r: Reader, name: object, body: object, aliases: Collection[str]) -> InboundKey:
    path = f"keys.{name}"
    name = r.name(name, path, "key name")
    d = r.mapping(body, path, _KEY_KEYS, ("secret",), what="a mapping with 'secret'")
    secret = _secret(r, d["secret"], f"{path}.secret")
    if not secret:
        hint = " (is its environment variable set?)" if "${" in d["secret"] else ""
        r.fail(f"{path}.secret", f"key '{name}' has an empty secret{hint}")
    models = None
    if d.get("models") is not None:
        raw = d["models"]
        if not isinstance(raw, list) or not raw:
            r.fail(f"{path}.models", f"must be a non-empty list of aliases (omit it to allow every alias), "
                                     f"got {kind(raw)}")
        seen: set[str] = set()
        for i, alias in enumerate(raw):
            apath = f"{path}.models[{i}]"
            alias = r.string(alias, apath)
            if alias not in aliases:
                r.fail(apath, f"unknown alias '{alias}' (defined under models: {', '.join(aliases)})")
            if alias in seen:
                r.fail(apath, f"alias '{alias}' is listed twice")
            seen.add(alias)
        models = frozenset(seen)
    limit = 0 if d.get("max_inflight") is None else r.integer(d["max_inflight"], f"{path}.max_inflight", 0)
    rpm = 0 if d.get("rpm") is None else r.integer(d["rpm"], f"{path}.rpm", 0)
    tpm = 0 if d.get("tpm") is None else r.integer(d["tpm"], f"{path}.tpm", 0)
    return InboundKey(name=name, secret=secret, models=models, max_inflight=limit, rpm=rpm, tpm=tpm)


def parse_admin_key(r: Reader, raw: object, keys: tuple[InboundKey, ...]) -> str:
    """``admin_key:``, else $PLEXUS_ADMIN_KEY; "" = management API off."""
    value = "" if raw is None else _secret(r, raw, "admin_key")
    path = "admin_key"
    if not value:
        value, path = (r.env.get(ADMIN_KEY_ENV) or "").strip(), ADMIN_KEY_ENV
        if value and not _SECRET.match(value):
            r.fail("admin_key", f"${ADMIN_KEY_ENV} must be printable ASCII without spaces")
    for key in keys:
        if value and value == key.secret:
            r.fail("admin_key", f"the admin key ({path}) equals the secret of key '{key.name}'; "
                                "give the management API its own key")
    return value


def config_dir(path: str) -> str:
    """The directory relative paths in the config are resolved against."""
    if not path or (path.startswith("<") and path.endswith(">")):
        return os.getcwd()
    return os.path.dirname(os.path.abspath(path))


def parse_usage(r: Reader, raw: object) -> UsageSettings:
    d = {} if raw is None else r.mapping(raw, "usage", _USAGE_KEYS)
    get = lambda k: USAGE_DEFAULTS[k] if d.get(k) is None else d[k]  # noqa: E731
    enabled = r.boolean(get("enabled"), "usage.enabled")
    path = r.string(get("path"), "usage.path").strip()
    if not path:
        r.fail("usage.path", "must not be empty (write enabled: false to record no usage)")
    path = os.path.abspath(os.path.join(config_dir(r.file), os.path.expanduser(path)))
    if os.path.isdir(path):
        r.fail("usage.path", f"{path!r} is a directory; name the database file")
    retention = r.number(get("retention_days"), "usage.retention_days", "a number of days",
                         "0 (keep forever) or a positive number of days", zero_ok=True)
    buffer = r.integer(get("buffer_records"), "usage.buffer_records", 0)
    spool = r.string(get("spool_path"), "usage.spool_path").strip()
    if not spool:
        r.fail("usage.spool_path", "must not be empty")
    spool = os.path.abspath(os.path.join(config_dir(r.file), os.path.expanduser(spool)))
    return UsageSettings(enabled=enabled, path=path, retention_days=retention, buffer_records=buffer,
                         spool_path=spool)


def parse_networks(r: Reader, raw: object, path: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """A list of IP addresses / CIDR blocks (host bits allowed: 10.1.2.3/8 is 10.0.0.0/8)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        r.fail(path, f"must be a list of IP addresses or CIDR blocks, e.g. [127.0.0.1, 10.0.0.0/8], got {kind(raw)}")
    nets: dict = {}
    for i, value in enumerate(raw):
        npath = f"{path}[{i}]"
        text = r.string(value, npath).strip()
        try:
            nets[ipaddress.ip_network(text, strict=False)] = None
        except ValueError:
            r.fail(npath, f"{text!r} is not an IP address or CIDR block (e.g. 10.0.0.0/8, \"::1\")")
    return tuple(nets)


def parse_metrics(r: Reader, raw: object) -> MetricsSettings:
    if raw is None:
        return MetricsSettings()
    d = r.mapping(raw, "metrics", _METRICS_KEYS)
    return MetricsSettings(allow=parse_networks(r, d.get("allow"), "metrics.allow"))


def parse_debug(r: Reader, raw: object) -> DebugSettings:
    if raw is None:
        return DebugSettings()
    d = r.mapping(raw, "debug", _DEBUG_KEYS)
    n = DEBUG_MAX_ENTRIES if d.get("max_entries") is None else r.integer(d["max_entries"], "debug.max_entries",
                                                                         0, DEBUG_LIMIT)
    return DebugSettings(max_entries=n)


def parse_log(r: Reader, raw: object) -> LogSettings:
    if raw is None:
        return LogSettings()
    d = r.mapping(raw, "log", ("level", "access"))
    out = {}
    for key, allowed in (("level", LOG_LEVELS), ("access", ACCESS_LOG_FORMATS)):
        v = d.get(key)
        if v is None:
            continue
        if v is False and key == "access":   # YAML reads a bare `off` as false
            v = "off"
        if not isinstance(v, str) or v.lower() not in allowed:
            r.fail(f"log.{key}", f"must be one of {', '.join(allowed)}, got {v!r}")
        out[key] = v.lower()
    return LogSettings(**out)


def parse_ui(r: Reader, raw: object) -> UiSettings:
    if raw is None:
        return UiSettings()
    d = r.mapping(raw, "ui", ("enabled",))
    if d.get("enabled") is None:
        return UiSettings()
    return UiSettings(enabled=r.boolean(d["enabled"], "ui.enabled"))


def parse_pricing(r: Reader, raw: object, path: str, models: Collection[str], any_model: bool) -> dict[str, Price]:
    """A provider's ``pricing:``: model -> {input, output, cached_input, cache_write} in $ per 1M tokens."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        r.fail(path, f"must be a mapping of model name to {{input, output}} ($ per 1M tokens), got {kind(raw)}")
    prices: dict[str, Price] = {}
    for model, body in raw.items():
        mpath = join(path, model)
        model = r.name(model, mpath, "model name")
        if not any_model and model not in models:
            r.fail(mpath, f"model '{model}' is not in this provider's models list; add it there or remove its price")
        d = r.mapping(body, mpath, _PRICE_KEYS, ("input", "output"),
                      what="a mapping with 'input' and 'output' ($ per 1M tokens)")
        per = {k: r.number(d[k], f"{mpath}.{k}", "a price in $ per 1M tokens", "0 or a positive price",
                           zero_ok=True) / PER_MILLION
               for k in _PRICE_KEYS if d.get(k) is not None}
        prices[model] = Price(input=per["input"], output=per["output"],
                              cached_input=per.get("cached_input", per["input"]),
                              cache_write=per.get("cache_write", per["input"]))
    return prices


# --------------------------------------------------------------------------- masking

MASK = "****"
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_USERINFO = re.compile(r"\A(\s*(?:[A-Za-z][A-Za-z0-9+.\-]*://)?)([^@/]*)@")
_SECRET_NAMES = ("api_key", "secret", "admin_key")


def _masked(value: str, seps: str = "", shown_default=lambda default: MASK) -> str | None:
    """The shown form of a secret value, or None to keep it as written.

    "" stays (nothing to hide); a value made only of ${VAR} references (joined by ``seps``)
    stays, each non-empty ``:-default`` shown as ``shown_default(default)``; anything else is
    the mask."""
    if not value.strip():
        return None
    pos, out, changed = 0, [], False
    for m in _REF.finditer(value):
        if value[pos:m.start()].strip(seps + " \t"):
            return MASK
        default = m.group(2)
        shown = shown_default(default) if default else default
        if shown != default:
            out.append(f"{value[pos:m.start()]}${{{m.group(1)}:-{shown}}}")
            changed = True
        else:
            out.append(value[pos:m.end()])
        pos = m.end()
    if pos == 0 or value[pos:].strip(seps + " \t"):
        return MASK
    return "".join(out) + value[pos:] if changed else None


def _proxy_url(url: str) -> str:
    """A proxy URL with its ``user:pass`` masked (kept when it is made of references only)."""
    m = _USERINFO.match(url)
    if m is None:
        return url
    shown = _masked(m.group(2), seps=":")
    return url if shown is None else m.group(1) + shown + url[m.end(2):]


def _masked_proxy(value: str) -> str | None:
    """A proxy: only the credentials of the URL, or of a reference's default URL, are secret."""
    if _REF.search(value):
        shown = _masked(value, shown_default=_proxy_url)
        if shown != MASK:
            return shown
    shown = _proxy_url(value)
    return None if shown == value else shown


def _secret_nodes(root) -> dict[int, tuple[ScalarNode, str]]:
    """id -> (node, "secret" | "proxy") for every scalar that holds a secret."""
    found: dict[int, tuple[ScalarNode, str]] = {}

    def every_scalar(node, how: str) -> None:
        stack, seen = [node], set()
        while stack:
            n = stack.pop()
            if id(n) in seen:
                continue
            seen.add(id(n))
            if isinstance(n, ScalarNode):
                found[id(n)] = (n, how)
            elif isinstance(n, MappingNode):
                stack.extend(v for _, v in n.value)
            elif isinstance(n, SequenceNode):
                stack.extend(n.value)

    def items(node):
        return node.value if isinstance(node, MappingNode) else ()

    def key(k) -> str | None:
        return k.value if isinstance(k, ScalarNode) else None

    # a secret's key anywhere (also misplaced ones, and anchors a secret refers to)
    stack, seen = [root], set()
    while stack:
        n = stack.pop()
        if n is None or id(n) in seen:
            continue
        seen.add(id(n))
        if isinstance(n, MappingNode):
            for k, v in n.value:
                if key(k) in _SECRET_NAMES and isinstance(v, ScalarNode):
                    found[id(v)] = (v, "secret")
                stack.append(v)
        elif isinstance(n, SequenceNode):
            stack.extend(n.value)
    # by position: every header value of a provider, its proxy, and the sections' secrets
    for k, v in items(root):
        name = key(k)
        if name == "providers":
            for _, provider in items(v):
                for pk, pv in items(provider):
                    if key(pk) == "headers":
                        for _, hv in items(pv):
                            every_scalar(hv, "secret")
                    elif key(pk) == "proxy" and isinstance(pv, ScalarNode):
                        found[id(pv)] = (pv, "proxy")
                    elif key(pk) == "api_key":
                        every_scalar(pv, "secret")
        elif name == "keys":
            for _, body in items(v):
                for bk, bv in items(body):
                    if key(bk) == "secret":
                        every_scalar(bv, "secret")
        elif name == "admin_key":
            every_scalar(v, "secret")
        elif name in ("usage_store", "state_store") and isinstance(v, ScalarNode):
            found[id(v)] = (v, "proxy")   # a URL: only its user:password is secret
    return found


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def mask_config_text(text: str) -> str:
    """The config text as written, with every secret literal replaced by "****".

    Secrets: the values of ``api_key``, ``secret`` and ``admin_key`` (by position, and under
    those key names anywhere), every value under a provider's ``headers:``, and the
    ``user:pass`` of a provider's ``proxy:`` URL and of the ``usage_store``/``state_store`` URLs.  A value made only of ``${VAR}`` references is
    shown as written (the reference is not the secret); a literal ``:-default`` in it becomes
    ``${VAR:-****}``.  Only the masked scalars change (each becomes a double-quoted string, so
    the result is YAML that parses to the same shape); comments and layout stay.

    Text that is not valid YAML cannot be masked reliably and raises ConfigError.
    """
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    body = text[len(bom):]
    try:
        root = yaml.compose(body, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError("<config>", "", f"invalid YAML{where}; cannot show it masked") from None
    if root is None:
        return text
    edits = []
    for node, how in _secret_nodes(root).values():
        value = node.value
        shown = _masked_proxy(value) if how == "proxy" else _masked(value)
        if shown is None:
            continue
        start, end = node.start_mark.index, node.end_mark.index
        span = body[start:end]
        trailing = span[len(span.rstrip()):]   # a block scalar's span ends with its line breaks
        edits.append((start, end, _quoted(shown) + trailing))
    out, pos = [], 0
    for start, end, new in sorted(edits):
        if start < pos:   # overlapping spans cannot happen for scalars; be safe
            continue
        out.append(body[pos:start])
        out.append(new)
        pos = end
    out.append(body[pos:])
    return bom + "".join(out)
