"""Gateway.apply (hot reload): unchanged providers keep their runtime and connection pool, changed
ones get a new one and the old pool is closed once no attempt uses it, a request in flight keeps
its config generation, cooldowns carry over, and the debug capture follows debug.max_entries."""

from __future__ import annotations

import asyncio

import httpx

from fake_upstream import FakeUpstream, Reply, openai_chunk, sse_data
from plexus.app import serve, shutdown
from plexus.config import parse_config
from plexus.config_yaml import load_yaml

CONFIG = """\
usage: {{enabled: false}}
debug: {{max_entries: {debug}}}
providers:
  keep: {{type: OpenAI, api_base_url: "{base}/v1", api_key: k1, models: [m1]}}
  change: {{type: OpenAI, api_base_url: "{base}/v1", api_key: {key2}, models: [m2]}}
models:
  a: {{targets: [{{provider: keep, model: m1}}]}}
  b: {{targets: [{{provider: change, model: m2}}]}}
  {extra}
"""


def cfg(base, key2="k2", extra="", debug=100):
    return parse_config(load_yaml(CONFIG.format(base=base, key2=key2, extra=extra, debug=debug), "<t>"), "<t>")


async def test_apply_keeps_unchanged_pools_and_retires_changed_ones():
    with FakeUpstream() as up:
        server, gw = await serve(cfg(up.base_url), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            keep, change = gw.runtime["keep"], gw.runtime["change"]
            cooldowns = gw.router.cooldowns
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
                # a slow stream in flight on the provider that is about to change
                chunks = [sse_data(openai_chunk("m2", {"content": str(i)})) for i in range(5)]
                chunks.append(sse_data(openai_chunk("m2", {}, finish="stop")) + b"data: [DONE]\n\n")
                up.script(Reply.sse(chunks, delay=0.1))  # 0.1 s between chunks
                body = {"model": "b", "stream": True, "messages": [{"role": "user", "content": "x"}]}
                req = asyncio.ensure_future(c.post("/v1/chat/completions", json=body))
                await asyncio.sleep(0.15)
                assert not req.done() and change.inflight == 1   # mid-stream on the old runtime
                gw.apply(cfg(up.base_url, key2="k2-new", extra="c: {targets: [{provider: keep, model: m1}]}",
                             debug=7))
                assert gw.runtime["keep"] is keep                 # same pool, same connections
                assert gw.runtime["change"] is not change         # new key: new runtime
                assert gw.router.cooldowns is cooldowns           # same schedule: state kept
                assert gw.plane.debug.max_entries == 7
                r = await req
                assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
                # new requests see the new config
                r = await c.post("/v1/chat/completions", json={"model": "c", "messages": [{"role": "user", "content": "x"}]})
                assert r.status_code == 200
                r = await c.post("/v1/chat/completions", json={"model": "b", "messages": [{"role": "user", "content": "x"}]})
                assert up.last.headers["authorization"] == "Bearer k2-new"
            for _ in range(100):  # the retired pool closes once idle
                if change.inflight == 0 and not gw._retired:
                    break
                await asyncio.sleep(0.05)
            assert not gw._retired
        finally:
            await shutdown(server, gw)
