"""The management API end to end: a whole Plexus started in-process (``plexus.app.serve``) in
front of the fake upstream, driven over real HTTP. Config changes through the API and through
file edits change what the gateway serves; usage, events, debug capture and metrics see the
requests that went through it."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest

from fake_upstream import FakeUpstream
from plexus.app import serve, shutdown
from plexus.config import load_config

ADMIN = "adm-e2e-secret-42"
UP_KEY = "sk-up-openai-e2e-secret"
AUTH = {"x-admin-key": ADMIN}
CONFIG = """\
{admin}
usage: {{path: usage.db}}
providers:
  up: {{type: OpenAI, api_base_url: "{base}/v1", api_key: {key}, models: [up-gpt, up-gpt-2]}}
models:
  {alias}: {{targets: [{{provider: up, model: {model}}}]}}
"""


def text(base: str, alias="gpt", model="up-gpt", admin=True) -> str:
    return CONFIG.format(admin=f"admin_key: {ADMIN}" if admin else "", base=base, key=UP_KEY, alias=alias,
                         model=model)


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream() as f:
        yield f


class Running:
    def __init__(self, gateway, url, path, base) -> None:
        self.gateway, self.url, self.path, self.base = gateway, url, path, base


@pytest.fixture
def admin(request):
    return getattr(request, "param", True)


@pytest.fixture
async def plexus(upstream, tmp_path, monkeypatch, admin):
    upstream.reset()
    monkeypatch.delenv("PLEXUS_ADMIN_KEY", raising=False)
    path = tmp_path / "plexus.yaml"
    path.write_text(text(upstream.base_url, admin=admin))
    server, gateway = await serve(load_config(str(path)), "127.0.0.1", 0)
    reloader = gateway.plane.reloader
    reloader.interval, reloader.settle = 0.05, 0.05
    port = server.sockets[0].getsockname()[1]
    run = Running(gateway, f"http://127.0.0.1:{port}", path, upstream.base_url)
    async with httpx.AsyncClient(base_url=run.url, timeout=10, trust_env=False) as c:
        run.client = c
        yield run
    await shutdown(server, gateway)


async def chat(run, model: str) -> httpx.Response:
    return await run.client.post("/v1/chat/completions", headers={"authorization": "Bearer client-key-e2e-1"},
                                 json={"model": model, "messages": [{"role": "user", "content": "hi"}]})


async def eventually(fn, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await fn()
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_auth_both_forms_wrong_key_and_status(plexus):
    c = plexus.client
    r = await c.get("/v0/management/config/status", headers=AUTH)
    assert r.status_code == 200 and r.json()["source"] == "startup" and r.json()["path"] == str(plexus.path)
    assert (await c.get("/v0/management/config/status",
                        headers={"authorization": f"Bearer {ADMIN}"})).status_code == 200
    assert (await c.get("/v0/management/config/status", headers={"x-admin-key": "nope"})).status_code == 401
    assert (await c.get("/v0/management/config/status")).status_code == 401
    r = await c.get("/v0/management/config", headers=AUTH)
    assert r.headers["content-type"] == "application/yaml" and UP_KEY not in r.text and ADMIN not in r.text


@pytest.mark.parametrize("admin", [False], indirect=True)
async def test_without_an_admin_key_the_api_does_not_exist(plexus):
    for path in ("/v0/management/config", "/v0/management/usage"):
        r = await plexus.client.get(path, headers=AUTH)
        assert r.status_code == 404
    assert (await plexus.client.get("/metrics")).status_code == 200  # loopback, nothing configured


async def test_post_config_then_the_new_alias_serves(plexus):
    assert (await chat(plexus, "fresh")).status_code == 404
    bad = text(plexus.base, alias="fresh") + "bogus: 1\n"
    r = await plexus.client.post("/v0/management/config", headers=AUTH, content=bad)
    assert r.status_code == 400 and r.json()["details"][0]["path"] == "bogus"
    r = await plexus.client.post("/v0/management/config", headers=AUTH,
                                 content=text(plexus.base, alias="fresh", model="up-gpt-2"))
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert plexus.path.with_name("plexus.yaml.bak").read_text() == text(plexus.base)
    r = await chat(plexus, "fresh")
    assert r.status_code == 200 and r.json()["model"] == "up-gpt-2"
    assert (await chat(plexus, "gpt")).status_code == 404


async def test_file_edit_reloads_and_a_bad_edit_keeps_the_old_config(plexus):
    c = plexus.client
    plexus.path.write_text(text(plexus.base, alias="edited"))

    async def applied():
        return (await c.get("/v0/management/config/status", headers=AUTH)).json()["source"] == "file"
    await eventually(applied)
    assert (await chat(plexus, "edited")).status_code == 200

    plexus.path.write_text(text(plexus.base, alias="broken").replace("models: [up-gpt, up-gpt-2]", "models: 7"))

    async def failed():
        return (await c.get("/v0/management/config/status", headers=AUTH)).json()["last_error"]
    err = await eventually(failed)
    assert err["source"] == "file" and any(d["path"].startswith("providers.up.models") for d in err["details"])
    assert (await chat(plexus, "edited")).status_code == 200  # the old config keeps serving
    assert (await chat(plexus, "broken")).status_code == 404


async def test_events_usage_debug_and_metrics_see_a_request(plexus):
    c = plexus.client
    r = await c.post("/v0/management/debug", headers=AUTH, json={"enabled": True, "aliases": ["gpt"]})
    assert r.json()["enabled"] is True
    async with c.stream("GET", "/v0/management/events", headers=AUTH) as stream:
        lines = stream.aiter_lines()
        assert await anext(lines) == ": connected"
        assert (await chat(plexus, "gpt")).status_code == 200
        async with asyncio.timeout(5):
            async for line in lines:
                if line.startswith("data: "):
                    record = orjson.loads(line[6:])
                    break
    assert record["alias"] == "gpt" and record["provider"] == "up" and record["status"] == "success"

    async def stored():
        r = await c.get("/v0/management/usage", headers=AUTH, params={"alias": "gpt"})
        return r.json() if r.json()["total"] else None
    page = await eventually(stored)
    assert page["data"][0]["id"] == record["id"] and page["limit"] == 100
    r = await c.get("/v0/management/usage/summary", headers=AUTH, params={"group_by": "alias"})
    assert r.status_code == 200 and r.json()["data"][0]["alias"] == "gpt"

    logs = (await c.get("/v0/management/debug/logs", headers=AUTH)).json()["data"]
    assert [e["id"] for e in logs] == [record["id"]]
    r = await c.get(f"/v0/management/debug/logs/{record['id']}", headers=AUTH)
    assert r.status_code == 200 and UP_KEY not in r.text and "client-key-e2e-1" not in r.text
    full = r.json()
    assert full["upstream"][0]["provider"] == "up" and full["client_response"]["status"] == 200
    assert full["upstream"][0]["response"]["status"] == 200

    r = await c.get("/metrics", headers=AUTH)
    assert r.status_code == 200 and b"plexus_" in r.content
    assert (await c.get("/metrics")).status_code == 401
