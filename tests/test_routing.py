"""Router: alias lookup, target choice (seeded rng uses every target), the alias list."""

from __future__ import annotations

import collections
import random

from plexus.config import parse_config
from plexus.routing import Router

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
