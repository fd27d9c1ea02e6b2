"""Router.plan / report: selector orders (statistically, with a seeded rng), cooldowns in the
plan, the all-cooling fallback, max_attempts, least_latency convergence and exploration.
Pure and deterministic: the rng is seeded and ``now`` is passed in."""

from __future__ import annotations

import collections
import itertools
import random

import pytest

from plexus.config import parse_config
from plexus.routing import Router
from plexus.routing.outcome import AUTH, FATAL, OK, RETRY
from plexus.routing.select import EXPLORE_AFTER

PROVIDERS = {
    "a": {"type": "OpenAI", "api_base_url": "http://127.0.0.1:1/v1", "models": ["m1", "m2", "m3"]},
    "b": {"type": "Anthropic", "api_base_url": "http://127.0.0.1:2/v1", "models": ["c1"]},
    "g": {"type": "Gemini", "api_base_url": "http://127.0.0.1:3/v1beta", "models": ["g1"]},
}
TRIO = [{"provider": "a", "model": "m1"}, {"provider": "b", "model": "c1"}, {"provider": "g", "model": "g1"}]


def router(selector="random", targets=TRIO, routing=None, seed=1, rng=None):
    models = {"x": {"selector": selector, "targets": targets},
              "solo": {"selector": selector, "targets": targets[:1]}}
    data = {"providers": PROVIDERS, "models": models}
    if routing:
        data["routing"] = routing
    config = parse_config(data, "t.yaml", env={})
    r = Router(config, rng if rng is not None else random.Random(seed))
    return r, config.aliases["x"]


def names(plan):
    return tuple(t.provider.name for t in plan)


class CountingRandom(random.Random):
    def __init__(self, seed):
        super().__init__(seed)
        self.calls = 0

    def random(self):
        self.calls += 1
        return super().random()


def chi_square(counts: collections.Counter, expected: dict, n: int) -> float:
    assert set(counts) <= set(expected), set(counts) - set(expected)
    return sum((counts.get(k, 0) - p * n) ** 2 / (p * n) for k, p in expected.items())


# χ² critical values at p = 0.001 (a correct selector fails these 1 time in 1000 seeds;
# the seeds here are fixed, so the tests are deterministic)
CHI2_001 = {1: 10.83, 2: 13.82, 5: 20.52}


# --------------------------------------------------------------------------- single target, cost

@pytest.mark.parametrize("selector", ["random", "weighted", "in_order", "least_latency"])
def test_single_target_plan_is_the_precomputed_tuple(selector):
    rng = CountingRandom(3)
    r, _ = router(selector, rng=rng)
    solo = r.resolve("solo")
    for now in range(100):
        assert r.plan(solo, float(now)) is solo.targets
    r.report(solo.targets[0], RETRY, 100.0)  # cooling: still the only thing to try
    assert r.plan(solo, 101.0) is solo.targets
    assert rng.calls == 0


def test_in_order_without_failures_allocates_nothing():
    r, x = router("in_order")
    assert r.plan(x, 0.0) is x.targets


# --------------------------------------------------------------------------- random / weighted

def test_random_is_a_uniform_shuffle():
    r, x = router("random", seed=2024)
    n = 12000
    counts = collections.Counter(names(r.plan(x, 0.0)) for _ in range(n))
    perms = {p: 1 / 6 for p in itertools.permutations("abg")}
    assert chi_square(counts, perms, n) < CHI2_001[5], counts
    first = collections.Counter(p[0] for p in counts.elements())
    assert chi_square(first, {"a": 1 / 3, "b": 1 / 3, "g": 1 / 3}, n) < CHI2_001[2]


def _weighted_perm_probs(weights: dict[str, float]) -> dict[tuple, float]:
    """Exact probabilities of each order under successive weighted draws without replacement."""
    out = {}
    for perm in itertools.permutations(weights):
        p, left = 1.0, sum(weights.values())
        for k in perm:
            p *= weights[k] / left
            left -= weights[k]
        out[perm] = p
    return out


def test_weighted_order_matches_successive_draws():
    targets = [dict(t, weight=w) for t, w in zip(TRIO, (1, 2, 7))]
    r, x = router("weighted", targets, seed=99)
    n = 10000
    counts = collections.Counter(names(r.plan(x, 0.0)) for _ in range(n))
    expected = _weighted_perm_probs({"a": 1, "b": 2, "g": 7})
    assert chi_square(counts, expected, n) < CHI2_001[5], counts
    first = collections.Counter(p[0] for p in counts.elements())
    assert abs(first["g"] / n - 0.7) < 0.02 and abs(first["a"] / n - 0.1) < 0.015, first


def test_weighted_split_two_targets():
    targets = [dict(TRIO[0], weight=0.25), dict(TRIO[1], weight=0.75)]
    r, x = router("weighted", targets, seed=5)
    n = 10000
    first = collections.Counter(r.plan(x, 0.0)[0].provider.name for _ in range(n))
    assert chi_square(first, {"a": 0.25, "b": 0.75}, n) < CHI2_001[1], first


def test_weighted_skips_cooling_targets_and_renormalises():
    targets = [dict(t, weight=w) for t, w in zip(TRIO, (1, 1, 8))]
    r, x = router("weighted", targets, seed=8)
    r.report(x.targets[2], RETRY, 0.0)  # the heavy one cools down for 5 s
    n = 4000
    plans = [names(r.plan(x, 1.0)) for _ in range(n)]
    assert all(len(p) == 2 and "g" not in p for p in plans)
    first = collections.Counter(p[0] for p in plans)
    assert chi_square(first, {"a": 0.5, "b": 0.5}, n) < CHI2_001[1], first
    assert "g" in names(r.plan(x, 5.0))  # back when the cooldown ends


# --------------------------------------------------------------------------- in_order, cooldowns

def test_in_order_primary_then_backup():
    r, x = router("in_order")
    a, b, g = x.targets
    assert names(r.plan(x, 0.0)) == ("a", "b", "g")
    r.report(a, RETRY, 0.0, status=503)             # primary down: 5 s
    assert names(r.plan(x, 1.0)) == ("b", "g")
    r.report(b, AUTH, 1.0, status=401)              # bad key on the first backup: 5 s
    assert names(r.plan(x, 2.0)) == ("g",)
    assert names(r.plan(x, 5.0)) == ("a", "g")     # the primary's cooldown ended
    r.report(a, RETRY, 5.0)                          # and it fails again: 30 s now
    assert names(r.plan(x, 6.0)) == ("b", "g")
    assert names(r.plan(x, 34.9)) == ("b", "g")
    assert names(r.plan(x, 35.0)) == ("a", "b", "g")
    r.report(a, OK, 35.0)                            # healthy: the streak is forgotten
    r.report(a, RETRY, 40.0)
    assert r.cooldowns.until(a.key) == 45.0


def test_fatal_outcome_changes_nothing():
    r, x = router("in_order")
    r.report(x.targets[0], FATAL, 0.0, status=400)
    assert names(r.plan(x, 0.0)) == ("a", "b", "g") and r.cooldowns.snapshot(0.0) == []


def test_all_cooling_plans_the_one_that_ends_first():
    r, x = router("random")
    a, b, g = x.targets
    r.report(a, RETRY, 0.0, retry_after=50.0)
    r.report(b, RETRY, 0.0, retry_after=20.0)
    r.report(g, RETRY, 0.0, retry_after=30.0)
    assert names(r.plan(x, 1.0)) == ("b",)
    r.report(b, RETRY, 1.0)  # it failed again while cooling: no escalation, still first back
    assert names(r.plan(x, 2.0)) == ("b",)
    assert names(r.plan(x, 20.0)) == ("b",)  # healthy again (alone)
    assert set(names(r.plan(x, 30.0))) == {"b", "g"}


def test_cooldown_state_is_shared_across_aliases_by_provider_and_model():
    data = {"providers": PROVIDERS, "models": {
        "one": {"selector": "in_order", "targets": TRIO},
        "two": {"selector": "in_order", "targets": [TRIO[0], TRIO[1]]}}}
    c = parse_config(data, "t.yaml", env={})
    r = Router(c, random.Random(0))
    r.report(c.aliases["one"].targets[0], RETRY, 0.0)
    assert names(r.plan(c.aliases["two"], 1.0)) == ("b",)


# --------------------------------------------------------------------------- max_attempts

@pytest.mark.parametrize("selector", ["random", "weighted", "in_order", "least_latency"])
def test_max_attempts_bounds_the_plan(selector):
    r, x = router(selector, routing={"max_attempts": 2})
    for now in range(50):
        plan = r.plan(x, float(now))
        assert len(plan) == 2 and len(set(names(plan))) == 2
    r, x = router(selector, routing={"max_attempts": 10})
    assert len(r.plan(x, 0.0)) == 3  # never the same target twice in one request
    r, x = router(selector, routing={"max_attempts": 1})
    assert len(r.plan(x, 0.0)) == 1
    r, x = router(selector)  # 0: each target once
    assert sorted(names(r.plan(x, 0.0))) == ["a", "b", "g"]


# --------------------------------------------------------------------------- least_latency

LAT = {"a": 1.0, "b": 0.2, "g": 0.6}


def simulate(r, x, latency: dict, start: float, seconds: float, step: float = 0.1) -> collections.Counter:
    """Requests every ``step`` s, each answered by its first target in ``latency[provider]`` s."""
    first = collections.Counter()
    now = start
    while now < start + seconds:
        t = r.plan(x, now)[0]
        first[t.provider.name] += 1
        r.report(t, OK, now, ttfb=latency[t.provider.name])
        now = round(now + step, 6)
    return first


def test_least_latency_converges_to_the_faster_target():
    r, x = router("least_latency", TRIO[:2], seed=11)
    first = simulate(r, x, {"a": 1.0, "b": 0.2}, 0.0, 300.0)
    n = sum(first.values())
    assert first["b"] / n > 0.98, first
    # exploration: the slow one still gets about one request per EXPLORE_AFTER seconds
    assert 300 / EXPLORE_AFTER - 2 <= first["a"] <= 300 / EXPLORE_AFTER + 2, first
    # the tables turn: b slows down, a speeds up
    first = simulate(r, x, {"a": 0.1, "b": 2.0}, 300.0, 100.0)
    late = simulate(r, x, {"a": 0.1, "b": 2.0}, 400.0, 100.0)
    assert late["a"] / sum(late.values()) > 0.98, (first, late)


def test_least_latency_power_of_two_choices_over_three():
    r, x = router("least_latency", seed=12)
    simulate(r, x, LAT, 0.0, 40.0)  # warm up: every target sampled
    first = simulate(r, x, LAT, 40.0, 600.0)
    n = sum(first.values())
    # pairs are drawn uniformly: the fastest wins 2 of 3 pairs, the middle one 1 of 3, the slowest none
    # (apart from its exploration probe every EXPLORE_AFTER seconds)
    assert abs(first["b"] / n - 2 / 3) < 0.03 and abs(first["g"] / n - 1 / 3) < 0.03, first
    assert first["a"] <= 600 / EXPLORE_AFTER + 2, first
    plan = r.plan(x, 700.0)
    assert len(plan) == 3 and len(set(names(plan))) == 3


def test_least_latency_explores_a_recovered_target_once():
    r, x = router("least_latency", TRIO[:2], seed=13)
    a, b = x.targets
    simulate(r, x, {"a": 5.0, "b": 1.0}, 0.0, 60.0)  # a is slow ...
    r.report(a, RETRY, 60.0, retry_after=100.0)      # ... then down for 100 s
    assert names(r.plan(x, 61.0)) == ("b",)
    first = simulate(r, x, {"a": 5.0, "b": 1.0}, 61.0, 99.0)  # only b is asked meanwhile
    assert set(first) == {"b"}
    # a is healthy again with a stale average: the next plan probes it, the ones right after do not
    assert names(r.plan(x, 160.0)) == ("a", "b")
    assert [names(r.plan(x, 160.0))[0] for _ in range(50)] == ["b"] * 50  # the probe is in flight
    r.report(a, OK, 161.0, ttfb=0.3)  # it came back fast: it wins from now on
    assert [r.plan(x, 162.0)[0] for _ in range(20)] == [a] * 20


def test_least_latency_unsampled_targets_are_probed_one_at_a_time():
    r, x = router("least_latency", seed=14)
    firsts = [r.plan(x, 0.0)[0].provider.name for _ in range(3)]
    assert firsts == ["a", "b", "g"]  # each probed once, in config order
    assert len({r.plan(x, 0.0)[0].provider.name for _ in range(200)}) >= 2  # then no herd on one


# --------------------------------------------------------------------------- snapshot

def test_snapshot_joins_cooldowns_and_latency():
    r, x = router("least_latency", TRIO[:2])
    a, b = x.targets
    r.report(a, OK, 1.0, ttfb=0.5)
    r.report(b, RETRY, 2.0, status=529)
    rows = {(row["provider"], row["model"]): row for row in r.snapshot(3.0)}
    assert rows[("a", "m1")]["ttfb_ewma"] == 0.5 and rows[("a", "m1")]["cooling"] is False
    rb = rows[("b", "c1")]
    assert (rb["cooling"], rb["until"], rb["remaining"], rb["last_status"], rb["ttfb_ewma"]) == (
        True, 7.0, 4.0, 529, None)
    assert set(rows) == {("a", "m1"), ("b", "c1")}  # every configured key, with or without failures


def test_report_for_unknown_keys_is_harmless():
    r, x = router("random")
    from plexus.config_models import make_target
    stray = make_target(x.targets[0].provider, "elsewhere")
    r.report(stray, OK, 0.0, ttfb=1.0)
    r.report(stray, RETRY, 0.0)
    assert r.cooldowns.cooling(stray.key, 1.0)
