"""The one exception tree of the gateway.

Every failure the gateway reports is a `GatewayError` carrying an HTTP status and a
dialect-neutral `kind`. It is raised anywhere (request parsing, routing, upstream calls,
translators) and rendered exactly once, at the edge, in the caller's dialect. The wire shape
belongs to the dialect (its encoder's `error_object` / `error_event`, reached through its
registry record: `registry.get(d).render_error(err)` / `.stream_error_event(err)`):

- OpenAI:    {"error": {"message", "type", "param", "code"}}
- Anthropic: {"type": "error", "error": {"type", "message"}}
- Gemini:    {"error": {"code", "message", "status"}}

`render`, `error_object` and `stream_error_event` below do the same for a dialect name.

`from_upstream(status, body, headers)` turns an upstream error answer (any dialect) into a
GatewayError that keeps the status and the `retry-after` header.
"""

from __future__ import annotations

import orjson

# kind -> default status
KIND_STATUS = {
    "invalid_request": 400,
    "authentication": 401,
    "billing": 402,
    "permission": 403,
    "not_found": 404,
    "request_too_large": 413,
    "rate_limit": 429,
    "api_error": 500,
    "bad_gateway": 502,
    "unavailable": 503,
    "timeout": 504,
    "overloaded": 529,
}

STATUS_KIND = {
    400: "invalid_request", 401: "authentication", 402: "billing", 403: "permission",
    404: "not_found", 408: "timeout", 409: "invalid_request", 413: "request_too_large",
    422: "invalid_request", 429: "rate_limit", 500: "api_error", 502: "bad_gateway",
    503: "unavailable", 504: "timeout", 529: "overloaded",
}

# the error `type` names upstreams put in their error bodies and stream error events (OpenAI,
# Anthropic and the servers that copy them) -> kind. What each dialect writes to its clients is
# its encoder's `error_object` (kind -> its own names).
ERROR_TYPE_KIND = {
    "invalid_request_error": "invalid_request", "invalid_prompt": "invalid_request",
    "authentication_error": "authentication",
    "billing_error": "billing", "insufficient_quota": "billing", "permission_error": "permission",
    "not_found_error": "not_found", "request_too_large": "request_too_large",
    "rate_limit_error": "rate_limit", "rate_limit_exceeded": "rate_limit", "api_error": "api_error",
    "server_error": "api_error",
    "timeout_error": "timeout", "overloaded_error": "overloaded",
}


class GatewayError(Exception):
    """An error with an HTTP status, rendered in the caller's dialect at the edge."""

    __slots__ = ("status", "kind", "message", "param", "code", "headers")

    def __init__(self, status: int, message: str, kind: str | None = None, *,
                 param: str | None = None, code: str | None = None,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind or STATUS_KIND.get(status) or ("api_error" if status >= 500 else "invalid_request")
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or []

    def __repr__(self) -> str:
        return f"GatewayError({self.status}, {self.kind!r}, {self.message!r})"


STREAM_CUT = "upstream stream ended early"


def stream_cut() -> GatewayError:
    """The error for an upstream stream that ended before its terminal event."""
    return GatewayError(502, STREAM_CUT, "bad_gateway")


SHUTTING_DOWN = "the gateway is shutting down"


def shutting_down() -> GatewayError:
    """The error for a request the end of a graceful shutdown's grace period cut short (a 503,
    or the error event that ends its stream)."""
    return GatewayError(503, SHUTTING_DOWN, "unavailable")


def invalid(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, "invalid_request", param=param)


def bad_gateway(message: str) -> GatewayError:
    """An upstream answer or stream the gateway cannot use (502)."""
    return GatewayError(502, message, "bad_gateway")


# ---------------------------------------------------------------- rendering (by dialect name)
# Each dialect renders its own errors (dialects/<d>/encode.py `error_object`, `error_event`);
# these look the record up by name for callers that hold a name, not a registry.Dialect.

def _dialect(name):
    from .dialects.registry import get  # (here: the registry imports the dialects, which import this module)
    return get(name)


def error_object(err: GatewayError, dialect: str) -> dict:
    """The error as the dict the dialect puts on the wire."""
    return _dialect(dialect).error_object(err)


def render(err: GatewayError, dialect: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """(status, headers, body) of a complete JSON error response."""
    return _dialect(dialect).render_error(err)


def stream_error_event(err: GatewayError, dialect: str) -> bytes:
    """The SSE event that ends an already-started stream with this error."""
    return _dialect(dialect).stream_error_event(err)


def _message(obj: object) -> str | None:
    """The message of an error body of any dialect (`{"error": {"message"}}`, Anthropic's
    `{"type": "error", "error": {...}}`, `{"error": "..."}`, `{"message"|"detail": "..."}`)."""
    if isinstance(obj, list) and obj:  # Gemini sometimes wraps errors in an array
        obj = obj[0]
    if not isinstance(obj, dict):
        return None
    e = obj.get("error")
    if isinstance(e, str):
        return e
    msg = e.get("message") if isinstance(e, dict) else obj.get("message") or obj.get("detail")
    return msg if isinstance(msg, str) else None


def from_upstream(status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None,
                  provider: str = "upstream") -> GatewayError:
    """An upstream error answer → GatewayError with the same status and retry-after. Its kind
    follows from the status (STATUS_KIND: a kind named in the body could only be kept when it
    agreed with the status, and then it is that kind)."""
    try:
        msg = _message(orjson.loads(body)) if body else None
    except orjson.JSONDecodeError:
        msg = None
    if not msg:
        text = body[:300].decode("utf-8", "replace").strip()
        msg = f"{provider} returned HTTP {status}" + (f": {text}" if text else "")
    keep = []
    for k, v in headers or ():
        lk = k.lower()
        if lk in (b"retry-after", b"retry-after-ms") or lk.startswith(b"x-ratelimit-") \
                or lk.startswith(b"anthropic-ratelimit-"):
            keep.append((lk, v))
    return GatewayError(status, msg, headers=keep)
