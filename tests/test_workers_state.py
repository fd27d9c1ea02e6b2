"""State several workers share (plexus/control/peers.py, routing/cooldowns.py listener, metrics
snapshots), without processes: two Peers joined by the parent's relay rule (supervisor._message).

- Cooldowns: a failure in one worker cools the same target in the other (its own clock), a
  success that ends the streak and a management clear reach it too; applying a message does not
  send one back (no echo); the healthy path sends nothing.
- Metrics: a scrape sums this worker's live counters and the others' snapshots (counters,
  histograms, token totals, HTTP codes, and the unlabelled gauges); a worker restarted in a slot
  continues from that slot's last snapshot, so a summed counter never goes back.
"""

from __future__ import annotations

import asyncio
import socket

import pytest
from prometheus_client.parser import text_string_to_metric_families

from plexus import supervisor
from plexus.control.metrics import Metrics
from plexus.control.peers import Peers
from plexus.control.usage import Usage
from plexus.routing.cooldowns import Cooldowns


class _Router:
    def __init__(self) -> None:
        self.cooldowns = Cooldowns((5.0, 30.0))


class _Gateway:
    def __init__(self) -> None:
        self.router = _Router()
        self.on_apply = []


def _usage(alias="a", status="success", duration=12.0, tokens=(5, 7), code=200) -> Usage:
    u = Usage("id", 1.0, "127.0.0.1", "openai", "/v1/chat/completions")
    u.alias, u.provider, u.model, u.status, u.http_status = alias, "p", "m", status, code
    u.attempts, u.duration_ms, u.ttft_ms, u.overhead_ms = 1, duration, 3.0, 0.2
    u.input_tokens, u.output_tokens = tokens
    return u


class _Relay:
    """The parent's part: a datagram from one worker goes to every other (supervisor._message)."""

    def __init__(self, n: int, loop) -> None:
        self.pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(n)]
        self.sent: list[bytes] = []
        for i, (parent, _) in enumerate(self.pairs):
            parent.setblocking(False)
            loop.add_reader(parent.fileno(), self._pass, i)

    def _pass(self, i: int) -> None:
        data = self.pairs[i][0].recv(65536)
        if data and data != b"ready":
            self.sent.append(data)
            for j, (parent, _) in enumerate(self.pairs):
                if j != i:
                    parent.send(data)

    def child(self, i: int) -> socket.socket:
        return self.pairs[i][1]


async def _settle(loop, cond, timeout=2.0):
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.005)


def test_cooldowns_follow_across_workers(tmp_path):
    async def main():
        loop = asyncio.get_running_loop()
        relay = _Relay(2, loop)
        gws = [_Gateway(), _Gateway()]
        peers = [Peers(relay.child(i), i, str(tmp_path), gws[i], Metrics(), loop) for i in range(2)]
        for p in peers:
            p.start()
        a, b = (g.router.cooldowns for g in gws)
        key = ("p", "m")
        now = loop.time()
        until = a.failure(key, now, status=503)
        await _settle(loop, lambda: b.cooling(key, loop.time()))
        assert abs(b.until(key) - until) < 0.05 and b.entries[key].failures == 1
        assert b.entries[key].last_status == 503
        n_sent = len(relay.sent)
        await asyncio.sleep(0.05)
        assert len(relay.sent) == n_sent == 1     # applying it sent nothing back
        a.success(key)
        await _settle(loop, lambda: key not in b.entries)
        a.success(key)                             # healthy already: nothing to tell
        await asyncio.sleep(0.02)
        assert len(relay.sent) == 2
        b.failure(("p", "m2"), loop.time())
        await _settle(loop, lambda: ("p", "m2") in a.entries)
        b.clear("p")
        await _settle(loop, lambda: not a.entries)
        for p in peers:
            p.close()
    asyncio.run(main())


def test_metrics_sum_across_workers_and_survive_a_restart(tmp_path):
    async def main():
        loop = asyncio.get_running_loop()
        relay = _Relay(2, loop)
        open_conns = [3.0, 4.0]
        ms = [Metrics(gauges={"plexus_open_connections": ("open", lambda i=i: open_conns[i])}) for i in range(2)]
        peers = [Peers(relay.child(i), i, str(tmp_path), _Gateway(), ms[i], loop) for i in range(2)]
        for _ in range(3):
            ms[0].observe(_usage())
        for _ in range(2):
            ms[1].observe(_usage(status="error", code=503, tokens=(None, None)))
        ms[1].observe(_usage(alias="b", duration=700.0))
        peers[1].write_snapshot()
        text = ms[0].render(peers[0].others()).decode()
        fam = {f.name: f for f in text_string_to_metric_families(text)}
        req = {(s.labels["alias"], s.labels["status"]): s.value for s in fam["plexus_requests"].samples}
        assert req == {("a", "success"): 3, ("a", "error"): 2, ("b", "success"): 1}
        codes = {s.labels["code"]: s.value for s in fam["plexus_http_responses"].samples}
        assert codes == {"200": 4, "503": 2}
        toks = {s.labels["type"]: s.value for s in fam["plexus_tokens"].samples if s.labels["alias"] == "a"}
        assert toks == {"input": 15, "output": 21}
        count = [s.value for s in fam["plexus_request_duration_seconds"].samples
                 if s.name.endswith("_count") and s.labels["alias"] == "b"]
        assert count == [1]
        assert [s.value for s in fam["plexus_open_connections"].samples] == [7.0]
        # worker 1 dies and a new one starts in its slot: its counts continue
        peers[1].close()
        fresh = Metrics()
        Peers(relay.child(1), 1, str(tmp_path), _Gateway(), fresh, loop)
        fresh.observe(_usage(alias="b"))
        fam2 = {f.name: f for f in text_string_to_metric_families(fresh.render().decode())}
        req2 = {(s.labels["alias"], s.labels["status"]): s.value for s in fam2["plexus_requests"].samples}
        assert req2 == {("a", "error"): 2, ("b", "success"): 2}
    asyncio.run(main())


@pytest.mark.parametrize("value,want", [(None, 1), ("1", 1), (3, 3), ("auto", None)])
def test_worker_count(value, want):
    n = supervisor.worker_count(value)
    assert n == want if want is not None else n >= 1


def test_worker_count_rejects_zero():
    with pytest.raises(ValueError):
        supervisor.worker_count("0")


def test_bind_port_zero_gives_one_port():
    """The parent binds once (port 0 → one port); each worker's socket accepts on that port."""
    s = supervisor.bind("127.0.0.1", 0)
    socks = []
    try:
        port = s.getsockname()[1]
        assert port > 0
        socks = [supervisor.worker_socket(s) for _ in range(2)]
        assert {w.getsockname()[1] for w in socks} == {port}
        assert (socks[0] is s) is not supervisor.REUSEPORT
        c = socket.create_connection(("127.0.0.1", port), timeout=2)
        c.close()
    finally:
        for w in {id(x): x for x in socks + [s]}.values():
            w.close()
