"""Shared end-to-end harness: one fake upstream and one real Plexus process per test session.

Theory: e2e tests exercise Plexus exactly as users run it (`python -m plexus --config ...` in a
subprocess) against `tests/fake_upstream.py`, with the official SDKs as clients. Everything here is
lazy: unit tests that do not ask for `fake`/`plexus` start nothing. Each test starts with an empty
script queue and request log; a failing test gets the Plexus stderr written during it attached to
its report, and the whole stderr is printed at the end of a session with failures.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from fake_upstream import CLIENT_KEY, FakeUpstream
from spawn import stop_process

MAX_BODY = 1024 * 1024  # server.max_body_bytes in the test config (413 tests)
ADMIN_KEY = "test-admin-key-0123"
# $ per million tokens, per upstream model (the usage records' cost)
PRICES = {"up-gpt": {"input": 2.0, "output": 8.0, "cached_input": 0.5, "cache_write": 2.0},
          "up-claude": {"input": 3.0, "output": 15.0, "cached_input": 0.3, "cache_write": 3.75},
          "up-gemini": {"input": 0.3, "output": 2.5, "cached_input": 0.075, "cache_write": 0.3}}


def _price(model: str) -> str:
    p = PRICES[model]
    return (f"pricing: {{{model}: {{input: {p['input']}, output: {p['output']}, cached_input: {p['cached_input']}, "
            f"cache_write: {p['cache_write']}}}}}")

CONFIG = """\
server: {{host: 127.0.0.1, port: {port}, max_body_bytes: {max_body}, write_timeout: 2}}
admin_key: {admin_key}
providers:
  f_openai: {{type: OpenAI, api_base_url: "{f}/v1", api_key: sk-up-openai, models: [up-gpt, up-gpt-2], headers: {{X-Provider-Extra: from-config}}{tls}, {p_gpt}}}
  f_anthropic: {{type: Anthropic, api_base_url: "{f}/v1", api_key: sk-up-anthropic, models: [up-claude]{tls}, {p_claude}}}
  f_gemini: {{type: Gemini, api_base_url: "{f}/v1beta", api_key: g-up-key, models: [up-gemini]{tls}, {p_gemini}}}
  f_keyless: {{type: OpenAI, api_base_url: "{f}/v1", api_key: "${{PLEXUS_TEST_UNSET_KEY:-}}", models: [up-local]{tls}}}
  f_dead: {{type: OpenAI, api_base_url: "http://127.0.0.1:{dead}/v1", api_key: x, models: [dead]}}
  f_slow: {{type: OpenAI, api_base_url: "{f}/v1", api_key: x, models: [slow], ttfb_timeout: 1{tls}}}
  f_small: {{type: OpenAI, api_base_url: "{f}/v1", api_key: x, models: [small], max_response_bytes: 4096{tls}}}
models:
  gpt: {{targets: [{{provider: f_openai, model: up-gpt}}]}}
  two: {{targets: [{{provider: f_openai, model: up-gpt}}, {{provider: f_openai, model: up-gpt-2}}]}}
  claude: {{targets: [{{provider: f_anthropic, model: up-claude}}]}}
  gem: {{targets: [{{provider: f_gemini, model: up-gemini}}]}}
  local: {{targets: [{{provider: f_keyless, model: up-local}}]}}
  dead: {{targets: [{{provider: f_dead, model: dead}}]}}
  slow: {{targets: [{{provider: f_slow, model: slow}}]}}
  small: {{targets: [{{provider: f_small, model: small}}]}}
"""
ALIASES = ("gpt", "two", "claude", "gem", "local", "dead", "slow", "small")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PlexusProcess:
    def __init__(self, proc: subprocess.Popen, port: int, stderr_path: Path, config_path: Path):
        self.proc, self.port, self.stderr_path, self.config_path = proc, port, stderr_path, config_path
        self.url = f"http://127.0.0.1:{port}"
        self.max_body = MAX_BODY

    def stderr(self, start: int = 0) -> str:
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(start)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stderr_size(self) -> int:
        try:
            return self.stderr_path.stat().st_size
        except OSError:
            return 0


_PLEXUS: PlexusProcess | None = None
_PX_KEY = pytest.StashKey[PlexusProcess]()


@pytest.fixture(scope="session")
def upstream_ca():
    """A throw-away CA (trustme) and a server context for 127.0.0.1/localhost, ALPN http/1.1."""
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    server_ctx.set_alpn_protocols(["http/1.1"])
    return ca, server_ctx


# Every end-to-end test runs twice: against a plain-HTTP fake upstream and against an HTTPS one
# (Plexus trusts the test CA through the providers' ca_file), as real providers are all HTTPS.
@pytest.fixture(scope="session", params=["http", "https"])
def fake(request):
    ctx = request.getfixturevalue("upstream_ca")[1] if request.param == "https" else None
    with FakeUpstream(ssl_context=ctx) as f:
        yield f


@pytest.fixture(scope="session")
def plexus(fake, tmp_path_factory, pytestconfig, request):
    global _PLEXUS
    d = tmp_path_factory.mktemp("plexus")
    # A bound socket that never listens: connecting to it is refused at once (the "dead" provider),
    # and holding it for the session keeps anyone else off the port.
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = free_port()
    cfg = d / "plexus.yaml"
    tls = ""
    if fake.ssl_context is not None:
        ca_path = d / "upstream-ca.pem"
        ca_path.write_bytes(request.getfixturevalue("upstream_ca")[0].cert_pem.bytes())
        tls = f", ca_file: {ca_path}"
    cfg.write_text(CONFIG.format(port=port, f=fake.base_url, dead=dead.getsockname()[1], max_body=MAX_BODY,
                                 tls=tls, admin_key=ADMIN_KEY, p_gpt=_price("up-gpt"),
                                 p_claude=_price("up-claude"), p_gemini=_price("up-gemini")))
    env = {k: v for k, v in os.environ.items()
           if k not in ("PLEXUS_TEST_UNSET_KEY", "PLEXUS_CONFIG", "PLEXUS_PORT")}
    errp = d / "stderr.log"
    with open(errp, "wb") as errf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "plexus", "--config", str(cfg), "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning"],
            stdin=subprocess.DEVNULL, stdout=errf, stderr=errf, env=env, cwd=d)
    px = PlexusProcess(proc, port, errp, cfg)
    pytestconfig.stash[_PX_KEY] = px
    deadline = time.monotonic() + 20
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"plexus exited with {proc.returncode} at startup; output:\n{px.stderr()}",
                            pytrace=False)
            try:
                r = httpx.get(px.url + "/health", timeout=1)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"plexus did not answer GET /health within 20 s; output:\n{px.stderr()}",
                            pytrace=False)
            time.sleep(0.05)
        _PLEXUS = px
        yield px
    finally:
        _PLEXUS = None
        stop_process(proc)
        dead.close()


@pytest.fixture(autouse=True)
def _fresh_fake(request):
    """Each e2e test starts with an empty script and request log (no-op for unit tests)."""
    if "fake" in request.fixturenames:
        request.getfixturevalue("fake").reset()
    start = _PLEXUS.stderr_size() if _PLEXUS is not None else 0
    request.node._plexus_stderr_start = start
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed and _PLEXUS is not None:
        text = _PLEXUS.stderr(getattr(item, "_plexus_stderr_start", 0))
        if _PLEXUS.proc.poll() is not None:
            text += f"\n[plexus process exited with {_PLEXUS.proc.returncode}]"
        if text.strip():
            rep.sections.append(("plexus stderr during this test", text[-6000:]))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    px = config.stash.get(_PX_KEY, None)
    if px is not None and exitstatus != 0:
        text = px.stderr()
        if text.strip():
            terminalreporter.section("plexus stderr (whole session)")
            terminalreporter.write(text[-20000:] + "\n")


@pytest.fixture(scope="session")
def base_url(plexus) -> str:
    return plexus.url


@pytest.fixture(scope="session")
def http(base_url):
    with httpx.Client(base_url=base_url, timeout=10) as c:
        yield c


@pytest.fixture(scope="session")
def openai_client(base_url):
    import openai

    c = openai.OpenAI(base_url=f"{base_url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=10)
    yield c
    c.close()


@pytest.fixture(scope="session")
def anthropic_client(base_url):
    import anthropic

    c = anthropic.Anthropic(base_url=base_url, api_key=CLIENT_KEY, max_retries=0, timeout=10)
    yield c
    c.close()


def _genai(base_url, api_version=None):
    from google import genai
    from google.genai import types

    # google-genai 3.x defaults to api_version "v1" (it calls /v1/models/...); Plexus serves both.
    return genai.Client(api_key=CLIENT_KEY, vertexai=False, http_options=types.HttpOptions(
        base_url=base_url, api_version=api_version, timeout=10_000))


@pytest.fixture(scope="session")
def genai_client(base_url):
    return _genai(base_url)


@pytest.fixture(scope="session")
def genai_client_v1beta(base_url):
    return _genai(base_url, "v1beta")

