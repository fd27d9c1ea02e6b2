"""End-to-end: cooldowns and selectors, through a real Plexus process and the official SDKs.

Theory (the spec under test, routing/cooldowns.py and routing/select.py): a target that fails is
skipped for the next step of ``routing.cooldown`` (here a small [0.4, 1.6, 4] so expiry is seen in
a test); a failure after a cooldown expired escalates to the next step, a success forgets the
streak (the next failure starts again at the first step); when every target of an alias is cooling
the one that comes back first is still tried (a call, not an instant error). Selectors, measured
from the fake upstreams' request logs: ``in_order`` sends everything to the first target while it
is healthy and to the backup while it cools; ``weighted`` and ``random`` split as configured
(generous statistical bounds over 200 requests); ``least_latency`` converges on the faster target.
Requests rotate over the three client dialects, stream and not, so every path reports to routing.
"""

from __future__ import annotations

import itertools
import time

import pytest

from fake_upstream import DEFAULT_TEXT, default_reply
from failover_world import DIALECTS, NEXT, ask, check_dialect_error, ask_error, error_reply, world

COOLDOWN = [0.4, 1.6, 4]  # (steps wide enough that a slow CI machine's request never crosses one)
PAST_FIRST = 0.5    # sleep that outlasts the first cooldown step, never the second
MODES = {"json": False, "stream": True}
CASES = [(d, m) for d in DIALECTS for m in MODES]
ROTATION = [(d, s) for d in DIALECTS for s in (False, True)]

ALIASES: dict = {}
for _d, _m in CASES:
    for _what in ("esc", "primary", "allcool"):
        ALIASES[f"{_what}-{_d}-{_m}"] = ("in_order", [(f"a_{_d}", f"m1-{_what}-{_d}-{_m}", {}),
                                                      (f"b_{NEXT[_d]}", f"m2-{_what}-{_d}-{_m}", {})])
ALIASES["weighted"] = ("weighted", [("a_openai", "w1", {"weight": 3}), ("b_anthropic", "w2", {"weight": 1})])
ALIASES["random"] = ("random", [("a_gemini", "r1", {}), ("b_openai", "r2", {})])
ALIASES["latency"] = ("least_latency", [("a_anthropic", "slow", {}), ("b_gemini", "fast", {})])


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    with world(tmp_path_factory.mktemp("routing"), ALIASES, cooldown=COOLDOWN) as wd:
        yield wd


@pytest.fixture(autouse=True)
def _fresh(request):
    if "w" in request.fixturenames:
        request.getfixturevalue("w").reset()


def new_calls(w, before: tuple[int, int]) -> tuple[list[str], list[str]]:
    fa, fb = w.calls()
    return fa[before[0]:], fb[before[1]:]


def counts(w) -> tuple[int, int]:
    return len(w.fa.requests), len(w.fb.requests)


# ---------------------------------------------------------------- cooldowns

@pytest.mark.parametrize("dialect,mode", CASES)
def test_cooldown_escalates_expires_and_is_reset_by_a_success(w, dialect, mode):
    alias, stream = f"esc-{dialect}-{mode}", MODES[mode]
    primary, backup = f"a_{dialect}/m1-{alias}", f"b_{NEXT[dialect]}/m2-{alias}"

    def step(fail: bool, want_target: str, want_attempts: str, primary_called: bool) -> None:
        if fail:
            w.fa.script(error_reply(dialect, 503, "overloaded"))
        before = counts(w)
        a = ask(w, dialect, alias, stream)
        assert a.text == DEFAULT_TEXT and (a.target, a.attempts) == (want_target, want_attempts)
        fa, _ = new_calls(w, before)
        assert fa == ([f"m1-{alias}"] if primary_called else []), fa

    step(True, backup, "2", True)       # fails: first step (0.4 s)
    step(False, backup, "1", False)     # cooling: straight to the backup
    time.sleep(PAST_FIRST)
    step(True, backup, "2", True)       # expired, tried again, fails: second step (1.6 s)
    time.sleep(PAST_FIRST)
    step(False, backup, "1", False)     # escalated: still cooling where the first step had ended
    time.sleep(COOLDOWN[1] - PAST_FIRST + 0.05)
    step(False, primary, "1", True)     # expired: back to the primary, and the success resets it
    step(True, backup, "2", True)       # a new failure starts at the first step again...
    time.sleep(PAST_FIRST)
    step(False, primary, "1", True)     # ...so it is over after 0.4 s (not 4 s, the third step)


@pytest.mark.parametrize("dialect,mode", CASES)
def test_all_targets_cooling_still_tries_the_one_back_first(w, dialect, mode):
    alias, stream = f"allcool-{dialect}-{mode}", MODES[mode]
    w.fa.script(error_reply(dialect, 503, "overloaded", headers={"retry-after": "30"}))
    w.fb.script(error_reply(NEXT[dialect], 503, "overloaded", headers={"retry-after": "20"}))
    check_dialect_error(dialect, ask_error(w, dialect, alias, stream), 503)
    before = counts(w)
    t0 = time.monotonic()
    a = ask(w, dialect, alias, stream)  # both cooling: the backup's cooldown ends first
    assert a.text == DEFAULT_TEXT and a.target == f"b_{NEXT[dialect]}/m2-{alias}" and a.attempts == "1"
    assert new_calls(w, before) == ([], [f"m2-{alias}"]), "a call must be made, to the one back first"
    assert time.monotonic() - t0 < 2, "no waiting for a cooldown to end"


# ---------------------------------------------------------------- selectors

def spread(w, alias: str, n: int) -> tuple[list[str], list[str]]:
    """``n`` requests rotating over the dialects and stream/non-stream; the models each fake got."""
    before = counts(w)
    for i, (dialect, stream) in zip(range(n), itertools.cycle(ROTATION)):
        a = ask(w, dialect, alias, stream)
        assert a.text == DEFAULT_TEXT and a.attempts == "1", (i, dict(a.headers))
    fa, fb = new_calls(w, before)
    assert len(fa) + len(fb) == n
    return fa, fb


@pytest.mark.parametrize("dialect,mode", CASES)
def test_in_order_primary_then_backup_while_it_cools(w, dialect, mode):
    alias, stream = f"primary-{dialect}-{mode}", MODES[mode]
    before = counts(w)
    for _ in range(6):
        assert ask(w, dialect, alias, stream).target == f"a_{dialect}/m1-{alias}"
    assert new_calls(w, before) == ([f"m1-{alias}"] * 6, [])
    w.fa.script(error_reply(dialect, 500, "boom"))
    assert ask(w, dialect, alias, stream).attempts == "2"
    before = counts(w)
    for _ in range(4):
        assert ask(w, dialect, alias, stream).target == f"b_{NEXT[dialect]}/m2-{alias}"
    assert new_calls(w, before) == ([], [f"m2-{alias}"] * 4)
    time.sleep(PAST_FIRST)
    before = counts(w)
    for _ in range(3):
        assert ask(w, dialect, alias, stream).target == f"a_{dialect}/m1-{alias}"
    assert new_calls(w, before) == ([f"m1-{alias}"] * 3, [])


def test_weighted_split_follows_the_weights(w):
    fa, fb = spread(w, "weighted", 200)
    assert set(fa) <= {"w1"} and set(fb) <= {"w2"}
    share = len(fa) / 200  # expected 0.75 (sd ~0.03)
    assert 0.6 <= share <= 0.9, share


def test_random_split_is_even(w):
    fa, fb = spread(w, "random", 200)
    assert set(fa) <= {"r1"} and set(fb) <= {"r2"}
    share = len(fa) / 200  # expected 0.5 (sd ~0.035)
    assert 0.35 <= share <= 0.65, share


def test_least_latency_converges_on_the_faster_target(w):
    def slow(req):
        time.sleep(0.05)  # on fa's own loop thread: only the slow target waits
        return default_reply(req)

    w.fa.script(*[slow] * 60)
    before = counts(w)
    models = []
    for dialect, stream in itertools.islice(itertools.cycle(ROTATION), 36):
        a = ask(w, dialect, "latency", stream)
        assert a.text == DEFAULT_TEXT
        models.append(a.target)
    fa, fb = new_calls(w, before)
    assert len(fa) <= 2, f"the slow target got {len(fa)} of 36 requests"  # at most its first probe
    assert models[-30:] == ["b_gemini/fast"] * 30, models
