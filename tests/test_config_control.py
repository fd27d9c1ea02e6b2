"""Config: the control sections (keys, admin_key, usage, metrics, debug, trusted_proxies,
pricing), each rule naming its key path, and the cost formula."""

from __future__ import annotations

import ipaddress
import os

import pytest

from plexus.config import (
    Config, ConfigError, DebugSettings, InboundKey, MetricsSettings, Price, ServerSettings, UsageSettings,
    load_config, parse_config,
)
from plexus.config_control import cost
from test_config import EXAMPLE, GOOD_YAML, _both, _set, base, parse

# --------------------------------------------------------------------------- control sections


def test_control_defaults():
    c = parse(base())
    assert c.keys == () and c.admin_key == ""
    assert c.usage == UsageSettings(enabled=True, path=os.path.abspath("plexus-usage.db"), retention_days=30.0,
                                    buffer_records=50_000, spool_path=os.path.abspath("plexus-usage.spool"))
    assert c.stores.usage_store == "" and c.stores.state_store == ""
    assert c.metrics == MetricsSettings(allow=()) and c.debug == DebugSettings(max_entries=100)
    assert c.server.trusted_proxies == ()
    assert all(p.pricing == {} for p in c.providers.values())


def test_config_built_in_code_keeps_working():
    c = parse(base())
    built = Config(path="x", server=c.server, providers=c.providers, aliases=c.aliases)
    assert built.keys == () and built.admin_key == "" and built.usage.enabled is False
    assert built.metrics.allow == () and built.debug.max_entries == 100
    s = ServerSettings(host="h", port=1, max_body_bytes=1, max_header_bytes=1024, keepalive_timeout=1.0,
                       header_timeout=1.0)
    assert s.trusted_proxies == ()


def test_keys_section():
    d = base()
    d["keys"] = {"team-a": {"secret": "${TEAM_A}"}, "ci": {"secret": " sk-ci-1 ", "models": ["fast", "two"]},
                 "one": {"secret": "sk-one", "models": ["fast"]}}
    c = parse(d, {"TEAM_A": "sk-team-a"})
    assert [k.name for k in c.keys] == ["team-a", "ci", "one"]
    a, ci, one = c.keys
    assert a == InboundKey("team-a", "sk-team-a", None)
    assert ci.secret == "sk-ci-1" and ci.models == frozenset({"fast", "two"}) and one.models == frozenset({"fast"})
    assert "sk-" not in repr(c) and "sk-" not in repr(c.keys)
    d["keys"] = None
    assert parse(d).keys == ()
    d["keys"] = {}
    assert parse(d).keys == ()


def test_admin_key_from_config_then_environment():
    d = base()
    assert parse(d, {"PLEXUS_ADMIN_KEY": " adm-env "}).admin_key == "adm-env"
    d["admin_key"] = ""
    assert parse(d, {"PLEXUS_ADMIN_KEY": "adm-env"}).admin_key == "adm-env"
    d["admin_key"] = "${ADM:-}"
    assert parse(d, {"PLEXUS_ADMIN_KEY": "adm-env"}).admin_key == "adm-env"
    assert parse(d, {"ADM": "adm-cfg", "PLEXUS_ADMIN_KEY": "adm-env"}).admin_key == "adm-cfg"
    d["admin_key"] = "adm-literal"
    c = parse(d, {})
    assert c.admin_key == "adm-literal" and "adm-literal" not in repr(c)
    d["admin_key"] = None
    assert parse(d, {}).admin_key == ""


def test_admin_key_default_env_is_process_environment(monkeypatch):
    monkeypatch.setenv("PLEXUS_ADMIN_KEY", "adm-os")
    assert parse_config(base(), "t.yaml").admin_key == "adm-os"


def test_admin_key_from_env_must_differ_from_inbound_keys():
    d = base()
    d["keys"] = {"a": {"secret": "same-1"}}
    with pytest.raises(ConfigError) as ei:
        parse(d, {"PLEXUS_ADMIN_KEY": "same-1"})
    assert ei.value.key_path == "admin_key" and "PLEXUS_ADMIN_KEY" in ei.value.message
    assert "same-1" not in str(ei.value)


def test_usage_section_and_path_resolution(tmp_path):
    d = base()
    d["usage"] = {"enabled": False, "path": "data/u.db", "retention_days": 0}
    c = parse_config(d, str(tmp_path / "conf" / "plexus.yaml"), env={})
    assert c.usage == UsageSettings(enabled=False, path=str(tmp_path / "conf" / "data" / "u.db"), retention_days=0.0,
                                    spool_path=str(tmp_path / "conf" / "plexus-usage.spool"))
    c = parse_config(d, "<config>", env={})  # in memory: the current directory
    assert c.usage.path == os.path.join(os.getcwd(), "data", "u.db")
    d["usage"] = {"path": str(tmp_path / "abs.db"), "retention_days": 7.5}
    c = parse_config(d, str(tmp_path / "conf" / "plexus.yaml"), env={})
    assert (c.usage.enabled, c.usage.path, c.usage.retention_days) == (True, str(tmp_path / "abs.db"), 7.5)
    d["usage"] = {"path": "~/u.db"}
    assert parse(d).usage.path == os.path.expanduser("~/u.db")
    d["usage"] = {"spool_path": "spool/u.spool", "buffer_records": 10}
    u = parse_config(d, str(tmp_path / "conf" / "plexus.yaml"), env={}).usage
    assert (u.spool_path, u.buffer_records) == (str(tmp_path / "conf" / "spool" / "u.spool"), 10)
    for bad in ({"spool_path": ""}, {"buffer_records": -1}, {"buffer_records": "x"}):
        d["usage"] = bad
        with pytest.raises(ConfigError) as ei:
            parse(d)
        assert ei.value.key_path == f"usage.{next(iter(bad))}"
    d["usage"] = {"path": "${UDB:-u.db}", "enabled": "${UE:-false}", "retention_days": "${UR}"}
    u = parse_config(d, str(tmp_path / "p.yaml"), env={"UR": "3"}).usage
    assert (u.enabled, u.path, u.retention_days) == (False, str(tmp_path / "u.db"), 3.0)


def test_usage_path_relative_to_the_loaded_file(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "plexus.yaml"
    path.write_text(GOOD_YAML + "usage: {path: usage.db}\n")
    assert load_config(str(path), env={}).usage.path == str(tmp_path / "sub" / "usage.db")


def test_networks():
    d = base()
    d["metrics"] = {"allow": ["127.0.0.1", "10.1.2.3/8", "::1", "fd00::/8", "127.0.0.1"]}
    d["server"] = {"trusted_proxies": ["192.168.0.10", "${PROXY_NET:-172.16.0.0/12}"]}
    c = parse(d)
    assert [str(n) for n in c.metrics.allow] == ["127.0.0.1/32", "10.0.0.0/8", "::1/128", "fd00::/8"]
    assert [str(n) for n in c.server.trusted_proxies] == ["192.168.0.10/32", "172.16.0.0/12"]
    assert ipaddress.ip_address("10.200.0.1") in c.metrics.allow[1]
    d["metrics"] = {"allow": None}
    assert parse(d).metrics.allow == ()
    d["metrics"] = {}
    assert parse(d).metrics.allow == ()


def test_debug_section():
    d = base()
    d["debug"] = {"max_entries": 0}
    assert parse(d).debug.max_entries == 0
    d["debug"] = {"max_entries": "${DBG:-250}"}
    assert parse(d).debug.max_entries == 250
    d["debug"] = {}
    assert parse(d).debug.max_entries == 100


def test_pricing():
    d = base()
    d["providers"]["oa"]["pricing"] = {"gpt-4o-mini": {"input": 0.15, "output": 0.6, "cached_input": 0.075},
                                      "gpt-4.1": {"input": 2, "output": 8, "cache_write": "${CW:-2.5}"}}
    d["providers"]["an"]["pricing"] = {"claude-sonnet-4-5": {"input": 0, "output": 0}}
    d["providers"]["or"] = {"type": "OpenAI", "api_base_url": "https://openrouter.ai/api/v1", "models": "*",
                            "pricing": {"any/model:free": {"input": 0, "output": 0}}}
    c = parse(d)
    mini, big = c.providers["oa"].pricing["gpt-4o-mini"], c.providers["oa"].pricing["gpt-4.1"]
    assert mini == Price(input=pytest.approx(0.15e-6), output=pytest.approx(0.6e-6),
                         cached_input=pytest.approx(0.075e-6), cache_write=pytest.approx(0.15e-6))
    assert (big.cached_input, big.cache_write) == (pytest.approx(2e-6), pytest.approx(2.5e-6))
    assert c.providers["an"].pricing["claude-sonnet-4-5"] == Price(0.0, 0.0, 0.0, 0.0)
    assert list(c.providers["or"].pricing) == ["any/model:free"]
    assert c.providers["ge"].pricing == {}
    with pytest.raises(AttributeError):
        mini.input = 1.0


@pytest.mark.parametrize("tokens, want", [
    ((1_000_000, 1_000_000, None, None), 1.0 + 4.0),
    ((1_000_000, 0, 400_000, None), 0.6 + 0.4 * 0.1),            # cached at the cached price
    ((1_000_000, 10, 200_000, 300_000), 0.5 + 0.02 + 0.3 * 1.25 + 10 * 4e-6),
    ((None, None, None, None), 0.0),
    ((100, 5, 300, 0), 300 * 0.1e-6 + 5 * 4e-6),                 # more cached than input: fresh is 0
    ((-5, -1, -3, -2), 0.0),                                     # never negative
])
def test_cost(tokens, want):
    price = Price(input=1e-6, output=4e-6, cached_input=0.1e-6, cache_write=1.25e-6)
    got = cost(price, *tokens)
    assert got == pytest.approx(want) and got >= 0


def test_example_config_documents_the_control_sections():
    text = EXAMPLE.read_text()
    for key in ("keys:", "admin_key:", "usage:", "retention_days:", "metrics:", "allow:", "trusted_proxies:",
                "debug:", "max_entries:", "pricing:", "cached_input", "cache_write"):
        assert key in text, key
    c = load_config(str(EXAMPLE), env={})
    assert c.server.host == "127.0.0.1" and c.keys == () and c.admin_key == ""
    assert c.usage.enabled and c.usage.path == str(EXAMPLE.parent / "plexus-usage.db")
    assert c.providers["anthropic"].pricing["claude-sonnet-4-5"].cache_write == pytest.approx(3.75e-6)


CONTROL_CASES = [
    # keys
    (_set("keys", ["a"]), "keys", "must be a mapping of key name"),
    (_set("keys", {"a": "sk-1"}), "keys.a", "must be a mapping with 'secret'"),
    (_set("keys", {"a": None}), "keys.a", "must be a mapping"),
    (_set("keys", {"a": {}}), "keys.a.secret", "missing required key"),
    (_set("keys", {"a": {"secret": "s", "modles": ["fast"]}}), "keys.a.modles", "did you mean 'models'"),
    (_set("keys", {"a": {"secret": 12345}}), "keys.a.secret", "must be a string"),
    (_set("keys", {"a": {"secret": ""}}), "keys.a.secret", "key 'a' has an empty secret"),
    (_set("keys", {"a": {"secret": "${A_KEY:-}"}}), "keys.a.secret", "environment variable set"),
    (_set("keys", {"a": {"secret": "${A_KEY}"}}), "keys.a.secret", "A_KEY is not set"),
    (_set("keys", {"a": {"secret": "sk 1"}}), "keys.a.secret", "printable ASCII without spaces"),
    (_set("keys", {"a": {"secret": "sk-1"}, "b": {"secret": "sk-1"}}), "keys.b.secret", "same secret as key 'a'"),
    (_set("keys", {"a": {"secret": "s", "models": "fast"}}), "keys.a.models", "non-empty list of aliases"),
    (_set("keys", {"a": {"secret": "s", "models": []}}), "keys.a.models", "non-empty list"),
    (_set("keys", {"a": {"secret": "s", "models": ["fast", "slow"]}}), "keys.a.models[1]", "unknown alias 'slow'"),
    (_set("keys", {"a": {"secret": "s", "models": ["fast", 3]}}), "keys.a.models[1]", "must be a string"),
    (_set("keys", {"a": {"secret": "s", "models": ["fast", "fast"]}}), "keys.a.models[1]", "listed twice"),
    (_set("keys", {"my key": {"secret": "s"}}), "keys.my key", "spaces"),
    # admin_key
    (_set("admin_key", 5), "admin_key", "must be a string"),
    (_set("admin_key", "adm 1"), "admin_key", "printable ASCII"),
    (_set("admin_key", "${ADMIN_UNSET}"), "admin_key", "ADMIN_UNSET is not set"),
    (_both(_set("keys", {"a": {"secret": "s-1"}}), _set("admin_key", "s-1")), "admin_key",
     "equals the secret of key 'a'"),
    # usage
    (_set("usage", [1]), "usage", "must be a mapping"),
    (_set("usage", {"retention": 3}), "usage.retention", "did you mean 'retention_days'"),
    (_set("usage", {"enabled": "yes"}), "usage.enabled", "true or false"),
    (_set("usage", {"path": ""}), "usage.path", "must not be empty"),
    (_set("usage", {"path": 5}), "usage.path", "must be a string"),
    (_set("usage", {"path": "/"}), "usage.path", "is a directory"),
    (_set("usage", {"retention_days": -1}), "usage.retention_days", "0 (keep forever) or a positive"),
    (_set("usage", {"retention_days": "30"}), "usage.retention_days", "got a string"),
    # metrics / trusted_proxies
    (_set("metrics", [1]), "metrics", "must be a mapping"),
    (_set("metrics", {"allowed": []}), "metrics.allowed", "did you mean 'allow'"),
    (_set("metrics", {"allow": "10.0.0.0/8"}), "metrics.allow", "must be a list of IP addresses"),
    (_set("metrics", {"allow": ["127.0.0.1", "10.0.0.0/33"]}), "metrics.allow[1]", "not an IP address or CIDR"),
    (_set("metrics", {"allow": ["localhost"]}), "metrics.allow[0]", "not an IP address"),
    (_set("metrics", {"allow": [127]}), "metrics.allow[0]", "must be a string"),
    (_set("server", {"trusted_proxies": "10.0.0.1"}), "server.trusted_proxies", "must be a list"),
    (_set("server", {"trusted_proxies": ["10.0.0.1", "300.0.0.1"]}), "server.trusted_proxies[1]", "not an IP"),
    (_set("server", {"trusted_proxie": []}), "server.trusted_proxie", "did you mean 'trusted_proxies'"),
    # debug
    (_set("debug", 5), "debug", "must be a mapping"),
    (_set("debug", {"max_entry": 5}), "debug.max_entry", "did you mean 'max_entries'"),
    (_set("debug", {"max_entries": -1}), "debug.max_entries", "between 0 and 10000"),
    (_set("debug", {"max_entries": 10001}), "debug.max_entries", "between 0 and 10000"),
    (_set("debug", {"max_entries": 1.5}), "debug.max_entries", "integer"),
    # pricing
    (_set("providers/oa/pricing", [1]), "providers.oa.pricing", "must be a mapping of model name"),
    (_set("providers/oa/pricing", {"gpt-5": {"input": 1, "output": 1}}), "providers.oa.pricing.gpt-5",
     "not in this provider's models list"),
    (_set("providers/oa/pricing", {"gpt-4.1": 2}), "providers.oa.pricing.gpt-4.1", "mapping with 'input' and 'output'"),
    (_set("providers/oa/pricing", {"gpt-4.1": {"input": 1}}), "providers.oa.pricing.gpt-4.1.output",
     "missing required key"),
    (_set("providers/oa/pricing", {"gpt-4.1": {"input": -1, "output": 1}}), "providers.oa.pricing.gpt-4.1.input",
     "0 or a positive price"),
    (_set("providers/oa/pricing", {"gpt-4.1": {"input": 1, "output": "8"}}), "providers.oa.pricing.gpt-4.1.output",
     "got a string"),
    (_set("providers/oa/pricing", {"gpt-4.1": {"input": 1, "output": 8, "cached": 1}}),
     "providers.oa.pricing.gpt-4.1.cached", "did you mean 'cache"),
    (_set("providers/oa/pricing", {"gpt-4.1": {"input": 1, "output": 8, "cache_write": float("inf")}}),
     "providers.oa.pricing.gpt-4.1.cache_write", "0 or a positive price"),
    (_set("providers/oa/pricing", {4: {"input": 1, "output": 8}}), "providers.oa.pricing.4", "quote it"),
    (_set("providers/oa/pricng", {}), "providers.oa.pricng", "did you mean 'pricing'"),
]


@pytest.mark.parametrize("mutate, path, needle", CONTROL_CASES,
                         ids=[f"{i}:{c[1]}" for i, c in enumerate(CONTROL_CASES)])
def test_control_errors_name_key_path(mutate, path, needle):
    d = base()
    mutate(d)
    with pytest.raises(ConfigError) as ei:
        parse(d)
    e = ei.value
    assert (e.key_path, needle) == (path, needle) and needle in e.message, e.message
    assert str(e) == f"test.yaml: {path}: {e.message}"


def test_control_errors_never_echo_secrets():
    for keys, admin in [({"a": {"secret": "SECRET-1\nx"}}, None),
                        ({"a": {"secret": "SECRET-1"}, "b": {"secret": "SECRET-1"}}, None),
                        ({"a": {"secret": "SECRET-1"}}, "SECRET-1"),
                        (None, "SECRET 1")]:
        d = base()
        d["keys"] = keys
        d["admin_key"] = admin
        with pytest.raises(ConfigError) as ei:
            parse(d)
        assert "SECRET" not in str(ei.value), str(ei.value)
