"""Starting what the bench measures: certificates, the mock upstream, Plexus and nginx.

Theory: the processes under test are started the same way every run and placed on fixed CPUs: the
mock (plain and TLS ports) shares the load generator's CPUs; Plexus and nginx (the reference) get
the gateway CPU (they are measured one after the other, the idle one costs nothing). Each start
either returns what the run needs (ports, pids, a CPU sampler) or a sentence saying why not;
procs.Children stops everything whatever happens. Nothing here measures.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field

import yaml

from . import loadgen, nginx, procs
from .scenarios import plexus_config
from .tlscerts import Certs, make_certs


@dataclass
class Env:
    """Where everything listens, and how to sample the measured processes."""

    mock_port: int = 0
    tls_port: int = 0  # the mock's TLS port, 0 = no TLS (no certificate could be made)
    ca_file: str = ""
    client_tls: object = None  # ssl context trusting the bench CA (load generator -> mock)
    gw_port: int | None = None
    gw_pid: int | None = None
    ng_port: int | None = None  # nginx -> mock plain
    ng_tls_port: int | None = None  # nginx -> mock TLS
    ng_workers: list[int] = field(default_factory=list)

    def gateway_sample(self):
        pid = self.gw_pid

        def sample():
            tree = procs.process_tree(pid)
            return procs.cpu_seconds(tree), procs.read_syscalls(tree)
        return sample

    def nginx_sample(self):
        workers = list(self.ng_workers)
        return lambda: (procs.cpu_seconds(workers), None)


def certificates(tmp: str, run) -> Certs | None:
    certs = make_certs(tmp)
    if isinstance(certs, str):
        run.tls = {"status": "none", "note": certs + " (S1-TLS is skipped)"}
        return None
    run.tls = {"status": "ok", "how": certs.how}
    return certs


def start_mock(kids, env: Env, certs: Certs | None, cpus, bound: float, root: str) -> str | None:
    argv = ["-m", "bench.mock_upstream", "--port", "0", "--max-seconds", str(int(bound + 120))]
    if certs is not None:
        argv += ["--tls-cert", certs.cert, "--tls-key", certs.key]
    mock = kids.start(procs.python_cmd(*argv), cpus=cpus, cwd=root, stdin=subprocess.PIPE,
                      stdout=subprocess.PIPE)
    line = procs.read_ready_line(mock, 15.0)
    if not line.startswith("READY "):
        return f"mock upstream did not start ({line!r})"
    ports = line.split()[1:] + ["0"]
    env.mock_port, env.tls_port = int(ports[0]), int(ports[1])
    if certs is not None and env.tls_port:
        env.ca_file = certs.ca
        env.client_tls = loadgen.client_tls(certs.ca)
    return None


def start_gateway(kids, env: Env, run, tmp: str, cpus, root: str) -> str | None:
    o = run.options
    env.gw_port = procs.free_port()
    cfg = os.path.join(tmp, "plexus.yaml")
    with open(cfg, "w") as f:
        yaml.safe_dump(plexus_config(env.gw_port, env.mock_port, env.tls_port, env.ca_file), f,
                       sort_keys=False)
    log_path = os.path.join(tmp, "gateway.log")
    with open(log_path, "wb") as log:
        workers = os.environ.get("BENCH_WORKERS")  # worker processes (plexus --workers)
        extra = ("--workers", workers) if workers and workers != "1" else ()
        gw = kids.start(procs.python_cmd("-m", o.gateway_module, "--config", cfg, "--host",
                                         "127.0.0.1", "--port", str(env.gw_port),
                                         "--log-level", "warning", *extra),
                        cpus=cpus, cwd=root, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    why = procs.wait_health(gw, env.gw_port, 20.0)
    if why:
        return why + "; log tail: " + tail(log_path)
    env.gw_pid = gw.pid
    run.gateway["log"] = log_path
    run.gateway["proc"] = gw
    mem = procs.memory_kib(procs.process_tree(gw.pid))
    run.gateway["rss_start_mib"] = mem["VmRSS"] / 1024
    idle = 0.3 if o.quick else 1.0  # CPU an idle gateway burns (timers, polling)
    c0 = procs.cpu_seconds(procs.process_tree(gw.pid))
    time.sleep(idle)
    c1 = procs.cpu_seconds(procs.process_tree(gw.pid))
    run.gateway["idle_cpu_ms_per_s"] = (c1 - c0) * 1000.0 / idle
    return None


def start_nginx(kids, env: Env, run, tmp: str, cpus) -> None:
    """Start the reference if installed; run.nginx says how it went (status ok | absent |
    disabled | failed, note)."""
    if not run.options.nginx:
        run.nginx = {"status": "disabled", "note": "--no-nginx"}
        return
    path = nginx.find()
    if path is None:
        run.nginx = {"status": "absent", "note": "nginx is not installed: " + nginx.INSTALL_HINT}
        return
    version, build = nginx.describe(path)
    d = os.path.join(tmp, "nginx")
    os.makedirs(d, exist_ok=True)
    env.ng_port = procs.free_port()
    if env.tls_port:
        env.ng_tls_port = procs.free_port()
    conf = nginx.write_conf(d, version, build, env.ng_port, env.mock_port,
                            env.ng_tls_port or 0, env.tls_port, env.ca_file)
    vs = ".".join(map(str, version))
    try:
        with open(os.path.join(d, "stdout.log"), "wb") as log:
            p = kids.start(nginx.argv(path, version, d, conf), cpus=cpus, cwd=d,
                           stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    except OSError as e:
        env.ng_port = env.ng_tls_port = None
        run.nginx = {"status": "failed", "version": vs, "note": f"cannot run {path}: {e}"}
        return
    why = procs.wait_health(p, env.ng_port, 10.0)
    if why is None and env.ng_tls_port:
        status, _ = procs.http_get(env.ng_tls_port, "/health", timeout=5.0)
        why = None if status == 200 else f"GET /health through nginx's TLS port: {status}"
    workers = procs.process_tree(p.pid)[1:]
    if why is None and not workers:
        why = "no nginx worker process"
    if why:
        env.ng_port = env.ng_tls_port = None
        run.nginx = {"status": "failed", "version": vs,
                     "note": f"nginx {vs} did not start: {why.replace('gateway', 'nginx')}; "
                             f"error log: {nginx.error_tail(d)}"}
        kids.stop(p)
        return
    env.ng_workers = workers
    run.nginx = {"status": "ok", "version": vs, "path": path}


def tail(path: str, n: int = 1500) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return ""
    return data[-n:].decode(errors="replace").strip()
