"""Upstream pools: the O(1) idle-connection stacks behind PlexusTransport, and the two ways to call it.

Theory
------
* ``IdlePool`` is bookkeeping only. It maps a pool key (``(scheme, host, port)``, plus the proxy's
  host:port when the transport sends through one) to a deque used as a stack: ``push`` on release,
  ``pop`` on acquire, both O(1). The top of the stack is the warmest connection, and the bottom
  holds the oldest, which the sweep trims. ``pop`` skips what its flags already show dead: closed
  by a protocol callback (``closed``), or holding bytes that arrived unasked while it was idle
  (``chunks``). No request scans the pool; the one socket probe is the transport's, on the single
  connection ``pop`` returned (``conn.Conn.dead``). A connection idle longer than ``idle_ttl`` is
  dropped when ``pop`` meets it, and so is everything below it, which is older. ``sweep`` (from the
  transport's ``call_later``, not per request) trims the rest so idle sockets don't linger. The
  only I/O it does is ``conn.close()``, a synchronous call that doesn't block.
* ``make_client`` gives one long-lived ``httpx.AsyncClient`` per provider on the shared transport, with
  no client timeouts (``timeout=None`` puts ``None`` into every slot, and the transport reads ``None``
  as "use my own defaults"). It has no env proxies and a cookie jar that stores nothing, so cookies
  never leak from one end user to the next. It asks for ``Accept-Encoding: identity``, so
  ``aiter_raw()`` gets plain bytes.
* ``open_stream`` skips the client layer: it builds the ``httpx.Request`` itself and calls
  ``transport.handle_async_request`` directly. Parsed ``httpx.URL``s are cached by string, because
  parsing one costs more than the rest of the request object. The caller iterates
  ``response.aiter_raw()`` (or ``response.stream``) and must ``await response.aclose()``.
"""

from __future__ import annotations

from collections import deque
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx


class IdlePool:
    __slots__ = ("_stacks", "_max", "_ttl")

    def __init__(self, max_idle_per_host: int, idle_ttl: float) -> None:
        self._stacks: dict[tuple, deque] = {}
        self._max = max_idle_per_host
        self._ttl = idle_ttl

    def pop(self, key: tuple, now: float):
        """The most recently released live connection for `key`, or None."""
        stack = self._stacks.get(key)
        if not stack:
            return None
        cutoff = now - self._ttl
        while stack:
            conn = stack.pop()
            if conn.idle_since < cutoff:  # expired, and everything below it is older
                conn.close()
                while stack:
                    stack.pop().close()
                return None
            if conn.closed or conn.chunks:  # peer closed it, or sent bytes nobody asked for
                conn.close()
                continue
            return conn
        return None

    def push(self, conn, now: float) -> bool:
        """Park `conn` as idle; False if this origin's stack is full (the caller closes it)."""
        stack = self._stacks.get(conn.key)
        if stack is None:
            stack = self._stacks[conn.key] = deque()
        if len(stack) >= self._max:
            return False
        conn.idle_since = now
        stack.append(conn)
        return True

    def sweep(self, now: float) -> int:
        """Close expired and dead idle connections; return how many idle ones remain."""
        cutoff = now - self._ttl
        left = 0
        for key, stack in list(self._stacks.items()):
            while stack and stack[0].idle_since < cutoff:
                stack.popleft().close()
            if any(c.closed for c in stack):
                live = [c for c in stack if not c.closed]
                stack.clear()
                stack.extend(live)
            if not stack:
                del self._stacks[key]
            left += len(stack)
        return left

    def clear(self) -> None:
        for stack in self._stacks.values():
            while stack:
                stack.pop().close()
        self._stacks.clear()

    def idle(self, key: tuple) -> int:
        stack = self._stacks.get(key)
        return len(stack) if stack else 0


def make_client(transport: httpx.AsyncBaseTransport, base_url: str) -> httpx.AsyncClient:
    """A long-lived client for one provider on the shared transport; timeouts are the transport's."""
    return httpx.AsyncClient(
        transport=transport,
        base_url=base_url,
        timeout=None,
        follow_redirects=False,
        trust_env=False,
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        headers={"Accept-Encoding": "identity"},  # aiter_raw() relays bytes as sent: ask for them uncompressed
    )


_URLS: dict[str, httpx.URL] = {}
_MAX_URLS = 4096  # distinct upstream URLs are few (base URL x endpoint x model); bound it anyway


def _url(url: str) -> httpx.URL:
    parsed = _URLS.get(url)
    if parsed is None:
        parsed = httpx.URL(url)
        if len(_URLS) >= _MAX_URLS:
            _URLS.clear()
        _URLS[url] = parsed
    return parsed


async def open_stream(transport, method: bytes | str, url: str, headers: list[tuple[bytes, bytes]],
                      body: bytes, ttfb: float | None = None) -> httpx.Response:
    """Send one request straight to the transport; return once the response head has arrived."""
    if type(method) is bytes:
        method = method.decode("ascii")
    # stream= rather than content=: httpx then skips encode_request() and the auto-header rebuild (~14 us);
    # the transport writes Host and Content-Length itself. read() just sets request.content to `body`.
    request = httpx.Request(method, _url(url), headers=headers, stream=httpx.ByteStream(body),
                            extensions=None if ttfb is None else {"plexus_ttfb": ttfb})
    request.read()
    return await transport.handle_async_request(request)
