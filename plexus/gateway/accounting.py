"""Completing a usage record from the raw facts the request path left in it (`settle`).

Theory: the request path does the least it can for accounting, because every line it runs per
request shows in the gateway's per-request cost: it stores references (the parsed answer, the
stream's first and last reads, the translator's encoder) in `rec.src` and a tuple of clock
readings, the target and the client's response (for the bytes it was sent) in `rec.facts`,
then hands the record to the control plane's queue. The plane settles queued records in batches (control/plane.py), where the same code runs for many
records in a row. Settling reads the usage (gateway/usage_tap.py: the provider's own report),
the finish reason, and derives the target fields, cost, TTFT, tokens per second and overhead.

`rec.src` is one of:
    (dialect, obj)                             a relayed non-stream answer, parsed once (check_json)
    (None, ires)                               a translated non-stream answer (ir.Response)
    ("stream", dialect, first, last2, stripped, finish)   a relayed stream's reads
    ("encoder", enc)                           a translated stream's encoder (its `_usage`, `stop`)
"""

from __future__ import annotations

from ..config_control import cost
from ..dialects.common import STOPS
from .usage_tap import body_usage, fill, stream_usage


def settle(rec) -> None:
    """Fill the derived fields of ``rec`` from its ``src`` and ``facts`` (then drops both)."""
    src = rec.src
    if src is not None:
        rec.src = None
        kind = src[0]
        if kind == "stream":
            _, dialect, first, last2, stripped, finish = src
            u, stop, reported = stream_usage(dialect, first, last2, stripped)
            if finish is not None:
                stop = STOPS[dialect].to_ir(finish)
            fill(rec, u, stop, reported)
        elif kind == "encoder":
            enc = src[1]
            fill(rec, enc._usage, enc.stop)
        elif kind is None:
            ires = src[1]
            fill(rec, ires.usage, ires.stop_reason)
        else:
            fill(rec, *body_usage(kind, src[1]))
    facts = rec.facts
    if facts is None:
        return
    rec.facts = None
    t0, end, first_at, upstream_s, target, resp = facts
    rec.bytes = resp.sent if resp is not None else 0
    duration = (end - t0) * 1000.0
    if target is not None:
        p = target.provider
        rec.provider, rec.model, rec.provider_type = p.name, target.model, p.type
        if rec.cost is None and (rec.input_tokens is not None or rec.output_tokens is not None):
            price = p.pricing.get(target.model) if p.pricing else None
            if price is not None:
                rec.cost = cost(price, rec.input_tokens, rec.output_tokens, rec.cached_tokens,
                                rec.cache_write_tokens)
    if first_at is not None and rec.stream:
        rec.ttft_ms = (first_at - t0) * 1000.0
    elif rec.status == "success":
        rec.ttft_ms = duration     # a whole answer: its first token comes with the last
    rec.finish(duration)
    rec.overhead_ms = max(0.0, duration - upstream_s * 1000.0)
