"""Derived metrics of a bench run and the budget verdicts.

Theory: the raw sides (measure.Side) hold what was observed; everything the report compares is
computed here, in one place, from them. Keys of results[...].metrics (budgets name these keys):
  rps_ratio, p50_ratio, p99_ratio   Plexus / direct
  added_p50/p99_ms                  p50(Plexus) - p50(direct), p99 likewise (difference of
                                    percentiles); added_ttfb_p50/p99_ms the same for TTFB
  cpu_ms_per_req                    gateway utime+stime over the window / responses completed
  nginx_cpu_ms_per_req              the same for the nginx worker, when measured through nginx
  cpu_vs_nginx                      cpu_ms_per_req / nginx_cpu_ms_per_req
  cpu_us_per_event                  (cpu_ms_per_req(S) - cpu_ms_per_req(base of S)) * 1000 /
                                    upstream events per response (100): the streaming cost over
                                    the same request without streaming; nginx_cpu_us_per_event
                                    the same through nginx
  reads_per_event                   {side: load generator reads per upstream event}; plexus
                                    read() calls per upstream event in plexus_reads_per_event
                                    (both ~1 when every event arrives on its own)
  gateway_cpu_util                  cpu_ms_per_req * rps / 1000: share of one core the gateway
                                    used in the window (well below 1 in a closed loop = the
                                    gateway was not the bottleneck)
  tls_handshakes                    {side: TLS connections the mock accepted during the measured
                                    run}; tls_handshakes_per_conn = Plexus's count / the client
                                    connections it served (a pool that reconnects shows as ≫ 1)
Whole-run figures (run.gateway): peak_rss_mib (VmHWM before the large-body scenario, or at the
end), idle_cpu_ms_per_s.

Budget verdicts: met / not met / not run (its scenario was not selected) / no nginx: skipped (a
line relative to nginx when nginx is not installed). A failed scenario makes its lines "not met".
"""

from __future__ import annotations

from .scenarios import BUDGETS, SCENARIOS, Scenario


def _ratio(a, b):
    return a / b if a is not None and b else None


def _diff(a, b):
    return a - b if a is not None and b is not None else None


def compute_metrics(results, scenarios: dict[str, Scenario]) -> None:
    by_key = {r.key: r for r in results}
    for r in results:
        d, p, n, m = r.direct, r.plexus, r.nginx, r.metrics
        if p is not None:
            m["cpu_ms_per_req"] = p.cpu_ms_per_req
            if p.cpu_ms_per_req is not None and p.rps is not None:
                m["gateway_cpu_util"] = p.cpu_ms_per_req * p.rps / 1000.0  # 1.0 = one core busy
        if n is not None:
            m["nginx_cpu_ms_per_req"] = n.cpu_ms_per_req
            m["cpu_vs_nginx"] = _ratio(m.get("cpu_ms_per_req"), n.cpu_ms_per_req)
        if d is None or p is None:
            continue
        m["rps_ratio"] = _ratio(p.rps, d.rps)
        m["p50_ratio"] = _ratio(p.p50_ms, d.p50_ms)
        m["p99_ratio"] = _ratio(p.p99_ms, d.p99_ms)
        m["added_p50_ms"] = _diff(p.p50_ms, d.p50_ms)
        m["added_p99_ms"] = _diff(p.p99_ms, d.p99_ms)
        m["added_ttfb_p50_ms"] = _diff(p.ttfb_p50_ms, d.ttfb_p50_ms)
        m["added_ttfb_p99_ms"] = _diff(p.ttfb_p99_ms, d.ttfb_p99_ms)
    for r in results:
        s = scenarios[r.key]
        if not s.events:
            continue
        reads = {name: side.reads_per_response / s.events
                 for name, side in (("direct", r.direct), ("Plexus", r.plexus),
                                    ("nginx", r.nginx))
                 if side is not None and side.reads_per_response is not None}
        if reads:
            r.metrics["reads_per_event"] = reads
        if r.plexus is not None and r.plexus.proc_reads_per_response is not None:
            r.metrics["plexus_reads_per_event"] = r.plexus.proc_reads_per_response / s.events
        base = by_key.get(s.base) if s.base else None
        if base is None:
            continue
        for key in ("cpu_ms_per_req", "nginx_cpu_ms_per_req"):
            a, b = r.metrics.get(key), base.metrics.get(key)
            if a is not None and b is not None:
                r.metrics[key.replace("ms_per_req", "us_per_event")] = (a - b) * 1000.0 / s.events
    for r in results:
        hs = r.metrics.get("tls_handshakes") or {}
        if hs.get("Plexus") is not None and r.plexus is not None and r.plexus.connections:
            r.metrics["tls_handshakes_per_conn"] = hs["Plexus"] / r.plexus.connections


def judge_budgets(run) -> None:
    """One verdict per budget line into run.budgets (dicts: label, limit, unit, value,
    ref_value, relative, status, note)."""
    by_key = {r.key: r for r in run.results}
    table = {s.key: s for s in SCENARIOS}
    ng = run.nginx
    for b in BUDGETS:
        line = {"label": b.label, "limit": b.limit, "unit": b.unit, "value": None,
                "ref_value": None, "relative": b.ref is not None, "note": "", "status": ""}
        run.budgets.append(line)
        if run.options.direct_only:
            line["status"], line["note"] = "not run", "direct only"
            continue
        if b.scenario is None:
            line["value"] = run.gateway.get(b.metric)
            line["status"] = "not run" if line["value"] is None else (
                "met" if line["value"] <= b.limit else "not met")
            continue
        s = table[b.scenario]
        needed = [b.scenario] + ([s.base] if b.metric.endswith("per_event") and s.base else [])
        if b.ref is not None:
            needed += [b.ref] + ([table[b.ref].base] if table[b.ref].base else [])
        involved = [by_key.get(k) for k in dict.fromkeys(needed)]
        r = by_key.get(b.scenario)
        line["value"] = r.metrics.get(b.metric) if r is not None else None
        if any(x is None for x in involved):
            missing = [k for k in dict.fromkeys(needed) if by_key.get(k) is None]
            line["status"], line["note"] = "not run", "not selected: " + ", ".join(missing)
            continue
        skipped = [x for x in involved if x.status == "skipped"]
        if skipped:
            line["status"], line["note"] = "not run", f"{skipped[0].key} skipped"
            continue
        failed = [x.key for x in involved if x.status == "failed"]
        if failed:
            line["status"], line["note"] = "not met", "scenario failed: " + ", ".join(failed)
            continue
        if b.ref is not None:
            if ng.get("status") != "ok":
                line["status"] = "no nginx: skipped" if ng.get("status") in (
                    "absent", "disabled") else "nginx failed"
                line["note"] = {"absent": "nginx is not installed: see the nginx reference "
                                          "section", "disabled": "--no-nginx"}.get(
                    ng.get("status"), ng.get("note", ""))
                continue
            line["ref_value"] = by_key[b.ref].metrics.get("nginx_" + b.metric)
        if line["value"] is None or (b.ref is not None and line["ref_value"] is None):
            line["status"], line["note"] = "not met", "not measured"
        elif b.ref is not None and line["ref_value"] <= 0:
            line["status"] = "not met"
            line["note"] = "nginx's value is not positive (too short a run?)"
        elif b.ref is not None:
            line["status"] = "met" if line["value"] <= b.limit * line["ref_value"] else "not met"
        else:
            line["status"] = "met" if line["value"] <= b.limit else "not met"
