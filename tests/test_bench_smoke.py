"""The benchmark still runs end to end (a correctness smoke test: no timings are asserted here).

One short `--quick` run over every kind of scenario the bench has (plain, TLS upstream, batched
and one-event-per-write streams, translated, large bodies) must finish with exit status 0 and no
scenario failed or errored; the nginx reference is checked when nginx is installed (CI machines
may not have it: then its budget lines must say it was skipped). A second run against a gateway
that answers 500 must report the scenario FAILED and exit 1: there is no "not yet".
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import nginx  # noqa: E402

SCENARIOS = ("S1", "S1-TLS", "S2", "S2-ev", "S3b", "S3-ev", "R3b", "R3-ev", "S4", "S7")


def _bench(tmp_path, *args, env=None):
    out = tmp_path / "r.json"
    p = subprocess.run([sys.executable, "-m", "bench", "--quick", "--no-pin", *args,
                        "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                       timeout=180, env=env)
    data = json.loads(out.read_text()) if out.exists() else None
    return p, data


def test_bench_quick_smoke(tmp_path):
    p, data = _bench(tmp_path, "--only", ",".join(SCENARIOS))
    assert p.returncode == 0, p.stderr[-3000:] + p.stdout[-3000:]
    results = {r["key"]: r for r in data["results"]}
    assert set(results) == set(SCENARIOS)
    tls = data["tls"]["status"] == "ok"  # trustme or the openssl CLI made a certificate
    for key, r in results.items():
        if key == "S1-TLS" and not tls:
            assert r["status"] == "skipped", r
            continue
        assert r["status"] == "ok", r
        for way in ("direct", "plexus"):
            assert r[way]["errors"] == 0 and r[way]["requests"] > 0, (key, way, r[way])
    # one-event-per-write streams arrive in about one read per event (batched: ~0.01); the
    # bound is loose: a loaded machine lets a few events pile up between two reads
    assert results["S2-ev"]["metrics"]["reads_per_event"]["direct"] > 0.1, results["S2-ev"]
    assert results["S2"]["metrics"]["reads_per_event"]["direct"] < 0.1, results["S2"]
    if tls:  # the upstream pool reuses its TLS connections: no handshake per request
        r = results["S1-TLS"]
        assert 0 < r["metrics"]["tls_handshakes"]["Plexus"] <= 2 * r["plexus"]["connections"], r
    for way in ("direct", "plexus"):  # every phase ran (how many requests fit: not asserted)
        phases = results["S7"][way]["phases"]
        assert set(phases) == {"none", "passthrough", "translated"}, phases
    relative = [b for b in data["budgets"] if b["relative"]]
    assert len(relative) == 3
    if nginx.find() is None:
        assert data["nginx"]["status"] == "absent"
        assert all(b["status"] == "no nginx: skipped" for b in relative), relative
        assert "apt-get install" in p.stdout
    else:
        assert data["nginx"]["status"] == "ok", data["nginx"]
        for key in ("S1", "S2", "S2-ev") + (("S1-TLS",) if tls else ()):
            n = results[key]["nginx"]
            assert n is not None and n["errors"] == 0 and n["requests"] > 0, (key, n)
        assert all(b["status"] in ("met", "not met") for b in relative), relative
    assert "not yet" not in p.stdout
    for heading in ("| S1 |", "## Budget", "## Large request bodies (S7)", "## Method"):
        assert heading in p.stdout


_FAILING_GATEWAY = r'''
import asyncio, sys

async def handle(r, w):
    try:
        while True:
            head = await r.readuntil(b"\r\n\r\n")
            n = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    n = int(line.split(b":")[1])
            if n:
                await r.readexactly(n)
            if head.startswith(b"GET /health"):
                w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nOK")
            else:
                body = b'{"error":{"type":"api_error","message":"broken on purpose"}}'
                w.write(b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json"
                        b"\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            await w.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        w.close()

async def main():
    port = int(sys.argv[sys.argv.index("--port") + 1])
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    await server.serve_forever()

asyncio.run(main())
'''


def test_bench_error_is_a_failure(tmp_path):
    (tmp_path / "failing_gateway.py").write_text(_FAILING_GATEWAY)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(tmp_path)] + [x for x in [os.environ.get("PYTHONPATH")] if x]))
    p, data = _bench(tmp_path, "--no-nginx", "--only", "S1,S4", "--gateway-module",
                     "failing_gateway", env=env)
    assert p.returncode == 1, p.stderr[-3000:]
    for r in data["results"]:
        assert r["status"] == "failed" and "HTTP 500" in r["note"], r
    assert "FAILED" in p.stdout and "not yet" not in p.stdout
    assert "FAILED scenario(s): S1, S4" in p.stderr
