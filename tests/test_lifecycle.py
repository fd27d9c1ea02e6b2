"""The process lifecycle of a real Plexus (tests/spawn.py): graceful shutdown on SIGTERM/SIGINT,
config reload on SIGHUP, and what it tells systemd (sd_notify) along the way.

- SIGTERM with a stream open: the listener closes at once (new connections are refused), an idle
  keep-alive connection is closed, the stream finishes within ``server.shutdown_grace`` (the
  client gets all of it, [DONE] and the chunked terminator), its usage record is written, exit 0.
- A stream still running when the grace period ends gets its dialect's error event (503 "the
  gateway is shutting down") and a complete chunked body, never a bare cut; a request not
  answered yet gets a 503 in its dialect. A second SIGTERM ends the grace period at once.
- SIGHUP applies the file (also with the management API off); a bad file changes nothing and is
  logged at ERROR naming every problem. The file is swapped keeping its size and mtime, so the
  file watcher (which polls (mtime_ns, size)) cannot be what applied it.
- NOTIFY_SOCKET: READY=1 once listening, RELOADING=1 (+ MONOTONIC_USEC) and READY=1 around a
  reload, STOPPING=1 at shutdown, on a path socket and an abstract ('@') one.
- config/plexus.service passes ``systemd-analyze verify`` (skipped where there is none).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from fake_upstream import FakeUpstream, Reply, openai_stream, parse_sse
from spawn import child_env, free_port, start_plexus, wait_for
from plexus.config import ConfigError, parse_config
from plexus.config_yaml import load_yaml

MSGS = [{"role": "user", "content": "hi"}]
ROOT = Path(__file__).resolve().parent.parent
PAD = "# " + "-" * 200 + "\n"  # room for swap_in() to write a longer config of the same size


def config(base: str, grace: float = 5, alias: str = "a", extra: str = "") -> str:
    return f"""\
server: {{shutdown_grace: {grace}}}
usage: {{path: u.db}}
{extra}
providers:
  p1: {{type: OpenAI, api_base_url: "{base}/v1", api_key: k1, models: [m1]}}
models:
  {alias}: {{targets: [{{provider: p1, model: m1}}]}}
{PAD}"""


@pytest.fixture(scope="module")
def fake_module():
    with FakeUpstream() as f:
        yield f


@pytest.fixture
def fake(fake_module):
    fake_module.reset()
    return fake_module


# ----------------------------------------------------------------------------- helpers

def raw_request(port: int, path: str, body: dict, headers: bytes = b"") -> socket.socket:
    data = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST %s HTTP/1.1\r\nhost: plexus\r\ncontent-type: application/json\r\n%scontent-length: %d\r\n\r\n%s"
              % (path.encode(), headers, len(data), data))
    return s


def chat_stream(port: int, model: str = "a") -> socket.socket:
    return raw_request(port, "/v1/chat/completions", {"model": model, "messages": MSGS, "stream": True})


def read_until(s: socket.socket, marker: bytes, data: bytes = b"") -> bytes:
    while marker not in data:
        chunk = s.recv(65536)
        assert chunk, f"connection closed before {marker!r}: {data!r}"
        data += chunk
    return data


def read_to_eof(s: socket.socket, data: bytes = b"") -> bytes:
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


def split_response(raw: bytes) -> tuple[bytes, bytes, bool]:
    """(head, body, complete) of a chunked response: complete when it ends with the last chunk."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower(), head
    body, i = b"", 0
    while True:
        j = rest.find(b"\r\n", i)
        if j < 0:
            return head, body, False
        size = int(rest[i:j].split(b";")[0], 16)
        if size == 0:
            return head, body, rest[j + 2:] == b"\r\n"
        assert rest[j + 2 + size:j + 4 + size] == b"\r\n", rest[i:]
        body += rest[j + 2:j + 2 + size]
        i = j + 4 + size


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def db_rows(path) -> dict[str, tuple]:
    import sqlite3
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {r[0]: r[1:] for r in conn.execute("SELECT id, status, http_status, error FROM usage")}
    finally:
        conn.close()


def header(head: bytes, name: bytes) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == name:
            return v.strip().decode()
    return None


def swap_in(path: Path, text: str) -> None:
    """Replace the file with ``text`` keeping its size and mtime (padded with a comment), renamed
    into place: the file watcher compares (mtime_ns, size), so only a SIGHUP can apply it."""
    st = path.stat()
    data = text.replace(PAD, "").encode()
    pad = st.st_size - len(data)
    assert pad >= 0, "the new config is longer than the old one"
    data += b"\n" if pad == 1 else (b"#" + b"-" * (pad - 2) + b"\n" if pad else b"")
    assert len(data) == st.st_size
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, path)
    st2 = path.stat()
    assert (st2.st_mtime_ns, st2.st_size) == (st.st_mtime_ns, st.st_size)


class NotifySocket:
    """A datagram socket standing in for systemd's notify socket; ``env`` for the child."""

    def __init__(self, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.dir = None
        if abstract:
            name = f"plexus-test-{os.getpid()}-{time.monotonic_ns()}"
            self.sock.bind("\0" + name)
            self.env = {"NOTIFY_SOCKET": "@" + name}
        else:
            self.dir = tempfile.mkdtemp(prefix="pxn", dir="/tmp")  # AF_UNIX paths: 108 bytes at most
            path = os.path.join(self.dir, "notify")
            self.sock.bind(path)
            self.env = {"NOTIFY_SOCKET": path}
        self.messages: list[dict] = []

    def wait(self, key: str, value: str | None = None, timeout: float = 10, where=None) -> dict:
        """The first message (received so far or next) with ``key`` (= ``value``) for which
        ``where(message)`` (if given) is true."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for m in self.messages[seen:]:
                if key in m and (value is None or m[key] == value) and (where is None or where(m)):
                    return m
            seen = len(self.messages)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {key}={value} message in {timeout} s; got {self.messages}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            self.messages.append(dict(line.split("=", 1) for line in data.decode().split("\n") if line))

    def close(self) -> None:
        self.sock.close()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


# ----------------------------------------------------------------------------- shutdown

def test_sigterm_lets_a_stream_finish_refuses_new_connections_and_closes_idle_ones(fake, tmp_path):
    gate = threading.Event()
    fake.script(Reply.sse(openai_stream("m1"), hold=gate, hold_after=2))
    with start_plexus(config(fake.base_url, grace=10), tmp_path) as px:
        idle = socket.create_connection(("127.0.0.1", px.port), timeout=10)  # a kept-alive connection
        idle.sendall(b"GET /health HTTP/1.1\r\nhost: plexus\r\n\r\n")
        assert read_until(idle, b"OK").startswith(b"HTTP/1.1 200")
        s = chat_stream(px.port)
        try:
            got = read_until(s, b'"role":"assistant"')
            t0 = time.monotonic()
            px.proc.send_signal(signal.SIGTERM)
            wait_for(lambda: refused(px.port), 5, what="the listener to close")
            assert idle.recv(100) == b"", "the idle keep-alive connection was not closed"
            assert px.proc.poll() is None, "Plexus exited while a stream was still running"
            gate.set()
            raw = read_to_eof(s, got)
        finally:
            gate.set()
            s.close()
            idle.close()
        assert px.proc.wait(10) == 0, px.stderr()
        assert time.monotonic() - t0 < 5  # it did not wait out the grace period
    head, body, complete = split_response(raw)
    assert complete, raw[-200:]
    events = parse_sse(body)
    assert events[-1] == (None, "[DONE]")
    text = "".join(json.loads(d)["choices"][0]["delta"].get("content") or ""
                   for _, d in events[:-1] if json.loads(d)["choices"])
    assert text == "Hello from the fake upstream."
    rid = header(head, b"x-plexus-request-id")
    rows = db_rows(tmp_path / "u.db")
    assert rows[rid][:2] == ("success", 200), rows
    assert "Traceback" not in px.stderr()


@pytest.mark.parametrize("dialect", ["openai", "anthropic", "responses", "gemini", "gemini-array"])
def test_stream_longer_than_the_grace_ends_with_the_dialects_error_event(fake, tmp_path, dialect):
    """The upstream holds the stream past the 1 s grace: the client's stream ends with its own
    dialect's error event (relayed OpenAI; Anthropic, Responses and Gemini translated; Gemini's
    JSON-array stream gets the error as its last element, the array closed) and the chunked
    terminator; the record says 503."""
    gate = threading.Event()  # never set: the fake gives up after 5 s, long after the grace
    fake.script(Reply.sse(openai_stream("m1"), hold=gate, hold_after=2))
    with start_plexus(config(fake.base_url, grace=1), tmp_path) as px:
        if dialect == "openai":
            s = chat_stream(px.port)
        elif dialect == "anthropic":
            s = raw_request(px.port, "/v1/messages", {"model": "a", "max_tokens": 50, "messages": MSGS,
                                                       "stream": True}, b"anthropic-version: 2023-06-01\r\n")
        elif dialect == "responses":
            s = raw_request(px.port, "/v1/responses", {"model": "a", "input": "hi", "stream": True})
        else:
            s = raw_request(px.port, "/v1beta/models/a:streamGenerateContent" + ("?alt=sse" if dialect == "gemini" else ""),
                            {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
        try:
            got = read_until(s, b"Hello")
            t0 = time.monotonic()
            px.proc.send_signal(signal.SIGTERM)
            raw = read_to_eof(s, got)
            cut_after = time.monotonic() - t0
        finally:
            gate.set()
            s.close()
        assert px.proc.wait(10) == 0, px.stderr()
    assert 0.8 < cut_after < 4, cut_after
    head, body, complete = split_response(raw)
    assert complete, raw[-300:]
    if dialect == "gemini-array":
        items = json.loads(body)
        assert items[0]["candidates"] and items[-1] == {"error": {"code": 503, "status": "UNAVAILABLE",
                                                                  "message": "the gateway is shutting down"}}
        name, data = None, json.dumps(items[-1])
    else:
        name, data = parse_sse(body)[-1]
    err = json.loads(data)
    if dialect in ("openai", "gemini", "gemini-array"):
        assert name is None and err["error"]["message"] == "the gateway is shutting down", err
    elif dialect == "anthropic":
        assert name == "error" and err["error"]["message"] == "the gateway is shutting down", err
        assert err["error"]["type"] in ("api_error", "overloaded_error"), err
    else:
        assert name in ("error", "response.failed"), (name, err)
        assert "the gateway is shutting down" in data
    rows = db_rows(tmp_path / "u.db")
    assert rows[header(head, b"x-plexus-request-id")][:2] == ("error", 503), rows
    assert "Traceback" not in px.stderr()
    assert "1 requests still running were ended" in px.stderr()


def test_request_not_answered_within_the_grace_gets_503_in_its_dialect(fake, tmp_path):
    fake.script(Reply(hang=True))
    with start_plexus(config(fake.base_url, grace=1), tmp_path) as px:
        s = raw_request(px.port, "/v1/messages", {"model": "a", "max_tokens": 50, "messages": MSGS},
                        b"anthropic-version: 2023-06-01\r\n")
        try:
            fake.wait_requests(1)
            px.proc.send_signal(signal.SIGTERM)
            raw = read_to_eof(s)
        finally:
            s.close()
        assert px.proc.wait(10) == 0, px.stderr()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503"), raw
    assert header(head, b"connection") == "close"
    err = json.loads(body)
    assert err["type"] == "error" and err["error"]["message"] == "the gateway is shutting down", err


def test_second_sigterm_ends_the_grace_period_at_once(fake, tmp_path):
    gate = threading.Event()
    fake.script(Reply.sse(openai_stream("m1"), hold=gate, hold_after=2))
    with start_plexus(config(fake.base_url, grace=60), tmp_path) as px:
        s = chat_stream(px.port)
        try:
            got = read_until(s, b'"role":"assistant"')
            px.proc.send_signal(signal.SIGTERM)
            wait_for(lambda: refused(px.port), 5, what="the listener to close")
            t0 = time.monotonic()
            px.proc.send_signal(signal.SIGINT)  # SIGTERM or SIGINT: either cuts it short
            raw = read_to_eof(s, got)
            took = time.monotonic() - t0
        finally:
            gate.set()
            s.close()
        assert px.proc.wait(10) == 0, px.stderr()
    assert took < 3, took
    _, body, complete = split_response(raw)
    assert complete and json.loads(parse_sse(body)[-1][1])["error"]["message"] == "the gateway is shutting down"


def test_shutdown_grace_flag_overrides_the_config(fake, tmp_path):
    """--shutdown-grace 0: requests in flight are ended at once, whatever server.shutdown_grace says."""
    gate = threading.Event()
    fake.script(Reply.sse(openai_stream("m1"), hold=gate, hold_after=2))
    cfg = tmp_path / "plexus.yaml"
    cfg.write_text(config(fake.base_url, grace=60))
    n = free_port()
    log = tmp_path / "out.log"
    with open(log, "wb") as out:  # (spawn.start_plexus takes no extra flags)
        proc = subprocess.Popen([sys.executable, "-m", "plexus", "--config", str(cfg), "--port", str(n),
                                 "--shutdown-grace", "0"], stdout=out, stderr=out, cwd=tmp_path,
                                env=child_env(), stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: b"listening" in log.read_bytes(), 20, what="startup")
        s = chat_stream(n)
        got = read_until(s, b'"role":"assistant"')
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        raw = read_to_eof(s, got)
        assert time.monotonic() - t0 < 3
        s.close()
        assert proc.wait(10) == 0, log.read_text()
    finally:
        gate.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert split_response(raw)[2]


# ----------------------------------------------------------------------------- SIGHUP

def chat(url: str, model: str) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", json={"model": model, "messages": MSGS}, timeout=10,
                      trust_env=False)


def test_sighup_applies_the_file_without_the_management_api(fake, tmp_path):
    note = NotifySocket()
    try:
        with start_plexus(config(fake.base_url), tmp_path, env=note.env | {"PLEXUS_ADMIN_KEY": None},
                          log_level="info") as px:
            assert chat(px.url, "a").status_code == 200
            assert chat(px.url, "b").status_code == 404
            swap_in(tmp_path / "plexus.yaml", config(fake.base_url, alias="b"))
            time.sleep(1.5)  # the watcher polls every second: it does not see this change
            assert chat(px.url, "b").status_code == 404
            note.wait("READY")
            px.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: chat(px.url, "b").status_code == 200, 5, what="alias b after SIGHUP")
            assert chat(px.url, "a").status_code == 404
            reloading = note.wait("RELOADING", "1")
            usec = int(reloading["MONOTONIC_USEC"])
            assert abs(usec / 1e6 - time.monotonic()) < 30  # the same clock as ours (CLOCK_MONOTONIC)
            note.wait("READY", "1", where=lambda m: m["STATUS"] == "config reloaded (1 aliases)")
        assert px.proc.returncode == 0
        assert "SIGHUP: reloading" in px.stderr()
    finally:
        note.close()


def test_sighup_with_a_bad_file_keeps_the_old_config_and_logs_every_problem(fake, tmp_path):
    note = NotifySocket(abstract=True)
    try:
        with start_plexus(config(fake.base_url), tmp_path, env=note.env) as px:
            note.wait("READY", "1")
            bad = config(fake.base_url, grace=-1).replace("models: [m1]", "models: [m1], colour: red")
            swap_in(tmp_path / "plexus.yaml", bad)
            px.proc.send_signal(signal.SIGHUP)
            assert note.wait("RELOADING", "1")
            m = note.wait("READY", "1", where=lambda m: "reload" in m["STATUS"])
            assert m["STATUS"] == "config reload FAILED (2 problems; the previous config keeps serving)", m
            assert chat(px.url, "a").status_code == 200  # the old config keeps serving
            log = px.stderr()
            line = next(ln for ln in log.splitlines() if " ERROR " in ln and "NOT applied" in ln)
            assert "server.shutdown_grace" in line and "providers.p1.colour" in line, line
            # fixed file: applied by the next SIGHUP
            swap_in(tmp_path / "plexus.yaml", config(fake.base_url, alias="b"))
            px.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: chat(px.url, "b").status_code == 200, 5, what="alias b after SIGHUP")
            px.proc.send_signal(signal.SIGTERM)
            assert px.proc.wait(10) == 0
            note.wait("STOPPING", "1")
    finally:
        note.close()


# ----------------------------------------------------------------------------- sd_notify

def test_notify_ready_at_start_and_stopping_at_shutdown(fake, tmp_path):
    note = NotifySocket()
    try:
        with start_plexus(config(fake.base_url), tmp_path, env=note.env) as px:
            ready = note.wait("READY", "1")
            assert ready["STATUS"] == f"listening on http://127.0.0.1:{px.port} (1 aliases)"
            assert not any("STOPPING" in m for m in note.messages)
            px.proc.send_signal(signal.SIGTERM)
            stopping = note.wait("STOPPING", "1")
            assert "shutting down" in stopping["STATUS"]
            assert px.proc.wait(10) == 0
        assert "plexus listening on http://127.0.0.1:" in px.stderr()
    finally:
        note.close()


# ----------------------------------------------------------------------------- config, unit file

@pytest.mark.parametrize("value, ok", [("0", 0.0), ("2.5", 2.5), ("30", 30.0), ("-1", None), ("x", None),
                                       (".nan", None), ("true", None)])
def test_shutdown_grace_config_key(value, ok):
    text = ("server: {shutdown_grace: %s}\nproviders: {p: {type: OpenAI, api_base_url: 'http://h/v1', "
            "models: [m]}}\nmodels: {a: {targets: [{provider: p, model: m}]}}\n" % value)
    if ok is None:
        with pytest.raises(ConfigError) as e:
            parse_config(load_yaml(text, "<t>"), "<t>")
        assert "server.shutdown_grace" in str(e.value)
    else:
        assert parse_config(load_yaml(text, "<t>"), "<t>").server.shutdown_grace == ok


def test_shutdown_grace_defaults_to_30():
    text = ("providers: {p: {type: OpenAI, api_base_url: 'http://h/v1', models: [m]}}\n"
            "models: {a: {targets: [{provider: p, model: m}]}}\n")
    assert parse_config(load_yaml(text, "<t>"), "<t>").server.shutdown_grace == 30.0


def unit_settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (ROOT / "config" / "plexus.service").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            k, _, v = line.partition("=")
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_unit_file_settings():
    u = unit_settings()
    one = {k: v[-1] for k, v in u.items()}
    assert one["Type"] == "notify" and one["Restart"] == "on-failure"
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID" and one["KillSignal"] == "SIGTERM"
    for k, v in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                 "PrivateTmp": "yes", "LimitNOFILE": "65536"}.items():
        assert one[k] == v, k
    assert one["User"] == "plexus" and one["StateDirectory"] == "plexus"
    assert "/var/lib/plexus" in one["ReadWritePaths"]
    assert "EnvironmentFile" in u
    stop = float(re.fullmatch(r"(\d+)s?", one["TimeoutStopSec"]).group(1))
    assert stop >= 30 + 5  # the default grace + margin (the config's default)
    assert "--config /etc/plexus/plexus.yaml" in one["ExecStart"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_unit_file_passes_systemd_analyze_verify(tmp_path):
    """``systemd-analyze verify`` checks every directive; ExecStart's binary must exist, so a copy
    points it at this venv's python (the rest of the file is the shipped one)."""
    text = (ROOT / "config" / "plexus.service").read_text()
    exe = re.search(r"^ExecStart=(\S+)", text, re.M).group(1)
    unit = tmp_path / "plexus.service"
    unit.write_text(text.replace(exe, sys.executable + " -m plexus", 1))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # unknown keys and bad values are only warnings (exit 0): any line about our file fails the
    # test; lines about other units (a container without systemd as PID 1) do not count
    problems = [ln for ln in (r.stdout + r.stderr).splitlines() if "plexus.service" in ln]
    assert not problems, r.stdout + r.stderr
    assert r.returncode == 0, r.stdout + r.stderr
