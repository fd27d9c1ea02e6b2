"""The answer to a client connection over `server.max_connections` (`overload_response`): a 503
with `retry-after: 1` and `connection: close`, in the dialect its first request names.

Cold path only (the connection limit was reached): the server layer knows no dialect but here,
and imports the registry lazily. Each dialect's whole response is built once and kept.
"""

from __future__ import annotations

from .messages import fixed_head

__all__ = ["overload_response", "OVERLOAD_MESSAGE"]

OVERLOAD_MESSAGE = "Plexus is at its limit of open connections (server.max_connections); retry shortly"
_OVERLOAD: dict[str, bytes] = {}  # dialect name -> the whole 503 response (built once)


def overload_response(data: bytes) -> bytes:
    """The 503 for a connection over the limit: ``retry-after: 1``, ``connection: close``, in the
    dialect of the route its request line names (else ``registry.guess``: path hints and
    headers such as ``anthropic-version``; else OpenAI's shape). ``data``: the first bytes the
    client sent (b"" for none). The server knows no dialect but here, in a cold path."""
    from ..dialects import registry
    from ..errors import GatewayError

    end = data.find(b"\r\n\r\n")
    lines = (data if end < 0 else data[:end]).split(b"\r\n")
    parts = lines[0].split(b" ")
    path = parts[1].partition(b"?")[0] if len(parts) == 3 and len(lines) > 1 else b""

    def header(name: bytes) -> bytes | None:
        for line in lines[1:]:
            key, sep, value = line.partition(b":")
            if sep and key.strip().lower() == name:
                return value.strip()
        return None

    m = registry.match(path)
    d = m.dialect if m is not None else registry.guess(path, header) if path else registry.DEFAULT
    out = _OVERLOAD.get(d.name)
    if out is None:
        err = GatewayError(503, OVERLOAD_MESSAGE, headers=[(b"retry-after", b"1")])
        status, headers, body = d.render_error(err)
        out = _OVERLOAD[d.name] = fixed_head(status, headers, len(body), False) + body
    return out
