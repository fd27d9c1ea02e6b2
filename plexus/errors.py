"""The one exception tree of the gateway, and its rendering in each client dialect.

Every failure the gateway reports is a `GatewayError` carrying an HTTP status and a
dialect-neutral `kind`. It is raised anywhere (request parsing, routing, upstream calls,
translators) and rendered exactly once, at the edge, in the caller's dialect:

- OpenAI:    {"error": {"message", "type", "param", "code"}}
- Anthropic: {"type": "error", "error": {"type", "message"}}
- Gemini:    {"error": {"code", "message", "status"}}

`stream_error_event(err, dialect)` gives the same error as the SSE event that ends a stream
which already started (OpenAI: a final `data: {"error":...}`; Anthropic: `event: error`).

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

_OPENAI_TYPE = {
    "invalid_request": "invalid_request_error",
    "authentication": "authentication_error",
    "billing": "insufficient_quota",
    "permission": "permission_error",
    "not_found": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "rate_limit": "rate_limit_error",
    "api_error": "server_error",
    "bad_gateway": "server_error",
    "unavailable": "server_error",
    "timeout": "server_error",
    "overloaded": "server_error",
}

# https://docs.anthropic.com/en/api/errors
_ANTHROPIC_TYPE = {
    "invalid_request": "invalid_request_error",
    "authentication": "authentication_error",
    "billing": "billing_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "request_too_large": "request_too_large",
    "rate_limit": "rate_limit_error",
    "api_error": "api_error",
    "bad_gateway": "api_error",
    "unavailable": "overloaded_error",
    "timeout": "timeout_error",
    "overloaded": "overloaded_error",
}

# google.rpc.Code names as the Gemini API reports them
_GEMINI_STATUS = {
    "invalid_request": "INVALID_ARGUMENT",
    "authentication": "UNAUTHENTICATED",
    "billing": "FAILED_PRECONDITION",
    "permission": "PERMISSION_DENIED",
    "not_found": "NOT_FOUND",
    "request_too_large": "INVALID_ARGUMENT",
    "rate_limit": "RESOURCE_EXHAUSTED",
    "api_error": "INTERNAL",
    "bad_gateway": "UNAVAILABLE",
    "unavailable": "UNAVAILABLE",
    "timeout": "DEADLINE_EXCEEDED",
    "overloaded": "UNAVAILABLE",
}

_ANTHROPIC_TYPE_KIND = {v: k for k, v in _ANTHROPIC_TYPE.items() if k not in ("bad_gateway", "unavailable")}
_GEMINI_STATUS_KIND = {
    "INVALID_ARGUMENT": "invalid_request", "FAILED_PRECONDITION": "invalid_request",
    "UNAUTHENTICATED": "authentication", "PERMISSION_DENIED": "permission",
    "NOT_FOUND": "not_found", "RESOURCE_EXHAUSTED": "rate_limit", "INTERNAL": "api_error",
    "UNAVAILABLE": "unavailable", "DEADLINE_EXCEEDED": "timeout",
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


def invalid(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, "invalid_request", param=param)


def error_object(err: GatewayError, dialect: str) -> dict:
    """The error as the dict the dialect puts on the wire."""
    if dialect == "anthropic":
        return {"type": "error", "error": {"type": _ANTHROPIC_TYPE[err.kind], "message": err.message}}
    if dialect == "gemini":
        return {"error": {"code": err.status, "message": err.message, "status": _GEMINI_STATUS[err.kind]}}
    return {"error": {"message": err.message, "type": _OPENAI_TYPE[err.kind],
                      "param": err.param, "code": err.code}}


def render(err: GatewayError, dialect: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """(status, headers, body) of a complete JSON error response."""
    headers = [(b"content-type", b"application/json")]
    headers.extend(err.headers)
    return err.status, headers, orjson.dumps(error_object(err, dialect))


def stream_error_event(err: GatewayError, dialect: str) -> bytes:
    """The SSE event that ends an already-started stream with this error."""
    body = orjson.dumps(error_object(err, dialect))
    if dialect == "anthropic":
        return b"event: error\ndata: " + body + b"\n\n"
    if dialect == "gemini":
        return b"data: " + body + b"\r\n\r\n"
    return b"data: " + body + b"\n\n"


def _message_and_kind(obj: object) -> tuple[str | None, str | None]:
    """Pull (message, kind) out of an error body of any of the three dialects."""
    if isinstance(obj, list) and obj:  # Gemini sometimes wraps errors in an array
        obj = obj[0]
    if not isinstance(obj, dict):
        return None, None
    e = obj.get("error")
    if isinstance(e, str):
        return e, None
    if not isinstance(e, dict):
        msg = obj.get("message") or obj.get("detail")
        return (msg if isinstance(msg, str) else None), None
    msg = e.get("message")
    kind = None
    t = e.get("type")
    if isinstance(t, str):
        kind = _ANTHROPIC_TYPE_KIND.get(t)
    s = e.get("status")
    if isinstance(s, str):
        kind = _GEMINI_STATUS_KIND.get(s, kind)
    return (msg if isinstance(msg, str) else None), kind


def from_upstream(status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None,
                  provider: str = "upstream") -> GatewayError:
    """An upstream error answer → GatewayError with the same status and retry-after."""
    try:
        msg, kind = _message_and_kind(orjson.loads(body)) if body else (None, None)
    except orjson.JSONDecodeError:
        msg, kind = None, None
    if not msg:
        text = body[:300].decode("utf-8", "replace").strip()
        msg = f"{provider} returned HTTP {status}" + (f": {text}" if text else "")
    if status not in STATUS_KIND:
        kind = None  # derive from the status class
    keep = []
    for k, v in headers or ():
        lk = k.lower()
        if lk in (b"retry-after", b"retry-after-ms") or lk.startswith(b"x-ratelimit-") \
                or lk.startswith(b"anthropic-ratelimit-"):
            keep.append((lk, v))
    return GatewayError(status, msg, kind if kind and KIND_STATUS.get(kind) == status else None,
                        headers=keep)
