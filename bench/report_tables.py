"""The tables of the bench report: results (direct vs Plexus), nginx reference, large bodies,
budget, soak. Pure functions of a run.Run returning markdown lines; report.py assembles them.

Theory: every absolute figure is shown next to the baseline it should be judged against (the mock
directly, and nginx, the practical limit of a relay), with the ratio or difference beside it; a
FAILED scenario is marked as such in every table it appears in, with its reason below the table,
never silently left out.
"""

from __future__ import annotations


def f(v, digits: int = 2) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def x(v) -> str:
    return "—" if v is None else f"×{v:.2f}"


def signed(v) -> str:
    return "—" if v is None else f"{v:+.3f}"


def ratio(a, b):
    return a / b if a is not None and b else None


def _get(side, attr):
    return getattr(side, attr) if side is not None else None


def _key(r) -> str:
    return f"{r.key} **FAILED**" if r.status == "failed" else r.key


def results(run) -> list[str]:
    out = ["## Results", "",
           "Direct = load generator → mock upstream, sending the request Plexus itself sends "
           "upstream; Plexus = load generator → Plexus → mock. × = Plexus / direct; added = "
           "Plexus − direct. Latencies in ms; for S6 the latency columns are time to first byte. "
           "\"batched\" streams reach the gateway in one piece, \"one event per write\" streams "
           "one event per TCP segment (the way real providers send them).",
           "",
           "| ID | scenario | req/s direct | req/s Plexus | × | p50 direct | p50 Plexus | × "
           "| p99 direct | p99 Plexus | × | added p50 / p99 | gateway CPU ms/req "
           "| CPU µs/event | errors direct / Plexus |",
           "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in run.results:
        if r.kind == "large":
            continue
        d, p, mt = r.direct, r.plexus, r.metrics
        if d is None and p is None:
            note = r.note.replace("|", "\\|").replace("\n", " ")
            out.append(f"| {_key(r)} | {r.title} | **{r.status}**: {note[:200]} "
                       "| | | | | | | | | | | | |")
            continue
        ttfb = r.kind == "paced"
        p50, p99 = ("ttfb_p50_ms", "ttfb_p99_ms") if ttfb else ("p50_ms", "p99_ms")
        added = (mt.get("added_ttfb_p50_ms"), mt.get("added_ttfb_p99_ms")) if ttfb else \
            (mt.get("added_p50_ms"), mt.get("added_p99_ms"))
        ratio50 = ratio(_get(p, p50), _get(d, p50)) if ttfb else mt.get("p50_ratio")
        ratio99 = ratio(_get(p, p99), _get(d, p99)) if ttfb else mt.get("p99_ratio")
        errs = f"{f(_get(d, 'errors'))} / {f(_get(p, 'errors'))}"
        out.append(
            f"| {_key(r)} | {r.title} | {f(_get(d, 'rps'), 0)} | {f(_get(p, 'rps'), 0)} "
            f"| {x(mt.get('rps_ratio'))} | {f(_get(d, p50), 3)} | {f(_get(p, p50), 3)} "
            f"| {x(ratio50)} | {f(_get(d, p99), 3)} | {f(_get(p, p99), 3)} | {x(ratio99)} "
            f"| {signed(added[0])} / {signed(added[1])} | {f(mt.get('cpu_ms_per_req'), 3)} "
            f"| {f(mt.get('cpu_us_per_event'), 2)} | {errs} |")
    out.append("")
    out += _reads(run) + _tls(run)
    util = [f"{r.key} {r.metrics['gateway_cpu_util'] * 100:.0f} %" for r in run.results
            if r.kind == "closed" and r.metrics.get("gateway_cpu_util") is not None]
    if util:
        out += ["Gateway CPU use during the closed-loop windows (share of one core): "
                + ", ".join(util) + ". Well below 100 % means something other than the "
                "gateway's own CPU limited throughput (the load generator, other work on the "
                "gateway's CPU, or, for the one-event-per-write streams, the mock's 1 ms pace).",
                ""]
    g = run.gateway
    if g.get("idle_cpu_ms_per_s") is not None:
        out += [f"Idle gateway CPU right after start: {g['idle_cpu_ms_per_s']:.0f} ms/s "
                "(10 ms tick resolution).", ""]
    if g.get("peak_rss_mib") is not None:
        large = (f"; after the 20 MB bodies of S7 the peak is "
                 f"{f(g['peak_rss_large_mib'], 1)} MiB") if "peak_rss_large_mib" in g else ""
        out += [f"Gateway memory: RSS {f(g.get('rss_start_mib'), 1)} MiB after start, "
                f"{f(g.get('rss_end_mib'), 1)} MiB at the end, peak (VmHWM) "
                f"{f(g.get('peak_rss_mib'), 1)} MiB{large}.", ""]
    return out + failures(run)


def _reads(run) -> list[str]:
    out = []
    for r in run.results:
        rd = r.metrics.get("reads_per_event")
        if not rd:
            continue
        ways = ", ".join(f"{k} {v:.2f}" for k, v in rd.items())
        own = r.metrics.get("plexus_reads_per_event")
        out.append(f"- {r.key}: load generator reads per upstream event: {ways}"
                   + (f"; Plexus read() calls per upstream event {own:.2f}" if own is not None
                      else ""))
    if not out:
        return []
    return ["How the stream bytes arrived (≈ 1.00 = one read per event; batched streams ≈ 0.01–"
            "0.02):", ""] + out + [""]


def _tls(run) -> list[str]:
    out = []
    for r in run.results:
        hs = r.metrics.get("tls_handshakes")
        if not hs:
            continue
        conns = {"direct": r.direct, "Plexus": r.plexus, "nginx": r.nginx}
        parts = [f"{k} {v} (for {conns[k].connections} client connections, "
                 f"{conns[k].requests:,} requests)" for k, v in hs.items() if conns.get(k)]
        base = next((b for b in run.results if b.key == "S1"), None)
        extra = ""
        if base is not None and None not in (base.metrics.get("cpu_ms_per_req"),
                                             r.metrics.get("cpu_ms_per_req")):
            extra = (f" Plexus CPU {r.metrics['cpu_ms_per_req']:.3f} ms/req over TLS vs "
                     f"{base.metrics['cpu_ms_per_req']:.3f} ms/req in plain S1.")
        out += [f"{r.key}: TLS connections the mock accepted (= full handshakes) during the "
                f"measured runs: {'; '.join(parts)}.{extra}", ""]
    return out


def failures(run) -> list[str]:
    out = []
    for r in run.results:
        if r.status in ("failed", "skipped"):
            out.append(f"- {r.key} {r.status.upper()}: {r.note}")
        for name, side in (("direct", r.direct), ("Plexus", r.plexus), ("nginx", r.nginx)):
            if side is not None:
                out += [f"- {r.key} {name} error: {s}" for s in side.error_samples]
    return (["Failures and error samples:", ""] + out + [""]) if out else []


def nginx(run) -> list[str]:
    ng = run.nginx
    out = ["## Reference: nginx as a plain reverse proxy", ""]
    if ng.get("status") != "ok":
        return out + [f"Not measured: {ng.get('note', ng.get('status', ''))}.", ""]
    out += [f"nginx {ng.get('version')} (one worker, pinned like the gateway, upstream keep-alive, "
            "`proxy_buffering off`) relays the same requests to the same mock (nginx does no "
            "translation: it gets the direct request). CPU = its worker process. × = Plexus / "
            "nginx.", "",
            "| ID | req/s nginx | req/s Plexus | p50 nginx | p50 Plexus | p99 nginx | p99 Plexus "
            "| CPU ms/req nginx | Plexus | × | CPU µs/event nginx | Plexus | × "
            "| errors nginx |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in run.results:
        n, p, mt = r.nginx, r.plexus, r.metrics
        if n is None:
            continue
        ev_n, ev_p = mt.get("nginx_cpu_us_per_event"), mt.get("cpu_us_per_event")
        out.append(f"| {_key(r)} | {f(n.rps, 0)} | {f(_get(p, 'rps'), 0)} | {f(n.p50_ms, 3)} "
                   f"| {f(_get(p, 'p50_ms'), 3)} | {f(n.p99_ms, 3)} | {f(_get(p, 'p99_ms'), 3)} "
                   f"| {f(n.cpu_ms_per_req, 3)} | {f(mt.get('cpu_ms_per_req'), 3)} "
                   f"| {x(mt.get('cpu_vs_nginx'))} | {f(ev_n, 2)} | {f(ev_p, 2)} "
                   f"| {x(ratio(ev_p, ev_n))} | {n.errors} |")
    return out + [""]


_PHASES = {"none": "none (small requests alone)",
           "passthrough": "20 MB bodies, OpenAI → OpenAI",
           "translated": "20 MB bodies, OpenAI → Anthropic (translated)"}


def large(run) -> list[str]:
    rows = [r for r in run.results if r.kind == "large"]
    if not rows:
        return []
    out = ["## Large request bodies (S7)", "",
           f"{run.options.concurrency} closed-loop clients send small S1 requests while "
           "2 more connections send 20 MiB request bodies back to back (none / passthrough / "
           "translated). Small-request latency in ms; longest gap = the longest stretch of the "
           "window in which no small request completed (a stalled event loop shows here); "
           "large MiB/s = request bodies completed in the window.", "",
           "| ID | large traffic | way | small p50 | small p99 | small max | longest gap "
           "| small req/s | large bodies done | large MiB/s |",
           "|---|---|---|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        if r.direct is None and r.plexus is None:
            out.append(f"| {_key(r)} | **{r.status}**: {r.note[:200]} | | | | | | | | |")
            continue
        for phase, label in _PHASES.items():
            for name, side in (("direct", r.direct), ("Plexus", r.plexus)):
                row = side.phases.get(phase) if side is not None else None
                if row is None:
                    continue
                out.append(f"| {_key(r)} | {label} | {name} | {f(row['p50_ms'], 3)} "
                           f"| {f(row['p99_ms'], 3)} | {f(row['max_ms'], 1)} "
                           f"| {f(row['gap_ms'], 1)} | {f(row['small_rps'], 0)} "
                           f"| {f(row['large_done'])} | {f(row['large_mib_s'], 0)} |")
    return out + [""]


def budgets(run) -> list[str]:
    out = ["## Budget", "", "| budget | limit | measured | status |", "|---|--:|--:|---|"]
    for b in run.budgets:
        val = "—" if b["value"] is None else f"{b['value']:.3f} {b['unit']}"
        if b["relative"]:
            limit = f"≤ {b['limit']:g} × nginx"
            if b["value"] is not None and b["ref_value"]:
                val += f" = ×{b['value'] / b['ref_value']:.2f} nginx ({b['ref_value']:.3f} " \
                       f"{b['unit']})"
        else:
            limit = f"≤ {b['limit']:g} {b['unit']}"
        status = b["status"] + (f" ({b['note']})" if b.get("note") else "")
        out.append(f"| {b['label']} | {limit} | {val} | {status} |")
    return out + [""]


def soak(run) -> list[str]:
    out = ["## Soak", "",
           f"Constant closed-loop load through Plexus for {run.options.soak:g} s (a mix of the "
           "closed-loop scenarios that work); gateway memory sampled every "
           f"{run.options.soak_interval:g} s. A flat RSS column is good.", "",
           "| t (s) | req/s | errors | RSS MiB | VmHWM MiB |", "|--:|--:|--:|--:|--:|"]
    for row in run.soak:
        out.append(f"| {row['t_s']:g} | {row['rps']:,.0f} | {row['errors']} "
                   f"| {row['rss_mib']:.1f} | {row['hwm_mib']:.1f} |")
    if len(run.soak) >= 2:
        growth = run.soak[-1]["rss_mib"] - run.soak[0]["rss_mib"]
        out += ["", f"RSS growth from the first to the last sample: {growth:+.1f} MiB."]
    return out + [""]
