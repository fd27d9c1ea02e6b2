"""Plexus's reproducible gateway benchmark (`python -m bench`, see bench/__main__.py for usage).

Theory: a benchmark is only meaningful next to its baseline, so every scenario is measured twice in
the same run, once DIRECTLY against a mock upstream that is much faster than any gateway and once
THROUGH Plexus, and the report puts ratios (Plexus/direct) and differences (Plexus - direct) next to
the absolutes. Layout:

    scenarios.py      the data: dialect request builders, the scenario table, the budget table and
                      the Plexus config the bench generates (later issues extend these tables)
    mock_upstream.py  raw uvloop asyncio.Protocol upstream: OpenAI and Anthropic, precomputed bytes
    loadgen.py        raw asyncio keep-alive load generator: closed loop, open loop, single probe
    procs.py          subprocesses (CPU pinning, always killed) and /proc sampling (CPU, RSS)
    run.py            orchestration: start mock + Plexus, probe, measure, compute metrics
    report.py         machine description, markdown and JSON rendering
"""
