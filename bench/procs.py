"""Subprocesses of the bench (mock upstream, Plexus) and /proc sampling of the gateway.

Theory: whatever happens, nothing the bench started outlives it. Each child is started in its own
session with PR_SET_PDEATHSIG (SIGTERM when the bench dies, even by SIGKILL), registered in a
`Children` context manager that terminates (then kills) every process group it started, by id,
on exit, on exceptions, on SIGTERM/SIGINT and via atexit.

CPU placement: when more than one CPU is usable, the gateway gets the first usable CPU to itself
and the mock + load generator (this process) share the others, so the gateway's CPU time and
latency are not disturbed by the load it is measured under. Children are pinned with `taskset`
when it exists, else with sched_setaffinity in the child before exec.

Sampling (Linux /proc): gateway CPU = utime + stime (fields 14 and 15 of /proc/<pid>/stat, all
threads) summed over the gateway's process tree; memory = VmHWM / VmRSS from /proc/<pid>/status,
summed over the tree (for one process: that process's values); read() syscalls = syscr of
/proc/<pid>/io (uvloop reads sockets with read(), so for Plexus these are its socket reads).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def plan_cpus(pin: bool) -> tuple[set[int] | None, set[int] | None, str]:
    """-> (gateway CPUs, mock+loadgen CPUs, description); (None, None, why) when not pinning."""
    try:
        usable = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None, None, "not pinned (no sched_getaffinity)"
    if not pin:
        return None, None, "not pinned (--no-pin)"
    if len(usable) < 2:
        return None, None, f"not pinned (only {len(usable)} usable CPU)"
    gw, rest = {usable[0]}, set(usable[1:])
    how = "taskset" if shutil.which("taskset") else "sched_setaffinity"
    return gw, rest, (f"gateway on CPU {usable[0]}; mock upstream + load generator on CPU "
                      f"{_cpulist(rest)} ({how})")


def _cpulist(cpus: set[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


class Children:
    """Context manager owning every subprocess the bench starts."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []
        self._old: dict[int, object] = {}

    def __enter__(self) -> "Children":
        atexit.register(self.stop_all)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._old[sig] = signal.signal(sig, _exit_on_signal)
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()
        for sig, old in self._old.items():
            signal.signal(sig, old)
        atexit.unregister(self.stop_all)

    def start(self, argv: list[str], *, cpus: set[int] | None, cwd: str, stdout=None, stderr=None,
              stdin=None) -> subprocess.Popen:
        use_taskset = cpus is not None and shutil.which("taskset") is not None
        if use_taskset:
            argv = ["taskset", "-c", _cpulist(cpus)] + argv

        def pre_exec() -> None:
            if _LIBC is not None:
                _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            if cpus is not None and not use_taskset:
                os.sched_setaffinity(0, cpus)

        p = subprocess.Popen(argv, cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr,
                             start_new_session=True, preexec_fn=pre_exec)
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen, grace: float = 3.0) -> None:
        if p.poll() is None:
            _signal_group(p.pid, signal.SIGTERM)
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        _signal_group(p.pid, signal.SIGKILL)  # stragglers in the group (the leader may be gone)
        try:
            p.wait(1.0)
        except subprocess.TimeoutExpired:
            pass
        for f in (p.stdin, p.stdout):
            if f is not None:
                f.close()
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self) -> None:
        for p in list(reversed(self.procs)):
            self.stop(p)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)  # our child leads its own session/group: pgid == its pid
    except (ProcessLookupError, PermissionError):
        pass


def _exit_on_signal(signum, frame):
    raise SystemExit(128 + signum)


def read_ready_line(p: subprocess.Popen, timeout: float) -> str:
    """Read one line from p.stdout within timeout (the mock prints `READY <port>`)."""
    deadline = time.monotonic() + timeout
    fd = p.stdout.fileno()
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or p.poll() is not None and not select.select([fd], [], [], 0)[0]:
            break
        if select.select([fd], [], [], min(left, 0.1))[0]:
            b = os.read(fd, 1)
            if not b:
                break
            line += b
    return line.decode(errors="replace").strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, path: str, timeout: float = 1.0) -> tuple[int, bytes]:
    """Tiny blocking GET on 127.0.0.1 (for the health wait); (0, b"") on any failure."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
                      "connection: close\r\n\r\n".encode())
            data = b""
            while True:  # until EOF, or the content-length is satisfied
                b = s.recv(65536)
                if not b:
                    break
                data += b
                head, sep, body = data.partition(b"\r\n\r\n")
                if sep and b"content-length:" in head.lower():
                    n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    if len(body) >= n:
                        break
    except (OSError, ValueError):
        return 0, b""
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        return int(head[9:12]), body
    except ValueError:
        return 0, b""


def wait_health(p: subprocess.Popen, port: int, timeout: float) -> str | None:
    """Poll GET /health until 200 OK; None on success, else why not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.poll() is not None:
            return f"gateway exited with code {p.returncode} before answering /health"
        status, body = http_get(port, "/health")
        if status == 200 and body.strip().startswith((b"OK", b"DEGRADED")):  # (degraded: a store is down)
            return None
        time.sleep(0.05)
    return f"gateway did not answer GET /health with 200 OK within {timeout:g} s"


# --- /proc sampling -------------------------------------------------------------------------

def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (via /proc/<pid>/task/<tid>/children, else a /proc scan)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            kids: list[int] = []
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    kids += [int(x) for x in f.read().split()]
            todo += kids
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{p}"):
                continue
            todo += _scan_children(p)
        except OSError:
            continue
    return out


def _scan_children(ppid: int) -> list[int]:
    kids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                if int(fields[1]) == ppid:
                    kids.append(int(name))
            except (OSError, IndexError, ValueError):
                pass
    return kids


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes (all their threads), in seconds."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # fields 14, 15 of the full line
    return ticks / CLK_TCK


def memory_kib(pids: list[int]) -> dict[str, int]:
    """{'VmHWM': kib, 'VmRSS': kib} summed over the processes."""
    out = {"VmHWM": 0, "VmRSS": 0}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    key = line[:5]
                    if key in out and line[5] == ":":
                        out[key] += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return out


def python_cmd(*args: str) -> list[str]:
    return [sys.executable, *args]


def read_syscalls(pids: list[int]) -> int | None:
    """read() syscalls of the processes (syscr of /proc/<pid>/io; recv()/recvmsg() are not in
    it); None when /proc/<pid>/io cannot be read."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/io", "rb") as f:
                for line in f:
                    if line.startswith(b"syscr:"):
                        total += int(line.split()[1])
                        break
        except (OSError, ValueError):
            return None
    return total
