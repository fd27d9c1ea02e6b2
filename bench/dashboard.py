"""`python -m bench.dashboard`: S1 gateway CPU per request with and without an open dashboard
(the Live page's `/events?max_rate=20` stream, and the Providers page's polls of `/cooldowns`
and `/targets` every 5 s), driven by wrk, alternating, three rounds. Needs `wrk`.

The gateway gets an admin key (the management API and /ui are off without one); everything
else is the bench's own config."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import types

import httpx

from . import procs, scenarios, stack
from .workers import _lua

ADMIN = "bench-admin"


def _config(*args, **kwargs) -> dict:
    c = scenarios.plexus_config(*args, **kwargs)
    c["admin_key"] = ADMIN
    return c


def _dashboard(url: str, stop: threading.Event) -> None:
    """What an open dashboard asks of the gateway: the Live stream and the Providers polls."""
    with httpx.Client(base_url=url, headers={"x-admin-key": ADMIN}, timeout=30, trust_env=False) as c:
        def poll() -> None:
            while not stop.is_set():
                c.get("/v0/management/cooldowns")
                c.get("/v0/management/targets")
                stop.wait(5)
        threading.Thread(target=poll, daemon=True).start()
        try:
            with c.stream("GET", "/v0/management/events", params={"max_rate": "20"}) as r:
                for _ in r.iter_bytes():
                    if stop.is_set():
                        break
        except httpx.HTTPError:
            pass


def main(rounds: int = 3, duration: int = 5) -> int:
    if shutil.which("wrk") is None:
        print("bench.dashboard: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 1
    stack.plexus_config = _config
    root = os.getcwd()
    with procs.Children() as kids, tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        env = stack.Env()
        why = stack.start_mock(kids, env, None, None, 3600, root) or None
        run = types.SimpleNamespace(options=types.SimpleNamespace(gateway_module="plexus", quick=False, nginx=False),
                                    gateway={}, nginx={})
        gw = stack.Env(mock_port=env.mock_port)
        why = why or stack.start_gateway(kids, gw, run, tmp, None, root)
        if why:
            print(f"bench.dashboard: {why}", file=sys.stderr)
            return 1
        s1 = next(x for x in scenarios.SCENARIOS if x.key == "S1")
        lua = os.path.join(tmp, "s1.lua")
        path = _lua(lua, scenarios.plexus_wire(s1, gw.gw_port))
        for r in range(rounds):
            for dash in (False, True):
                stop = threading.Event()
                if dash:
                    threading.Thread(target=_dashboard, args=(f"http://127.0.0.1:{gw.gw_port}", stop),
                                     daemon=True).start()
                    time.sleep(0.5)
                c0 = procs.cpu_seconds(procs.process_tree(gw.gw_pid))
                out = subprocess.run(["wrk", "-t1", "-c16", f"-d{duration}s", "-s", lua,
                                      f"http://127.0.0.1:{gw.gw_port}{path}"], capture_output=True, text=True).stdout
                c1 = procs.cpu_seconds(procs.process_tree(gw.gw_pid))
                stop.set()
                rps = float(next(x for x in out.splitlines() if x.startswith("Requests/sec")).split()[1])
                print(f"round {r} dashboard {'open  ' if dash else 'closed'}: {rps:8.0f} req/s, gateway CPU "
                      f"{(c1 - c0) * 1e6 / (rps * duration):.1f} µs/req", flush=True)
                time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
