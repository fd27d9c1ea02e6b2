"""`python -m bench`: Plexus's reproducible gateway benchmark, one command (run from the repo root).

It starts a mock upstream (bench/mock_upstream.py, plain and TLS with a throw-away CA), Plexus on a
generated config and, when installed, nginx as a plain reverse-proxy reference; it measures every
scenario of bench/scenarios.py DIRECTLY against the mock, THROUGH Plexus and (passthrough rows)
THROUGH nginx in the same run, and prints a markdown report (machine, results with ratios, nginx
reference, large bodies, budget table) to stdout. Progress goes to stderr. Everything binds
127.0.0.1 only, needs no network, is bounded in time, and the subprocesses are always killed. When
more than one CPU is usable, Plexus and nginx are pinned to the first and the mock + load generator
to the others (taskset).

Usage:
    python -m bench                          # full run (~4 min): 5 s per scenario and way
    python -m bench --quick                  # smoke run (~30 s): short windows, same checks
    python -m bench --quick --only S1,S2     # the fastest smoke run (~5 s)
    python -m bench --write bench/RESULTS.md # also write the report to a file
    python -m bench --json results.json      # also write the structured results
    python -m bench --only S1,S2             # a subset of scenarios (see bench/scenarios.py)
    python -m bench --concurrency 32 --duration 10 --warmup 2 --open-duration 20
    python -m bench --soak 600               # constant load, gateway RSS every 10 s (flat = good)
    python -m bench --direct-only            # measure the mock alone (no Plexus, no nginx)
    python -m bench --no-nginx               # skip the nginx reference even when installed

Exit status: 0 = every scenario ran and every request succeeded; 1 = a scenario FAILED (a failing
probe, e.g. a status >= 400, or any error while measuring; there is no "not yet") or nginx is
installed but did not start; 2 = setup failure (mock or Plexus did not start, time bound exceeded).
Budgets that are not met do not change the exit status.
"""

from __future__ import annotations

import argparse
import sys

from .run import Options, execute
from .scenarios import SCENARIOS
from .report import render_markdown, to_json


def parse(argv: list[str] | None) -> tuple[Options, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short windows (smoke run, ~30 s)")
    p.add_argument("--duration", type=float, help="measured seconds per closed-loop run (5)")
    p.add_argument("--warmup", type=float, help="warm-up seconds, excluded (1)")
    p.add_argument("--open-duration", type=float, help="measured seconds per fixed-rate run (10)")
    p.add_argument("--concurrency", type=int, help="connections in closed-loop runs (16)")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout (30)")
    p.add_argument("--only", default="", help="comma-separated scenario ids, e.g. S1,S2")
    p.add_argument("--direct-only", action="store_true", help="do not start Plexus (nor nginx)")
    p.add_argument("--no-nginx", action="store_true", help="do not run the nginx reference")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument("--gateway-module", default="plexus", help=argparse.SUPPRESS)
    p.add_argument("--soak", type=float, default=0.0, metavar="SECONDS",
                   help="soak mode: constant load through Plexus, RSS sampled as a series")
    p.add_argument("--soak-interval", type=float, default=10.0, help=argparse.SUPPRESS)
    p.add_argument("--write", metavar="PATH", help="also write the markdown report here")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    a = p.parse_args(argv)
    o = Options(quick=a.quick, timeout=a.timeout, direct_only=a.direct_only, pin=not a.no_pin,
                nginx=not a.no_nginx,
                gateway_module=a.gateway_module, soak=a.soak, soak_interval=a.soak_interval,
                only=tuple(k.strip() for k in a.only.split(",") if k.strip()))
    if a.quick:
        o.duration, o.warmup, o.open_duration, o.concurrency = 0.3, 0.1, 0.5, 8
    for name in ("duration", "warmup", "open_duration", "concurrency"):
        if getattr(a, name) is not None:
            setattr(o, name, getattr(a, name))
    unknown = [k for k in o.only if k not in {s.key for s in SCENARIOS}]
    if unknown:
        p.error(f"unknown scenario id(s) {', '.join(unknown)}; known: "
                + ", ".join(s.key for s in SCENARIOS))
    if o.duration <= 0 or o.warmup < 0 or o.open_duration <= 0 or o.concurrency < 1:
        p.error("durations must be positive and concurrency at least 1")
    return o, a


def main(argv: list[str] | None = None) -> int:
    o, a = parse(argv)
    run, code = execute(o)
    failed = [r.key for r in run.results if r.status == "failed"]
    if failed:
        print(f"bench: FAILED scenario(s): {', '.join(failed)}", file=sys.stderr)
    text = render_markdown(run)
    sys.stdout.write(text)
    sys.stdout.flush()
    if a.write:
        with open(a.write, "w") as f:
            f.write(text)
    if a.json:
        with open(a.json, "wb") as f:
            f.write(to_json(run))
    if run.gateway.get("error"):
        print(f"bench: {run.gateway['error']}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
