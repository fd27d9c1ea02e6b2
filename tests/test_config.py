"""Config loading: every validation rule names its key path; env substitution; YAML strictness.
The control sections (keys, admin_key, usage, metrics, debug, pricing) are in
test_config_control.py."""

from __future__ import annotations

import copy
import os
import pathlib

import pytest

from plexus.config import Config, ConfigError, empty_key_providers, load_config, parse_config

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "config" / "plexus.yaml"

BASE = {
    "providers": {
        "oa": {"type": "OpenAI", "api_base_url": "https://api.openai.com/v1/", "api_key": "sk-a",
               "models": ["gpt-4o-mini", "gpt-4.1"]},
        "an": {"type": "anthropic", "api_base_url": "http://127.0.0.1:8080", "api_key": "sk-b",
               "models": ["claude-sonnet-4-5"]},
        "ge": {"type": "GEMINI", "api_base_url": "https://generativelanguage.googleapis.com/v1beta",
               "api_key": "g", "models": ["gemini-2.5-flash"]},
    },
    "models": {
        "fast": {"targets": [{"provider": "oa", "model": "gpt-4o-mini"}]},
        "two": {"targets": [{"provider": "oa", "model": "gpt-4.1"},
                            {"provider": "an", "model": "claude-sonnet-4-5"}]},
    },
}


def base() -> dict:
    return copy.deepcopy(BASE)


def parse(data, env=None) -> Config:
    return parse_config(data, "test.yaml", env={} if env is None else env)


def write(tmp_path, text: str) -> str:
    p = tmp_path / "plexus.yaml"
    p.write_text(text)
    return str(p)


# --------------------------------------------------------------------------- the happy path

def test_base_config_parses_and_precomputes():
    c = parse(base())
    oa, an, ge = c.providers["oa"], c.providers["an"], c.providers["ge"]
    assert (oa.type, an.type, ge.type) == ("openai", "anthropic", "gemini")
    assert oa.base_url == "https://api.openai.com/v1"  # trailing slash stripped
    assert (oa.scheme, oa.host, oa.port, oa.base_path) == ("https", "api.openai.com", 443, "/v1")
    assert (an.scheme, an.host, an.port, an.base_path) == ("http", "127.0.0.1", 8080, "")
    assert an.base_url == "http://127.0.0.1:8080"
    assert oa.models == ("gpt-4o-mini", "gpt-4.1")
    assert (oa.connect_timeout, oa.ttfb_timeout, oa.read_timeout) == (10.0, 300.0, 300.0)
    assert (oa.max_tokens, an.max_tokens, ge.max_tokens) == (0, 4096, 0)
    assert oa.stream_usage is True and oa.headers == () and oa.api_key_env == ()
    s = c.server
    assert (s.host, s.port, s.max_body_bytes, s.max_header_bytes) == ("127.0.0.1", 3000, 32 * 2**20, 32768)
    assert (s.keepalive_timeout, s.header_timeout) == (75.0, 30.0)
    two = c.aliases["two"]
    assert [(t.provider.name, t.model) for t in two.targets] == [("oa", "gpt-4.1"), ("an", "claude-sonnet-4-5")]
    assert two.targets[0].provider is oa  # targets share the Provider object
    assert list(c.aliases) == ["fast", "two"]
    with pytest.raises(AttributeError):
        oa.api_key = "x"  # frozen


def test_overrides_and_upstream_defaults():
    d = base()
    d["server"] = {"host": "127.0.0.1", "port": 0, "max_body_bytes": 10, "max_header_bytes": 4096,
                   "keepalive_timeout": 5, "header_timeout": 2.5}
    d["upstream"] = {"connect_timeout": 1, "ttfb_timeout": 2, "read_timeout": 3}
    d["providers"]["an"].update(ttfb_timeout=1, max_tokens=1000, stream_usage=False, reasoning=False,
                                headers={"X-Extra": "v", "anthropic-beta": "tools"})
    c = parse(d)
    assert c.server.port == 0 and c.server.header_timeout == 2.5
    an, oa = c.providers["an"], c.providers["oa"]
    assert (oa.connect_timeout, oa.ttfb_timeout, oa.read_timeout) == (1.0, 2.0, 3.0)
    assert (an.connect_timeout, an.ttfb_timeout, an.read_timeout) == (1.0, 1.0, 3.0)
    assert isinstance(an.ttfb_timeout, float)
    assert an.max_tokens == 1000 and an.stream_usage is False
    assert oa.reasoning is True and an.reasoning is False
    assert an.headers == (("x-extra", "v"), ("anthropic-beta", "tools"))


def test_null_optional_sections_mean_defaults():
    d = base()
    d["server"] = None
    d["upstream"] = None
    d["providers"]["oa"]["headers"] = None
    d["providers"]["oa"]["api_key"] = None
    c = parse(d)
    assert c.server.port == 3000 and c.providers["oa"].headers == () and c.providers["oa"].api_key == ""


def test_type_is_case_insensitive():
    for spelling in ("openai", "OPENAI", "OpenAI", " OpenAi "):
        d = base()
        d["providers"]["oa"]["type"] = spelling
        assert parse(d).providers["oa"].type == "openai"


def test_url_forms():
    for url, want in [
        ("https://h.example/v1//", ("https", "h.example", 443, "/v1", "https://h.example/v1")),
        ("HTTP://H.example:81/a/b", ("http", "h.example", 81, "/a/b", "http://H.example:81/a/b")),
        ("http://[::1]:9000/v1", ("http", "::1", 9000, "/v1", "http://[::1]:9000/v1")),
        ("http://localhost", ("http", "localhost", 80, "", "http://localhost")),
    ]:
        d = base()
        d["providers"]["oa"]["api_base_url"] = url
        p = parse(d).providers["oa"]
        assert (p.scheme, p.host, p.port, p.base_path, p.base_url) == want, url


def test_example_config_loads_with_empty_environment():
    c = load_config(str(EXAMPLE), env={})
    assert {p.type for p in c.providers.values()} == {"openai", "anthropic", "gemini"}
    assert len(c.aliases) >= 4
    assert any(len(a.targets) >= 2 for a in c.aliases.values())
    empties = empty_key_providers(c)
    assert {p.name for p in empties} == set(c.providers)  # no keys in an empty environment
    assert all(p.api_key_env for p in empties)  # each names the variable to set


def test_example_config_picks_up_keys_from_environment():
    env = {"OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a", "GEMINI_API_KEY": "g"}
    c = load_config(str(EXAMPLE), env=env)
    assert sorted(p.api_key for p in c.providers.values()) == ["g", "sk-a", "sk-o"]
    assert empty_key_providers(c) == []


def test_env_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv("PLEXUS_TEST_KEY_X", "from-os")
    d = base()
    d["providers"]["oa"]["api_key"] = "${PLEXUS_TEST_KEY_X}"
    assert parse_config(d, "t.yaml").providers["oa"].api_key == "from-os"


# --------------------------------------------------------------------------- env substitution

@pytest.mark.parametrize("value, env, want, want_env", [
    ("${K}", {"K": "sk-1"}, "sk-1", ("K",)),
    ("${K:-dflt}", {"K": "sk-1"}, "sk-1", ("K",)),
    ("${K:-dflt}", {}, "dflt", ("K",)),
    ("${K:-dflt}", {"K": ""}, "dflt", ("K",)),  # empty counts as unset for :-
    ("${K:-}", {}, "", ("K",)),
    ("${K}", {"K": ""}, "", ("K",)),  # set but empty: allowed, keyless
    ("Bearer-${A}-${B:-x}", {"A": "1"}, "Bearer-1-x", ("A", "B")),
    ("${K}", {"K": " sk-1\n"}, "sk-1", ("K",)),  # stray whitespace from a file/env is stripped
    ("plain", {"K": "x"}, "plain", ()),
    ("a$b$$c", {}, "a$b$$c", ()),  # lone dollars are literal
    ("$${K}", {"K": "x"}, "${K}", ()),  # escaped
])
def test_env_substitution_in_api_key(value, env, want, want_env):
    d = base()
    d["providers"]["oa"]["api_key"] = value
    p = parse(d, env).providers["oa"]
    assert p.api_key == want and p.api_key_env == want_env


def test_env_substitution_everywhere():
    d = base()
    d["server"] = {"host": "${HOST:-127.0.0.1}", "port": "${PORT:-4000}", "keepalive_timeout": "${KA}"}
    d["providers"]["oa"].update(api_base_url="${OA_URL:-https://x.example/v1}",
                                headers={"x-org": "${ORG}"}, stream_usage="${SU:-false}",
                                models=["${M:-gpt-4o-mini}", "gpt-4.1"])
    c = parse(d, {"PORT": "4001", "KA": "9.5", "ORG": "org-1"})
    assert (c.server.host, c.server.port, c.server.keepalive_timeout) == ("127.0.0.1", 4001, 9.5)
    oa = c.providers["oa"]
    assert oa.base_url == "https://x.example/v1" and oa.headers == (("x-org", "org-1"),)
    assert oa.stream_usage is False and oa.models == ("gpt-4o-mini", "gpt-4.1")


@pytest.mark.parametrize("where, value, path, needle", [
    ("api_key", "${MISSING_KEY}", "providers.oa.api_key", "MISSING_KEY"),
    ("api_base_url", "${BASE_URL}/v1", "providers.oa.api_base_url", "BASE_URL"),
    ("api_key", "${unterminated", "providers.oa.api_key", "malformed"),
    ("api_key", "${1BAD}", "providers.oa.api_key", "malformed"),
])
def test_env_errors_name_path_and_variable(where, value, path, needle):
    d = base()
    d["providers"]["oa"][where] = value
    with pytest.raises(ConfigError) as ei:
        parse(d)
    assert ei.value.key_path == path and needle in ei.value.message


def test_env_number_that_is_not_a_number():
    d = base()
    d["server"] = {"port": "${PORT}"}
    with pytest.raises(ConfigError) as ei:
        parse(d, {"PORT": "eighty"})
    assert ei.value.key_path == "server.port" and "integer" in ei.value.message


# --------------------------------------------------------------------------- validation table

def _set(path: str, value):
    """Mutation: set d[...path...] = value (path uses '/' so keys may contain dots)."""
    def mutate(d):
        *parents, last = path.split("/")
        for key in parents:
            d = d[int(key)] if isinstance(d, list) else d[key]
        if isinstance(d, list):
            last = int(last)
        if value is _DELETE:
            del d[last]
        else:
            d[last] = value
    return mutate


_DELETE = object()


def _both(*mutations):
    def mutate(d):
        for m in mutations:
            m(d)
    return mutate

# (mutation, expected key path, substring of the message)
CASES = [
    # top level
    (_set("provider", {}), "provider", "unknown key 'provider'"),
    (_set("modles", {}), "modles", "did you mean 'models'"),
    (_set("providers", _DELETE), "providers", "missing required key"),
    (_set("models", _DELETE), "models", "missing required key"),
    (_set("providers", {}), "providers", "non-empty"),
    (_set("providers", ["oa"]), "providers", "non-empty mapping"),
    (_set("models", {}), "models", "non-empty"),
    # server / upstream
    (_set("server", {"prot": 1}), "server.prot", "did you mean 'port'"),
    (_set("server", {"port": "3000"}), "server.port", "must be an integer, got a string"),
    (_set("server", {"port": True}), "server.port", "integer"),
    (_set("server", {"port": 70000}), "server.port", "between 0 and 65535"),
    (_set("server", {"port": 1.5}), "server.port", "integer"),
    (_set("server", {"max_body_bytes": 0}), "server.max_body_bytes", "at least 1"),
    (_set("server", {"header_timeout": 0}), "server.header_timeout", "positive"),
    (_set("server", {"keepalive_timeout": "long"}), "server.keepalive_timeout", "number of seconds"),
    (_set("server", {"host": ""}), "server.host", "empty"),
    (_set("server", {"host": 5}), "server.host", "must be a string"),
    (_set("server", [1]), "server", "must be a mapping"),
    (_set("upstream", {"timeout": 1}), "upstream.timeout", "unknown key"),
    (_set("upstream", {"read_timeout": -1}), "upstream.read_timeout", "positive"),
    (_set("upstream", {"read_timeout": float("inf")}), "upstream.read_timeout", "positive"),
    # provider
    (_set("providers/oa/api_keys", "x"), "providers.oa.api_keys", "did you mean 'api_key'"),
    (_set("providers/oa/type", _DELETE), "providers.oa.type", "missing required key"),
    (_set("providers/oa/api_base_url", _DELETE), "providers.oa.api_base_url", "missing required key"),
    (_set("providers/oa/models", _DELETE), "providers.oa.models", "missing required key"),
    (_set("providers/oa/type", "Cohere"), "providers.oa.type", "unknown provider type 'Cohere'"),
    (_set("providers/oa/type", None), "providers.oa.type", "must be a string"),
    (_set("providers/oa", "openai"), "providers.oa", "must be a mapping"),
    (_set("providers/oa", None), "providers.oa", "must be a mapping"),
    (_set("providers/oa/api_base_url", "api.openai.com/v1"), "providers.oa.api_base_url", "http"),
    (_set("providers/oa/api_base_url", "ftp://x/v1"), "providers.oa.api_base_url", "http"),
    (_set("providers/oa/api_base_url", "https:///v1"), "providers.oa.api_base_url", "http"),
    (_set("providers/oa/api_base_url", "https://x:99999/v1"), "providers.oa.api_base_url", "port"),
    (_set("providers/oa/api_base_url", "https://u:p@x/v1"), "providers.oa.api_base_url", "credentials"),
    (_set("providers/oa/api_base_url", "https://x/v1?a=1"), "providers.oa.api_base_url", "query"),
    (_set("providers/oa/api_base_url", "https://x /v1"), "providers.oa.api_base_url", "URL"),
    (_set("providers/oa/api_key", 12345), "providers.oa.api_key", "must be a string"),
    (_set("providers/oa/api_key", "sk\nx"), "providers.oa.api_key", "one line"),
    (_set("providers/oa/models", []), "providers.oa.models", "at least one model"),
    (_set("providers/oa/models", "gpt-4o-mini"), "providers.oa.models", "must be a list"),
    (_set("providers/oa/models", ["gpt-4o-mini", 4]), "providers.oa.models[1]", "must be a string"),
    (_set("providers/oa/models", ["gpt-4o-mini", ""]), "providers.oa.models[1]", "non-empty"),
    (_set("providers/oa/models", ["gpt-4o-mini", "gpt 4"]), "providers.oa.models[1]", "spaces"),
    (_set("providers/oa/models", ["gpt-4o-mini", "gpt-4.1", "gpt-4.1"]), "providers.oa.models[2]", "twice"),
    (_set("providers/oa/headers", ["x"]), "providers.oa.headers", "mapping"),
    (_set("providers/oa/headers", {"bad name": "v"}), "providers.oa.headers.bad name", "header name"),
    (_set("providers/oa/headers", {"x-a": "v\r\nx-b: y"}), "providers.oa.headers.x-a", "one line"),
    (_set("providers/oa/headers", {"x-a": 1}), "providers.oa.headers.x-a", "must be a string"),
    (_set("providers/oa/headers", {"Content-Length": "1"}), "providers.oa.headers.Content-Length", "framing"),
    (_set("providers/oa/headers", {"x-a": "1", "X-A": "2"}), "providers.oa.headers.X-A", "twice"),
    (_set("providers/oa/connect_timeout", 0), "providers.oa.connect_timeout", "positive"),
    (_set("providers/oa/ttfb_timeout", "5"), "providers.oa.ttfb_timeout", "got a string"),
    (_set("providers/oa/read_timeout", False), "providers.oa.read_timeout", "number of seconds"),
    (_set("providers/an/max_tokens", 0), "providers.an.max_tokens", "at least 1"),
    (_set("providers/an/max_tokens", 10.5), "providers.an.max_tokens", "integer"),
    (_set("providers/oa/stream_usage", "yes"), "providers.oa.stream_usage", "true or false"),
    (_set("providers/oa/stream_usage", 1), "providers.oa.stream_usage", "true or false"),
    (_set("providers/oa/reasoning", "no"), "providers.oa.reasoning", "true or false"),
    (_set("providers/oa/first_event_timeout", 0), "providers.oa.first_event_timeout", "positive"),
    (_set("providers/oa/total_timeout", "long"), "providers.oa.total_timeout", "number of seconds"),
    (_set("providers/oa/models", "gpt-4o-mini"), "providers.oa.models", 'or "*"'),
    (_set("providers/oa/models", ["gpt-4o-mini", "*"]), "providers.oa.models[1]", 'models: "*"'),
    (_set("upstream", {"idle_timeout": 0}), "upstream.idle_timeout", "positive"),
    (_set("upstream", {"total_timeout": float("nan")}), "upstream.total_timeout", "0 (no limit)"),
    # routing
    (_set("routing", [1]), "routing", "must be a mapping"),
    (_set("routing", {"max_attempt": 2}), "routing.max_attempt", "did you mean 'max_attempts'"),
    (_set("routing", {"max_attempts": -1}), "routing.max_attempts", "between 0 and 100"),
    (_set("routing", {"max_attempts": "2"}), "routing.max_attempts", "integer"),
    (_set("routing", {"cooldown": []}), "routing.cooldown", "non-empty list"),
    (_set("routing", {"cooldown": 5}), "routing.cooldown", "non-empty list"),
    (_set("routing", {"cooldown": [5, 0]}), "routing.cooldown[1]", "positive"),
    (_set("routing", {"cooldown": [30, 5]}), "routing.cooldown[1]", "must not decrease"),
    (_set("routing", {"direct_addressing": "yes"}), "routing.direct_addressing", "true or false"),
    (_set("providers/an/responses", True), "providers.an.responses", "only an OpenAI-type provider"),
    (_set("providers/oa/responses", "yes"), "providers.oa.responses", "true or false"),
    # aliases and targets
    (_set("models/fast", {}), "models.fast.targets", "missing required key"),
    (_set("models/fast", None), "models.fast", "must be a mapping with 'targets'"),
    (_set("models/fast", [{"provider": "oa", "model": "gpt-4o-mini"}]), "models.fast", "mapping"),
    (_set("models/fast/targets", []), "models.fast.targets", "no targets"),
    (_set("models/fast/targets", None), "models.fast.targets", "must be a list"),
    (_set("models/fast/target", []), "models.fast.target", "did you mean 'targets'"),
    (_set("models/fast/targets/0/provider", "nope"), "models.fast.targets[0].provider",
     "unknown provider 'nope'"),
    (_set("models/fast/targets/0/provider", _DELETE), "models.fast.targets[0].provider", "missing required key"),
    (_set("models/fast/targets/0/model", _DELETE), "models.fast.targets[0].model", "missing required key"),
    (_set("models/fast/targets/0/modle", "x"), "models.fast.targets[0].modle", "unknown key"),
    (_set("models/fast/targets/0/weight", 2), "models.fast.targets[0].weight",
     "only applies with 'selector: weighted'"),
    (_set("models/fast/targets/0/wieght", 2), "models.fast.targets[0].wieght", "did you mean 'weight'"),
    (_both(_set("models/two/selector", "weighted"), _set("models/two/targets/0/weight", 0)),
     "models.two.targets[0].weight", "positive"),
    (_set("models/two/selector", "fastest"), "models.two.selector", "unknown selector 'fastest'"),
    (_set("models/two/selector", 1), "models.two.selector", "must be a string"),
    (_set("models/two/selectr", "random"), "models.two.selectr", "did you mean 'selector'"),
    (_set("models/two/targets/1", {"provider": "oa", "model": "gpt-4.1"}), "models.two.targets[1]",
     "listed twice"),
    (_set("models/fast/targets/0/ttfb_timeout", 0), "models.fast.targets[0].ttfb_timeout", "positive"),
    (_set("models/fast/targets/0/total_timeout", -1), "models.fast.targets[0].total_timeout",
     "0 (no limit) or a positive"),
    (_set("models/fast/targets/0/idle_timeout", "x"), "models.fast.targets[0].idle_timeout",
     "number of seconds"),
    (_set("models/fast/targets/0/first_event_timout", 1), "models.fast.targets[0].first_event_timout",
     "did you mean 'first_event_timeout'"),
    (_set("models/fast/targets/0", "oa/gpt-4o-mini"), "models.fast.targets[0]", "mapping"),
    (_set("models/two/targets/1/model", "claude-opus-4-1"), "models.two.targets[1].model",
     "add it to providers.an.models"),
    (_set("models/two/targets/1/model", 7), "models.two.targets[1].model", "must be a string"),
    (_set("models/Fast", {"targets": [{"provider": "oa", "model": "gpt-4o-mini"}]}), "models.Fast",
     "collides with alias 'fast'"),
    (_set("models/my alias", {"targets": [{"provider": "oa", "model": "gpt-4o-mini"}]}), "models.my alias",
     "spaces"),
]
# A YAML key that is not a string (an unquoted number) must be reported, not stringified silently.
CASES.append((lambda d: d["models"].__setitem__(1.5, d["models"]["fast"]), "models.1.5", "quote it"))
CASES.append((lambda d: d["providers"].__setitem__("bad name", d["providers"]["oa"]), "providers.bad name",
              "spaces"))


@pytest.mark.parametrize("mutate, path, needle", CASES, ids=[f"{i}:{c[1]}" for i, c in enumerate(CASES)])
def test_validation_errors_name_key_path(mutate, path, needle):
    d = base()
    mutate(d)
    with pytest.raises(ConfigError) as ei:
        parse(d)
    e = ei.value
    assert (e.key_path, needle) == (path, needle) and needle in e.message, e.message
    assert e.file == "test.yaml"
    assert str(e) == f"test.yaml: {path}: {e.message}"


def test_errors_never_echo_secrets():
    d = base()
    d["providers"]["oa"]["api_key"] = "sk-SECRET\nx"
    d["providers"]["oa"]["headers"] = {"x-a": "SECRET2\r\nx"}
    for mutation in ("api_key", "headers"):
        dd = copy.deepcopy(d)
        if mutation == "api_key":
            del dd["providers"]["oa"]["headers"]
        else:
            dd["providers"]["oa"]["api_key"] = "sk-ok"
        with pytest.raises(ConfigError) as ei:
            parse(dd)
        assert "SECRET" not in str(ei.value)


# --------------------------------------------------------------------------- routing keys

def _target_timeouts(t):
    return (t.connect_timeout, t.ttfb_timeout, t.first_event_timeout, t.read_timeout, t.total_timeout)


def test_routing_defaults():
    c = parse(base())
    assert (c.routing.max_attempts, c.routing.cooldown, c.routing.direct_addressing) == (
        0, (5.0, 30.0, 120.0, 600.0), False)
    fast = c.aliases["fast"]
    assert fast.selector == "random"
    t = fast.targets[0]
    assert t.key == ("oa", "gpt-4o-mini") and t.weight == 1.0
    assert _target_timeouts(t) == (10.0, 300.0, 300.0, 300.0, 0.0)
    oa = c.providers["oa"]
    assert (oa.first_event_timeout, oa.total_timeout, oa.any_model) == (300.0, 0.0, False)


def test_routing_section():
    d = base()
    d["routing"] = {"max_attempts": 2, "cooldown": [1, 1.5, 60], "direct_addressing": True}
    r = parse(d).routing
    assert (r.max_attempts, r.cooldown, r.direct_addressing) == (2, (1.0, 1.5, 60.0), True)
    d["routing"] = None
    assert parse(d).routing.cooldown == (5.0, 30.0, 120.0, 600.0)
    d["routing"] = {"max_attempts": "${N}", "direct_addressing": "${D:-false}"}
    r = parse(d, {"N": "3"}).routing
    assert (r.max_attempts, r.direct_addressing) == (3, False)


def test_target_timeouts_layer_over_provider_over_upstream():
    d = base()
    d["upstream"] = {"connect_timeout": 2, "idle_timeout": 40, "total_timeout": 900}
    d["providers"]["oa"].update(ttfb_timeout=20, first_event_timeout=600, read_timeout=50)
    d["models"]["two"]["targets"][0].update(connect_timeout=1, idle_timeout=7, total_timeout=0)
    d["models"]["two"]["targets"][1].update(first_event_timeout=30)
    c = parse(d)
    oa, an = c.providers["oa"], c.providers["an"]
    assert (oa.connect_timeout, oa.ttfb_timeout, oa.first_event_timeout, oa.read_timeout, oa.total_timeout) == (
        2.0, 20.0, 600.0, 50.0, 900.0)
    assert (an.read_timeout, an.total_timeout) == (40.0, 900.0)  # idle_timeout is read_timeout
    t0, t1 = c.aliases["two"].targets
    assert _target_timeouts(t0) == (1.0, 20.0, 600.0, 7.0, 0.0)  # total 0 = no limit, per target
    assert _target_timeouts(t1) == (2.0, 300.0, 30.0, 40.0, 900.0)
    assert _target_timeouts(c.aliases["fast"].targets[0]) == (2.0, 20.0, 600.0, 50.0, 900.0)
    assert all(isinstance(v, float) for v in _target_timeouts(t0))


@pytest.mark.parametrize("node, path", [
    (lambda d: d.setdefault("upstream", {}), "upstream"),
    (lambda d: d["providers"]["oa"], "providers.oa"),
    (lambda d: d["models"]["fast"]["targets"][0], "models.fast.targets[0]"),
])
def test_idle_and_read_timeout_are_one_setting(node, path):
    d = base()
    node(d).update(idle_timeout=5, read_timeout=6)
    with pytest.raises(ConfigError) as ei:
        parse(d)
    assert ei.value.key_path == f"{path}.idle_timeout" and "same setting" in ei.value.message


def test_selectors_and_weights():
    d = base()
    d["models"]["two"]["selector"] = "weighted"
    d["models"]["two"]["targets"][0]["weight"] = 3
    d["models"]["two"]["targets"][1]["weight"] = 0.5
    d["models"]["ordered"] = {"selector": "in_order", "targets": [{"provider": "oa", "model": "gpt-4.1"},
                                                                 {"provider": "an", "model": "claude-sonnet-4-5"}]}
    d["models"]["quick"] = {"selector": "least_latency", "targets": [{"provider": "oa", "model": "gpt-4o-mini"}]}
    c = parse(d)
    two = c.aliases["two"]
    assert two.selector == "weighted" and [t.weight for t in two.targets] == [3.0, 0.5]
    assert c.aliases["ordered"].selector == "in_order" and c.aliases["quick"].selector == "least_latency"


def test_any_model_provider():
    d = base()
    d["providers"]["or"] = {"type": "OpenAI", "api_base_url": "https://openrouter.ai/api/v1", "models": "*"}
    d["models"]["free"] = {"targets": [{"provider": "or", "model": "meta-llama/llama-3.3-70b-instruct:free"}]}
    c = parse(d)
    p = c.providers["or"]
    assert p.any_model is True and p.models == ()
    assert c.aliases["free"].targets[0].model == "meta-llama/llama-3.3-70b-instruct:free"
    d["models"]["free"]["targets"][0]["model"] = "bad model"  # still a valid name
    with pytest.raises(ConfigError) as ei:
        parse(d)
    assert ei.value.key_path == "models.free.targets[0].model" and "spaces" in ei.value.message
    # providers with a list stay strict
    d["models"]["free"]["targets"] = [{"provider": "oa", "model": "gpt-5"}]
    with pytest.raises(ConfigError, match="add it to providers.oa.models"):
        parse(d)


def test_direct_addressing_rejects_provider_names_with_a_slash():
    d = base()
    d["providers"]["team/oa"] = d["providers"].pop("ge")
    parse(d)  # fine while direct addressing is off
    d["routing"] = {"direct_addressing": True}
    with pytest.raises(ConfigError) as ei:
        parse(d)
    assert ei.value.key_path == "providers.team/oa" and "contains '/'" in ei.value.message


def test_not_a_mapping_and_empty():
    for data in (None, [], "providers: x", 3):
        with pytest.raises(ConfigError) as ei:
            parse(data)
        assert ei.value.key_path == ""


# --------------------------------------------------------------------------- files and YAML

GOOD_YAML = """\
providers:
  oa: {type: OpenAI, api_base_url: "https://api.openai.com/v1", api_key: "${K:-}", models: [m1]}
models:
  fast: {targets: [{provider: oa, model: m1}]}
"""


def test_load_config_from_file(tmp_path):
    path = write(tmp_path, GOOD_YAML)
    c = load_config(path, env={"K": "sk-x"})
    assert c.path == path and c.providers["oa"].api_key == "sk-x"


def test_bom_is_accepted(tmp_path):
    p = tmp_path / "bom.yaml"
    p.write_bytes(b"\xef\xbb\xbf" + GOOD_YAML.encode())
    assert load_config(str(p), env={}).aliases["fast"].name == "fast"


@pytest.mark.parametrize("text, path, line", [
    (GOOD_YAML + "models:\n  other: {targets: []}\n", "models", 5),
    (GOOD_YAML.replace("models: [m1]}", "models: [m1]}\n  oa: {type: Gemini}"), "providers.oa", 3),
    (GOOD_YAML.replace("api_key:", "models: [m2], api_key:"), "providers.oa.models", 2),
    (GOOD_YAML.replace("fast: {targets: [{provider: oa, model: m1}]}",
                       "fast: {targets: [{provider: oa, model: m1, provider: oa}]}"),
     "models.fast.targets[0].provider", 4),
])
def test_duplicate_keys_are_errors(tmp_path, text, path, line):
    with pytest.raises(ConfigError) as ei:
        load_config(write(tmp_path, text), env={})
    e = ei.value
    assert e.key_path == path and "duplicate key" in e.message and f"line {line}" in e.message, str(e)


def test_merge_keys_may_be_overridden(tmp_path):
    text = GOOD_YAML.replace(
        "providers:\n  oa:",
        "base: &b {type: OpenAI, api_key: x}\nproviders:\n  oa2: {<<: *b, api_key: y, "
        "api_base_url: 'http://h/v1', models: [m1]}\n  oa:")
    # 'base' is not a known top-level key: anchors must live somewhere valid, so this fails there.
    with pytest.raises(ConfigError) as ei:
        load_config(write(tmp_path, text), env={})
    assert ei.value.key_path == "base"
    text = GOOD_YAML.replace(
        "  oa:", "  oa2: &b {type: OpenAI, api_key: x, api_base_url: 'http://h/v1', models: [m1]}\n"
                 "  oa3: {<<: *b, api_key: y}\n  oa:")
    c = load_config(write(tmp_path, text), env={})
    assert c.providers["oa3"].api_key == "y" and c.providers["oa3"].base_url == "http://h/v1"


@pytest.mark.parametrize("text, needle", [
    ("providers: {oa: [unclosed\n", "line"),
    ("a: b\n  c: d\n", "line 2"),
    ("models:\n\t- x\n", "line 2"),
    ("--- {}\n--- {}\n", "invalid YAML"),
])
def test_yaml_syntax_errors(tmp_path, text, needle):
    with pytest.raises(ConfigError) as ei:
        load_config(write(tmp_path, text), env={})
    assert needle in ei.value.message and "invalid YAML" in ei.value.message
    assert str(ei.value).startswith(str(tmp_path))


def test_file_problems(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="directory"):
        load_config(str(tmp_path))
    (tmp_path / "bin.yaml").write_bytes(b"providers: \xff\xfe\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(str(tmp_path / "bin.yaml"))
    with pytest.raises(ConfigError, match="empty"):
        load_config(write(tmp_path, "# nothing\n"), env={})


def test_no_python_tags(tmp_path):
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(write(tmp_path, "x: !!python/object/apply:os.system ['true']\n"), env={})


def test_env_default_is_process_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("PLEXUS_TEST_UNSET_VAR_Q", raising=False)
    path = write(tmp_path, GOOD_YAML.replace("${K:-}", "${PLEXUS_TEST_UNSET_VAR_Q}"))
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    assert ei.value.key_path == "providers.oa.api_key" and "PLEXUS_TEST_UNSET_VAR_Q" in ei.value.message
    assert os.environ.get("PLEXUS_TEST_UNSET_VAR_Q") is None


def test_responses_flag():
    """`responses: true` marks an OpenAI-type provider that also serves the Responses API."""
    d = base()
    d["providers"]["oa"]["responses"] = True
    c = parse(d)
    assert c.providers["oa"].responses is True and c.providers["an"].responses is False
