"""Worker processes: the parent binds once, forks N workers that share the socket, and keeps them
running (`supervise`). Used when `--workers` (or `server.workers`) is more than 1; with one
worker Plexus is a single process and none of this runs.

Theory (gunicorn's arbiter, nginx's master):

- **One port, SO_REUSEPORT.** The parent binds once (so `--port 0` is one port and one startup
  line, and a bad address fails before any fork) and holds the port; on Linux each worker
  listens on its own socket in the parent's SO_REUSEPORT group and the kernel spreads new
  connections over them evenly. A shared, inherited socket was tried first: its one accept
  queue never loses a waiting connection when a worker exits, but the first worker to wake
  accepts every connection queued at that moment (uvloop accepts in a loop), so a burst of
  keep-alive clients all landed on one worker and 2 workers served ~1.1x of one. The price of
  SO_REUSEPORT: connections still queued on a worker that dies are reset (Linux ≥ 5.14 can
  move them to the others: sysctl net.ipv4.tcp_migrate_req=1). Elsewhere the socket is
  listening in the parent and inherited.
- **Freeze, then fork.** The config is loaded and the modules imported in the parent, which then
  moves everything to the GC's permanent generation (`gc.freeze`) before forking: the workers
  share those pages, and no collection ever walks them.
- **Restart with backoff.** A worker that exits while the gateway is not stopping is forked
  again, after 0.5 s doubling per quick death (one that lived under `STABLE` seconds) up to
  `MAX_BACKOFF`; every exit is logged with its code or signal.
- **Signals.** SIGTERM/SIGINT: stop restarting, pass SIGTERM on (each worker drains its own
  requests within the shutdown grace), wait for them (SIGKILL after the grace plus
  `KILL_MARGIN`), exit 0. A second SIGTERM/SIGINT is passed on too (workers end at once).
  SIGHUP: passed to every worker (each reloads the config file itself, with the same
  validation as the management API).
- **The channel.** Each worker has one end of a SOCK_SEQPACKET socketpair; the other end is the
  parent's. A worker says `ready` once it listens (the parent prints the startup line and tells
  systemd READY=1 when all are), and sends the state changes every worker must share
  (cooldowns: control/peers.py); the parent passes each message on to every other worker.
  Messages are small JSON datagrams; the parent never blocks on a worker (a full buffer drops
  the message: the state is advisory and the next failure says it again).

State that is one per gateway, not per worker, and how (API.md "Workers"):
  cooldowns     shared through the parent (above)
  usage         each worker's writer thread commits its own batches to the one SQLite file;
                SQLite's lock serializes the writers (WAL, busy timeout), so no record passes
                through another process
  metrics       each worker writes a snapshot of its counters to a shared directory every
                second; `/metrics` sums its own live counters and the others' snapshots; a
                restarted worker starts from its slot's last snapshot (counters never go back)
  config        every worker watches the file; POST /config in one is seen by all; SIGHUP too
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import selectors
import signal
import socket
import sys
import tempfile
import time
from typing import Callable

__all__ = ["supervise", "bind", "worker_socket", "worker_count", "REUSEPORT", "STABLE", "MAX_BACKOFF"]

log = logging.getLogger("plexus")

STABLE = 10.0        # a worker that lived this long restarts without delay
MAX_BACKOFF = 30.0
KILL_MARGIN = 10.0   # seconds past the shutdown grace before workers are killed
MAX_MESSAGE = 65536


def worker_count(value: str | int | None) -> int:
    """`--workers`: a positive number, or "auto" (the CPUs this process may run on)."""
    if value is None:
        return 1
    if isinstance(value, str) and value.strip().lower() == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return max(1, os.cpu_count() or 1)
    n = int(value)
    if n < 1:
        raise ValueError("workers must be 1 or more (or auto)")
    return n


REUSEPORT = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")
BACKLOG = 2048


def _socket(family, kind, proto, addr, reuseport: bool) -> socket.socket:
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bind(host: str, port: int) -> socket.socket:
    """The parent's socket: bound once (the port is known, and errors show before any fork).
    Linux: SO_REUSEPORT and not listening (it only holds the port; each worker listens on its
    own socket in the same group, `worker_socket`); elsewhere: listening, and inherited."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, addr = infos[0]
    sock = _socket(family, kind, proto, addr, REUSEPORT)
    if not REUSEPORT:
        sock.listen(BACKLOG)
    return sock


def worker_socket(parent: socket.socket) -> socket.socket:
    """In a worker: the socket it accepts from (its own listening socket in the parent's
    SO_REUSEPORT group on Linux, else the parent's, inherited)."""
    if not REUSEPORT:
        return parent
    sock = _socket(parent.family, parent.type, parent.proto, parent.getsockname(), True)
    sock.listen(BACKLOG)
    return sock


class _Worker:
    __slots__ = ("slot", "pid", "chan", "started", "ready", "failures", "restart_at")

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.pid = 0
        self.chan: socket.socket | None = None   # the parent's end
        self.started = 0.0
        self.ready = False
        self.failures = 0
        self.restart_at = 0.0


def supervise(n: int, sock: socket.socket, run_worker: Callable[[socket.socket, socket.socket, int, str], int],
              grace: Callable[[], float], on_ready: Callable[[], None], notify=None) -> int:
    """Fork ``n`` workers running ``run_worker(sock, chan, slot, shared_dir)`` (its return value
    is the worker's exit code) and keep them running until SIGTERM/SIGINT; returns 0.
    ``grace()``: the shutdown grace in force (the config may have been reloaded); ``on_ready``:
    called once every worker listens (prints the startup line); ``notify(state)``: systemd."""
    shared = tempfile.mkdtemp(prefix="plexus-workers-")
    workers = [_Worker(i) for i in range(n)]
    sel = selectors.DefaultSelector()
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    sel.register(wake_r, selectors.EVENT_READ, None)
    pending: list[int] = []
    old_wakeup = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    handlers = {s: signal.signal(s, lambda signum, frame: pending.append(signum))
                for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)}
    gc.collect()
    gc.freeze()
    stopping = 0.0       # when the stop began (0: running)
    announced = False
    try:
        for w in workers:
            _spawn(w, sock, sel, run_worker, shared, workers)
        while True:
            now = time.monotonic()
            timeout = 1.0
            for w in workers:
                if w.pid == 0 and not stopping and w.restart_at:
                    timeout = min(timeout, max(0.0, w.restart_at - now))
            for key, _ in sel.select(timeout):
                if key.data is None:
                    try:
                        while wake_r.recv(4096):
                            pass
                    except OSError:
                        pass
                else:
                    _message(key.data, workers, sel)
            while pending:
                signum = pending.pop(0)
                if signum in (signal.SIGTERM, signal.SIGINT):
                    if notify is not None and not stopping:
                        notify("STOPPING=1")
                    log.info("%s: stopping %d workers", signal.Signals(signum).name,
                             sum(1 for w in workers if w.pid))
                    if not stopping:
                        sock.close()  # (inherited mode: the workers close theirs, then new ones are refused)
                    stopping = stopping or time.monotonic()
                    _signal_all(workers, signal.SIGTERM)
                elif signum == signal.SIGHUP and not stopping:
                    log.info("SIGHUP: workers reload the config")
                    _signal_all(workers, signal.SIGHUP)
            _reap(workers, sel, stopping)
            if not announced and all(w.ready for w in workers):
                announced = True
                on_ready()
            now = time.monotonic()
            if stopping:
                if not any(w.pid for w in workers):
                    return 0
                if now - stopping > grace() + KILL_MARGIN:
                    log.error("workers still running %.0f s after SIGTERM: killing them", now - stopping)
                    _signal_all(workers, signal.SIGKILL)
                continue
            for w in workers:
                if w.pid == 0 and now >= w.restart_at:
                    _spawn(w, sock, sel, run_worker, shared, workers)
    finally:
        signal.set_wakeup_fd(old_wakeup)
        for s, h in handlers.items():
            signal.signal(s, h)
        for w in workers:
            if w.chan is not None:
                sel.unregister(w.chan)
                w.chan.close()
        sel.close()
        wake_r.close()
        wake_w.close()
        for name in os.listdir(shared):
            try:
                os.unlink(os.path.join(shared, name))
            except OSError:
                pass
        try:
            os.rmdir(shared)
        except OSError:
            pass


def _spawn(w: _Worker, sock, sel, run_worker, shared: str, workers: list[_Worker]) -> None:
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:  # the worker
        code = 1
        try:
            parent_end.close()
            for other in workers:
                if other.chan is not None:
                    other.chan.close()
            signal.set_wakeup_fd(-1)
            for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                signal.signal(s, signal.SIG_DFL)
            code = run_worker(sock, child_end, w.slot, shared)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            log.exception("worker %d failed", w.slot)
            code = 1
        finally:
            os._exit(code or 0)
    child_end.close()
    parent_end.setblocking(False)
    w.pid, w.chan, w.started, w.ready, w.restart_at = pid, parent_end, time.monotonic(), False, 0.0
    sel.register(parent_end, selectors.EVENT_READ, w)
    log.debug("worker %d started (pid %d)", w.slot, pid)


def _message(w: _Worker, workers: list[_Worker], sel) -> None:
    """A worker's datagrams: `ready`, or state to pass on to every other worker."""
    while True:
        try:
            data = w.chan.recv(MAX_MESSAGE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the worker closed its end (it is exiting): reaped below
            sel.unregister(w.chan)
            w.chan.close()
            w.chan = None
            return
        if data == b"ready":
            w.ready = True
            continue
        for other in workers:
            if other is not w and other.chan is not None and other.ready:
                try:
                    other.chan.send(data)
                except OSError:  # full or gone: the state is advisory
                    pass


def _signal_all(workers: list[_Worker], sig: int) -> None:
    for w in workers:
        if w.pid:
            try:
                os.kill(w.pid, sig)
            except ProcessLookupError:
                pass


def _reap(workers: list[_Worker], sel, stopping: float) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        except OSError as e:
            if e.errno == errno.EINTR:
                continue
            return
        if pid == 0:
            return
        w = next((x for x in workers if x.pid == pid), None)
        if w is None:
            continue
        if w.chan is not None:
            sel.unregister(w.chan)
            w.chan.close()
            w.chan = None
        how = (f"killed by signal {signal.Signals(-os.waitstatus_to_exitcode(status)).name}"
               if os.WIFSIGNALED(status) else f"exit code {os.waitstatus_to_exitcode(status)}")
        lived = time.monotonic() - w.started
        w.pid, w.ready = 0, False
        if stopping:
            log.info("worker %d (pid %d) stopped (%s)", w.slot, pid, how)
            continue
        w.failures = w.failures + 1 if lived < STABLE else 1
        delay = 0.0 if w.failures <= 1 else min(MAX_BACKOFF, 0.5 * 2 ** (w.failures - 2))
        w.restart_at = time.monotonic() + delay
        log.error("worker %d (pid %d) died after %.1f s (%s); restarting it%s", w.slot, pid, lived, how,
                  f" in {delay:.1f} s" if delay else "")
