"""Bench orchestration: start the mock and Plexus, probe, measure each scenario both ways, compute.

Theory: one run = one machine state, so the baseline and the gateway are measured in the same run,
scenario by scenario, DIRECT (load generator -> mock) then THROUGH Plexus (load generator ->
Plexus -> mock). Before measuring, one probe request per scenario each way: a failing direct probe
is a bench bug (the scenario fails); a failing Plexus probe on a translated scenario means the
translation is not built yet, reported as "not yet" (with the answer's first bytes), not a failure.

Metrics (all in results[...].metrics; budgets in scenarios.BUDGETS name these keys):
  rps                completed responses inside the measured window / window length
  p50/p99            nearest-rank percentiles of latency (send -> last byte); for OPEN scenarios
                     from the scheduled send time; for PACED scenarios also of TTFB
  ratio              Plexus / direct, for req/s, p50 and p99
  added_p50/p99_ms   p50(Plexus) - p50(direct), p99(Plexus) - p99(direct)  (difference of
                     percentiles); added_ttfb_p50/p99_ms the same for time to first body byte
  cpu_ms_per_req     gateway utime+stime (process tree) between the window's start and end,
                     / responses completed in the window
  cpu_us_per_event   (cpu_ms_per_req(S) - cpu_ms_per_req(base of S)) * 1000 / upstream events per
                     response (100): the streaming cost over the same request without streaming
  gateway_cpu_util   cpu_ms_per_req * rps / 1000: share of one core the gateway used in the
                     window (well below 1 in a closed loop = the gateway was not the bottleneck)
  peak_rss_mib       gateway VmHWM at the end of the run
  idle_cpu_ms_per_s  gateway CPU while idle right after start (ticks of 10 ms: coarse)
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import loadgen, procs, report
from .scenarios import BUDGETS, CLOSED, OPEN, PACED, SCENARIOS, Scenario, direct_wire, \
    plexus_config, plexus_wire

PACED_STREAM_S = 2.0  # 100 events, 20 ms apart
ROOT = str(Path(__file__).resolve().parent.parent)  # repository root: where `-m bench` resolves


@dataclass
class Options:
    quick: bool = False
    duration: float = 5.0
    warmup: float = 1.0
    open_duration: float = 10.0
    concurrency: int = 16
    timeout: float = 30.0
    only: tuple[str, ...] = ()
    direct_only: bool = False
    pin: bool = True
    gateway_module: str = "plexus"
    soak: float = 0.0
    soak_interval: float = 10.0


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


@dataclass
class Result:
    key: str
    title: str
    kind: str
    status: str = "ok"  # ok | not yet | failed | direct only
    note: str = ""
    direct: Side | None = None
    plexus: Side | None = None
    metrics: dict = field(default_factory=dict)


@dataclass
class Run:
    options: Options
    machine: dict
    results: list[Result] = field(default_factory=list)
    gateway: dict = field(default_factory=dict)  # rss_start_mib, peak_rss_mib, error
    budgets: list[dict] = field(default_factory=list)
    soak: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    started: str = ""


def _ms(v: float | None) -> float | None:
    return None if v is None else v * 1000.0


def _side(res: loadgen.RunResult) -> Side:
    window = res.t_end - res.t_start
    done = res.completed_in_window
    s = Side(rps=done / window if window > 0 else None,
             p50_ms=_ms(loadgen.percentile(res.latencies, 50)),
             p99_ms=_ms(loadgen.percentile(res.latencies, 99)),
             ttfb_p50_ms=_ms(loadgen.percentile(res.ttfbs, 50)),
             ttfb_p99_ms=_ms(loadgen.percentile(res.ttfbs, 99)),
             samples=len(res.latencies), requests=res.requests, errors=res.errors,
             error_samples=list(res.error_samples))
    if res.mark_start is not None and res.mark_end is not None and done:
        s.cpu_ms_per_req = (res.mark_end - res.mark_start) * 1000.0 / done
    return s


async def _measure(s: Scenario, port: int, wire, o: Options, sample) -> Side:
    if s.kind == OPEN:
        res = await loadgen.open_loop("127.0.0.1", port, wire, rate=s.rate,
                                      warmup=min(o.warmup, 1.0), duration=o.open_duration,
                                      timeout=o.timeout, sample=sample)
    elif s.kind == PACED:
        # Each response lasts ~2 s: no warm-up round (the probe and the earlier scenarios warmed
        # the gateway), every request started in the window is recorded, and the first sends
        # are spread over the window (at most one stream length) so that TTFB is not measured
        # on a burst of simultaneous requests.
        window = max(o.duration, 0.5)
        res = await loadgen.closed_loop("127.0.0.1", port, wire, concurrency=o.concurrency,
                                        warmup=0.0, duration=window, timeout=o.timeout,
                                        sample=sample, stagger=min(window, PACED_STREAM_S))
    else:
        res = await loadgen.closed_loop("127.0.0.1", port, wire, concurrency=o.concurrency,
                                        warmup=o.warmup, duration=o.duration, timeout=o.timeout,
                                        sample=sample)
    side = _side(res)
    if s.kind == PACED:
        side.rps = None  # ~2 s responses: a throughput over a few seconds means nothing
    return side


def _ratio(a, b):
    return a / b if a is not None and b else None


def _diff(a, b):
    return a - b if a is not None and b is not None else None


def compute_metrics(results: list[Result], scenarios: dict[str, Scenario]) -> None:
    by_key = {r.key: r for r in results}
    for r in results:
        d, p, m = r.direct, r.plexus, r.metrics
        if d is None or p is None:
            continue
        m["rps_ratio"] = _ratio(p.rps, d.rps)
        m["p50_ratio"] = _ratio(p.p50_ms, d.p50_ms)
        m["p99_ratio"] = _ratio(p.p99_ms, d.p99_ms)
        m["added_p50_ms"] = _diff(p.p50_ms, d.p50_ms)
        m["added_p99_ms"] = _diff(p.p99_ms, d.p99_ms)
        m["added_ttfb_p50_ms"] = _diff(p.ttfb_p50_ms, d.ttfb_p50_ms)
        m["added_ttfb_p99_ms"] = _diff(p.ttfb_p99_ms, d.ttfb_p99_ms)
        m["cpu_ms_per_req"] = p.cpu_ms_per_req
        if p.cpu_ms_per_req is not None and p.rps is not None:
            m["gateway_cpu_util"] = p.cpu_ms_per_req * p.rps / 1000.0  # 1.0 = one core busy
    for r in results:
        s = scenarios[r.key]
        base = by_key.get(s.base) if s.base else None
        if base is None or not s.events:
            continue
        a, b = r.metrics.get("cpu_ms_per_req"), base.metrics.get("cpu_ms_per_req")
        if a is not None and b is not None:
            r.metrics["cpu_us_per_event"] = (a - b) * 1000.0 / s.events


def judge_budgets(run: Run) -> None:
    """Each budget line -> met / not met / not yet. A per-event line also needs its base scenario;
    errors through Plexus make a line "not met" whatever its number."""
    by_key = {r.key: r for r in run.results}
    table = {s.key: s for s in SCENARIOS}
    for b in BUDGETS:
        line = {"label": b.label, "limit": b.limit, "unit": b.unit, "value": None, "note": ""}
        run.budgets.append(line)
        if b.scenario is None:
            line["value"] = run.gateway.get(b.metric)
            line["status"] = "not yet" if line["value"] is None else (
                "met" if line["value"] <= b.limit else "not met")
            continue
        involved = [by_key.get(b.scenario)]
        s = table.get(b.scenario)
        if b.metric == "cpu_us_per_event" and s is not None and s.base:
            involved.append(by_key.get(s.base))
        value = involved[0].metrics.get(b.metric) if involved[0] is not None else None
        line["value"] = value
        missing = [k for k, r in zip((b.scenario, s.base if s else None), involved) if r is None]
        if missing:
            line["status"], line["note"] = "not yet", "not run: " + ", ".join(missing)
        elif any(r.status == "not yet" for r in involved):
            line["status"], line["note"] = "not yet", "translation not available yet"
        elif any(r.status == "failed" for r in involved):
            line["status"], line["note"] = "not met", "scenario failed"
        elif any(r.plexus is not None and r.plexus.errors for r in involved):
            line["status"], line["note"] = "not met", "errors through Plexus"
        elif value is None:
            line["status"] = "not yet"
        else:
            line["status"] = "met" if value <= b.limit else "not met"


async def _bench(run: Run, mock_port: int, gw_port: int | None, gw_pid: int | None) -> None:
    o = run.options
    table = {s.key: s for s in SCENARIOS}
    chosen = [s for s in SCENARIOS if not o.only or s.key in o.only]
    sample = (lambda: procs.cpu_seconds(procs.process_tree(gw_pid))) if gw_pid else None
    for s in chosen:
        r = Result(s.key, s.title, s.kind)
        run.results.append(r)
        dw = direct_wire(s, mock_port)
        pw = plexus_wire(s, gw_port) if gw_port is not None else None
        probes = [loadgen.probe("127.0.0.1", mock_port, dw, o.timeout)]
        if pw is not None:  # both at once: a paced probe lasts ~2 s
            probes.append(loadgen.probe("127.0.0.1", gw_port, pw, o.timeout))
        probes = await asyncio.gather(*probes)
        probe = probes[0]
        if not probe.ok:
            r.status, r.note = "failed", f"direct probe: {probe.reason} {probe.body[:200]!r}"
            continue
        if pw is not None:
            probe = probes[1]
            if not probe.ok:
                # an error answer (4xx/5xx) to a translated request = translation not built yet;
                # anything else (a broken 2xx, a dropped connection, a timeout) is a failure
                r.status = "not yet" if s.translated and probe.status >= 400 else "failed"
                r.note = (f"probe through Plexus: {probe.reason}; "
                          f"{probe.body[:200].decode(errors='replace')}")
                continue
        _progress(f"{s.key} direct")
        r.direct = await _measure(s, mock_port, dw, o, None)
        if gw_port is None:
            r.status = "direct only"
            continue
        _progress(f"{s.key} through Plexus")
        r.plexus = await _measure(s, gw_port, pw, o, sample)
    compute_metrics(run.results, table)


_T0 = time.monotonic()


def _progress(what: str) -> None:
    print(f"bench: [{time.monotonic() - _T0:5.1f} s] {what}", file=sys.stderr, flush=True)


async def _soak(run: Run, gw_port: int, gw_pid: int) -> None:
    """Constant closed-loop load (a mix of every working CLOSED scenario) through Plexus for
    o.soak seconds; every o.soak_interval seconds one row: req/s, errors, VmRSS, VmHWM."""
    o = run.options
    wires = []
    for s in SCENARIOS:
        if s.kind != CLOSED or (o.only and s.key not in o.only):
            continue
        w = plexus_wire(s, gw_port)
        if (await loadgen.probe("127.0.0.1", gw_port, w, o.timeout)).ok:
            wires.append(w)
    if not wires:
        run.gateway["error"] = "soak: no scenario works through Plexus"
        return
    live = loadgen.RunResult()
    task = asyncio.ensure_future(loadgen.closed_loop(
        "127.0.0.1", gw_port, wires, concurrency=o.concurrency, warmup=0.0, duration=o.soak,
        timeout=o.timeout, record=False, result=live))
    t0 = last_t = time.monotonic()
    last_ok = last_err = 0
    while not task.done():
        await asyncio.wait({task}, timeout=o.soak_interval)
        now = time.monotonic()
        mem = procs.memory_kib(procs.process_tree(gw_pid))
        run.soak.append({"t_s": round(now - t0, 1),
                         "rps": (live.ok_count - last_ok) / max(now - last_t, 1e-9),
                         "errors": live.errors - last_err, "rss_mib": mem["VmRSS"] / 1024,
                         "hwm_mib": mem["VmHWM"] / 1024})
        last_ok, last_err, last_t = live.ok_count, live.errors, now
    task.result()
    r = Result("soak", f"soak mix of {len(wires)} scenarios", CLOSED, "ok")
    r.plexus = Side(requests=live.requests, errors=live.errors,
                    error_samples=list(live.error_samples))
    run.results.append(r)


def _estimate(o: Options) -> float:
    total = 30.0
    for s in SCENARIOS:
        if o.only and s.key not in o.only:
            continue
        if s.kind == OPEN:
            one = min(o.warmup, 1.0) + o.open_duration
        elif s.kind == PACED:
            one = max(o.duration, 0.5) + PACED_STREAM_S + 0.5
        else:
            one = o.warmup + o.duration
        total += 2 * (one + 2.0)
    return total + o.soak + o.timeout


def execute(o: Options) -> tuple[Run, int]:
    """Run the whole bench; -> (run, exit code). Children are always stopped before returning,
    and this process's CPU affinity is restored."""
    gw_cpus, bench_cpus, pin_desc = procs.plan_cpus(o.pin)
    run = Run(o, report.machine_info(pin_desc), started=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    if not bench_cpus:
        return _execute(o, run, gw_cpus, bench_cpus)
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, bench_cpus)
    try:
        return _execute(o, run, gw_cpus, bench_cpus)
    finally:
        os.sched_setaffinity(0, before)


def _execute(o: Options, run: Run, gw_cpus, bench_cpus) -> tuple[Run, int]:
    import uvloop

    bound = _estimate(o)
    t_start = time.monotonic()
    code = 0
    with procs.Children() as kids, tempfile.TemporaryDirectory(prefix="plexus-bench-") as tmp:
        mock = kids.start(procs.python_cmd("-m", "bench.mock_upstream", "--port", "0",
                                           "--max-seconds", str(int(bound + 120))),
                          cpus=bench_cpus, cwd=ROOT, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE)
        line = procs.read_ready_line(mock, 15.0)
        if not line.startswith("READY "):
            run.gateway["error"] = f"mock upstream did not start ({line!r})"
            return run, 2
        mock_port = int(line.split()[1])
        gw_port = gw_pid = None
        log_path = os.path.join(tmp, "gateway.log")
        if not o.direct_only:
            gw_port = procs.free_port()
            cfg = os.path.join(tmp, "plexus.yaml")
            with open(cfg, "w") as f:
                yaml.safe_dump(plexus_config(gw_port, mock_port), f, sort_keys=False)
            with open(log_path, "wb") as log:
                gw = kids.start(procs.python_cmd("-m", o.gateway_module, "--config", cfg, "--host",
                                                 "127.0.0.1", "--port", str(gw_port),
                                                 "--log-level", "warning"),
                                cpus=gw_cpus, cwd=ROOT, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log)
            why = procs.wait_health(gw, gw_port, 20.0)
            if why:
                run.gateway["error"] = why + "; log tail: " + _tail(log_path)
                return run, 2
            gw_pid = gw.pid
            mem = procs.memory_kib(procs.process_tree(gw_pid))
            run.gateway["rss_start_mib"] = mem["VmRSS"] / 1024
            idle = 0.3 if o.quick else 1.0  # CPU an idle gateway burns (timers, polling)
            c0 = procs.cpu_seconds(procs.process_tree(gw_pid))
            time.sleep(idle)
            c1 = procs.cpu_seconds(procs.process_tree(gw_pid))
            run.gateway["idle_cpu_ms_per_s"] = (c1 - c0) * 1000.0 / idle
        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(asyncio.wait_for(
                    _soak(run, gw_port, gw_pid) if o.soak and gw_pid else
                    _bench(run, mock_port, gw_port, gw_pid), bound))
        except asyncio.TimeoutError:
            run.gateway["error"] = f"bench exceeded its time bound ({bound:.0f} s)"
            code = 2
        if gw_pid:
            mem = procs.memory_kib(procs.process_tree(gw_pid))
            run.gateway["peak_rss_mib"] = mem["VmHWM"] / 1024
            run.gateway["rss_end_mib"] = mem["VmRSS"] / 1024
            if gw.poll() is not None:
                run.gateway["error"] = f"gateway exited ({gw.returncode}); log: {_tail(log_path)}"
                code = 2
    judge_budgets(run)
    run.seconds = time.monotonic() - t_start
    for r in run.results:
        if r.status == "failed" or any(side is not None and side.errors
                                       for side in (r.direct, r.plexus)):
            code = code or 1
    return run, code


def _tail(path: str, n: int = 1500) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return ""
    return data[-n:].decode(errors="replace").strip()
