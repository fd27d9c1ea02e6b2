"""Prometheus metrics: per-request aggregates kept in plain Python, rendered only when scraped.

Owns the in-memory counters and histograms fed by `Metrics.observe(usage)` (one call per
finished request, on the event loop) and their text exposition, format 0.0.4, for
`GET /metrics` (`Metrics.render()`, served with `Metrics.CONTENT_TYPE`).

Theory: the request path pays only for dict lookups and integer additions (~1 µs; no locks,
no allocation once a label set exists: the loop is single-threaded, and `render` runs on the
same loop).  Everything one request counts lives in one `_Slot`, keyed by ``(alias, provider,
model, status)``: one dict lookup per request.  A histogram is a list of per-bucket counts,
the last one past every bound (+Inf), then the sum; observing is `bisect` over a tuple of
bounds in milliseconds, the unit of `Usage`, so nothing is converted per request.  All the
rest happens at scrape time: slots are summed into the label sets each family exposes
(``requests_total`` drops the model, the histograms drop model and status, ...), counts made
cumulative, milliseconds turned into seconds (Prometheus convention), and the text written
here: the format is a few lines of escaping and number syntax, checked in the tests by
`prometheus_client`'s own parser (a test dependency only).  Measured on the same data (240
label sets, 2,900 lines), `render` takes ~2.5 ms on the loop; `prometheus_client`'s writer
through a custom collector took ~15.6 ms, plus ~50 ms to import, and its own Counter and
Histogram objects cost ~18 µs per request for these families.

Families (a family's HELP/TYPE lines are always written; its samples only for label sets that
were observed, so a family nothing was counted in has no samples):

    plexus_requests_total{alias,provider,status}         success/error/error_stream/client_closed
    plexus_http_responses_total{code}                    the HTTP status the client got
    plexus_attempts_total{alias}                         upstream attempts
    plexus_failovers_total{alias}                        attempts − 1, for requests with > 1
    plexus_tokens_total{alias,provider,model,type}       input/output/cached/cache_write/reasoning
    plexus_cost_dollars_total{alias,provider,model}      records whose cost is known
    plexus_request_duration_seconds{alias,provider}      histogram, LATENCY_BUCKETS
    plexus_time_to_first_token_seconds{alias,provider}   histogram, records with a TTFT
    plexus_upstream_latency_seconds{provider}            histogram, duration − overhead
    plexus_gateway_overhead_seconds{dialect}             histogram, OVERHEAD_BUCKETS

A missing alias, provider or model (a request rejected before routing) is the label value "".
Upstream latency is observed only for records with a provider and a known overhead.

Cardinality: providers are config names, statuses and dialects fixed sets, but aliases and
models can come from clients (direct addressing ``<provider>/<model>``, ``models: "*"``, an
unknown model name in an error record).  So the number of slots is capped (`max_series`): once
full, a new ``(alias, provider, model, status)`` is counted under ``alias="_other",
model="_other"``, its provider and status kept (at most providers × statuses extra slots).
Dialects and HTTP codes have small caps of their own.  Nothing else from a request is a label.

Gauges are read at scrape time from callables (open connections, active streams, cooldowns):
``name -> (help, fn)`` where ``fn()`` returns a number, or ``name -> (help, label_names, fn)``
where ``fn()`` returns ``{tuple of label values: number}`` (at most `max_series` of them).  A
callable that raises, or answers in the wrong shape, leaves that gauge out of that scrape
(logged once, until it works again); the rest of the page is still rendered.
"""

from __future__ import annotations

import logging
import math
import re
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping

from .usage import Usage

__all__ = ["Metrics", "GaugeSpec", "LATENCY_BUCKETS", "OVERHEAD_BUCKETS", "OTHER", "CONTENT_TYPE"]

log = logging.getLogger("plexus")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OTHER = "_other"            # the label value of label sets beyond a cap
MAX_SERIES = 1000           # default cap on (alias, provider, model, status) slots
MAX_DIALECTS = 16
MAX_CODES = 200

# Bucket upper bounds in milliseconds (the unit of Usage); exposed in seconds.
# Request duration, TTFT, upstream latency: 5 ms … 5 min.
LATENCY_BUCKETS = (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
                   10000.0, 20000.0, 30000.0, 60000.0, 120000.0, 300000.0)
# Plexus' own time per request: 50 µs … 100 ms.
OVERHEAD_BUCKETS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)

TOKEN_TYPES = ("input", "output", "cached", "cache_write", "reasoning")

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")

# (help, fn) with fn() -> number, or (help, label_names, fn) with fn() -> {label values: number}
GaugeSpec = tuple


def _hist(n: int) -> list:
    """Per-bucket counts (the last one past every bound: +Inf), then the sum."""
    return [0] * (n + 1) + [0.0]


class _Slot:
    """Everything counted for one (alias, provider, model, status)."""

    __slots__ = ("requests", "attempts", "failovers", "input", "output", "cached", "cache_write",
                 "reasoning", "cost", "duration", "ttft", "upstream")

    def __init__(self) -> None:
        self.requests = self.attempts = self.failovers = 0
        # None until the first record that reports it: "never reported" is not "0"
        self.input = self.output = self.cached = self.cache_write = self.reasoning = None
        self.cost = None
        n = len(LATENCY_BUCKETS)
        self.duration, self.ttft, self.upstream = _hist(n), _hist(n), _hist(n)


class Metrics:
    """The gateway's metrics.  `observe` on the request path, `render` at scrape time."""

    CONTENT_TYPE = CONTENT_TYPE

    def __init__(self, gauges: Mapping[str, GaugeSpec] | None = None, max_series: int = MAX_SERIES) -> None:
        self._slots: dict[tuple, _Slot] = {}
        self._overhead: dict[object, list] = {}
        self._codes: dict[object, int] = {}
        self.max_series = max(1, max_series)
        self._gauges = [_check_gauge(name, spec) for name, spec in (gauges or {}).items()]
        self._failing: set[str] = set()      # gauges whose last read failed (logged once)

    # ---- request path ----------------------------------------------------------------------

    def observe(self, u: Usage) -> None:
        """Count one finished request.  O(1); allocates only for a label set seen first."""
        s = self._slots.get((u.alias, u.provider, u.model, u.status))
        if s is None:
            s = self._new_slot(u.alias, u.provider, u.model, u.status)
        s.requests += 1
        a = u.attempts
        s.attempts += a
        if a > 1:
            s.failovers += a - 1
        d = u.duration_ms
        h = s.duration
        h[bisect_left(LATENCY_BUCKETS, d)] += 1
        h[-1] += d
        t = u.ttft_ms
        if t is not None:
            h = s.ttft
            h[bisect_left(LATENCY_BUCKETS, t)] += 1
            h[-1] += t
        o = u.overhead_ms
        if o is not None:
            h = self._overhead.get(u.dialect)
            if h is None:
                h = self._new_overhead(u.dialect)
            h[bisect_left(OVERHEAD_BUCKETS, o)] += 1
            h[-1] += o
            if u.provider is not None:
                up = d - o if d > o else 0.0
                h = s.upstream
                h[bisect_left(LATENCY_BUCKETS, up)] += 1
                h[-1] += up
        x = u.input_tokens
        if x is not None:
            s.input = x if s.input is None else s.input + x
        x = u.output_tokens
        if x is not None:
            s.output = x if s.output is None else s.output + x
        x = u.cached_tokens
        if x is not None:
            s.cached = x if s.cached is None else s.cached + x
        x = u.cache_write_tokens
        if x is not None:
            s.cache_write = x if s.cache_write is None else s.cache_write + x
        x = u.reasoning_tokens
        if x is not None:
            s.reasoning = x if s.reasoning is None else s.reasoning + x
        x = u.cost
        if x is not None:
            s.cost = x if s.cost is None else s.cost + x
        codes = self._codes
        c = u.http_status
        n = codes.get(c)
        if n is None:
            c = c if len(codes) < MAX_CODES else OTHER
            codes[c] = codes.get(c, 0) + 1
        else:
            codes[c] = n + 1

    def _new_slot(self, alias, provider, model, status) -> _Slot:
        key = (alias, provider, model, status)
        if len(self._slots) >= self.max_series:
            key = (OTHER, provider, OTHER, status)
            s = self._slots.get(key)
            if s is not None:
                return s
        s = self._slots[key] = _Slot()
        return s

    def _new_overhead(self, dialect) -> list:
        if len(self._overhead) >= MAX_DIALECTS:
            dialect = OTHER
        h = self._overhead.get(dialect)
        if h is None:
            h = self._overhead[dialect] = _hist(len(OVERHEAD_BUCKETS))
        return h

    # ---- other workers (supervisor.py) --------------------------------------------------------

    def snapshot(self) -> dict:
        """Everything counted, as JSON-able data (a worker's file for the others' scrapes), with
        the unlabelled gauges' current values."""
        slots = [[*k, s.requests, s.attempts, s.failovers, s.input, s.output, s.cached, s.cache_write,
                  s.reasoning, s.cost, s.duration, s.ttft, s.upstream] for k, s in self._slots.items()]
        gauges = {}
        for name, _, label_names, fn in self._gauges:
            if not label_names:
                try:
                    gauges[name] = float(fn())
                except Exception:
                    pass
        return {"slots": slots, "overhead": [[d, h] for d, h in self._overhead.items()],
                "codes": [[c, n] for c, n in self._codes.items()], "gauges": gauges}

    def absorb(self, snap: dict) -> None:
        """Add a snapshot's counts to these (its gauges are not counts: see `render`)."""
        for row in snap.get("slots", ()):
            k = tuple(row[:4])
            s = self._slots.get(k)
            if s is None:
                s = self._slots[k] = _Slot()
            s.requests += row[4]
            s.attempts += row[5]
            s.failovers += row[6]
            for attr, v in zip(("input", "output", "cached", "cache_write", "reasoning", "cost"), row[7:13]):
                if v is not None:
                    old = getattr(s, attr)
                    setattr(s, attr, v if old is None else old + v)
            for h, add in zip((s.duration, s.ttft, s.upstream), row[13:16]):
                for i, v in enumerate(add):
                    h[i] += v
        for d, add in snap.get("overhead", ()):
            h = self._overhead.get(d)
            if h is None:
                h = self._overhead[d] = _hist(len(OVERHEAD_BUCKETS))
            for i, v in enumerate(add):
                h[i] += v
        for c, n in snap.get("codes", ()):
            self._codes[c] = self._codes.get(c, 0) + n

    def targets(self, others: list | tuple = ()) -> list[dict]:
        """Cumulative counts per (provider, model) — requests, errors, and the duration and TTFT
        histograms (`LATENCY_BUCKETS`, ms) — with the other workers' snapshots added: O(label
        sets), no store query (the dashboard's Providers page takes rates from two reads)."""
        src = self
        if others:
            src = Metrics(max_series=self.max_series)
            src.absorb(self.snapshot())
            for snap in others:
                src.absorb(snap)
        out: dict[tuple, dict] = {}
        for (alias, provider, model, status), sl in src._slots.items():
            if provider is None:
                continue
            row = out.get((provider, model))
            if row is None:
                n = len(LATENCY_BUCKETS) + 2
                row = out[(provider, model)] = {"provider": provider, "model": model, "requests": 0, "errors": 0,
                                                "duration": [0] * n, "ttft": [0] * n}
            row["requests"] += sl.requests
            if status != "success":
                row["errors"] += sl.requests
            for name, h in (("duration", sl.duration), ("ttft", sl.ttft)):
                acc = row[name]
                for i, v in enumerate(h):
                    acc[i] += v
        return list(out.values())

    # ---- scrape time -----------------------------------------------------------------------

    def render(self, others: list | tuple = ()) -> bytes:
        """The text exposition (format 0.0.4) of every family, then the gauges that could be read.
        ``others``: the other workers' snapshots, added to these counts; their unlabelled gauges
        (open connections, active streams) are added to this worker's values."""
        if others:
            merged = Metrics(max_series=self.max_series)
            merged.absorb(self.snapshot())
            for snap in others:
                merged.absorb(snap)
            families = merged._families()
        else:
            families = self._families()
        out: list[str] = []
        for name, kind, help, label_names, rows in families:
            if kind == "histogram":
                _write_histogram(out, name, help, label_names, *rows)
            else:
                _write_family(out, name, kind, help, label_names, rows)
        for name, help, label_names, fn in self._gauges:
            if others and not label_names:
                extra = sum(float(snap.get("gauges", {}).get(name, 0.0)) for snap in others)
                out.extend(self._read_gauge(name, help, label_names, lambda fn=fn, extra=extra: fn() + extra))
            else:
                out.extend(self._read_gauge(name, help, label_names, fn))
        return "".join(out).encode("utf-8", "replace")

    def _families(self) -> Iterator[tuple]:
        """Sum the slots into each family's label sets → (name, type, help, label_names, rows)."""
        requests: dict[tuple, int] = {}
        attempts: dict[tuple, int] = {}
        failovers: dict[tuple, int] = {}
        tokens: dict[tuple, int] = {}
        cost: dict[tuple, float] = {}
        duration: dict[tuple, list] = {}
        ttft: dict[tuple, list] = {}
        upstream: dict[tuple, list] = {}
        for (alias, provider, model, status), s in self._slots.items():
            alias, provider, model = _label(alias), _label(provider), _label(model)
            _add(requests, (alias, provider, _label(status)), s.requests)
            _add(attempts, (alias,), s.attempts)
            _add(failovers, (alias,), s.failovers)
            for kind, n in zip(TOKEN_TYPES, (s.input, s.output, s.cached, s.cache_write, s.reasoning)):
                if n is not None:
                    _add(tokens, (alias, provider, model, kind), n)
            if s.cost is not None:
                _add(cost, (alias, provider, model), s.cost)
            _merge(duration, (alias, provider), s.duration)
            _merge(ttft, (alias, provider), s.ttft)
            _merge(upstream, (provider,), s.upstream)
        codes: dict[tuple, int] = {}
        for code, n in self._codes.items():
            _add(codes, (_label(code),), n)
        overhead: dict[tuple, list] = {}
        for dialect, h in self._overhead.items():
            _merge(overhead, (_label(dialect),), h)

        c, h = "counter", "histogram"
        yield ("plexus_requests_total", c, "Finished client requests, by outcome.",
               ("alias", "provider", "status"), requests)
        yield ("plexus_http_responses_total", c, "Client requests by the HTTP status they got.",
               ("code",), codes)
        yield ("plexus_attempts_total", c, "Upstream attempts made for client requests.", ("alias",), attempts)
        yield ("plexus_failovers_total", c, "Attempts beyond the first (failovers to another target).",
               ("alias",), failovers)
        yield ("plexus_tokens_total", c, "Tokens reported by providers, by type.",
               ("alias", "provider", "model", "type"), tokens)
        yield ("plexus_cost_dollars_total", c, "Cost of requests whose price is known, in dollars.",
               ("alias", "provider", "model"), cost)
        yield ("plexus_request_duration_seconds", h, "Client request duration.",
               ("alias", "provider"), (LATENCY_BUCKETS, duration))
        yield ("plexus_time_to_first_token_seconds", h, "Time to the first token of an answer.",
               ("alias", "provider"), (LATENCY_BUCKETS, ttft))
        yield ("plexus_upstream_latency_seconds", h, "Request duration minus the gateway's own time.",
               ("provider",), (LATENCY_BUCKETS, upstream))
        yield ("plexus_gateway_overhead_seconds", h,
               "Time spent in Plexus per request, excluding the upstream wait.",
               ("dialect",), (OVERHEAD_BUCKETS, overhead))

    def _read_gauge(self, name: str, help: str, label_names: tuple, fn: Callable) -> list[str]:
        """One gauge's lines, or none when its callable fails or answers in the wrong shape."""
        try:
            value = fn()
            if label_names:
                lines = [_head(name, "gauge", help)]
                for values, v in list(value.items())[:self.max_series]:
                    if len(values) != len(label_names):
                        raise ValueError(f"label values {values!r} do not match {label_names!r}")
                    lines.append(f"{name}{{{_labels(label_names, values)}}} {_num(v)}\n")
            else:
                lines = [_head(name, "gauge", help), f"{name} {_num(value)}\n"]
        except Exception:
            if name not in self._failing:
                self._failing.add(name)
                log.warning("metrics: gauge %s failed; left out until it works", name, exc_info=True)
            return []
        self._failing.discard(name)
        return lines


# ---- gauge specs -----------------------------------------------------------------------------

_BUILTIN = {"plexus_requests", "plexus_http_responses", "plexus_attempts", "plexus_failovers",
            "plexus_tokens", "plexus_cost_dollars", "plexus_request_duration_seconds",
            "plexus_time_to_first_token_seconds", "plexus_upstream_latency_seconds",
            "plexus_gateway_overhead_seconds"}


def _check_gauge(name: str, spec: tuple) -> tuple:
    """Validate one gauge spec once, at startup → (name, help, label_names, fn)."""
    if len(spec) == 2:
        (help, fn), label_names = spec, ()
    elif len(spec) == 3:
        help, label_names, fn = spec
        label_names = tuple(label_names)
    else:
        raise ValueError(f"gauge {name!r}: expected (help, fn) or (help, label_names, fn)")
    base = name[:-6] if name.endswith("_total") else name
    if not _NAME.match(name) or base in _BUILTIN or any(name.startswith(b + "_") for b in _BUILTIN):
        raise ValueError(f"gauge {name!r}: not a valid metric name, or one Plexus already uses")
    if any(not _LABEL.match(x) or x.startswith("__") or x == "le" for x in label_names) \
            or len(set(label_names)) != len(label_names):
        raise ValueError(f"gauge {name!r}: bad label names {label_names!r}")
    if not callable(fn):
        raise ValueError(f"gauge {name!r}: {fn!r} is not callable")
    return name, str(help), label_names, fn


# ---- aggregation -----------------------------------------------------------------------------

def _label(v) -> str:
    return "" if v is None else str(v)


def _add(d: dict, key: tuple, n) -> None:
    d[key] = d.get(key, 0) + n


def _merge(d: dict, key: tuple, h: list) -> None:
    """Add histogram `h` into d[key], unless nothing was observed in it."""
    if not any(h[:-1]):
        return
    acc = d.get(key)
    if acc is None:
        d[key] = list(h)
    else:
        for i, x in enumerate(h):
            acc[i] += x


# ---- the text format (https://prometheus.io/docs/instrumenting/exposition_formats/) -----------

def _escape(v: str) -> str:
    """A label value: backslash, double quote and line feed escaped."""
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: tuple, values: tuple) -> str:
    return ",".join(f'{k}="{_escape(str(v))}"' for k, v in zip(names, values))


def _head(name: str, kind: str, help: str) -> str:
    help = help.replace("\\", "\\\\").replace("\n", "\\n")
    return f"# HELP {name} {help}\n# TYPE {name} {kind}\n"


def _num(v) -> str:
    if type(v) is int:
        return str(v)
    v = float(v)
    if v != v:
        return "NaN"
    if v in (math.inf, -math.inf):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


def _write_family(out: list, name: str, kind: str, help: str, label_names: tuple, rows: dict) -> None:
    out.append(_head(name, kind, help))
    for key in sorted(rows):
        out.append(f"{name}{{{_labels(label_names, key)}}} {_num(rows[key])}\n")


_LE: dict[tuple, tuple] = {}


def _write_histogram(out: list, name: str, help: str, label_names: tuple, bounds: tuple, rows: dict) -> None:
    """Per-bucket counts in ms → cumulative `_bucket` lines with `le` in seconds, `_sum`, `_count`."""
    les = _LE.get(bounds)
    if les is None:
        les = _LE[bounds] = tuple(f'le="{b / 1000.0!r}"' for b in bounds) + ('le="+Inf"',)
    out.append(_head(name, "histogram", help))
    for key in sorted(rows):
        h = rows[key]
        labels = _labels(label_names, key)
        pre = f"{name}_bucket{{{labels}," if labels else f"{name}_bucket{{"
        total = 0
        for le, n in zip(les, h):
            total += n
            out.append(f"{pre}{le}}} {total}\n")
        labels = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{labels} {_num(h[-1] / 1000.0)}\n{name}_count{labels} {total}\n")
