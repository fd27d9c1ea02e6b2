"""Plexus's reproducible gateway benchmark (`python -m bench`, see bench/__main__.py for usage).

Theory: a benchmark is only meaningful next to its baseline, so every scenario is measured in the
same run DIRECTLY against a mock upstream that is much faster than any gateway, THROUGH Plexus,
and, for the passthrough rows when nginx is installed, THROUGH nginx (the practical limit of a
relay); the report puts ratios and differences next to the absolutes. Layout:

    scenarios.py      the data: dialect request builders, the scenario table, the budget table and
                      the Plexus config the bench generates (later issues extend these tables)
    mock_upstream.py  raw uvloop asyncio.Protocol upstream: OpenAI and Anthropic, precomputed bytes,
                      plain and TLS, streams batched / one event per write / paced, large bodies
    loadgen.py        raw asyncio keep-alive load generator (optionally TLS): closed loop, open
                      loop, single probe
    tlscerts.py       the throw-away CA and server certificate (trustme, else the openssl CLI)
    nginx.py          nginx as the reverse-proxy reference: find it, generate its config
    stack.py          starting the mock, Plexus and nginx, pinned, with their CPU samplers
    measure.py        one scenario one way -> a Side (closed, open, paced, large-body drivers)
    metrics.py        derived metrics (ratios, CPU per event, reads per event, handshakes) and
                      the budget verdicts
    procs.py          subprocesses (CPU pinning, always killed) and /proc sampling (CPU, RSS,
                      read syscalls)
    run.py            orchestration: options, probes, the scenario loop, soak, exit status
    report.py         machine description, settings, Method section, JSON
    report_tables.py  the markdown tables (results, nginx reference, large bodies, budget, soak)
    stream_translate.py  micro-benchmark of the stream translators alone (no sockets)
"""
