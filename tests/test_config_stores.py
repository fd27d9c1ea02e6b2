"""`usage_store:`, `state_store:` and the keys' `rpm`/`tpm` (plexus/config_stores.py,
config_control.py); the 429 of a key over its rpm in each dialect, with one local instance."""

from __future__ import annotations

import time

import httpx
import pytest

from plexus.config import parse_config
from plexus.config_control import mask_config_text
from plexus.config_error import ConfigError
from plexus.config_stores import masked_url
from fake_upstream import FakeUpstream
from spawn import start_plexus


def base(**extra) -> dict:
    d = {"providers": {"p": {"type": "OpenAI", "api_base_url": "http://127.0.0.1:9/v1", "api_key": "k",
                             "models": ["m"]}},
         "models": {"a": {"targets": [{"provider": "p", "model": "m"}]}}}
    d.update(extra)
    return d


def test_store_urls_are_read_with_env_references():
    c = parse_config(base(usage_store="postgresql://plexus:${PGPW}@db:5432/plexus",
                          state_store="redis://:${RPW:-r}@cache:6379/0"), "<config>", env={"PGPW": "s3"})
    assert c.stores.usage_store == "postgresql://plexus:s3@db:5432/plexus"
    assert c.stores.state_store == "redis://:r@cache:6379/0"
    assert "s3" not in repr(c) and "s3" not in repr(c.stores)
    assert parse_config(base(usage_store="postgres://h/db", state_store="unix:///run/redis.sock"),
                        "<config>", env={}).stores.state_store == "unix:///run/redis.sock"
    c = parse_config(base(usage_store="", state_store=None), "<config>", env={})
    assert (c.stores.usage_store, c.stores.state_store) == ("", "")


@pytest.mark.parametrize("key,value,words", [
    ("usage_store", "mysql://u:secretpw@h/db", "postgresql://"),
    ("usage_store", "postgresql:///db", "names no host"),
    ("usage_store", "postgresql://h:99999/db", "not a valid URL"),
    ("usage_store", 5, "must be a string"),
    ("state_store", "http://cache:6379", "redis://"),
    ("state_store", "${NOPE}", "NOPE is not set"),
])
def test_bad_store_urls_name_their_key_and_hide_the_password(key, value, words):
    with pytest.raises(ConfigError) as ei:
        parse_config(base(**{key: value}), "<config>", env={})
    assert ei.value.key_path == key and words in ei.value.message
    assert "secretpw" not in str(ei.value)


def test_masking_shows_the_urls_without_their_password():
    text = ('usage_store: "postgresql://plexus:hunter2@db/plexus"\nstate_store: redis://:pw9@c:6379/0\n'
            "other: 1\n")
    masked = mask_config_text(text)
    assert "hunter2" not in masked and "pw9" not in masked and "@db/plexus" in masked and "@c:6379/0" in masked
    assert masked_url("postgresql://u:p@h/d") == "postgresql://u:****@h/d"
    assert masked_url("postgresql://h/d") == "postgresql://h/d"


def test_key_rpm_and_tpm():
    c = parse_config(base(keys={"k": {"secret": "sk-1", "rpm": 60, "tpm": "${T}"}, "j": {"secret": "sk-2"}}),
                     "<config>", env={"T": "1000"})
    assert [(k.name, k.rpm, k.tpm) for k in c.keys] == [("k", 60, 1000), ("j", 0, 0)]
    for bad in ({"rpm": -1}, {"tpm": 1.5}, {"rpm": "x"}):
        with pytest.raises(ConfigError) as ei:
            parse_config(base(keys={"k": {"secret": "sk-1", **bad}}), "<config>", env={})
        assert ei.value.key_path == f"keys.k.{next(iter(bad))}"


# ------------------------------------------------------------------ one instance, local limits

KEY = "sk-rpm-local"
CALLS = {
    "openai": ("/v1/chat/completions", {"model": "a", "messages": [{"role": "user", "content": "hi"}]},
               lambda j: j["error"]["type"] == "rate_limit_error"),
    "anthropic": ("/v1/messages", {"model": "a", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
                  lambda j: j["type"] == "error" and j["error"]["type"] == "rate_limit_error"),
    "gemini": ("/v1beta/models/a:generateContent", {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
               lambda j: j["error"]["status"] == "RESOURCE_EXHAUSTED" and j["error"]["code"] == 429),
}


def test_a_key_over_its_rpm_gets_429_with_retry_after_in_each_dialect(tmp_path):
    left = 60.0 - time.time() % 60.0
    if left < 6:   # one wall-clock minute window for the whole test
        time.sleep(left + 0.2)
    with FakeUpstream() as fake, start_plexus(f"""\
keys:
  team: {{secret: {KEY}, rpm: 3}}
  free: {{secret: sk-free}}
providers:
  p: {{type: OpenAI, api_base_url: "{fake.base_url}/v1", api_key: k, models: [m]}}
models:
  a: {{targets: [{{provider: p, model: m}}]}}
""", tmp_path) as px, httpx.Client(base_url=px.url, trust_env=False, timeout=10) as c:
        auth = {"authorization": f"Bearer {KEY}", "x-api-key": KEY, "x-goog-api-key": KEY}
        codes = [c.post(CALLS["openai"][0], json=CALLS["openai"][1], headers=auth).status_code for _ in range(3)]
        assert codes == [200, 200, 200]
        for dialect, (path, body, shape) in CALLS.items():
            r = c.post(path, json=body, headers=auth)
            assert r.status_code == 429, (dialect, r.text)
            assert shape(r.json()), r.text
            assert 1 <= int(r.headers["retry-after"]) <= 60
            assert "keys.team.rpm" in r.text and KEY not in r.text
        assert len(fake.requests) == 3
        # another key is not limited by this one's window
        r = c.post(CALLS["openai"][0], json=CALLS["openai"][1], headers={"authorization": "Bearer sk-free"})
        assert r.status_code == 200
