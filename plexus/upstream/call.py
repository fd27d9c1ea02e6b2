"""The one seam between the request handler and the upstream HTTP client.

`open_upstream()` sends a request and returns the response once its head arrived: a
`transport.RawResponse` (`status_code`, `raw_headers`, async iteration over raw body chunks,
`ready_chunk()`, `at_end()`, `complete_body()`, `declared_length()`, `aclose()`). A PlexusTransport
is called through its `open()` (no httpx objects per request);
any other httpx transport (tests, the benchmark) through `pool.open_stream`, its httpx.Response
wrapped in `_HttpxResponse`, which has the same members. The caller reads the body chunk by
chunk inside `mapped(...)` (or whole with `read_all`) and must `await aclose()`.

Every httpx exception is mapped to a GatewayError at this boundary, by one context manager
(`mapped`), in the httpcore `map_exceptions` style:

- cannot connect (refused, DNS, TLS, proxy) → 502 (a proxy is named by host:port, never credentials)
- no response headers within ttfb_timeout    → 504
- no body bytes within read_timeout          → 504
- malformed answer, connection cut           → 502

`read_all` reads a whole body, at most `limit` bytes (default `provider.max_response_bytes`, the
non-stream cap). Over it: GatewayError 502 "provider 'X' sent a response larger than N bytes", the
connection aborted (never pooled), at most the limit plus one socket chunk ever buffered; a
Content-Length over the limit fails before any body byte is read. `truncate=True` returns the
first ~limit bytes instead (error bodies, relayed even when huge).

`mapped` is a plain class (not @contextmanager: no generator per use), and holds no state
between uses, so a caller may build one per provider and phase once and reuse it.
"""

from __future__ import annotations

import httpx

from ..errors import GatewayError
from .pool import open_stream
from .transport import PlexusTransport

MAX_ERROR_BODY = 1024 * 1024


class mapped:  # noqa: N801 - used like a function: `with mapped(...)`
    __slots__ = ("provider", "timeout", "phase")

    def __init__(self, provider: str, timeout: float | None = None, phase: str = "answer") -> None:
        self.provider, self.timeout, self.phase = provider, timeout, phase

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ, e, tb) -> bool:
        if e is None or not isinstance(e, (httpx.TransportError, OSError)):
            return False
        provider = self.provider
        if isinstance(e, httpx.TimeoutException):
            if isinstance(e, httpx.ConnectTimeout):
                raise GatewayError(502, f"could not connect to provider '{provider}': {str(e) or 'connect timeout'}",
                                   "bad_gateway") from None
            secs = f" within {self.timeout:g} s" if self.timeout else ""
            raise GatewayError(504, f"provider '{provider}' did not {self.phase}{secs}", "timeout") from None
        if isinstance(e, (httpx.ConnectError, httpx.ProxyError)):
            raise GatewayError(502, f"could not connect to provider '{provider}': {str(e) or type(e).__name__}",
                               "bad_gateway") from None
        raise GatewayError(502, f"provider '{provider}' connection failed: {str(e) or type(e).__name__}",
                           "bad_gateway") from None


class _HttpxResponse:
    """An httpx.Response seen through RawResponse's members (for transports other than Plexus's)."""

    __slots__ = ("_r", "status_code", "raw_headers")

    def __init__(self, r: httpx.Response) -> None:
        self._r = r
        self.status_code = r.status_code
        self.raw_headers = r.headers.raw

    def __aiter__(self):
        return self._r.aiter_raw().__aiter__()

    def complete_body(self) -> None:
        return None

    def declared_length(self) -> int | None:
        value = self._r.headers.get("content-length")
        return int(value) if value is not None and value.isdigit() else None

    def ready_chunk(self) -> bytes:
        return b""

    def at_end(self) -> bool:
        return False

    async def aclose(self) -> None:
        await self._r.aclose()


async def open_upstream(transport, provider, url: str, headers: list[tuple[bytes, bytes]],
                        body: bytes, loop=None, ttfb_map: mapped | None = None, target=None):
    """POST `body` to `url`; the response once its head arrived (see the module docstring).
    ``target``: a routing target whose own connect/ttfb/read timeouts apply (else the provider's)."""
    t = target if target is not None else provider
    ttfb = t.ttfb_timeout
    total = getattr(t, "total_timeout", 0.0)
    if total and total < ttfb:  # the whole attempt's limit bounds the wait for the head too
        ttfb = total
    if ttfb_map is None or ttfb != provider.ttfb_timeout:
        ttfb_map = mapped(provider.name, ttfb)
    with ttfb_map:
        if type(transport) is PlexusTransport:
            if t is provider:
                return await transport.open(b"POST", url, headers, body, ttfb, loop)
            return await transport.open(b"POST", url, headers, body, ttfb, loop,
                                        t.connect_timeout, t.read_timeout)
        return _HttpxResponse(await open_stream(transport, b"POST", url, headers, body, ttfb=ttfb))


def _too_large(provider, limit: int) -> GatewayError:
    return GatewayError(502, f"provider '{provider.name}' sent a response larger than {limit} bytes", "bad_gateway")


async def read_all(resp, provider, limit: int | None = None, read_map: mapped | None = None, *,
                   truncate: bool = False) -> bytes:
    """The whole body, at most `limit` bytes (None: provider.max_response_bytes). Over it: a 502
    "larger than" and the connection aborted; with truncate=True the first ~limit bytes instead."""
    if limit is None:
        limit = provider.max_response_bytes
    if not truncate:
        declared = resp.declared_length()
        if declared is not None and declared > limit:
            await resp.aclose()
            raise _too_large(provider, limit)
    data = resp.complete_body()
    if data is not None:  # the whole body came with the head: no await, no iteration
        if len(data) > limit and not truncate:
            raise _too_large(provider, limit)
        return data
    parts = []
    size = 0
    with read_map or mapped(provider.name, provider.read_timeout, "finish its answer"):
        async for chunk in resp:
            parts.append(chunk)
            size += len(chunk)
            if size > limit:
                if not truncate:
                    await resp.aclose()  # abort: the rest is never read, the connection never pooled
                    raise _too_large(provider, limit)
                break
    return b"".join(parts)
