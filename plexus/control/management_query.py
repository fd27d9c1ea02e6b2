"""Management API input parsing (pure): query strings, usage filters, JSON bodies, one error type.

Theory: every parameter is checked before anything runs, and a bad one is a 400 that names
it. Unknown parameters and repeated ones are errors too (a typo such as ``?alais=`` must not
silently return everything). ``ApiError`` is the one error shape of the management API: the
dispatcher renders it as ``{"error": message}`` (plus ``details`` when given).

Times (``since``, ``until``) are unix seconds (``1717171717``, ``1717171717.5``) or ISO 8601
(``2024-06-01``, ``2024-06-01T12:00:00Z``, ``2024-06-01T12:00:00+02:00``; without a zone:
UTC). A ``+`` in a zone offset that arrived unencoded (and so decoded as a space) is read as
``+``. Numbers over 1e11 are refused as probably milliseconds.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from urllib.parse import parse_qsl

import orjson

from .usage import STATUSES
from .store import GROUP_BY, MAX_LIMIT

__all__ = ["ApiError", "MAX_LIMIT", "DEFAULT_LIMIT", "GROUP_BY", "parse_query", "usage_query",
           "summary_query", "json_object", "debug_settings", "cooldown_query"]

DEFAULT_LIMIT = 100
# (the store's own bounds: one definition)
_TEXT_FILTERS = ("alias", "provider", "model", "key", "dialect")
_FILTERS = ("since", "until", *_TEXT_FILTERS, "status", "min_duration_ms", "max_duration_ms")
_MAX_UNIX = 1e11  # year 5138: a bigger "seconds" value is almost surely milliseconds


class ApiError(Exception):
    """A management API error: HTTP status, message, optional details and extra headers."""

    def __init__(self, status: int, message: str, details: list | None = None,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details
        self.headers = headers or []

    def body(self) -> dict:
        out: dict = {"error": self.message}
        if self.details is not None:
            out["details"] = self.details
        return out


def bad(name: str, message: str) -> ApiError:
    return ApiError(400, f"invalid parameter '{name}': {message}")


def parse_query(raw: bytes, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query string as {name: value}: each name at most once and one of ``allowed``."""
    out: dict[str, str] = {}
    if not raw:
        return out
    for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        if name not in allowed:
            raise ApiError(400, f"unknown parameter '{name}' (allowed: {', '.join(allowed) or 'none'})")
        if name in out:
            raise bad(name, "given more than once")
        out[name] = value
    return out


def parse_time(name: str, value: str) -> float:
    v = value.strip()
    if not v:
        raise bad(name, "empty; give unix seconds or an ISO 8601 time")
    try:
        t = float(v)
    except ValueError:
        pass
    else:
        if not math.isfinite(t) or t < 0:
            raise bad(name, "must be a non-negative number of unix seconds")
        if t > _MAX_UNIX:
            raise bad(name, "too large for unix seconds (milliseconds? divide by 1000)")
        return t
    for candidate in (v, _plus_zone(v)):
        try:
            dt = datetime.fromisoformat(candidate)
        except ValueError:
            continue
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return dt.timestamp()
    raise bad(name, f"{value!r} is neither unix seconds nor an ISO 8601 time (e.g. 2024-06-01T12:00:00Z)")


def _plus_zone(v: str) -> str:
    """'2024-06-01T12:00:00 02:00' (a '+' decoded as a space) -> '...+02:00'."""
    head, sep, tail = v.rpartition(" ")
    return f"{head}+{tail}" if sep and "T" in head else v


def _number(name: str, value: str) -> float:
    try:
        n = float(value)
    except ValueError:
        raise bad(name, f"{value!r} is not a number") from None
    if not math.isfinite(n) or n < 0:
        raise bad(name, "must be a non-negative number")
    return n


def _integer(name: str, value: str, low: int, high: int) -> int:
    try:
        n = int(value.strip())
    except ValueError:
        raise bad(name, f"{value!r} is not an integer") from None
    if not low <= n <= high:
        raise bad(name, f"must be from {low} to {high}")
    return n


def _filters(params: dict[str, str]) -> dict:
    """The store's filters from the query parameters (only those given)."""
    f: dict = {}
    for name in ("since", "until"):
        if name in params:
            f[name] = parse_time(name, params[name])
    if "since" in f and "until" in f and f["since"] > f["until"]:
        raise bad("since", "is after 'until'")
    for name in _TEXT_FILTERS:
        if name in params:
            if not params[name]:
                raise bad(name, "empty")
            f[name] = params[name]
    if "status" in params:
        if params["status"] not in STATUSES:
            raise bad("status", f"must be one of {', '.join(STATUSES)}")
        f["status"] = params["status"]
    for name in ("min_duration_ms", "max_duration_ms"):
        if name in params:
            f[name] = _number(name, params[name])
    if f.get("min_duration_ms", 0) > f.get("max_duration_ms", math.inf):
        raise bad("min_duration_ms", "is greater than 'max_duration_ms'")
    return f


def usage_query(raw: bytes) -> tuple[dict, int, int]:
    """GET /usage: (filters, limit, offset)."""
    params = parse_query(raw, (*_FILTERS, "limit", "offset"))
    limit = _integer("limit", params["limit"], 1, MAX_LIMIT) if "limit" in params else DEFAULT_LIMIT
    offset = _integer("offset", params["offset"], 0, 10**12) if "offset" in params else 0
    return _filters(params), limit, offset


def summary_query(raw: bytes) -> tuple[str, dict]:
    """GET /usage/summary: (group_by, filters); group_by is required."""
    params = parse_query(raw, ("group_by", *_FILTERS))
    group_by = params.get("group_by")
    if group_by is None:
        raise ApiError(400, f"missing parameter 'group_by' (one of {', '.join(GROUP_BY)})")
    if group_by not in GROUP_BY:
        raise bad("group_by", f"must be one of {', '.join(GROUP_BY)}")
    return group_by, _filters(params)


def cooldown_query(raw: bytes) -> str | None:
    """DELETE /cooldowns/{provider}: the optional ``model``."""
    model = parse_query(raw, ("model",)).get("model")
    if model == "":
        raise bad("model", "empty")
    return model


def json_object(body: bytes) -> dict:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise ApiError(400, f"request body is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ApiError(400, "request body must be a JSON object")
    return obj


def _names(obj: dict, field: str) -> list[str] | None:
    v = obj.get(field)
    if v is None:
        return None
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise ApiError(400, f"'{field}' must be a list of names, or null for all")
    return v


def debug_settings(body: bytes) -> tuple[bool, list[str] | None, list[str] | None]:
    """POST /debug: (enabled, aliases or None, keys or None)."""
    obj = json_object(body)
    unknown = set(obj) - {"enabled", "aliases", "keys"}
    if unknown:
        raise ApiError(400, f"unknown field(s) {', '.join(sorted(unknown))} (allowed: enabled, aliases, keys)")
    if not isinstance(obj.get("enabled"), bool):
        raise ApiError(400, "'enabled' is required and must be true or false")
    return obj["enabled"], _names(obj, "aliases"), _names(obj, "keys")
