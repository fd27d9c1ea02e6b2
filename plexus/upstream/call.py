"""The one seam between the request handler and the upstream HTTP client.

`open_upstream()` sends a request and returns the httpx.Response once its headers arrived;
the caller reads its body chunk by chunk inside `mapped(...)` (or whole with `read_all`). Every httpx exception is mapped to a
GatewayError at this boundary, by one context manager (`mapped`), in the httpcore
`map_exceptions` style:

- cannot connect (refused, DNS, TLS)       → 502
- no response headers within ttfb_timeout   → 504
- no body bytes within read_timeout         → 504
- malformed answer, connection cut          → 502

Tests and the benchmark can swap the transport; nothing else here knows about sockets.
"""

from __future__ import annotations

import contextlib
import httpx

from ..errors import GatewayError
from .pool import open_stream

MAX_ERROR_BODY = 1024 * 1024


@contextlib.contextmanager
def mapped(provider: str, timeout: float | None = None, phase: str = "answer"):
    try:
        yield
    except httpx.TimeoutException as e:
        if isinstance(e, httpx.ConnectTimeout):
            raise GatewayError(502, f"could not connect to provider '{provider}': connect timeout",
                               "bad_gateway") from None
        secs = f" within {timeout:g} s" if timeout else ""
        raise GatewayError(504, f"provider '{provider}' did not {phase}{secs}", "timeout") from None
    except httpx.ConnectError as e:
        raise GatewayError(502, f"could not connect to provider '{provider}': {e or type(e).__name__}",
                           "bad_gateway") from None
    except (httpx.TransportError, OSError) as e:
        raise GatewayError(502, f"provider '{provider}' connection failed: {e or type(e).__name__}",
                           "bad_gateway") from None


async def open_upstream(transport, provider, url: str, headers: list[tuple[bytes, bytes]],
                        body: bytes) -> httpx.Response:
    with mapped(provider.name, provider.ttfb_timeout):
        return await open_stream(transport, b"POST", url, headers, body, ttfb=provider.ttfb_timeout)


async def read_all(resp: httpx.Response, provider, limit: int | None = None) -> bytes:
    parts = []
    size = 0
    with mapped(provider.name, provider.read_timeout, "finish its answer"):
        async for chunk in resp.aiter_raw():
            parts.append(chunk)
            size += len(chunk)
            if limit is not None and size > limit:
                break
    return b"".join(parts)
