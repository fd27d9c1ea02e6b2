"""validate_text (every problem at once, by key path) and mask_config_text (the config as written,
secrets replaced)."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from plexus.config import Config, ConfigError, parse_config, validate_text
from plexus.config_control import mask_config_text
from plexus.config_yaml import load_yaml

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "config" / "plexus.yaml"

GOOD = """\
providers:
  oa: {type: OpenAI, api_base_url: "https://api.openai.com/v1", api_key: "${K:-}", models: [m1, m2]}
  an: {type: Anthropic, api_base_url: "https://api.anthropic.com/v1", models: [c1]}
models:
  fast: {targets: [{provider: oa, model: m1}]}
  both: {targets: [{provider: oa, model: m2}, {provider: an, model: c1}]}
keys:
  team: {secret: sk-team-1, models: [fast]}
"""


def validate(text: str, env=None):
    return validate_text(text, "plexus.yaml", env={} if env is None else env)


def paths(details) -> list[str]:
    return [d["path"] for d in details]


# --------------------------------------------------------------------------- validate_text

def test_valid_text_gives_the_config():
    config, details = validate(GOOD, {"K": "sk-o"})
    assert details == [] and isinstance(config, Config)
    assert config.providers["oa"].api_key == "sk-o" and config.path == "plexus.yaml"
    assert [k.name for k in config.keys] == ["team"]
    assert validate("\ufeff" + GOOD)[1] == []  # a BOM is fine, as in load_config


def test_example_config_is_valid():
    config, details = validate_text(EXAMPLE.read_text(), str(EXAMPLE), env={})
    assert details == [] and config.aliases


def test_several_independent_problems_at_once():
    text = GOOD.replace('api_base_url: "https://api.openai.com/v1"', 'api_base_url: "ftp://x"') \
               .replace("type: Anthropic", "type: Bard") \
               .replace("models:\n  fast:", "models:\n  bad: {targets: [], selector: fastest}\n  fast:")
    config, details = validate(text)
    assert config is None
    # two bad providers and one bad alias: 3 details; aliases on the bad providers are not reported
    assert paths(details) == ["providers.oa.api_base_url", "providers.an.type", "models.bad.selector"]
    assert all(set(d) == {"path", "message"} and d["message"] for d in details)
    assert "ftp://x" in details[0]["message"] and "Bard" in details[1]["message"]


def test_every_section_is_checked():
    text = ("server: {port: 70000, prot: 1}\nupstream: {connect_timeout: 0}\nrouting: {max_attempts: -1}\n"
            "usage: {retention_days: -1}\nmetrics: {allow: [nope]}\ndebug: {max_entries: -2}\n"
            "admin_key: 5\nextra: 1\n" + GOOD.replace("[fast]", "[fast, nope]"))
    config, details = validate(text)
    assert config is None
    assert paths(details) == [
        "extra", "server.prot", "server.port", "upstream.connect_timeout", "routing.max_attempts",
        "keys.team.models[1]", "admin_key", "usage.retention_days", "metrics.allow[0]", "debug.max_entries"]


def test_one_problem_per_entry_and_every_unknown_key():
    text = GOOD.replace("api_key:", "api_kee: x, headrs: {}, api_key:") \
               .replace("fast: {targets:", "fast: {selectr: x, targets:") \
               .replace("{secret: sk-team-1,", "{secret: sk-team-1, model: x,")
    _, details = validate(text)
    assert paths(details) == ["providers.oa.api_kee", "providers.oa.headrs", "models.fast.selectr",
                              "keys.team.model"]


def test_keys_naming_a_failed_alias_are_not_reported_again():
    text = GOOD.replace("fast: {targets: [{provider: oa, model: m1}]}", "fast: {targets: [{provider: oa, model: m9}]}")
    _, details = validate(text)
    assert paths(details) == ["models.fast.targets[0].model"]


def test_alias_on_an_unknown_provider_is_still_an_error():
    text = GOOD.replace("fast: {targets: [{provider: oa,", "fast: {targets: [{provider: oops,")
    _, details = validate(text)
    assert paths(details) == ["models.fast.targets[0].provider"]


def test_bad_provider_name_and_duplicate_secret():
    text = GOOD.replace("  an: {", "  'a n': {").replace("provider: an,", "provider: 'a n',") + \
        "  other: {secret: sk-team-1}\n"
    _, details = validate(text)
    assert paths(details) == ["providers.a n", "keys.other.secret"]
    assert "sk-team-1" not in str(details)


@pytest.mark.parametrize("text, line", [
    ("providers: {oa: [unclosed\n", 2),
    ("providers:\n  oa: {type: OpenAI\nmodels: x\n", 3),
    ("a: b\n  c: d\n", 2),
])
def test_yaml_syntax_error_is_one_detail_with_its_line(text, line):
    config, details = validate(text)
    assert config is None and len(details) == 1
    assert details[0]["path"] == "" and "invalid YAML" in details[0]["message"]
    assert f"line {line}" in details[0]["message"]


def test_duplicate_yaml_key_names_its_path():
    _, details = validate(GOOD + "models: {}\n")
    assert details == [{"path": "models", "message": details[0]["message"]}]
    assert "duplicate key" in details[0]["message"]


@pytest.mark.parametrize("text, path", [
    ("", ""), ("- a\n", ""), ("providers: {}\n", "models"), ("models: {}\n", "providers"),
    ("providers: 3\nmodels: {a: {targets: []}}\n", "providers"),
])
def test_shapeless_configs(text, path):
    config, details = validate(text)
    assert config is None and details and details[0]["path"] == path


def test_parse_config_raises_the_first_of_the_collected_problems():
    text = GOOD.replace("type: Anthropic", "type: Bard").replace("[fast]", "[nope]")
    _, details = validate(text)
    assert len(details) == 2
    with pytest.raises(ConfigError) as ei:
        parse_config(load_yaml(text, "plexus.yaml"), "plexus.yaml", env={})
    assert ei.value.detail() == details[0]


def test_environment_is_the_given_mapping():
    text = GOOD.replace("sk-team-1", '"${TEAM_KEY}"')
    _, details = validate(text)
    assert paths(details) == ["keys.team.secret"] and "TEAM_KEY" in details[0]["message"]
    config, details = validate(text, {"TEAM_KEY": "sk-t"})
    assert details == [] and config.keys[0].secret == "sk-t"


# --------------------------------------------------------------------------- mask_config_text

SECRETS = """\
# Plexus config
admin_key: adm-SECRET-1            # management
keys:
  a: {secret: sk-SECRET-2, models: [fast]}
  b:
    secret: "sk-SECRET-3"
  c:
    secret: '${C_KEY}'
  d:
    secret: ${D_KEY:-sk-SECRET-4}
providers:
  oa:
    type: OpenAI
    api_base_url: https://api.openai.com/v1
    api_key: |
      sk-SECRET-5
    headers: {OpenAI-Organization: org-SECRET-6, X-Ref: "${ORG}"}
    proxy: http://user:pw-SECRET-7@10.0.0.1:3128
    models: [m1]
  an:
    type: Anthropic
    api_base_url: https://api.anthropic.com/v1
    api_key: ""
    proxy: "${PROXY:-http://u:pw-SECRET-8@h:1}"
    headers:
      x-a: >-
        SECRET-9
      x-b: ${X_B}
      x-c: 'Bearer SECRET-10'
    models: [c1]
  ge:
    type: Gemini
    api_base_url: https://generativelanguage.googleapis.com/v1beta
    api_key: "${GEMINI_API_KEY:-}"
    proxy: http://${PU}:${PP}@proxy.internal:3128
    models: [g1]
models:
  fast: {targets: [{provider: oa, model: m1}]}
"""


def test_mask_replaces_every_secret_literal():
    out = mask_config_text(SECRETS)
    assert "SECRET" not in out, out
    data = yaml.safe_load(out)
    assert data["admin_key"] == "****"
    assert [data["keys"][k]["secret"] for k in "abcd"] == ["****", "****", "${C_KEY}", "${D_KEY:-****}"]
    oa, an, ge = (data["providers"][p] for p in ("oa", "an", "ge"))
    assert oa["api_key"] == "****"
    assert oa["headers"] == {"OpenAI-Organization": "****", "X-Ref": "${ORG}"}
    assert oa["proxy"] == "http://****@10.0.0.1:3128"
    assert an["api_key"] == "" and an["proxy"] == "${PROXY:-http://****@h:1}"
    assert an["headers"] == {"x-a": "****", "x-b": "${X_B}", "x-c": "****"}
    assert ge["api_key"] == "${GEMINI_API_KEY:-}" and ge["proxy"] == "http://${PU}:${PP}@proxy.internal:3128"


def test_mask_keeps_everything_else_as_written():
    out = mask_config_text(SECRETS)
    assert out.splitlines()[0] == "# Plexus config"
    assert 'admin_key: "****"            # management' in out
    assert "  a: {secret: \"****\", models: [fast]}" in out            # flow style stays flow
    assert "    secret: '${C_KEY}'" in out                             # references as written
    assert '    api_key: "****"\n    headers:' in out                 # a block scalar keeps its line break
    masked, original = yaml.safe_load(out), yaml.safe_load(SECRETS)
    original["admin_key"] = masked["admin_key"]
    for k in "abcd":
        original["keys"][k]["secret"] = masked["keys"][k]["secret"]
    for p in ("oa", "an", "ge"):
        for field in ("api_key", "headers", "proxy"):
            if field in original["providers"][p]:
                original["providers"][p][field] = masked["providers"][p][field]
    assert masked == original                                          # nothing else changed
    assert len(out.splitlines()) == len(SECRETS.splitlines()) - 2      # the two block scalars are one line


@pytest.mark.parametrize("text, want", [
    ("providers: {oa: {api_key: sk-1}}\n", 'providers: {oa: {api_key: "****"}}\n'),
    ("admin_key: 'a''b'\n", 'admin_key: "****"\n'),
    ('admin_key: "x\\"y"\n', 'admin_key: "****"\n'),
    ("admin_key: ${ADM}\n", "admin_key: ${ADM}\n"),
    ("admin_key: ${A}${B}\n", "admin_key: ${A}${B}\n"),
    ("admin_key: pre-${A}\n", 'admin_key: "****"\n'),
    ("admin_key: $${A}\n", 'admin_key: "****"\n'),
    ("admin_key:\n", "admin_key:\n"),
    ("admin_key: ''\n", "admin_key: ''\n"),
    ("providers: {p: {proxy: 'http://10.0.0.1:3128'}}\n", "providers: {p: {proxy: 'http://10.0.0.1:3128'}}\n"),
    ("providers: {p: {proxy: 'u:pw@10.0.0.1:3128'}}\n", 'providers: {p: {proxy: "****@10.0.0.1:3128"}}\n'),
    ("providers: {p: {proxy: none}}\n", "providers: {p: {proxy: none}}\n"),
    ("\ufeffadmin_key: x\n", '\ufeffadmin_key: "****"\n'),
    ("models: {secret: {targets: []}}\n", "models: {secret: {targets: []}}\n"),  # an alias named secret
    ("providers: {p: {headers: {a: [x, y]}}}\n", 'providers: {p: {headers: {a: ["****", "****"]}}}\n'),
    ("", ""),
    ("# only a comment\n", "# only a comment\n"),
])
def test_mask_forms(text, want):
    assert mask_config_text(text) == want


def test_mask_follows_anchors_and_misplaced_secrets():
    text = ("upstream: {}\nbase: &k sk-ANCHORED\nproviders:\n  p: {api_key: *k, api_kee: x}\n"
            "stray: {secret: sk-STRAY}\n")
    out = mask_config_text(text)
    assert "sk-ANCHORED" not in out and "sk-STRAY" not in out and "*k" in out


def test_mask_of_the_example_changes_nothing():
    text = EXAMPLE.read_text()
    assert mask_config_text(text) == text  # its secrets are all ${VAR:-} references


def test_mask_refuses_invalid_yaml():
    with pytest.raises(ConfigError, match="line 2"):
        mask_config_text("admin_key: sk-1\n  bad: [\n")
