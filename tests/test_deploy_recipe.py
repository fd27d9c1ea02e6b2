"""The multi-host deployment recipe (config/deploy/, README.md there): its files agree with Plexus
and with each other.

- plexus.yaml (the fleet config) loads with ``load_config`` given its ${VAR}s, names a PostgreSQL
  ``usage_store`` and a Redis ``state_store``, and fails on a missing secret.
- plexus@.service is config/plexus.service with ``--port %i``: every other [Service] setting
  (the sandbox included) equal, so the two cannot drift; it passes ``systemd-analyze verify``
  instantiated as plexus@3001.service (skipped where there is none).
- compose.yaml has postgres, redis, two plexus replicas and nginx; the plexus service's
  environment gives every ${VAR} the config needs (the provider keys come from its env_file);
  the Dockerfile installs '.[shared]' from files that exist.
- nginx.conf / nginx-compose.conf / haproxy.cfg: the settings streams and safe failover need,
  the instances the README starts; ``nginx -t`` / ``haproxy -c`` where those are installed
  (separate tests, skipped otherwise: the text checks run everywhere).
- the package ships the PostgreSQL migrations (the recipe installs with pip, not editable).
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from plexus.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "config" / "deploy"
ENV = {"PLEXUS_ADMIN_KEY": "admin-secret", "TEAM_A_KEY": "team-a-secret", "BATCH_KEY": "batch-secret",
       "PGPASSWORD": "pg-pass", "REDIS_PASSWORD": "redis-pass",
       "OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "sk-ant-test"}
_VAR = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")
_COMPOSE_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?+][^}]*)?\}")  # ${X}, ${X:?msg}, ${X:-d}


def fleet(env=None):
    return load_config(str(DEPLOY / "plexus.yaml"), ENV if env is None else env)


def strings(node):
    """Every string value in a YAML tree (not the comments)."""
    if isinstance(node, dict):
        for v in node.values():
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)
    elif isinstance(node, str):
        yield node


def config_vars() -> tuple[set[str], set[str]]:
    """(${VAR}s without a default, those of them in a provider's settings) in the fleet config."""
    data = yaml.safe_load((DEPLOY / "plexus.yaml").read_text())
    required = {m.group(1) for s in strings(data) for m in _VAR.finditer(s) if m.group(2) is None}
    providers = {m.group(1) for s in strings(data["providers"]) for m in _VAR.finditer(s)}
    return required, providers


# ----------------------------------------------------------------------------- the fleet config

def test_fleet_config_loads_and_names_the_shared_stores():
    c = fleet()
    usage, state = urlsplit(c.stores.usage_store), urlsplit(c.stores.state_store)
    assert usage.scheme in ("postgresql", "postgres") and usage.hostname == "127.0.0.1"
    assert usage.password == "pg-pass" and usage.path == "/plexus"
    assert state.scheme == "redis" and state.hostname == "127.0.0.1" and state.password == "redis-pass"
    assert c.server.host == "0.0.0.0" and str(c.server.workers) == "auto"
    assert c.server.trusted_proxies, "behind a load balancer X-Forwarded-For must be believed from it"
    assert c.usage.spool_path == "/var/lib/plexus/usage.spool"  # the units' StateDirectory
    assert c.admin_key == "admin-secret"
    assert any(k.rpm for k in c.keys) and any(k.tpm for k in c.keys)


def test_fleet_config_hosts_come_from_the_environment():
    c = fleet({**ENV, "PGHOST": "db.internal", "REDIS_HOST": "cache.internal"})
    assert urlsplit(c.stores.usage_store).hostname == "db.internal"
    assert urlsplit(c.stores.state_store).hostname == "cache.internal"


@pytest.mark.parametrize("var", ["PGPASSWORD", "REDIS_PASSWORD", "TEAM_A_KEY"])
def test_fleet_config_without_a_secret_is_an_error(var):
    with pytest.raises(ConfigError) as e:
        fleet({k: v for k, v in ENV.items() if k != var})
    assert var in str(e.value)


def test_test_env_covers_the_fleet_config():
    required, _ = config_vars()
    assert required <= set(ENV), required - set(ENV)


# ----------------------------------------------------------------------------- the unit files

def unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values, in file order (a unit file may repeat a key)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out.setdefault(section, {})
            continue
        k, _, v = line.partition("=")
        out[section].setdefault(k.strip(), []).append(v.strip())
    return out


TEMPLATE = DEPLOY / "plexus@.service"
SINGLE = ROOT / "config" / "plexus.service"
SANDBOX = ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "ReadWritePaths", "PrivateDevices",
           "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups",
           "ProtectClock", "ProtectHostname", "RestrictAddressFamilies", "RestrictNamespaces", "RestrictRealtime",
           "RestrictSUIDSGID", "LockPersonality", "SystemCallArchitectures", "CapabilityBoundingSet",
           "AmbientCapabilities", "User", "Group", "UMask", "StateDirectory")


def test_unit_template_settings():
    s = {k: v[-1] for k, v in unit(TEMPLATE)["Service"].items()}
    assert s["Type"] == "notify" and s["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert s["ExecStart"] == "/opt/plexus/venv/bin/plexus --config /etc/plexus/plexus.yaml --port %i"
    assert s["StateDirectory"] == "plexus" and s["ReadWritePaths"] == "/var/lib/plexus"
    assert "%i" in unit(TEMPLATE)["Unit"]["Description"][0]


def test_unit_template_is_the_single_unit_with_a_port():
    """Every [Service] setting but ExecStart equal to config/plexus.service's (the sandbox, the
    user, the stop timeout...): a hardening added to one file and not the other fails here."""
    tpl, one = unit(TEMPLATE), unit(SINGLE)
    assert set(SANDBOX) <= set(one["Service"]), set(SANDBOX) - set(one["Service"])
    drop = lambda d: {k: v for k, v in d.items() if k != "ExecStart"}  # noqa: E731
    assert drop(tpl["Service"]) == drop(one["Service"])
    assert tpl["Service"]["ExecStart"][0] == one["Service"]["ExecStart"][0] + " --port %i"
    assert tpl["Install"] == one["Install"]
    assert {k: v for k, v in tpl["Unit"].items() if k != "Description"} == \
           {k: v for k, v in one["Unit"].items() if k != "Description"}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_unit_template_passes_systemd_analyze_verify(tmp_path):
    """Instantiated as plexus@3001.service (a copy under that name); ExecStart's binary must
    exist, so the copy points it at this venv's python (as tests/test_lifecycle.py does)."""
    text = TEMPLATE.read_text()
    exe = re.search(r"^ExecStart=(\S+)", text, re.M).group(1)
    path = tmp_path / "plexus@3001.service"
    path.write_text(text.replace(exe, sys.executable + " -m plexus", 1))
    r = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
    problems = [ln for ln in (r.stdout + r.stderr).splitlines() if "plexus@" in ln]
    assert not problems, r.stdout + r.stderr
    assert r.returncode == 0, r.stdout + r.stderr


# ----------------------------------------------------------------------------- compose, Dockerfile

def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.partition("=")[::2] for e in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def plexus_services(c: dict) -> list[dict]:
    return [s for name, s in c["services"].items() if name == "plexus" or name.startswith("plexus-")]


def test_compose_has_the_four_services():
    c = compose()
    assert {"postgres", "redis", "nginx"} <= set(c["services"])
    instances = sum(int((s.get("deploy") or {}).get("replicas", 1)) for s in plexus_services(c))
    assert instances >= 2
    pg = c["services"]["postgres"]
    assert pg["image"].startswith("postgres:16")
    assert "pg_isready" in str(pg["healthcheck"]["test"])
    assert any(str(v).endswith(":/var/lib/postgresql/data") for v in pg["volumes"])
    assert c["services"]["redis"]["image"].startswith("redis:7")


def test_compose_plexus_service_runs_the_fleet_config():
    c = compose()
    required, provider_vars = config_vars()
    for s in plexus_services(c):
        build = s["build"]
        assert (DEPLOY / build["context"]).resolve() == ROOT
        assert (ROOT / build["dockerfile"]).resolve() == (DEPLOY / "Dockerfile").resolve()
        cmd = s["command"] if isinstance(s["command"], list) else s["command"].split()
        assert cmd[:3] == ["plexus", "--config", "/etc/plexus/plexus.yaml"] and "0.0.0.0" in cmd
        assert "./plexus.yaml:/etc/plexus/plexus.yaml:ro" in s["volumes"]
        env = env_of(s)
        assert env["PGHOST"] == "postgres" and env["REDIS_HOST"] == "redis"
        missing = required - provider_vars - set(env)
        assert not missing, f"compose.yaml's plexus environment lacks {missing}"
        for var in required - provider_vars:
            ref = _COMPOSE_VAR.fullmatch(env[var])
            assert ref is None or ref.group(1) == var, f"{var}: {env[var]}"
        assert s.get("env_file"), "the provider keys come from an env_file"
        grace = re.fullmatch(r"(\d+)s", str(s["stop_grace_period"]))
        assert grace and int(grace.group(1)) >= 35  # server.shutdown_grace (30) + a margin


def test_compose_passwords_agree():
    c = compose()
    pg, redis, px = c["services"]["postgres"], c["services"]["redis"], plexus_services(c)[0]
    name = lambda v: _COMPOSE_VAR.fullmatch(v).group(1)  # noqa: E731
    assert name(env_of(pg)["POSTGRES_PASSWORD"]) == name(env_of(px)["PGPASSWORD"]) == "PGPASSWORD"
    usage = urlsplit(fleet().stores.usage_store)
    assert env_of(pg)["POSTGRES_USER"] == usage.username and env_of(pg)["POSTGRES_DB"] == usage.path[1:]
    cmd = redis["command"]
    assert name(cmd[cmd.index("--requirepass") + 1]) == name(env_of(px)["REDIS_PASSWORD"]) == "REDIS_PASSWORD"


def test_compose_nginx_mounts_a_config_that_reaches_the_replicas():
    c = compose()
    mounts = [v.split(":") for v in c["services"]["nginx"]["volumes"]]
    conf = [DEPLOY / src for src, dst, *_ in mounts if dst.startswith("/etc/nginx/")]
    assert len(conf) == 1 and conf[0].is_file()
    servers = [d[1] for d in directives(conf[0].read_text()) if d[0] == ("upstream plexus",) and d[1][0] == "server"]
    names = {s[1] for s in servers}
    assert names <= {f"{n}:3000" for n in c["services"]}, names  # the default port, no --port


def test_dockerfile_installs_the_shared_extra():
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"pip install [^\n]*\[shared\]", text)
    for m in re.finditer(r"^COPY\s+(.+)\s+\S+$", text, re.M):
        for src in m.group(1).split():
            assert (ROOT / src).exists(), f"Dockerfile: COPY {src}: not in the build context"
    assert '"--config", "/etc/plexus/plexus.yaml"' in text


# ----------------------------------------------------------------------------- nginx, HAProxy

def directives(text: str) -> list[tuple[tuple[str, ...], list[str]]]:
    """(enclosing blocks, [name, args...]) of every simple directive of an nginx config."""
    out: list = []
    stack: list[str] = []
    words: list[str] = []
    for m in re.finditer(r'#[^\n]*|"([^"]*)"|\'([^\']*)\'|([{};])|([^\s{};"\'#]+)', text):
        quoted, single, punct, bare = m.groups()
        if m.group(0).startswith("#"):
            continue
        if punct == "{":
            stack.append(" ".join(words))
            words = []
        elif punct == ";":
            out.append((tuple(stack), words))
            words = []
        elif punct == "}":
            assert not words, f"a directive without ';' before '}}': {words}"
            stack.pop()
        else:
            words.append(next(w for w in (quoted, single, bare) if w is not None))
    assert not stack and not words, "unbalanced braces or a missing ';'"
    return out


def nginx_values(path: Path, block: str) -> dict[str, list[list[str]]]:
    out: dict[str, list[list[str]]] = {}
    for where, d in directives(path.read_text()):
        if where and where[-1].startswith(block):
            out.setdefault(d[0], []).append(d[1:])
    return out


def readme_ports() -> list[int]:
    m = re.search(r"systemctl enable --now ((?:plexus@\d+ ?)+)", (DEPLOY / "README.md").read_text())
    assert m, "config/deploy/README.md starts the instances with systemctl enable --now plexus@PORT..."
    return [int(p) for p in re.findall(r"plexus@(\d+)", m.group(1))]


def seconds(v: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", v)
    return int(m.group(1)) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[m.group(2)]


@pytest.mark.parametrize("name", ["nginx.conf", "nginx-compose.conf"])
def test_nginx_site_text(name):
    """Read as text (this runs without nginx): streams unbuffered, keep-alive upstream, body size,
    and failover that only retries what never reached an instance."""
    path = DEPLOY / name
    loc = nginx_values(path, "location /")
    one = {k: v[-1] for k, v in loc.items()}
    assert one["proxy_pass"] == ["http://plexus"]
    assert one["proxy_buffering"] == ["off"] and one["proxy_request_buffering"] == ["off"]
    assert one["proxy_http_version"] == ["1.1"] and ["Connection", ""] in loc["proxy_set_header"]
    assert ["X-Forwarded-For", "$proxy_add_x_forwarded_for"] in loc["proxy_set_header"]
    assert seconds(one["proxy_read_timeout"][0]) >= 300  # at least upstream.read_timeout
    retry = set(one["proxy_next_upstream"])
    assert "error" in retry and "non_idempotent" not in retry
    assert not {r for r in retry if r.startswith("http_")}, "a 5xx may come after the provider was called"
    size = {k: v[-1] for k, v in nginx_values(path, "server").items()}["client_max_body_size"][0]
    assert size.lower() == f"{fleet().server.max_body_bytes // (1 << 20)}m"
    up = nginx_values(path, "upstream plexus")
    assert "keepalive" in up and up["server"]


def test_nginx_upstream_lists_the_readme_instances():
    ports = readme_ports()
    servers = [s[0] for s in nginx_values(DEPLOY / "nginx.conf", "upstream plexus")["server"]]
    assert servers == [f"127.0.0.1:{p}" for p in ports]
    assert len(ports) >= 2


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx not installed: test_nginx_site_text reads the text")
def test_nginx_conf_passes_nginx_t(tmp_path):
    """``nginx -t`` on a minimal main config that includes the site."""
    (tmp_path / "logs").mkdir()
    main = tmp_path / "nginx.conf"
    main.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
                    f"http {{\n  access_log off;\n  include {DEPLOY / 'nginx.conf'};\n}}\n")
    r = subprocess.run(["nginx", "-t", "-e", "stderr", "-p", str(tmp_path), "-c", str(main)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def haproxy() -> list[tuple[str, str]]:
    """(section header, line) of haproxy.cfg, comments removed."""
    out, section = [], ""
    for line in (DEPLOY / "haproxy.cfg").read_text().splitlines():
        line = line.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line[0].isspace():
            section = line.strip()
        else:
            out.append((section, " ".join(line.split())))
    return out


def test_haproxy_cfg_text():
    """Read as text (this runs without HAProxy): health checks, forwardfor, long stream timeouts,
    retries only on connection failures, the README's instances."""
    lines = haproxy()
    backend = [ln for s, ln in lines if s == "backend plexus"]
    assert "option httpchk GET /health" in backend and "balance leastconn" in backend
    assert any(ln == "option forwardfor" for _, ln in lines)
    timeouts = {ln.split()[1]: ln.split()[2] for _, ln in lines if ln.startswith("timeout ")}
    assert seconds(timeouts["server"]) >= 300 and seconds(timeouts["client"]) >= 300
    retry = [ln.split()[1:] for ln in backend if ln.startswith("retry-on ")]
    assert retry == [["conn-failure"]]
    servers = [ln.split()[2] for ln in backend if ln.startswith("server ")]
    assert servers == [f"127.0.0.1:{p}" for p in readme_ports()]
    assert any(ln.startswith("default-server") and " check" in f" {ln}" for ln in backend)


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed: test_haproxy_cfg_text reads the text")
def test_haproxy_cfg_passes_haproxy_c():
    r = subprocess.run(["haproxy", "-c", "-f", str(DEPLOY / "haproxy.cfg")], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


# ----------------------------------------------------------------------------- the package

def test_package_ships_the_pg_migrations():
    """The recipe installs with ``pip install '/path/to/plexus[shared]'`` (not editable): the
    migrations Plexus applies at start must be package data."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["plexus"]
    sql = sorted(p.relative_to(ROOT / "plexus").as_posix()
                 for p in (ROOT / "plexus" / "control" / "migrations").rglob("*.sql"))
    assert sql
    unshipped = [f for f in sql if not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    assert not unshipped, f"pyproject.toml [tool.setuptools.package-data] plexus misses {unshipped}"
