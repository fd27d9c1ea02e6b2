"""Which outbound proxy a provider's connections go through (pure: env mapping in, Proxy out).

Theory: the choice is made once, at config load, never per request. A provider's ``proxy:`` key
wins: a URL, or ``none`` for "always direct" (ignore the environment). Without the key the
environment decides, read the way curl and httpx read it:

* the scheme's variable: ``https_proxy`` for an https upstream, ``http_proxy`` for http, then
  ``all_proxy``; each looked up lowercase first, then UPPERCASE (curl ignores an uppercase
  ``HTTP_PROXY``, a CGI hazard; we read it like httpx/urllib do, since a gateway has no CGI);
* ``no_proxy``/``NO_PROXY``: comma- or space-separated entries; ``*`` matches every host; a
  name matches itself and its subdomains (``example.com`` and ``.example.com`` both match
  ``api.example.com``); ``host:port`` matches that port only; an IP address or CIDR block
  (``10.0.0.0/8``, ``::1``) matches addresses in it. Loopback is *not* exempt unless listed.

Proxy URLs are ``http://[user:pass@]host[:port]`` (port 80 by default); another scheme
(``socks5://``, ``https://``) is a clear config error naming where it came from. Credentials become a ready ``Proxy-Authorization: Basic``
value and are never part of ``repr()``, ``display`` or any message: ``display`` is ``host:port``.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

__all__ = ["Proxy", "ProxyError", "parse_proxy", "proxy_for"]


class ProxyError(ValueError):
    """A proxy URL that cannot be used; the message never contains credentials."""


@dataclass(frozen=True, slots=True)
class Proxy:
    host: str                      # lowercased; IPv6 without brackets
    port: int
    source: str                    # "providers.x.proxy" or the environment variable's name
    authorization: bytes | None = field(default=None, repr=False)  # Proxy-Authorization value

    @property
    def display(self) -> str:
        """host:port, safe for logs and error messages (no credentials)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_proxy(url: str, source: str) -> Proxy:
    """A Proxy from ``http://[user:pass@]host[:port]``; a bare ``host:port`` means http://."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ProxyError(f"{source}: not a valid proxy URL (expected http://host:port)") from None
    scheme = parts.scheme.lower()
    if scheme != "http":
        raise ProxyError(f"{source}: proxy scheme '{scheme}' is not supported (use an http:// proxy; "
                         "HTTPS upstreams are tunnelled through it with CONNECT)")
    if not parts.hostname:
        raise ProxyError(f"{source}: proxy URL has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ProxyError(f"{source}: a proxy URL is scheme://host:port only (no path or query)")
    auth = None
    if parts.username is not None or parts.password is not None:
        cred = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        auth = b"Basic " + base64.b64encode(cred.encode("utf-8"))
    return Proxy(host=parts.hostname.lower(), port=port or 80, source=source, authorization=auth)


def _env(env: Mapping[str, str], name: str) -> tuple[str, str] | None:
    for key in (name.lower(), name.upper()):
        value = env.get(key)
        if value and value.strip():
            return key, value.strip()
    return None


def _bypassed(no_proxy: str, host: str, port: int) -> bool:
    host = host.lower().strip("[]")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        addr = None
    for entry in no_proxy.replace(" ", ",").split(","):
        entry = entry.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        want_port = None
        if entry.startswith("["):  # [v6]:port
            inner, _, rest = entry[1:].partition("]")
            entry, want_port = inner, rest[1:] if rest.startswith(":") else None
        elif entry.count(":") == 1:  # name:port or v4:port
            entry, want_port = entry.split(":")
        if want_port is not None and want_port != str(port):
            continue
        if addr is not None:
            try:
                if addr in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        name = entry.lstrip(".").lstrip("*.")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def proxy_for(scheme: str, host: str, port: int, env: Mapping[str, str]) -> Proxy | None:
    """The proxy the environment assigns to an upstream at scheme://host:port, or None (direct)."""
    found = _env(env, f"{scheme}_proxy") or _env(env, "all_proxy")
    if found is None:
        return None
    no_proxy = _env(env, "no_proxy")
    if no_proxy is not None and _bypassed(no_proxy[1], host, port):
        return None
    return parse_proxy(found[1], found[0])
