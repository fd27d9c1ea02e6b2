"""A real redis-server for tests: its own port, its own temp dir, nothing persisted.

``RedisServer()`` starts one on a free port (``--save "" --appendonly no --bind 127.0.0.1``);
``.url`` is its address, ``.stop()`` kills it (SIGKILL: an outage, not a shutdown), ``.start()``
starts it again on the same port ("Redis comes back", empty), ``.close()`` stops it and removes
its dir. Also a context manager. The binary is ``$REDIS_SERVER``, else ``redis-server`` on PATH,
else /usr/bin/redis-server; a missing binary is a clear RuntimeError (CI installs redis-server).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

__all__ = ["RedisServer", "find_redis_server"]


def find_redis_server() -> str:
    for candidate in (os.environ.get("REDIS_SERVER"), shutil.which("redis-server"), "/usr/bin/redis-server"):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("redis-server not found: these tests run a real Redis (7.0 or newer). Install it "
                       "(Debian/Ubuntu: apt-get install redis-server) or set REDIS_SERVER=/path/to/redis-server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, port: int | None = None, start: bool = True) -> None:
        self.binary = find_redis_server()
        self.port = port or _free_port()
        self.dir = tempfile.mkdtemp(prefix="plexus-redis-")
        self.proc: subprocess.Popen | None = None
        if start:
            self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        log = open(os.path.join(self.dir, "redis.log"), "ab")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--daemonize", "no", "--protected-mode", "no", "--loglevel", "warning"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited ({self.proc.returncode}): {self._log_tail()}")
            if self._pong():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer on port {self.port}: {self._log_tail()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Kill it (no clean shutdown: clients see the connection drop)."""
        p, self.proc = self.proc, None
        if p is not None and p.poll() is None:
            p.kill()
            p.wait(5)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "RedisServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def _log_tail(self) -> str:
        try:
            with open(os.path.join(self.dir, "redis.log"), "rb") as f:
                return f.read()[-2000:].decode("utf-8", "replace").strip() or "(no output)"
        except OSError:
            return "(no log)"
