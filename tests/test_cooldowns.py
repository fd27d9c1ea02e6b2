"""Cooldowns: escalation per streak, retry-after, reset by success, bounded state, and the
retry-after header forms (seconds, HTTP-date in its three forms, milliseconds)."""

from __future__ import annotations

import math
from email.utils import formatdate

import pytest

from plexus.routing.cooldowns import (
    RETRY_AFTER_CAP, Cooldowns, parse_retry_after, parse_retry_after_ms, retry_after,
)

K = ("p", "m")


def fail_when_due(c: Cooldowns, key, now: float) -> tuple[float, float]:
    """Fail at ``now``; returns (cooldown length, the time it ends)."""
    until = c.failure(key, now)
    return until - now, until


def test_escalation_follows_the_schedule_and_caps_at_the_last_step():
    c = Cooldowns((5, 30, 120, 600))
    now, waits = 0.0, []
    for _ in range(6):
        wait, now = fail_when_due(c, K, now)  # the next failure comes right when the cooldown ends
        waits.append(wait)
    assert waits == [5, 30, 120, 600, 600, 600]
    assert c.snapshot(now)[0]["failures"] == 6 and c.snapshot(now)[0]["step"] == 6


def test_failures_while_cooling_neither_escalate_nor_extend():
    c = Cooldowns((5, 30))
    assert c.failure(K, 100.0) == 105.0
    for t in (100.0, 101.0, 104.9):  # requests that were in flight when the first one failed
        assert c.failure(K, t, status=502) == 105.0
    assert c.until(K) == 105.0 and c.cooling(K, 104.99) and not c.cooling(K, 105.0)
    assert c.failure(K, 105.0) == 135.0  # the next outage: the next step
    row = c.snapshot(105.0)[0]
    assert (row["failures"], row["step"], row["last_status"]) == (5, 2, None)


def test_success_resets():
    c = Cooldowns((5, 30, 120))
    c.failure(K, 0.0)
    c.failure(K, 5.0)
    assert c.until(K) == 35.0
    c.success(K)
    assert c.until(K) == 0.0 and not c.cooling(K, 6.0) and c.snapshot(6.0) == []
    assert c.failure(K, 40.0) == 45.0  # a fresh streak
    c.success(("other", "key"))  # unknown keys: nothing happens
    assert len(c.entries) == 1


def test_a_long_quiet_spell_starts_a_fresh_streak():
    c = Cooldowns((5, 30, 120))
    c.failure(K, 0.0)
    c.failure(K, 5.0)  # step 2, until 35
    assert c.failure(K, 35.0 + 119.0) == 154.0 + 120.0  # within the lapse: escalates
    assert c.failure(K, 274.0 + 120.0) == 394.0 + 5.0   # quiet for the last step after it ended


def test_retry_after_wins_and_is_capped():
    c = Cooldowns((5, 30))
    assert c.failure(K, 0.0, retry_after=42.0, status=429) == 42.0
    assert c.snapshot(1.0)[0]["last_status"] == 429
    assert c.failure(K, 1.0, retry_after=10.0) == 42.0   # cooling: a shorter ask changes nothing
    assert c.failure(K, 2.0, retry_after=100.0) == 102.0  # a longer one extends
    assert c.failure(K, 102.0) == 132.0  # retry-after counted as a step: the schedule goes on
    c2 = Cooldowns()
    assert c2.failure(K, 0.0, retry_after=86400.0) == RETRY_AFTER_CAP
    assert c2.failure(("a", "b"), 0.0, retry_after=-3.0) == 0.0  # "now": not cooling
    assert not c2.cooling(("a", "b"), 0.0)
    assert c2.failure(("c", "d"), 0.0, retry_after=math.nan) == 5.0  # garbage: the schedule


def test_snapshot_rows():
    c = Cooldowns((5,))
    c.failure(("openai", "gpt-4.1"), 10.0, status=503)
    c.failure(("anthropic", "claude"), 12.0, retry_after=1.0, status=429)
    rows = {(r["provider"], r["model"]): r for r in c.snapshot(12.5)}
    assert rows[("openai", "gpt-4.1")] == {
        "provider": "openai", "model": "gpt-4.1", "cooling": True, "until": 15.0, "remaining": 2.5,
        "failures": 1, "step": 1, "last_status": 503, "last_failure": 10.0}
    r = rows[("anthropic", "claude")]
    assert (r["cooling"], r["remaining"], r["last_status"]) == (True, 0.5, 429)
    r = {(x["provider"], x["model"]): x for x in c.snapshot(14.0)}[("anthropic", "claude")]
    assert (r["cooling"], r["remaining"]) == (False, 0.0)


def test_state_is_bounded():
    c = Cooldowns((5, 10), max_entries=100)
    for i in range(1000):
        c.failure(("star", f"model-{i}"), float(i))
    assert len(c.entries) <= 100
    assert c.cooling(("star", "model-999"), 999.0)  # the newest are kept
    # lapsed streaks go first: one old entry, the rest recent
    c = Cooldowns((5,), max_entries=4)
    c.failure(("old", "x"), 0.0)
    for i in range(3):
        c.failure(("new", str(i)), 100.0)
    c.failure(("newest", "y"), 101.0)
    assert ("old", "x") not in c.entries and len(c.entries) == 4


def test_bad_schedules():
    for bad in ((), (0,), (5, -1), (math.inf,)):
        with pytest.raises(ValueError):
            Cooldowns(bad)


# --------------------------------------------------------------------------- retry-after parsing

NOW = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT


@pytest.mark.parametrize("value, want", [
    (b"120", 120.0),
    ("120", 120.0),
    (b" 7 ", 7.0),
    (b"0", 0.0),
    (b"1.5", 1.5),
    (b"Sun, 06 Nov 1994 08:50:07 GMT", 30.0),       # IMF-fixdate
    (b"Sunday, 06-Nov-94 08:50:07 GMT", 30.0),      # RFC 850
    (b"Sun Nov  6 08:50:07 1994", 30.0),            # asctime (GMT by definition)
    (b"Sun, 06 Nov 1994 08:00:00 GMT", 0.0),        # in the past: now
    (b"-5", None),
    (b"", None),
    (b"soon", None),
    (b"12abc", None),
    (b"inf", None),
    (b"nan", None),
])
def test_parse_retry_after(value, want):
    assert parse_retry_after(value, NOW) == want


def test_parse_retry_after_date_from_formatdate():
    value = formatdate(NOW + 90, usegmt=True)
    assert parse_retry_after(value.encode(), NOW) == 90.0


@pytest.mark.parametrize("value, want", [
    (b"1500", 1.5), ("250", 0.25), (b"0", 0.0), (b"20.5", 0.0205), (b"-1", None), (b"x", None), (b"", None),
])
def test_parse_retry_after_ms(value, want):
    assert parse_retry_after_ms(value) == want


def test_retry_after_from_headers():
    assert retry_after([(b"content-type", b"application/json")], NOW) is None
    assert retry_after([(b"Retry-After", b"3")], NOW) == 3.0
    assert retry_after([(b"retry-after", b"3"), (b"retry-after-ms", b"2500")], NOW) == 2.5  # ms wins
    assert retry_after([(b"retry-after-ms", b"junk"), (b"retry-after", b"3")], NOW) == 3.0
    assert retry_after([(b"retry-after", b"junk"), (b"retry-after", b"4")], NOW) == 4.0
