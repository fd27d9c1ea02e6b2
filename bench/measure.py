"""Measuring one scenario one way (direct, through Plexus, through nginx): drivers -> a Side.

Theory: every side of a scenario is measured by the same driver with the same settings, only the
target differs (a port, TLS or not, and which process's CPU to sample), so the sides can be set
next to each other. What a Side holds:
- throughput, latency and TTFB percentiles, errors (see loadgen.py for what counts);
- cpu_ms_per_req: the sampled process's utime+stime over the measured window / responses
  completed in it (gateway or nginx worker; none for direct);
- reads_per_response: the load generator's reads per response (data_received calls): a stream
  the mock writes one event per segment arrives in about one read per event, so this shows how
  the bytes really arrived;
- proc_reads: read() syscalls of the sampled process in the window (/proc/<pid>/io syscr; uvloop
  reads sockets with read(), so for Plexus that is its socket reads; nginx uses recv(), which
  syscr does not count: None there);
- phases (S7 only): the small requests' p50/p99 and longest gap alone and beside each kind of
  large traffic.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from . import loadgen
from .scenarios import LARGE_BODY_BYTES, LARGE_CLIENTS, OPEN, PACED, Scenario, Wire

PACED_STREAM_S = 2.0  # 100 events, 20 ms apart


@dataclass
class Target:
    name: str  # "direct" | "Plexus" | "nginx"
    port: int
    tls: object = None  # ssl.SSLContext when the load generator speaks TLS to this port
    sample: object = None  # () -> (cpu seconds, syscr or None) of the process measured


@dataclass
class Side:
    """One scenario measured one way."""

    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    ttfb_p50_ms: float | None = None
    ttfb_p99_ms: float | None = None
    samples: int = 0
    requests: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    cpu_ms_per_req: float | None = None
    completed: int = 0  # responses completed inside the window
    reads_per_response: float | None = None
    proc_reads_per_response: float | None = None
    connections: int = 0  # connections the load generator opened (probe excluded)
    phases: dict = field(default_factory=dict)  # S7: phase -> small-request figures


def _ms(v: float | None) -> float | None:
    return None if v is None else v * 1000.0


def side_of(res: loadgen.RunResult) -> Side:
    window = res.t_end - res.t_start
    done = res.completed_in_window
    s = Side(rps=done / window if window > 0 else None,
             p50_ms=_ms(loadgen.percentile(res.latencies, 50)),
             p99_ms=_ms(loadgen.percentile(res.latencies, 99)),
             ttfb_p50_ms=_ms(loadgen.percentile(res.ttfbs, 50)),
             ttfb_p99_ms=_ms(loadgen.percentile(res.ttfbs, 99)),
             samples=len(res.latencies), requests=res.requests, errors=res.errors,
             error_samples=list(res.error_samples), completed=done,
             connections=res.connections)
    if res.ok_count:
        s.reads_per_response = res.reads / res.ok_count
    if res.mark_start is not None and res.mark_end is not None and done:
        (c0, r0), (c1, r1) = res.mark_start, res.mark_end
        s.cpu_ms_per_req = (c1 - c0) * 1000.0 / done
        if r0 is not None and r1 is not None:
            s.proc_reads_per_response = (r1 - r0) / done
    return s


async def measure(s: Scenario, t: Target, wire: Wire, o) -> Side:
    if s.kind == OPEN:
        res = await loadgen.open_loop("127.0.0.1", t.port, wire, rate=s.rate,
                                      warmup=min(o.warmup, 1.0), duration=o.open_duration,
                                      timeout=o.timeout, sample=t.sample, tls=t.tls)
    elif s.kind == PACED:
        # Each response lasts ~2 s: no warm-up round (the probe and the earlier scenarios warmed
        # the gateway), every request started in the window is recorded, and the first sends
        # are spread over the window (at most one stream length) so that TTFB is not measured
        # on a burst of simultaneous requests.
        window = max(o.duration, 0.5)
        res = await loadgen.closed_loop("127.0.0.1", t.port, wire, concurrency=o.concurrency,
                                        warmup=0.0, duration=window, timeout=o.timeout,
                                        sample=t.sample, stagger=min(window, PACED_STREAM_S),
                                        tls=t.tls)
    else:
        res = await loadgen.closed_loop("127.0.0.1", t.port, wire, concurrency=o.concurrency,
                                        warmup=o.warmup, duration=o.duration, timeout=o.timeout,
                                        sample=t.sample, tls=t.tls)
    side = side_of(res)
    if s.kind == PACED:
        side.rps = None  # ~2 s responses: a throughput over a few seconds means nothing
    return side


def longest_gap(res: loadgen.RunResult) -> float | None:
    """Longest stretch of the measured window in which no small request completed (seconds)."""
    a, b = res.t_start, res.t_end
    if b <= a:
        return None
    times = sorted(t for t in res.done_times if a <= t <= b)
    edges = [a, *times, b]
    return max(y - x for x, y in zip(edges, edges[1:]))


async def measure_large(t: Target, small: Wire, large: dict[str, Wire], o) -> Side:
    """S7: the small closed loop alone, then beside LARGE_CLIENTS connections sending each kind
    of large request back to back (the large loop starts with the small one; its warm-up covers
    the first large bodies). Side.p50/p99 are the small requests' figures with no large traffic;
    Side.phases has every phase, errors of small and large requests all count."""
    side = Side()
    for phase in ("none", *large):
        small_task = loadgen.closed_loop("127.0.0.1", t.port, small, concurrency=o.concurrency,
                                         warmup=o.warmup, duration=o.duration,
                                         timeout=o.timeout, tls=t.tls)
        big = None
        if phase != "none":
            big = loadgen.closed_loop("127.0.0.1", t.port, large[phase],
                                      concurrency=LARGE_CLIENTS, warmup=0.0,
                                      duration=o.warmup + o.duration, timeout=o.timeout,
                                      tls=t.tls)
        runs = await asyncio.gather(small_task, *([big] if big is not None else []))
        res = runs[0]
        row = {"p50_ms": _ms(loadgen.percentile(res.latencies, 50)),
               "p99_ms": _ms(loadgen.percentile(res.latencies, 99)),
               "max_ms": _ms(max(res.latencies, default=None)),
               "gap_ms": _ms(longest_gap(res)), "small_done": res.completed_in_window,
               "small_rps": res.completed_in_window / max(res.t_end - res.t_start, 1e-9),
               "large_done": 0, "large_mib_s": None}
        for r in runs:
            side.requests += r.requests
            side.errors += r.errors
            side.error_samples += r.error_samples[:3 - len(side.error_samples)]
        if len(runs) > 1:  # large bodies completed inside the small requests' window
            a, b = res.t_start, res.t_end
            row["large_done"] = sum(1 for x in runs[1].done_times if a <= x <= b)
            row["large_mib_s"] = row["large_done"] * LARGE_BODY_BYTES / 2 ** 20 / max(b - a, 1e-9)
        side.phases[phase] = row
        if phase == "none":
            side.p50_ms, side.p99_ms = row["p50_ms"], row["p99_ms"]
            side.rps = res.completed_in_window / max(res.t_end - res.t_start, 1e-9)
    return side
