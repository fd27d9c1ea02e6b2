"""CLI: config errors exit 2 with one line on stderr; host/port precedence; the no-key reports."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import types

import pytest

from plexus.__main__ import is_loopback, main

GOOD = """\
server: {host: 10.1.2.3, port: 4567}
providers:
  keyed: {type: OpenAI, api_base_url: "http://127.0.0.1:9/v1", api_key: sk-x, models: [m]}
  nokey: {type: Anthropic, api_base_url: "http://127.0.0.1:9/v1", api_key: "${PLEXUS_T_KEY:-}", models: [c]}
  bare: {type: Gemini, api_base_url: "http://127.0.0.1:9/v1beta", models: [g]}
models:
  a: {targets: [{provider: keyed, model: m}]}
  b: {targets: [{provider: nokey, model: c}]}
"""

# Runs the real CLI in a child process with a stand-in plexus.app that records its arguments.
FAKE_APP_RUNNER = textwrap.dedent("""\
    import sys, types
    app = types.ModuleType("plexus.app")
    def run(config, *, host, port, **opts):
        print(f"RUN {host} {port} {len(config.aliases)}", flush=True)
        return 0
    app.run = run
    sys.modules["plexus.app"] = app
    from plexus.__main__ import main
    sys.exit(main(sys.argv[1:]))
""")


def clean_env(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEXUS_")}
    env.update(extra)
    return env


def run_cli(args, cwd, env=None, fake_app=False):
    cmd = [sys.executable, "-c", FAKE_APP_RUNNER] if fake_app else [sys.executable, "-m", "plexus"]
    return subprocess.run(cmd + args, cwd=cwd, env=env or clean_env(), capture_output=True,
                          text=True, timeout=30)


@pytest.mark.parametrize("text, needle", [
    ("providers: {oa: [unclosed\n", "invalid YAML at line"),
    (GOOD.replace("api_key: sk-x", "api_kee: sk-x"), "providers.keyed.api_kee: unknown key"),
    (GOOD.replace("model: c}", "model: zzz}"), "models.b.targets[0].model:"),
    (GOOD + "models: {}\n", "duplicate key 'models'"),
])
def test_bad_config_exits_2_without_traceback(tmp_path, text, needle):
    (tmp_path / "bad.yaml").write_text(text)
    p = run_cli(["--config", "bad.yaml"], tmp_path)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("plexus: config error: bad.yaml: "), p.stderr
    assert needle in lines[0], p.stderr
    assert p.stdout == ""


def test_missing_config_file(tmp_path):
    p = run_cli(["--config", "nope.yaml"], tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip() == "plexus: config error: nope.yaml: file not found"


def test_missing_default_config_mentions_how_to_pass_one(tmp_path):
    p = run_cli([], tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert os.path.join("config", "plexus.yaml") in p.stderr and "PLEXUS_CONFIG" in p.stderr


def test_plexus_config_env(tmp_path):
    p = run_cli([], tmp_path, env=clean_env(PLEXUS_CONFIG="from-env.yaml"))
    assert p.returncode == 2 and "from-env.yaml: file not found" in p.stderr


def test_bad_arguments_exit_2(tmp_path):
    for args in (["--port", "abc"], ["--log-level", "loud"], ["--bogus"]):
        p = run_cli(args, tmp_path)
        assert p.returncode == 2 and "Traceback" not in p.stderr and "usage:" in p.stderr


def test_good_config_reports_keyless_providers_then_runs(tmp_path):
    (tmp_path / "plexus.yaml").write_text(GOOD)
    p = run_cli(["--config", "plexus.yaml", "--log-level", "warning"], tmp_path, fake_app=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "RUN 10.1.2.3 4567 2"
    warnings = [ln for ln in p.stderr.splitlines() if "WARNING" in ln]
    assert len(warnings) == 3, p.stderr
    assert "listening on 10.1.2.3 with no keys configured" in warnings[0]
    assert warnings[1].endswith("provider 'nokey' has no API key (set PLEXUS_T_KEY); calling it without auth")
    assert warnings[2].endswith("provider 'bare' has no API key; calling it without auth")
    assert "sk-x" not in p.stderr


def test_error_log_level_silences_the_report(tmp_path):
    (tmp_path / "plexus.yaml").write_text(GOOD)
    p = run_cli(["--config", "plexus.yaml", "--log-level", "error"], tmp_path, fake_app=True)
    assert p.returncode == 0 and p.stderr == "", p.stderr


def test_keys_from_env_silence_the_report(tmp_path):
    text = GOOD.replace("models: [g]}", 'api_key: "${PLEXUS_T_G}", models: [g]}')
    (tmp_path / "plexus.yaml").write_text(text)
    p = run_cli([], tmp_path, env=clean_env(PLEXUS_CONFIG="plexus.yaml", PLEXUS_T_KEY="k",
                                            PLEXUS_T_G="g"), fake_app=True)
    assert p.returncode == 0 and "no API key" not in p.stderr, p.stderr


# --------------------------------------------------------------------------- in-process precedence

@pytest.fixture
def fake_app(monkeypatch):
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))  # main() may add a handler
    monkeypatch.setattr(root, "level", root.level)
    calls = []
    app = types.ModuleType("plexus.app")
    app.run = lambda config, *, host, port, **opts: calls.append((config, host, port)) or 0
    monkeypatch.setitem(sys.modules, "plexus.app", app)
    for var in ("PLEXUS_PORT", "PLEXUS_CONFIG", "PLEXUS_T_KEY"):
        monkeypatch.delenv(var, raising=False)
    return calls


@pytest.fixture
def cfg(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(GOOD)
    return str(path)


def test_port_and_host_precedence(fake_app, cfg, monkeypatch, tmp_path):
    assert main(["--config", cfg]) == 0
    assert fake_app[-1][1:] == ("10.1.2.3", 4567)  # from the config
    monkeypatch.setenv("PLEXUS_PORT", "5555")
    assert main(["--config", cfg]) == 0
    assert fake_app[-1][1:] == ("10.1.2.3", 5555)  # env beats config
    assert main(["--config", cfg, "--port", "6666", "--host", "127.0.0.1"]) == 0
    assert fake_app[-1][1:] == ("127.0.0.1", 6666)  # flags beat both
    monkeypatch.delenv("PLEXUS_PORT")
    bare = tmp_path / "bare.yaml"
    bare.write_text(GOOD.split("\n", 1)[1])  # no server section
    assert main(["--config", str(bare)]) == 0
    assert fake_app[-1][1:] == ("127.0.0.1", 3000)  # built-in defaults: loopback only
    monkeypatch.setenv("PLEXUS_CONFIG", str(bare))
    assert main([]) == 0
    assert fake_app[-1][0].path == str(bare)


def test_bad_plexus_port(fake_app, cfg, monkeypatch, capsys):
    monkeypatch.setenv("PLEXUS_PORT", "http")
    assert main(["--config", cfg]) == 2
    assert "PLEXUS_PORT" in capsys.readouterr().err and not fake_app
    monkeypatch.delenv("PLEXUS_PORT")
    assert main(["--config", cfg, "--port", "70000"]) == 2
    assert not fake_app


def test_config_error_in_process(fake_app, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("type: Gemini", "type: Bard"))
    assert main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err == f"plexus: config error: {bad}: providers.bare.type: unknown provider type 'Bard' " \
                  "(expected one of OpenAI, Anthropic, Gemini)\n"
    assert not fake_app


def test_bad_ca_file_and_tls_warnings_at_startup(tmp_path):
    """A ca_file that holds no certificate stops startup with the config line (no traceback);
    tls_verify: false is warned about by provider name; a proxy is named by host:port only."""
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    text = GOOD.replace('keyed: {type: OpenAI, api_base_url: "http://127.0.0.1:9/v1"',
                        f'keyed: {{type: OpenAI, ca_file: "{tmp_path / "bad.pem"}", api_base_url: "https://127.0.0.1:9/v1"')
    (tmp_path / "c.yaml").write_text(text)
    r = run_cli(["--config", "c.yaml", "--port", "0", "--host", "127.0.0.1"], tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "config error:" in r.stderr and "providers.keyed.ca_file" in r.stderr
    text = GOOD.replace('api_key: sk-x,', 'api_key: sk-x, tls_verify: false, proxy: "http://u:pw-x@10.9.9.9:3128",')
    (tmp_path / "w.yaml").write_text(text)
    r = run_cli(["--config", "w.yaml", "--log-level", "info"], tmp_path, fake_app=True)
    assert r.returncode == 0, r.stderr
    assert "provider 'keyed' has tls_verify: false" in r.stderr
    assert "10.9.9.9:3128" in r.stderr and "pw-x" not in r.stderr


# --------------------------------------------------------------------------- exposure warning

EXPOSED = "with no keys configured"
KEYS = 'keys:\n  team: {secret: "${PLEXUS_T_TEAM:-sk-team-1}"}\n'


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.3.4.5", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LOCALHOST", True), ("app.localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("192.168.1.20", False), ("fe80::1%eth0", False),
    ("myhost", False), ("example.com", False), ("127.0.0.1.example.com", False),
])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("args, warned", [
    ([], False),                                   # the default host is 127.0.0.1
    (["--host", "0.0.0.0"], True),
    (["--host", "::"], True),
    (["--host", "192.168.1.20"], True),
    (["--host", "gateway.internal"], True),
    (["--host", "localhost"], False),
    (["--host", "::1"], False),
])
def test_listening_beyond_loopback_without_keys_warns(fake_app, tmp_path, caplog, args, warned):
    bare = tmp_path / "bare.yaml"
    bare.write_text(GOOD.split("\n", 1)[1])  # no server section
    with caplog.at_level(logging.WARNING, logger="plexus"):
        assert main(["--config", str(bare), *args]) == 0
    hits = [rec for rec in caplog.records if EXPOSED in rec.getMessage()]
    assert len(hits) == int(warned), caplog.text
    if warned:
        assert hits[0].levelno == logging.WARNING
        msg = hits[0].getMessage()
        assert "port 3000" in msg and "spend your provider keys" in msg and "add `keys:`" in msg


def test_keys_silence_the_exposure_warning(fake_app, tmp_path, caplog):
    path = tmp_path / "keyed.yaml"
    path.write_text(KEYS + GOOD)  # server.host 10.1.2.3
    with caplog.at_level(logging.WARNING, logger="plexus"):
        assert main(["--config", str(path), "--host", "0.0.0.0"]) == 0
    assert EXPOSED not in caplog.text and "sk-team-1" not in caplog.text
    assert [k.name for k in fake_app[-1][0].keys] == ["team"]


def test_test_request_subcommand(tmp_path):
    """`plexus test-request ...` is the test-request tool (plexus/test_request.py)."""
    p = subprocess.run([sys.executable, "-m", "plexus", "test-request", "--help"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "plexus test-request" in p.stdout and "alias" in p.stdout


def test_workers_flag_is_checked(tmp_path):
    (tmp_path / "plexus.yaml").write_text(
        "providers:\n  p: {type: OpenAI, api_base_url: 'http://127.0.0.1:9/v1', models: [m]}\n"
        "models:\n  a: {targets: [{provider: p, model: m}]}\n")
    p = subprocess.run([sys.executable, "-m", "plexus", "--config", "plexus.yaml", "--workers", "0"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "--workers must be a positive number or auto" in p.stderr
