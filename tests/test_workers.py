"""Worker processes (plexus/supervisor.py, control/peers.py) with a real Plexus: `--workers 2`.

- One startup line, one port; requests are answered by both workers (their request ids carry
  different per-process prefixes).
- Usage records from every worker reach the one SQLite file; `/metrics` counts every request,
  whichever worker served it and whichever worker is scraped.
- A cooldown started in one worker holds in the others (every management read agrees).
- A worker killed with SIGKILL is restarted (logged with the signal), and service goes on; its
  slot's counters continue, so `plexus_requests_total` never goes back.
- SIGHUP to the parent reloads the config in every worker; SIGTERM stops them all, exit 0.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fake_upstream import FakeUpstream, Reply
from spawn import start_plexus, wait_for
from plexus.control.peers import SNAPSHOT_EVERY

ADMIN = "adm-workers-5"
MSGS = [{"role": "user", "content": "hi"}]


def _config(base: str, extra_alias: str = "") -> str:
    return f"""\
admin_key: {ADMIN}
usage: {{path: u.db}}
providers:
  p1: {{type: OpenAI, api_base_url: "{base}/v1", api_key: k1, models: [m1, m2]}}
models:
  a: {{targets: [{{provider: p1, model: m1}}]}}
  b: {{targets: [{{provider: p1, model: m2}}]}}
{extra_alias}"""


@pytest.fixture(scope="module")
def fake():
    with FakeUpstream() as f:
        yield f


def _fresh(url: str) -> httpx.Client:
    # a new connection per request: the kernel hands connections to whichever worker accepts
    return httpx.Client(base_url=url, timeout=10, trust_env=False, headers={"connection": "close"})


def _post(url: str, alias: str = "a") -> httpx.Response:
    with _fresh(url) as c:
        return c.post("/v1/chat/completions", json={"model": alias, "messages": MSGS})


def _requests_total(url: str) -> float:
    with _fresh(url) as c:
        text = c.get("/metrics", headers={"x-admin-key": ADMIN}).text
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    return sum(s.value for s in fams["plexus_requests"].samples if s.name == "plexus_requests_total")


def _worker_pids(parent: int) -> set[int]:
    out = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == parent:
                        out.add(int(pid))
            except (OSError, IndexError, ValueError):
                pass
    return out


def test_two_workers_share_the_port_the_records_and_the_metrics(fake, tmp_path):
    fake.reset()
    with start_plexus(_config(fake.base_url), tmp_path, args=("--workers", "2"), log_level="info") as px:
        out = wait_for(lambda: "2 worker processes" in (o := px.stderr()) and o, 5, what="the startup lines")
        assert out.count("plexus listening on") == 1
        wait_for(lambda: len(_worker_pids(px.proc.pid)) == 2, 5, what="two workers")
        ids = []
        for _ in range(40):
            r = _post(px.url)
            assert r.status_code == 200
            ids.append(r.headers["x-plexus-request-id"])
        prefixes = {i[:8] for i in ids}
        assert len(prefixes) == 2, prefixes           # both workers answered
        assert len(set(ids)) == 40                    # and ids never collide
        # every scrape counts all 40 once each worker's snapshot (written every SNAPSHOT_EVERY s)
        # holds its share, whichever worker is scraped
        wait_for(lambda: _requests_total(px.url) == 40, 5, what="metrics summed over the workers")
        time.sleep(2 * SNAPSHOT_EVERY + 0.2)
        for _ in range(6):
            assert _requests_total(px.url) == 40
        px.proc.send_signal(signal.SIGTERM)
        assert px.proc.wait(15) == 0
        assert not _worker_pids(px.proc.pid)
        with sqlite3.connect(tmp_path / "u.db") as db:
            stored = {row[0] for row in db.execute("SELECT id FROM usage")}
        assert stored == set(ids)


def test_cooldowns_are_shared(fake, tmp_path):
    fake.reset()
    with start_plexus(_config(fake.base_url), tmp_path, args=("--workers", "2")) as px:
        wait_for(lambda: len(_worker_pids(px.proc.pid)) == 2, 5, what="two workers")
        time.sleep(0.3)  # both listen and are linked
        fake.script(Reply(status=503, json={"error": {"message": "down", "type": "server_error"}}))
        assert _post(px.url, "b").status_code == 503

        def all_cooling():
            for _ in range(8):
                with _fresh(px.url) as c:
                    rows = c.get("/v0/management/cooldowns", headers={"x-admin-key": ADMIN}).json()["data"]
                if not any(r["model"] == "m2" and r["cooling"] for r in rows):
                    return False
            return True
        wait_for(all_cooling, 5, what="every worker to see the cooldown")
        with _fresh(px.url) as c:  # a management clear reaches every worker too
            assert c.delete("/v0/management/cooldowns", headers={"x-admin-key": ADMIN}).status_code == 200

        def none_cooling():
            for _ in range(8):
                with _fresh(px.url) as c:
                    rows = c.get("/v0/management/cooldowns", headers={"x-admin-key": ADMIN}).json()["data"]
                if any(r["cooling"] for r in rows):
                    return False
            return True
        wait_for(none_cooling, 5, what="every worker to forget the cooldown")


def test_a_killed_worker_is_restarted_and_counts_continue(fake, tmp_path):
    fake.reset()
    with start_plexus(_config(fake.base_url), tmp_path, args=("--workers", "2"), log_level="info") as px:
        pids = wait_for(lambda: (p := _worker_pids(px.proc.pid)) and len(p) == 2 and p, 5, what="two workers")
        for _ in range(20):
            assert _post(px.url).status_code == 200
        wait_for(lambda: _requests_total(px.url) == 20, 5, what="20 counted")
        time.sleep(1.2)  # every worker wrote a snapshot holding its share
        victim = sorted(pids)[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: re.search(rf"worker \d \(pid {victim}\) died .*SIGKILL", px.stderr()), 5,
                 what="the death logged")
        new = wait_for(lambda: (p := _worker_pids(px.proc.pid)) and len(p) == 2 and victim not in p and p, 10,
                       what="a new worker")
        assert len(new & pids) == 1
        for _ in range(10):
            assert _post(px.url).status_code == 200
        wait_for(lambda: _requests_total(px.url) == 30, 5, what="30 counted after the restart")


def test_sighup_reloads_every_worker(fake, tmp_path):
    fake.reset()
    with start_plexus(_config(fake.base_url), tmp_path, args=("--workers", "2")) as px:
        wait_for(lambda: len(_worker_pids(px.proc.pid)) == 2, 5, what="two workers")
        assert _post(px.url, "c").status_code == 404
        (tmp_path / "plexus.yaml").write_text(_config(fake.base_url, "  c: {targets: [{provider: p1, model: m1}]}\n"))
        px.proc.send_signal(signal.SIGHUP)

        def everyone_has_c():
            return all(_post(px.url, "c").status_code == 200 for _ in range(10))
        wait_for(everyone_has_c, 5, interval=0.1, what="every worker to serve the new alias")


def test_a_config_posted_to_one_worker_reaches_every_worker(fake, tmp_path):
    fake.reset()
    with start_plexus(_config(fake.base_url), tmp_path, args=("--workers", "2")) as px:
        wait_for(lambda: len(_worker_pids(px.proc.pid)) == 2, 5, what="two workers")
        new = _config(fake.base_url, "  d: {targets: [{provider: p1, model: m2}]}\n")
        with _fresh(px.url) as c:
            r = c.post("/v0/management/config", content=new, headers={"x-admin-key": ADMIN,
                                                                        "content-type": "application/yaml"})
            assert r.status_code == 200, r.text

        def everyone_has_d():
            return all(_post(px.url, "d").status_code == 200 for _ in range(10))
        wait_for(everyone_has_d, 8, interval=0.2, what="every worker to apply the posted config")
