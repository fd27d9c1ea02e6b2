"""Outbound HTTP proxies: a CONNECT tunnel for https upstreams, absolute-form for http ones.

Theory
------
* One proxy per transport (``provider.proxy``, resolved at config load), so everything here that
  depends only on the proxy is built once: ``Route`` holds the pool-key tag and the ready
  ``Proxy-Authorization`` line. Per request the transport only appends the tag to the pool key,
  and for an http upstream builds the absolute-form target (RFC 9112 section 3.2.2).
* ``open_connection`` opens a new upstream connection through the proxy. For http that is the TCP
  connection to the proxy, and the transport then sends requests in absolute-form with the
  credentials. For https it sends ``CONNECT host:port`` (RFC 9110 section 9.3.6), reads the proxy's
  answer head with ``h1.ResponseParser`` (bounded by ``h1.MAX_HEAD``), and on 2xx upgrades that
  same connection with ``loop.start_tls`` (asyncio and uvloop). The result is a ``_Conn`` that the
  transport uses and pools exactly like a direct one. The credentials go to the proxy only, never
  into the tunnel.
* One connect timeout (the caller's ``asyncio.timeout``) covers the proxy connect, the CONNECT and
  the TLS handshake.
* Every failure is an httpx exception whose message names the proxy by ``Proxy.display``
  (host:port, never the credentials): ``ConnectError`` when the proxy cannot be reached or TLS
  through the tunnel fails, ``ProxyError`` when the proxy refuses or garbles the CONNECT.
  ``call.mapped`` turns both into a 502.
"""

from __future__ import annotations

import httpx

from .h1 import ProtocolError, ResponseParser


class Route:
    """What a transport needs to send through `proxy`, computed once."""

    __slots__ = ("proxy", "tag", "auth_line")

    def __init__(self, proxy) -> None:
        self.proxy = proxy
        self.tag = (proxy.display,)  # appended to pool keys: direct and proxied connections never mix
        auth = proxy.authorization
        self.auth_line = b"Proxy-Authorization: " + auth + b"\r\n" if auth else b""


def authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def connect_head(target: str, route: Route) -> bytes:
    t = target.encode("ascii")
    return b"CONNECT " + t + b" HTTP/1.1\r\nHost: " + t + b"\r\n" + route.auth_line + b"\r\n"


async def open_connection(loop, conn, route: Route, host: str, port: int, tls, request) -> None:
    """Connect `conn` (a transport._Conn protocol) to host:port through the proxy (see Theory)."""
    proxy = route.proxy
    where = f"proxy {proxy.display}"
    try:
        await loop.create_connection(lambda: conn, proxy.host, proxy.port)
    except OSError as e:
        raise httpx.ConnectError(f"cannot connect to {where}: {e.strerror or e}", request=request) from e
    if tls is None:
        return
    target = authority(host, port)
    conn.transport.write(connect_head(target, route))
    parser = ResponseParser()
    try:
        while True:
            data = conn.pop() if conn.chunks else await conn.read(None)
            if not data:
                raise ProtocolError("closed the connection")
            rest = parser.feed_head(data)
            if rest is not None:
                break
    except (ProtocolError, OSError) as e:
        raise httpx.ProxyError(f"{where} failed CONNECT to {target}: {str(e) or type(e).__name__}",
                               request=request) from e
    status = parser.status
    if not 200 <= status < 300:
        reason = parser.reason[:60].decode("latin-1")
        raise httpx.ProxyError(f"{where} refused CONNECT to {target}: HTTP {status}{' ' + reason if reason else ''}",
                               request=request)
    if rest or conn.chunks:
        raise httpx.ProxyError(f"{where} sent data after accepting CONNECT to {target}", request=request)
    conn.got = False
    try:
        conn.transport = await loop.start_tls(conn.transport, conn, tls, server_hostname=host)
    except (OSError, RuntimeError) as e:  # SSLError (certificate, handshake), reset, tunnel closed
        raise httpx.ConnectError(f"TLS with {target} through {where} failed: {str(e) or type(e).__name__}",
                                 request=request) from e
