"""Run a real Plexus process for one test: ``with start_plexus(config_text, tmp_path) as px: ...``.

Theory: a test that must see Plexus exactly as users run it (``python -m plexus --config ...``: the
CLI, startup checks, the process environment, its stderr) starts its own process here. The config
text is written to ``tmp_path/plexus.yaml`` as given; the listen address is always 127.0.0.1 on a
free port (bound to 0 and released, passed as ``--port``), so the config's ``server.port`` does not
matter. The child's environment is this process's minus ``PLEXUS_CONFIG``/``PLEXUS_PORT`` and minus
every proxy variable (``http_proxy``, ``https_proxy``, ``all_proxy``, ``no_proxy``, any case), so a
developer's proxy settings never leak into a test. ``env`` is then applied on top: a value sets a
variable, ``None`` removes it. ``start_plexus`` waits until GET /health answers 200 (failing with the
process output if it exits or takes longer than ``startup_timeout``) and terminates the process
(then kills it) at exit. The yielded ``PlexusRun`` has ``.url``, ``.port``, ``.proc`` and
``.stderr()``, all the output so far (stdout and stderr go to one file).

Helpers for such tests: ``wait_for(fn, timeout)`` polls until ``fn()`` is truthy (no fixed
sleeps), and ``usage_records(url, admin_key, ids)`` / ``usage_record(...)`` read usage records back
through ``GET /v0/management/usage`` by request id (the ``x-plexus-request-id`` header).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

_DROPPED = {"PLEXUS_CONFIG", "PLEXUS_PORT"}
_PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PlexusRun:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log
        self.url = f"http://127.0.0.1:{port}"

    def stderr(self) -> str:
        try:
            return self.log.read_bytes().decode("utf-8", "replace")
        except OSError:
            return ""


def child_env(env: dict | None = None) -> dict:
    out = {k: v for k, v in os.environ.items() if k not in _DROPPED and k.lower() not in _PROXY_VARS}
    for k, v in (env or {}).items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


@contextlib.contextmanager
def start_plexus(config_yaml_text: str, tmp_path, env: dict | None = None, log_level: str = "warning",
                 startup_timeout: float = 20, args: tuple = ()):
    tmp_path = Path(tmp_path)
    cfg = tmp_path / "plexus.yaml"
    cfg.write_text(config_yaml_text)
    port = free_port()
    log = tmp_path / f"plexus-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "plexus", "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port),
             "--log-level", log_level, *args],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=child_env(env), cwd=tmp_path)
    run = PlexusRun(proc, port, log)
    try:
        deadline = time.monotonic() + startup_timeout
        with httpx.Client(trust_env=False, timeout=1) as client:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"plexus exited with {proc.returncode} at startup:\n{run.stderr()}")
                try:
                    if client.get(run.url + "/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"plexus did not answer GET /health within {startup_timeout} s:\n"
                                       f"{run.stderr()}")
                time.sleep(0.05)
        yield run
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen) -> None:
    """Terminate, then kill after 5 s (shared with conftest's session-wide Plexus)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def wait_for(fn, timeout: float = 5.0, interval: float = 0.02, what: str = "the condition"):
    """Poll ``fn()`` until it returns something truthy (and return it); AssertionError naming
    ``what`` once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def usage_records(url: str, admin_key: str, ids, timeout: float = 5.0) -> dict:
    """The usage records of the request ids ``ids`` (``x-plexus-request-id``), read back through
    ``GET /v0/management/usage`` (newest first; the store's writer commits every ~0.2 s, so this
    polls until all are there)."""
    want = set(ids)
    found: dict = {}

    def poll():
        with httpx.Client(base_url=url, timeout=5, trust_env=False, headers={"x-admin-key": admin_key}) as c:
            offset = 0
            while True:
                r = c.get("/v0/management/usage", params={"limit": 1000, "offset": offset})
                assert r.status_code == 200, r.text
                page = r.json()["data"]
                found.update((row["id"], row) for row in page if row["id"] in want)
                offset += len(page)
                if len(page) < 1000 or want <= found.keys():
                    return want <= found.keys()

    try:
        wait_for(poll, timeout, 0.05, "usage records")
    except AssertionError:
        raise AssertionError(f"no usage record for {sorted(want - found.keys())} after {timeout} s") from None
    return found


def usage_record(url: str, admin_key: str, request_id: str, timeout: float = 5.0) -> dict:
    return usage_records(url, admin_key, [request_id], timeout)[request_id]
