"""Metrics: observe known records, parse `render()` with prometheus_client's own parser.

The parser is the oracle for the format (escaping, histogram suffixes, number syntax); the
values are checked exactly.  Families nothing was counted in keep their HELP/TYPE lines and
have no samples.
"""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from plexus.control.metrics import CONTENT_TYPE, LATENCY_BUCKETS, OTHER, OVERHEAD_BUCKETS, Metrics
from plexus.control.usage import STATUSES, Usage

FAMILIES = {
    "plexus_requests": "counter", "plexus_http_responses": "counter", "plexus_attempts": "counter",
    "plexus_failovers": "counter", "plexus_tokens": "counter", "plexus_cost_dollars": "counter",
    "plexus_request_duration_seconds": "histogram", "plexus_time_to_first_token_seconds": "histogram",
    "plexus_upstream_latency_seconds": "histogram", "plexus_gateway_overhead_seconds": "histogram",
}


def record(alias="gpt", provider="openai", model="gpt-4o", status="success", *, dialect="openai",
           attempts=1, http_status=200, duration_ms=1000.0, ttft_ms=None, overhead_ms=None,
           input_tokens=None, output_tokens=None, cached_tokens=None, cache_write_tokens=None,
           reasoning_tokens=None, cost=None) -> Usage:
    u = Usage("id", 0.0, "127.0.0.1", dialect, "/v1/chat/completions")
    u.alias, u.provider, u.model, u.status, u.attempts, u.http_status = alias, provider, model, status, attempts, http_status
    u.input_tokens, u.output_tokens, u.cached_tokens = input_tokens, output_tokens, cached_tokens
    u.cache_write_tokens, u.reasoning_tokens, u.cost = cache_write_tokens, reasoning_tokens, cost
    u.ttft_ms, u.overhead_ms = ttft_ms, overhead_ms
    u.finish(duration_ms)
    return u


def parse(m: Metrics) -> dict:
    """family name -> Metric, with each family's type checked."""
    fams = {f.name: f for f in text_string_to_metric_families(m.render().decode("utf-8"))}
    for name, kind in FAMILIES.items():
        assert fams[name].type == kind, name
    return fams


def values(fam, suffix: str = "") -> dict:
    """{frozenset(labels): value} of a family's samples named `<family><suffix>`."""
    return {frozenset(s.labels.items()): s.value for s in fam.samples if s.name == fam.name + suffix}


def L(**labels) -> frozenset:
    return frozenset(labels.items())


def buckets(fam, **labels) -> list[tuple[str, float]]:
    """The (le, cumulative count) pairs of one histogram series, in output order."""
    return [(s.labels["le"], s.value) for s in fam.samples
            if s.name == fam.name + "_bucket" and {k: v for k, v in s.labels.items() if k != "le"} == labels]


def expected_buckets(bounds: tuple, observed_ms: list[float]) -> list[tuple[str, float]]:
    les = [repr(b / 1000.0) for b in bounds] + ["+Inf"]
    return [(le, float(sum(1 for v in observed_ms if v <= b)))
            for le, b in zip(les, list(bounds) + [float("inf")])]


# ---- counters ----------------------------------------------------------------------------------

def observed() -> Metrics:
    m = Metrics()
    m.observe(record(input_tokens=100, output_tokens=20, cached_tokens=64, cost=0.5))
    m.observe(record(input_tokens=10, output_tokens=2, reasoning_tokens=1, cost=0.25, attempts=3))
    m.observe(record(provider="azure", status="error", http_status=502, attempts=2, cost=None))
    m.observe(record(status="client_closed", http_status=200, input_tokens=5, cache_write_tokens=7))
    m.observe(record(alias="claude", provider="anthropic", model="sonnet", status="error_stream",
                     cost=0.0, output_tokens=0))
    m.observe(record(alias=None, provider=None, model=None, status="error", http_status=404, attempts=0))
    m.observe(record(alias="", provider="", model="", status="error", http_status=404, attempts=0))
    return m


def test_requests_and_http_codes():
    f = parse(observed())
    assert values(f["plexus_requests"], "_total") == {
        L(alias="gpt", provider="openai", status="success"): 2,
        L(alias="gpt", provider="azure", status="error"): 1,
        L(alias="gpt", provider="openai", status="client_closed"): 1,
        L(alias="claude", provider="anthropic", status="error_stream"): 1,
        L(alias="", provider="", status="error"): 2,  # None and "" are one series
    }
    assert values(f["plexus_http_responses"], "_total") == {L(code="200"): 4, L(code="502"): 1, L(code="404"): 2}


def test_attempts_and_failovers():
    f = parse(observed())
    assert values(f["plexus_attempts"], "_total") == {L(alias="gpt"): 1 + 3 + 2 + 1, L(alias="claude"): 1, L(alias=""): 0}
    assert values(f["plexus_failovers"], "_total") == {L(alias="gpt"): 2 + 1, L(alias="claude"): 0, L(alias=""): 0}


def test_tokens_skip_unreported_types():
    f = parse(observed())
    gpt = dict(alias="gpt", provider="openai", model="gpt-4o")
    assert values(f["plexus_tokens"], "_total") == {
        L(**gpt, type="input"): 115, L(**gpt, type="output"): 22, L(**gpt, type="cached"): 64,
        L(**gpt, type="reasoning"): 1, L(**gpt, type="cache_write"): 7,
        L(alias="claude", provider="anthropic", model="sonnet", type="output"): 0,  # reported as 0: kept
    }


def test_cost_only_when_known():
    f = parse(observed())
    assert values(f["plexus_cost_dollars"], "_total") == {
        L(alias="gpt", provider="openai", model="gpt-4o"): 0.75,
        L(alias="claude", provider="anthropic", model="sonnet"): 0.0,
    }


def test_empty_metrics_render_every_family_without_samples():
    m = Metrics()
    fams = parse(m)
    assert set(fams) == set(FAMILIES)
    assert all(not f.samples for f in fams.values())
    assert m.CONTENT_TYPE == CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


# ---- histograms ------------------------------------------------------------------------------

def test_duration_histogram_buckets_are_cumulative_with_inf():
    m = Metrics()
    durations = [5.0, 5.0001, 0.1, 999.0, 1000.0, 300000.0, 400000.0]  # on, just past, under, over bounds
    for d in durations:
        m.observe(record(duration_ms=d))
    m.observe(record(provider="azure", duration_ms=42.0))
    f = parse(m)["plexus_request_duration_seconds"]
    assert buckets(f, alias="gpt", provider="openai") == expected_buckets(LATENCY_BUCKETS, durations)
    got = buckets(f, alias="gpt", provider="openai")
    assert got[0] == ("0.005", 2.0) and got[-2] == ("300.0", 6.0) and got[-1] == ("+Inf", 7.0)
    assert values(f, "_count") == {L(alias="gpt", provider="openai"): 7, L(alias="gpt", provider="azure"): 1}
    assert values(f, "_sum")[L(alias="gpt", provider="openai")] == pytest.approx(sum(durations) / 1000)
    assert values(f, "_sum")[L(alias="gpt", provider="azure")] == pytest.approx(0.042)


def test_histograms_sum_over_model_and_status():
    m = Metrics()
    m.observe(record(model="a", status="success", duration_ms=10.0))
    m.observe(record(model="b", status="error", duration_ms=20.0))
    f = parse(m)["plexus_request_duration_seconds"]
    assert values(f, "_count") == {L(alias="gpt", provider="openai"): 2}
    assert values(f, "_sum") == {L(alias="gpt", provider="openai"): pytest.approx(0.03)}


def test_ttft_only_for_records_with_one():
    m = Metrics()
    m.observe(record(ttft_ms=120.0))
    m.observe(record(ttft_ms=None))
    m.observe(record(ttft_ms=2500.0))
    f = parse(m)["plexus_time_to_first_token_seconds"]
    assert buckets(f, alias="gpt", provider="openai") == expected_buckets(LATENCY_BUCKETS, [120.0, 2500.0])
    assert values(f, "_count") == {L(alias="gpt", provider="openai"): 2}
    assert values(f, "_sum") == {L(alias="gpt", provider="openai"): pytest.approx(2.62)}


def test_upstream_latency_and_gateway_overhead():
    m = Metrics()
    m.observe(record(duration_ms=1000.0, overhead_ms=0.3))
    m.observe(record(alias="other", duration_ms=50.0, overhead_ms=0.05))        # same provider
    m.observe(record(duration_ms=1000.0))                                       # overhead unknown: neither
    m.observe(record(provider=None, duration_ms=2.0, overhead_ms=2.0, dialect="anthropic"))  # no upstream
    m.observe(record(duration_ms=1.0, overhead_ms=3.0, dialect="gemini"))       # clamped to 0
    f = parse(m)
    up = f["plexus_upstream_latency_seconds"]
    assert buckets(up, provider="openai") == expected_buckets(LATENCY_BUCKETS, [999.7, 49.95, 0.0])
    assert values(up, "_count") == {L(provider="openai"): 3}
    assert values(up, "_sum")[L(provider="openai")] == pytest.approx((999.7 + 49.95) / 1000)
    ov = f["plexus_gateway_overhead_seconds"]
    assert buckets(ov, dialect="openai") == expected_buckets(OVERHEAD_BUCKETS, [0.3, 0.05])
    assert buckets(ov, dialect="openai")[:4] == [("5e-05", 1.0), ("0.0001", 1.0), ("0.0002", 1.0), ("0.0005", 2.0)]
    assert values(ov, "_count") == {L(dialect="openai"): 2, L(dialect="anthropic"): 1, L(dialect="gemini"): 1}
    assert values(ov, "_sum")[L(dialect="openai")] == pytest.approx(0.00035)


# ---- gauges ----------------------------------------------------------------------------------

def test_gauges_plain_and_labelled():
    m = Metrics({
        "plexus_open_connections": ("Open client connections.", lambda: 7),
        "plexus_active_streams": ("Streams being relayed.", lambda: 2.5),
        "plexus_cooldowns_active": ("Targets cooling down.", ("provider", "model"),
                                    lambda: {("openai", "gpt-4o"): 1, ("azure", "gpt-4o"): 1}),
    })
    f = parse(m)
    assert f["plexus_open_connections"].type == "gauge"
    assert values(f["plexus_open_connections"]) == {L(): 7}
    assert values(f["plexus_active_streams"]) == {L(): 2.5}
    assert values(f["plexus_cooldowns_active"]) == {L(provider="openai", model="gpt-4o"): 1,
                                                    L(provider="azure", model="gpt-4o"): 1}


def test_gauge_that_fails_is_left_out_and_logged_once(caplog):
    state = {"fail": True}

    def flaky():
        if state["fail"]:
            raise RuntimeError("boom")
        return 3

    m = Metrics({
        "plexus_flaky": ("Raises.", flaky),
        "plexus_wrong_shape": ("Labelled, answers a number.", ("provider",), lambda: 3),
        "plexus_wrong_arity": ("Two values for one label.", ("provider",), lambda: {("a", "b"): 1}),
        "plexus_ok": ("Fine.", lambda: 1),
    })
    m.observe(record())
    with caplog.at_level(logging.WARNING, logger="plexus"):
        f = parse(m)
        parse(m)
    assert set(f) == set(FAMILIES) | {"plexus_ok"}
    assert values(f["plexus_requests"], "_total") == {L(alias="gpt", provider="openai", status="success"): 1}
    assert sum("plexus_flaky" in r.getMessage() for r in caplog.records) == 1
    state["fail"] = False
    assert values(parse(m)["plexus_flaky"]) == {L(): 3}


@pytest.mark.parametrize("spec", [
    {"bad-name": ("h", lambda: 1)},
    {"plexus_requests_total": ("h", lambda: 1)},             # a Plexus family
    {"plexus_request_duration_seconds_bucket": ("h", lambda: 1)},
    {"plexus_x": ("h", ("le",), lambda: {})},                # reserved label
    {"plexus_x": ("h", ("a", "a"), lambda: {})},
    {"plexus_x": ("h", ("bad-label",), lambda: {})},
    {"plexus_x": ("h", 3)},
    {"plexus_x": ("h",)},
])
def test_bad_gauge_specs_are_rejected_at_startup(spec):
    with pytest.raises(ValueError):
        Metrics(spec)


# ---- escaping and cardinality ---------------------------------------------------------------

def test_label_values_and_help_are_escaped():
    nasty = 'a"b\\c\nd}e,f=g'
    m = Metrics({"plexus_g": ('Help with \\ and\nnewline.', ("model",), lambda: {(nasty,): 1})})
    m.observe(record(alias=nasty, model=nasty, input_tokens=1))
    m.observe(record(alias="ünï😀", model="\ud800"))  # a lone surrogate cannot break the page
    f = parse(m)
    assert values(f["plexus_requests"], "_total")[L(alias=nasty, provider="openai", status="success")] == 1
    assert values(f["plexus_tokens"], "_total") == {L(alias=nasty, provider="openai", model=nasty, type="input"): 1}
    assert L(alias="ünï😀", provider="openai", status="success") in values(f["plexus_requests"], "_total")
    assert values(f["plexus_g"]) == {L(model=nasty): 1}
    assert f["plexus_g"].documentation == "Help with \\ and\nnewline."


def test_label_sets_beyond_the_cap_go_to_other():
    m = Metrics(max_series=2)
    m.observe(record(alias="a", model="x"))
    m.observe(record(alias="b", model="y"))
    for i in range(5):  # client-invented names: all land in one slot per provider and status
        m.observe(record(alias=f"client-{i}", model=f"m-{i}", input_tokens=1))
    m.observe(record(alias="c", provider="azure", status="error"))
    m.observe(record(alias="a", model="x"))  # known slots still count
    f = parse(m)
    assert values(f["plexus_requests"], "_total") == {
        L(alias="a", provider="openai", status="success"): 2,
        L(alias="b", provider="openai", status="success"): 1,
        L(alias=OTHER, provider="openai", status="success"): 5,
        L(alias=OTHER, provider="azure", status="error"): 1,
    }
    assert values(f["plexus_tokens"], "_total") == {L(alias=OTHER, provider="openai", model=OTHER, type="input"): 5}


# ---- property: whatever is observed, totals agree and the page parses ----------------------

names = st.sampled_from([None, "", "gpt", "claude", 'q"uo\\te\n'])
records = st.builds(
    record, alias=names, provider=names, model=names, status=st.sampled_from(STATUSES),
    attempts=st.integers(0, 5), http_status=st.sampled_from([200, 400, 429, 502]),
    duration_ms=st.floats(0, 1e6), ttft_ms=st.none() | st.floats(0, 1e6),
    overhead_ms=st.none() | st.floats(0, 200), input_tokens=st.none() | st.integers(0, 10**6),
    cost=st.none() | st.floats(0, 10),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(records, max_size=30))
def test_totals_match_whatever_is_observed(recs):
    m = Metrics()
    for r in recs:
        m.observe(r)
    f = parse(m)
    assert sum(values(f["plexus_requests"], "_total").values()) == len(recs)
    assert sum(values(f["plexus_http_responses"], "_total").values()) == len(recs)
    assert sum(values(f["plexus_attempts"], "_total").values()) == sum(r.attempts for r in recs)
    assert sum(values(f["plexus_failovers"], "_total").values()) == sum(max(r.attempts - 1, 0) for r in recs)
    dur = f["plexus_request_duration_seconds"]
    assert sum(values(dur, "_count").values()) == len(recs)
    assert sum(values(dur, "_sum").values()) == pytest.approx(sum(r.duration_ms for r in recs) / 1000)
    assert sum(values(f["plexus_time_to_first_token_seconds"], "_count").values()) == \
        sum(r.ttft_ms is not None for r in recs)
    for name in ("plexus_request_duration_seconds", "plexus_upstream_latency_seconds",
                 "plexus_gateway_overhead_seconds"):
        fam = f[name]
        for key, count in values(fam, "_count").items():
            cum = buckets(fam, **dict(key))
            assert [n for _, n in cum] == sorted(n for _, n in cum) and cum[-1] == ("+Inf", count)
