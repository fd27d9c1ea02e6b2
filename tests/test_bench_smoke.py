"""The benchmark still runs end to end (a correctness smoke test: no timings are asserted here)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_quick_smoke(tmp_path):
    out = tmp_path / "r.json"
    p = subprocess.run([sys.executable, "-m", "bench", "--quick", "--no-pin", "--only", "S1,S2,S4",
                        "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    data = json.loads(out.read_text())
    results = {r["key"]: r for r in data["results"]}
    assert set(results) >= {"S1", "S2", "S4"}
    for r in results.values():
        assert r["status"] == "ok", r
        assert r["plexus"]["errors"] == 0 and r["plexus"]["requests"] > 0, r
    assert "| S1 |" in p.stdout and "## Budget" in p.stdout
