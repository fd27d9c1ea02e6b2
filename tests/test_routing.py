"""Router: alias lookup, direct addressing, the pre-failover pick(), the alias list, and the
outcome classification table.  Plans and selectors: test_select.py; cooldowns: test_cooldowns.py."""

from __future__ import annotations

import collections
import random

import pytest

from plexus.config import parse_config
from plexus.routing import CONNECT, HTTP, INVALID, STREAM_ERROR, TIMEOUT, Outcome, Router, classify
from plexus.routing.select import DIRECT_CACHE

DATA = {
    "providers": {
        "a": {"type": "OpenAI", "api_base_url": "http://127.0.0.1:1/v1", "models": ["m1", "m2", "m3"]},
        "b": {"type": "Anthropic", "api_base_url": "http://127.0.0.1:2/v1", "models": ["c1"]},
    },
    "models": {
        "solo": {"targets": [{"provider": "a", "model": "m1"}]},
        "trio": {"targets": [{"provider": "a", "model": "m2"}, {"provider": "b", "model": "c1"},
                             {"provider": "a", "model": "m3"}]},
        "pair": {"targets": [{"provider": "a", "model": "m1"}, {"provider": "b", "model": "c1"}]},
    },
}
CONFIG = parse_config(DATA, "t.yaml", env={})


class CountingRandom(random.Random):
    def __init__(self, seed):
        super().__init__(seed)
        self.calls = 0

    def randrange(self, *args, **kwargs):
        self.calls += 1
        return super().randrange(*args, **kwargs)


def test_resolve():
    r = Router(CONFIG)
    assert r.resolve("trio") is CONFIG.aliases["trio"]
    assert r.resolve("nope") is None
    assert r.resolve("TRIO") is None  # exact names only
    assert r.resolve("") is None


def test_aliases_in_config_order():
    r = Router(CONFIG)
    assert r.aliases() == ["solo", "trio", "pair"]
    assert r.aliases() is r.aliases()  # precomputed, not rebuilt per call


def test_single_target_never_calls_rng():
    rng = CountingRandom(1)
    r = Router(CONFIG, rng)
    solo = r.resolve("solo")
    for _ in range(100):
        t = r.pick(solo)
        assert (t.provider.name, t.model) == ("a", "m1")
    assert rng.calls == 0


def test_pick_distribution_uses_all_targets():
    rng = CountingRandom(1234)
    r = Router(CONFIG, rng)
    trio = r.resolve("trio")
    n = 3000
    counts = collections.Counter((t.provider.name, t.model) for t in (r.pick(trio) for _ in range(n)))
    assert set(counts) == {("a", "m2"), ("b", "c1"), ("a", "m3")}
    assert all(n / 3 * 0.8 < c < n / 3 * 1.2 for c in counts.values()), counts
    assert rng.calls == n


def test_pick_is_deterministic_for_a_seed():
    def run(seed):
        r = Router(CONFIG, random.Random(seed))
        pair = r.resolve("pair")
        return [r.pick(pair).model for _ in range(50)]

    assert run(7) == run(7)
    assert set(run(7)) == {"m1", "c1"}


def test_picked_target_carries_precomputed_provider():
    t = Router(CONFIG, random.Random(0)).pick(CONFIG.aliases["pair"])
    assert t.provider is CONFIG.providers[t.provider.name]
    assert t.model in t.provider.models


def test_default_rng_works():
    r = Router(CONFIG)
    seen = {r.pick(r.resolve("pair")).model for _ in range(200)}
    assert seen == {"m1", "c1"}


# --------------------------------------------------------------------------- direct addressing

DIRECT = {
    "routing": {"direct_addressing": True},
    "providers": {
        **DATA["providers"],
        "or": {"type": "OpenAI", "api_base_url": "https://openrouter.ai/api/v1", "models": "*",
               "ttfb_timeout": 60},
    },
    "models": {**DATA["models"], "a/m1": {"targets": [{"provider": "b", "model": "c1"}]}},
}


def direct_router(direct=True):
    data = dict(DIRECT, routing={"direct_addressing": direct})
    return Router(parse_config(data, "t.yaml", env={}), random.Random(0))


def test_direct_addressing_routes_provider_slash_model():
    r = direct_router()
    alias = r.resolve("a/m2")
    assert alias.name == "a/m2" and alias.selector == "in_order"
    (t,) = alias.targets
    assert (t.provider.name, t.model, t.key) == ("a", "m2", ("a", "m2"))
    assert t.ttfb_timeout == t.provider.ttfb_timeout and t.weight == 1.0
    assert r.resolve("a/m2") is alias  # cached
    assert r.plan(alias, 0.0) is alias.targets


def test_direct_addressing_alias_wins_and_lists_stay_strict():
    r = direct_router()
    assert r.resolve("a/m1").targets[0].provider.name == "b"  # the alias named "a/m1"
    assert r.resolve("a/unlisted") is None
    assert r.resolve("nope/m1") is None
    assert r.resolve("a/") is None and r.resolve("/m1") is None and r.resolve("a") is None


def test_direct_addressing_any_model_provider():
    r = direct_router()
    alias = r.resolve("or/anthropic/claude-3.5-sonnet:beta")  # split at the first "/"
    (t,) = alias.targets
    assert (t.provider.name, t.model, t.ttfb_timeout) == ("or", "anthropic/claude-3.5-sonnet:beta", 60.0)
    for bad in ("or/has space", "or/tab\there", "or/new\r\nline", "or/" + "x" * 300, "or/ünïcode"):
        assert r.resolve(bad) is None, bad


def test_direct_addressing_off_by_default():
    r = direct_router(direct=False)
    assert r.resolve("a/m2") is None and r.resolve("or/x") is None
    assert r.resolve("a/m1") is not None  # a real alias, whatever its name


def test_direct_cache_is_bounded():
    r = direct_router()
    for i in range(DIRECT_CACHE * 3):
        assert r.resolve(f"or/model-{i}") is not None
    assert len(r._direct_cache) <= DIRECT_CACHE


# --------------------------------------------------------------------------- classification

@pytest.mark.parametrize("status, kind, want", [
    (200, HTTP, Outcome.OK), (201, HTTP, Outcome.OK), (204, HTTP, Outcome.OK),
    (400, HTTP, Outcome.FATAL), (413, HTTP, Outcome.FATAL), (422, HTTP, Outcome.FATAL),
    (405, HTTP, Outcome.FATAL), (415, HTTP, Outcome.FATAL), (431, HTTP, Outcome.FATAL),
    (401, HTTP, Outcome.AUTH), (403, HTTP, Outcome.AUTH), (402, HTTP, Outcome.AUTH),
    (404, HTTP, Outcome.RETRY), (410, HTTP, Outcome.RETRY),
    (408, HTTP, Outcome.RETRY), (409, HTTP, Outcome.RETRY), (429, HTTP, Outcome.RETRY),
    (500, HTTP, Outcome.RETRY), (502, HTTP, Outcome.RETRY), (503, HTTP, Outcome.RETRY),
    (504, HTTP, Outcome.RETRY), (529, HTTP, Outcome.RETRY), (599, HTTP, Outcome.RETRY),
    (301, HTTP, Outcome.RETRY), (304, HTTP, Outcome.RETRY), (101, HTTP, Outcome.RETRY),
    (600, HTTP, Outcome.RETRY), (-1, HTTP, Outcome.RETRY),
    (None, CONNECT, Outcome.RETRY), (None, TIMEOUT, Outcome.RETRY), (200, TIMEOUT, Outcome.RETRY),
    (200, INVALID, Outcome.RETRY), (None, INVALID, Outcome.RETRY),
    (None, STREAM_ERROR, Outcome.RETRY), (200, STREAM_ERROR, Outcome.RETRY),
    (529, STREAM_ERROR, Outcome.RETRY), (429, STREAM_ERROR, Outcome.RETRY),
    (400, STREAM_ERROR, Outcome.FATAL), (401, STREAM_ERROR, Outcome.AUTH),
])
def test_classify(status, kind, want):
    got = classify(status, kind)
    assert got is want
    assert got.fail_over == (want in (Outcome.RETRY, Outcome.AUTH)) == got.cool_down


def test_classify_rejects_programming_errors():
    with pytest.raises(ValueError):
        classify(None, HTTP)
    with pytest.raises(ValueError):
        classify(500, "boom")
    assert classify(200) is Outcome.OK  # kind defaults to http
