"""Outcome of one upstream attempt: what the pipeline does next, and what routing remembers.

Theory: the pipeline reduces every attempt to ``classify(status, kind)`` and acts on the
answer; routing is fed the same value through ``Router.report``.  The table is the issue's:

    outcome  fail over?  cool down?  when
    OK       -           reset       2xx answered and valid
    RETRY    yes         yes         connection error, any timeout, 408, 409, 429, 5xx (529
                                     included), an answer not valid for its dialect (not JSON, a
                                     stream that is not SSE, a 1xx/3xx final status), an error as
                                     the first event of a 200 stream, and 404 / 410 (that model
                                     is missing or gone at *that* provider; another target may
                                     well have it: aliases span providers, ``models: "*"``
                                     providers take any name)
    AUTH     yes         yes         401, 403 (the key is bad or lacks access: every request to
                                     that target would fail the same way), 402 (out of credit)
    FATAL    no          no          400, 413, 422 and every other 4xx: the request itself is
                                     wrong; another target would only repeat the answer, so it
                                     is returned to the client at once

"Fail over" only applies before the first byte reached the client; after that the pipeline
ends the response, but still reports the outcome so the target cools down.

``kind`` says how the attempt ended: ``HTTP`` (a status line arrived: ``status`` decides),
``CONNECT``, ``TIMEOUT``, ``INVALID`` (status ignored), ``STREAM_ERROR`` (the first event of a
200 stream is an error: ``status`` is the one the event maps to, or None; a 4xx the table calls
FATAL stays FATAL, e.g. an overlong prompt reported in-stream, anything else is RETRY).
O(1): one list index.  Pure: no I/O, no clock.
"""

from __future__ import annotations

import enum

__all__ = ["CONNECT", "HTTP", "INVALID", "KINDS", "Outcome", "STREAM_ERROR", "TIMEOUT", "classify"]

HTTP = "http"
CONNECT = "connect"
TIMEOUT = "timeout"
INVALID = "invalid"
STREAM_ERROR = "stream_error"
KINDS = (HTTP, CONNECT, TIMEOUT, INVALID, STREAM_ERROR)


class Outcome(enum.Enum):
    OK = "ok"
    RETRY = "retry"
    AUTH = "auth"
    FATAL = "fatal"

    @property
    def fail_over(self) -> bool:
        """Try the next planned target (if nothing was sent to the client yet)."""
        return self is Outcome.RETRY or self is Outcome.AUTH

    @property
    def cool_down(self) -> bool:
        """The target is skipped for a while (Router.report does it)."""
        return self is Outcome.RETRY or self is Outcome.AUTH


OK, RETRY, AUTH, FATAL = Outcome.OK, Outcome.RETRY, Outcome.AUTH, Outcome.FATAL


def _table() -> tuple[Outcome, ...]:
    t = [RETRY] * 600                  # 1xx/3xx as a final answer: not valid → RETRY
    for s in range(200, 300):
        t[s] = OK
    for s in range(400, 500):
        t[s] = FATAL
    for s in (404, 408, 409, 410, 429):
        t[s] = RETRY
    for s in (401, 402, 403):
        t[s] = AUTH
    return tuple(t)                    # 5xx stay RETRY (529 "overloaded" included)


_BY_STATUS = _table()


def classify(status: int | None, kind: str = HTTP) -> Outcome:
    """The outcome of one attempt; ``status`` is the HTTP status (or the in-stream error's)."""
    if kind == HTTP:
        if status is None:
            raise ValueError("classify: kind 'http' needs a status")
        return _BY_STATUS[status] if 0 <= status < 600 else RETRY
    if kind == STREAM_ERROR:
        if status is not None and 0 <= status < 600 and _BY_STATUS[status] is not OK:
            return _BY_STATUS[status]
        return RETRY
    if kind in KINDS:                  # connect, timeout, invalid
        return RETRY
    raise ValueError(f"classify: unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
