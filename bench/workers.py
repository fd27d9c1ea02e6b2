"""`python -m bench.workers`: S1 and S2 throughput through Plexus with 1 and with 2 worker
processes (`--workers`), driven by wrk, unpinned. Needs `wrk` (Debian: apt-get install wrk).

Why wrk and not the bench's own load generator: on a 2-CPU machine the Python load generator
takes a large share of the CPUs the two workers need; wrk costs a few µs per request. The mock
upstream still shares the CPUs, so each line also gives the gateway's CPU cost per request and
how many CPUs its process tree used: throughput per gateway CPU is what scales with cores.
Prints one line per round, workers and scenario."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import types

from . import procs, stack
from .scenarios import SCENARIOS, plexus_wire


def _lua(path: str, wire) -> str:
    """The wrk script sending the scenario's request; returns the request path."""
    head, body = wire.data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    with open(path, "w") as f:
        f.write('wrk.method = "POST"\nwrk.body = ' + json.dumps(body.decode()) + "\n")
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k.lower() not in ("host", "content-length"):
                f.write(f'wrk.headers["{k.strip()}"] = "{v.strip()}"\n')
    return lines[0].split(" ")[1]


def main(rounds: int = 2, duration: int = 5) -> int:
    if shutil.which("wrk") is None:
        print("bench.workers: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 1
    root = os.getcwd()
    with procs.Children() as kids, tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        env = stack.Env()
        why = stack.start_mock(kids, env, None, None, 3600, root)
        if why:
            print(f"bench.workers: {why}", file=sys.stderr)
            return 1
        for r in range(rounds):
            for workers in ("1", "2"):
                os.environ["BENCH_WORKERS"] = workers
                opts = types.SimpleNamespace(gateway_module="plexus", quick=False, nginx=False)
                run = types.SimpleNamespace(options=opts, gateway={}, nginx={})
                gw = stack.Env(mock_port=env.mock_port)
                d = os.path.join(tmp, f"{r}-{workers}")
                os.makedirs(d)
                why = stack.start_gateway(kids, gw, run, d, None, root)
                if why:
                    print(f"bench.workers: {why}", file=sys.stderr)
                    return 1
                for key in ("S1", "S2"):
                    s = next(x for x in SCENARIOS if x.key == key)
                    path = _lua(os.path.join(d, f"{key}.lua"), plexus_wire(s, gw.gw_port))
                    c0 = procs.cpu_seconds(procs.process_tree(gw.gw_pid))
                    out = subprocess.run(["wrk", "-t1", "-c16", f"-d{duration}s", "-s", os.path.join(d, f"{key}.lua"),
                                          f"http://127.0.0.1:{gw.gw_port}{path}"], capture_output=True, text=True).stdout
                    c1 = procs.cpu_seconds(procs.process_tree(gw.gw_pid))
                    rps = float(next(x for x in out.splitlines() if x.startswith("Requests/sec")).split()[1])
                    bad = [x.strip() for x in out.splitlines() if "Non-2xx" in x or "Socket errors" in x]
                    print(f"round {r} workers={workers} {key}: {rps:8.0f} req/s, gateway CPU "
                          f"{(c1 - c0) * 1000 / (rps * duration):.3f} ms/req, {(c1 - c0) / duration:.2f} CPUs"
                          + (f"  {bad}" if bad else ""), flush=True)
                proc = run.gateway["proc"]
                proc.terminate()
                proc.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
