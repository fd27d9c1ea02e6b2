"""`python -m bench.shared`: what the shared stores cost on S1 (issue 15).

Three gateways run side by side on one mock upstream, each measured in turn with wrk (S1:
non-stream OpenAI → OpenAI passthrough, 16 connections), alternating, `rounds` times:

    local       the default: usage records in the SQLite file, cooldowns in the process
    shared      usage_store: PostgreSQL and state_store: Redis (real servers, started here)
    shared+rpm  the same with an inbound key whose rpm (a limit it never reaches) is shared
                through Redis leases: the rate limit's own cost
    down        both stores unreachable (closed ports): records buffered, then spooled to the
                local file; cooldowns and limits local (what a request costs during an outage)

For each: requests/s, wrk's mean latency and the gateway's CPU per request (its process tree
only: PostgreSQL's and Redis's own CPU would be another host's in a deployment, and is printed
apart), then the median of the rounds. The gateways run on the first CPU; the mock, wrk,
PostgreSQL and Redis on the others (as bench/__main__ pins). Needs `wrk` and the PostgreSQL and
Redis server binaries (the tests' helpers start them).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types

from . import procs, scenarios, stack
from .workers import _lua

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from pg_server import PgServer  # noqa: E402  (the tests' real-server helpers: one way to start them)
from redis_server import RedisServer  # noqa: E402

KEY = "sk-bench-shared"


def _config_for(extra: dict):
    def config(*args, **kwargs) -> dict:
        c = scenarios.plexus_config(*args, **kwargs)
        c.update(extra)
        return c
    return config


def _server_cpu(pids: list[int]) -> float:
    return sum(procs.cpu_seconds(procs.process_tree(p)) for p in pids)


def _pin(pids: list[int], cpus: set[int]) -> None:
    for pid in pids:
        for p in procs.process_tree(pid):
            try:
                os.sched_setaffinity(p, cpus)
            except OSError:
                pass


def main(rounds: int = 5, duration: int = 5) -> int:
    if shutil.which("wrk") is None:
        print("bench.shared: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 1
    root = os.getcwd()
    with procs.Children() as kids, tempfile.TemporaryDirectory(prefix="bench-shared-") as tmp, \
            PgServer() as pg, RedisServer() as redis:
        ncpu = len(os.sched_getaffinity(0))
        gw_cpus, other = ([0], set(range(1, ncpu))) if ncpu > 1 else (None, None)
        with open(os.path.join(pg.data, "postmaster.pid")) as f:
            stores = [int(f.readline()), redis.proc.pid]
        if other:
            _pin(stores, other)
        env = stack.Env()
        why = stack.start_mock(kids, env, None, sorted(other) if other else None, 3600, root)
        if why:
            print(f"bench.shared: {why}", file=sys.stderr)
            return 1
        shared = {"usage_store": pg.url, "state_store": redis.url}
        variants = {
            "local": {},
            "shared": shared,
            "shared+rpm": {**shared, "keys": {"bench": {"secret": KEY, "rpm": 1_000_000_000}}},
            "down": {"usage_store": f"postgresql://plexus:x@127.0.0.1:{procs.free_port()}/plexus",
                     "state_store": f"redis://127.0.0.1:{procs.free_port()}/0", "usage": {"buffer_records": 1000}},
        }
        s1 = next(x for x in scenarios.SCENARIOS if x.key == "S1")
        gws = {}
        for name, extra in variants.items():
            d = os.path.join(tmp, name)
            os.makedirs(d)
            stack.plexus_config = _config_for(extra)
            run = types.SimpleNamespace(options=types.SimpleNamespace(gateway_module="plexus", quick=False),
                                        gateway={}, nginx={})
            gw = stack.Env(mock_port=env.mock_port)
            why = stack.start_gateway(kids, gw, run, d, gw_cpus, root)
            if why:
                print(f"bench.shared: {name}: {why}", file=sys.stderr)
                return 1
            lua = os.path.join(d, "s1.lua")
            path = _lua(lua, scenarios.plexus_wire(s1, gw.gw_port))
            if "keys" in extra:
                with open(lua, "a") as f:
                    f.write(f'wrk.headers["authorization"] = "Bearer {KEY}"\n')
            gws[name] = (gw, lua, path)
        if other:
            _pin(stores, other)   # the backends the gateways opened
        wrk = ["taskset", "-c", ",".join(map(str, sorted(other)))] if other else []
        seen: dict = {name: [] for name in gws}
        for r in range(rounds):
            for name, (gw, lua, path) in gws.items():
                c0, s0 = procs.cpu_seconds(procs.process_tree(gw.gw_pid)), _server_cpu(stores)
                out = subprocess.run([*wrk, "wrk", "-t1", "-c16", f"-d{duration}s", "--latency", "-s", lua,
                                      f"http://127.0.0.1:{gw.gw_port}{path}"], capture_output=True,
                                     text=True).stdout
                c1, s1_ = procs.cpu_seconds(procs.process_tree(gw.gw_pid)), _server_cpu(stores)
                lines = out.splitlines()
                rps = float(next(x for x in lines if x.startswith("Requests/sec")).split()[1])
                lat = next(x for x in lines if x.strip().startswith("Latency")).split()[1]
                errors = [x.strip() for x in lines if "Non-2xx" in x or "Socket errors" in x]
                cpu = (c1 - c0) * 1e6 / (rps * duration)
                seen[name].append((rps, cpu))
                print(f"round {r} {name:10s}: {rps:8.0f} req/s, latency {lat:>8s}, gateway CPU "
                      f"{cpu:6.1f} µs/req, PostgreSQL+Redis CPU "
                      f"{(s1_ - s0) * 1e6 / (rps * duration):5.1f} µs/req {' '.join(errors)}", flush=True)
                time.sleep(1.0)
        for name, xs in seen.items():
            print(f"median {name:10s}: {statistics.median(x[0] for x in xs):8.0f} req/s, gateway CPU "
                  f"{statistics.median(x[1] for x in xs):6.1f} µs/req")
    return 0


if __name__ == "__main__":
    sys.exit(main())
