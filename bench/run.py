"""Bench orchestration: start everything, probe, measure each scenario every way, judge.

Theory: one run = one machine state, so the baseline, the gateway and the reference are measured
in the same run, scenario by scenario: DIRECT (load generator -> mock), THROUGH Plexus (load
generator -> Plexus -> mock) and, for the passthrough rows when nginx is installed, THROUGH nginx
(load generator -> nginx -> mock). Before measuring, one probe request per scenario and way. There
is no "not yet": every scenario exists, so a probe that fails (a status >= 400, a broken body, a
dropped connection, a timeout) or any error while measuring makes the scenario FAILED, and any
failed scenario makes the exit status 1.

A run: certificates (tlscerts.py) -> mock on a plain and a TLS port -> Plexus (pinned) -> nginx
(pinned, when installed) -> the scenarios in table order (measure.py) -> metrics and budget
verdicts (metrics.py). For a TLS scenario the mock's count of accepted TLS connections (GET
/stats) is read around each way's measured run: the handshakes that way cost. Before the
large-body scenario (S7) the gateway's peak RSS is noted: the RSS budget is about ordinary
traffic, a 20 MB body legitimately needs its own memory (reported separately).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from . import loadgen, procs, report, stack
from .measure import PACED_STREAM_S, Side, Target, measure, measure_large
from .metrics import compute_metrics, judge_budgets
from .scenarios import CLOSED, LARGE, OPEN, PACED, SCENARIOS, Scenario, Wire, direct_wire, \
    large_wires, plexus_wire

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
    nginx: bool = True
    gateway_module: str = "plexus"
    soak: float = 0.0
    soak_interval: float = 10.0


@dataclass
class Result:
    key: str
    title: str
    kind: str
    status: str = "ok"  # ok | failed | skipped | direct only
    note: str = ""
    direct: Side | None = None
    plexus: Side | None = None
    nginx: Side | None = None
    metrics: dict = field(default_factory=dict)


@dataclass
class Run:
    options: Options
    machine: dict
    results: list[Result] = field(default_factory=list)
    gateway: dict = field(default_factory=dict)  # rss_start_mib, peak_rss_mib, error, ...
    nginx: dict = field(default_factory=dict)  # status ok|absent|disabled|failed, note, version
    tls: dict = field(default_factory=dict)  # status ok|none, how (trustme|openssl), note
    budgets: list[dict] = field(default_factory=list)
    soak: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    started: str = ""


_STATS = Wire(b"GET /stats HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n", None, b'"tls"')


async def _tls_accepted(env: stack.Env) -> int:
    r = await loadgen.probe("127.0.0.1", env.mock_port, _STATS, 10.0)
    return orjson.loads(r.body)["tls"] if r.ok else -1


def _ways(s: Scenario, env: stack.Env) -> list[tuple[str, Target, object]]:
    """(attribute of Result, target, wire or {name: wire}) for each way the scenario is measured."""
    def wires(port: int, direct: bool):
        if s.kind == LARGE:
            return {"small": direct_wire(s, port) if direct else plexus_wire(s, port),
                    **large_wires(port, direct)}
        return direct_wire(s, port) if direct else plexus_wire(s, port)

    port = env.tls_port if s.tls else env.mock_port
    ways = [("direct", Target("direct", port, env.client_tls if s.tls else None),
             wires(port, True))]
    if env.gw_port is not None:
        ways.append(("plexus", Target("Plexus", env.gw_port, None, env.gateway_sample()),
                     wires(env.gw_port, False)))
    if s.nginx and env.ng_port is not None:
        port = env.ng_tls_port if s.tls else env.ng_port
        ways.append(("nginx", Target("nginx", port, None, env.nginx_sample()), wires(port, True)))
    return ways


async def _bench(run: Run, env: stack.Env) -> None:
    o = run.options
    table = {s.key: s for s in SCENARIOS}
    for s in (s for s in SCENARIOS if not o.only or s.key in o.only):
        r = Result(s.key, s.title, s.kind)
        run.results.append(r)
        if s.tls and not env.tls_port:
            r.status, r.note = "skipped", run.tls.get("note", "no TLS")
            continue
        if s.kind == LARGE and env.gw_pid:
            mem = procs.memory_kib(procs.process_tree(env.gw_pid))
            run.gateway["peak_rss_mib"] = mem["VmHWM"] / 1024
        ways = _ways(s, env)
        probes = [(t, name, loadgen.probe("127.0.0.1", t.port, w, o.timeout, tls=t.tls))
                  for _, t, ws in ways
                  for name, w in (ws.items() if isinstance(ws, dict) else [("", ws)])]
        answers = await asyncio.gather(*(p for _, _, p in probes))  # at once: paced ones last 2 s
        bad = [(t, name, a) for (t, name, _), a in zip(probes, answers) if not a.ok]
        if bad:
            t, name, a = bad[0]
            r.status = "failed"
            r.note = (f"probe {t.name}{' ' + name if name else ''}: {a.reason}; "
                      f"{a.body[:200].decode(errors='replace')}")
            continue
        for attr, t, w in ways:
            _progress(f"{s.key} {t.name}")
            before = await _tls_accepted(env) if s.tls else 0
            side = await (measure_large(t, w["small"], {k: v for k, v in w.items()
                                                        if k != "small"}, o)
                          if s.kind == LARGE else measure(s, t, w, o))
            if s.tls:
                r.metrics.setdefault("tls_handshakes", {})[t.name] = \
                    await _tls_accepted(env) - before
            setattr(r, attr, side)
            if side.errors:
                r.status = "failed"
                r.note += f"{'; ' if r.note else ''}{side.errors} errors {t.name}"
        if r.plexus is None and r.status == "ok":
            r.status = "direct only"
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
    r = Result("soak", f"soak mix of {len(wires)} scenarios", CLOSED,
               "failed" if live.errors else "ok")
    r.plexus = Side(requests=live.requests, errors=live.errors,
                    error_samples=list(live.error_samples))
    run.results.append(r)


def _estimate(o: Options) -> float:
    total = 40.0
    for s in SCENARIOS:
        if o.only and s.key not in o.only:
            continue
        if s.kind == OPEN:
            one = min(o.warmup, 1.0) + o.open_duration
        elif s.kind == PACED:
            one = max(o.duration, 0.5) + PACED_STREAM_S + 0.5
        elif s.kind == LARGE:
            one = 3 * (o.warmup + o.duration + 5.0)
        else:
            one = o.warmup + o.duration
        total += (3 if s.nginx else 2) * (one + 2.0)
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
    env = stack.Env()
    with procs.Children() as kids, tempfile.TemporaryDirectory(prefix="plexus-bench-") as tmp:
        certs = stack.certificates(tmp, run)
        why = stack.start_mock(kids, env, certs, bench_cpus, bound, ROOT)
        if not why and not o.direct_only:
            why = stack.start_gateway(kids, env, run, tmp, gw_cpus, ROOT)
            if not why and not o.soak:
                stack.start_nginx(kids, env, run, tmp, gw_cpus)
        if why:
            run.gateway["error"] = why
            return run, 2
        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(asyncio.wait_for(
                    _soak(run, env.gw_port, env.gw_pid) if o.soak and env.gw_pid else
                    _bench(run, env), bound))
        except asyncio.TimeoutError:
            run.gateway["error"] = f"bench exceeded its time bound ({bound:.0f} s)"
            code = 2
        gw = run.gateway.pop("proc", None)
        log_path = run.gateway.pop("log", "")
        if env.gw_pid:
            mem = procs.memory_kib(procs.process_tree(env.gw_pid))
            key = "peak_rss_large_mib" if "peak_rss_mib" in run.gateway else "peak_rss_mib"
            run.gateway[key] = mem["VmHWM"] / 1024
            run.gateway["rss_end_mib"] = mem["VmRSS"] / 1024
            if gw is not None and gw.poll() is not None:
                run.gateway["error"] = (f"gateway exited ({gw.returncode}); log: "
                                        f"{stack.tail(log_path)}")
                code = 2
    judge_budgets(run)
    run.seconds = time.monotonic() - t_start
    if run.nginx.get("status") == "failed" or any(r.status == "failed" for r in run.results):
        code = code or 1
    return run, code
