"""Routing (pure): which targets a request tries, and what their outcomes teach.

- ``select.py``: ``Router``: ``resolve(name)``, ``plan(alias, now)``, ``report(target, outcome,
  now, ...)``, ``snapshot(now)``; the selectors (random, weighted, in_order, least_latency).
- ``cooldowns.py``: ``Cooldowns`` per (provider, model), and ``retry-after`` parsing.
- ``outcome.py``: ``classify(status, kind) -> Outcome``: fail over, cool down, or answer now.

The pipeline asks and reports; routing never awaits, reads a clock or does I/O.
"""

from .cooldowns import Cooldowns, parse_retry_after, parse_retry_after_ms, retry_after
from .outcome import CONNECT, HTTP, INVALID, STREAM_ERROR, TIMEOUT, Outcome, classify
from .select import Router

__all__ = ["CONNECT", "Cooldowns", "HTTP", "INVALID", "Outcome", "Router", "STREAM_ERROR", "TIMEOUT",
           "classify", "parse_retry_after", "parse_retry_after_ms", "retry_after"]
