"""Outbound proxies (plexus/upstream/tunnel.py): CONNECT tunnels for https, absolute-form for http.

Theory: the test proxy (tests/proxy_server.py) is the witness. It records every CONNECT target,
every absolute-form target and every Proxy-Authorization it saw. The upstream behind it counts
handshakes and sees what the origin gets, so "one CONNECT for many requests", "credentials to
the proxy only" and "the origin never sees them" are all assertions on lists. Failures are
checked as the client of Plexus meets them: GatewayError 502 from ``call.mapped`` at the unit
level, and an OpenAI-shaped HTTP 502 from a real Plexus process (tests/spawn.py) at the end, whose
text names the proxy by host:port and never contains the password (neither does Plexus's stderr).
"""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import openai
import pytest

from plexus.errors import GatewayError
from plexus.proxies import parse_proxy
from plexus.upstream.call import open_upstream, read_all
from plexus.upstream.tls import client_context
from plexus.upstream.transport import PlexusTransport
from proxy_server import BackgroundLoop, ProxyServer
from spawn import start_plexus
from test_transport import Upstream, fetch, keep_alive, read_request, reply, run  # noqa: F401 (run: fixture)
from test_upstream_tls import TLSUpstream, ca, ca_pem, provider, server_context  # noqa: F401 (fixtures)


def proxy_of(px: ProxyServer, user: str = "", password: str = ""):
    return parse_proxy(px.url(user, password), "test")


def echo_headers(seen: list):
    async def handler(reader, writer):
        while (req := await read_request(reader)) is not None:
            seen.append(req)
            writer.write(reply(b"ok:" + req[3]))
    return handler


def test_https_through_connect_reuses_one_tunnel(run, ca, ca_pem):
    async def main():
        seen = []
        async with TLSUpstream(echo_headers(seen), server_context(ca)) as up, ProxyServer() as px:
            t = PlexusTransport(ssl_context=client_context(ca_file=ca_pem), proxy=proxy_of(px, "user", "secret"))
            for i in range(5):
                assert (await fetch(t, up.url(f"/v1/n{i}"), b"POST", b"%d" % i))[1] == b"ok:%d" % i
            assert px.connects == [f"127.0.0.1:{up.port}"] and px.accepted == 1 and up.accepted == 1
            assert px.auths == [parse_proxy(px.url("user", "secret"), "t").authorization]
            assert [r[1] for r in seen] == [f"/v1/n{i}" for i in range(5)]  # origin-form inside the tunnel
            assert all("proxy-authorization" not in r[2] for r in seen)  # credentials stop at the proxy
            assert up.alpn == ["http/1.1"]
            key = (b"https", b"127.0.0.1", up.port, px.display)  # the proxy is part of the pool key
            assert t._pool.idle(key) == 1 and t._pool.idle(key[:3]) == 0
            await t.aclose()
    run(main)


def test_streaming_through_the_tunnel(run, ca, ca_pem):
    async def main():
        got_first = asyncio.Event()

        async def server(reader, writer):
            while await read_request(reader) is not None:
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst \r\n")
                await got_first.wait()  # the client must see "first " while the rest is held back
                writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
                got_first.clear()
        async with TLSUpstream(server, server_context(ca)) as up, ProxyServer() as px:
            t = PlexusTransport(ssl_context=client_context(ca_file=ca_pem), proxy=proxy_of(px))
            p = provider()
            for _ in range(3):
                r = await open_upstream(t, p, up.url("/v1/stream"), [], b"{}")
                it = r.__aiter__()
                assert await it.__anext__() == b"first "
                got_first.set()
                assert [c async for c in it] == [b"second"]
                await r.aclose()
            assert len(px.connects) == 1 and up.accepted == 1
            await t.aclose()
    run(main)


def test_http_upstream_through_proxy_in_absolute_form(run):
    async def main():
        seen = []
        async with Upstream(echo_headers(seen)) as up, ProxyServer() as px:
            t = PlexusTransport(proxy=proxy_of(px, "user", "secret"))
            for i in range(3):
                assert (await fetch(t, up.url(f"/v1/x?i={i}"), b"POST", b"b"))[1] == b"ok:b"
            assert px.forwarded == [f"http://127.0.0.1:{up.port}/v1/x?i={i}" for i in range(3)]
            assert px.auths == [parse_proxy(px.url("user", "secret"), "t").authorization] * 3  # on every request
            assert px.connects == [] and px.accepted == 1  # one keep-alive connection to the proxy
            assert [r[1] for r in seen] == [f"/v1/x?i={i}" for i in range(3)]
            assert all(r[2]["host"] == f"127.0.0.1:{up.port}" for r in seen)
            await t.aclose()
    run(main)


@pytest.mark.parametrize("how", ["refuse", "auth", "cut", "down"])
def test_proxy_failures_are_502s_naming_the_proxy(run, ca, ca_pem, how):
    async def main():
        async with TLSUpstream(keep_alive, server_context(ca)) as up, \
                ProxyServer(refuse=403 if how == "refuse" else None, cut_after_connect=how == "cut",
                            require=b"Basic nobody-has-this" if how == "auth" else None) as px:
            proxy = proxy_of(px, "user", "secret")
            if how == "down":
                await px.aclose()
                with socket.socket() as s:  # make sure nothing listens there any more
                    assert s.connect_ex(("127.0.0.1", px.port)) != 0
            t = PlexusTransport(ssl_context=client_context(ca_file=ca_pem), proxy=proxy)
            with pytest.raises(GatewayError) as err:
                await open_upstream(t, provider("corp"), up.url("/v1/x"), [], b"{}")
            e = err.value
            assert e.status == 502 and e.kind == "bad_gateway"
            assert px.display in e.message and "could not connect to provider 'corp'" in e.message
            assert "secret" not in e.message and "user" not in e.message
            expect = {"refuse": "refused CONNECT to 127.0.0.1:%d: HTTP 403" % up.port,
                      "auth": "HTTP 407", "cut": "TLS with", "down": "cannot connect to proxy"}[how]
            assert expect in e.message
            assert up.accepted == 0 and not t._conns
            await t.aclose()
    run(main)


def test_connect_timeout_covers_the_connect(run, ca, ca_pem):
    async def main():
        async with ProxyServer(silent=True) as px:  # reads the CONNECT, never answers
            t = PlexusTransport(ssl_context=client_context(ca_file=ca_pem), proxy=proxy_of(px),
                                connect_timeout=0.2)
            with pytest.raises(GatewayError) as err:
                await open_upstream(t, provider(), "https://127.0.0.1:9/v1/x", [], b"")
            assert err.value.status == 502 and "timed out" in err.value.message
            assert px.display in err.value.message and px.connects == ["127.0.0.1:9"]
            await t.aclose()
    run(main)


# -- a real Plexus process: the OpenAI SDK through Plexus, Plexus through the proxy ------------------

ANSWER = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "up-gpt",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello through the tunnel"},
                       "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}


async def fake_openai(reader, writer):
    while (req := await read_request(reader)) is not None:
        assert req[1] == "/v1/chat/completions" and req[2]["authorization"] == "Bearer sk-upstream"
        body = json.dumps(ANSWER).encode()
        writer.write(reply(body, extra=b"Content-Type: application/json\r\n"))


CONFIG = """\
providers:
  tunnelled:
    type: OpenAI
    api_base_url: https://127.0.0.1:{up}/v1
    api_key: sk-upstream
    models: [up-gpt]
    ca_file: {ca}
{proxy_line}
models:
  gpt: {{targets: [{{provider: tunnelled, model: up-gpt}}]}}
"""


@pytest.mark.parametrize("route", ["config", "env"])
def test_e2e_openai_sdk_through_plexus_and_a_connect_proxy(tmp_path, ca, ca_pem, route):
    with BackgroundLoop() as bg:
        up = bg.run(TLSUpstream(fake_openai, server_context(ca)).__aenter__())
        good = bg.run(ProxyServer(require=parse_proxy("http://user:secret@x", "t").authorization).start())
        bad = bg.run(ProxyServer(refuse=403).start())
        try:
            for px, ok in ((good, True), (bad, False)):
                url = px.url("user", "secret")
                if route == "config":
                    text, env = CONFIG.format(up=up.port, ca=ca_pem, proxy_line=f"    proxy: {url}"), None
                else:
                    text, env = CONFIG.format(up=up.port, ca=ca_pem, proxy_line=""), {"HTTPS_PROXY": url}
                with start_plexus(text, tmp_path, env=env) as plexus:
                    if ok:
                        client = openai.OpenAI(base_url=plexus.url + "/v1", api_key="client-key", max_retries=0,
                                               timeout=10, http_client=httpx.Client(trust_env=False))
                        for _ in range(2):
                            out = client.chat.completions.create(
                                model="gpt", messages=[{"role": "user", "content": "hi"}])
                            assert out.choices[0].message.content == "hello through the tunnel"
                        client.close()
                        assert px.connects == [f"127.0.0.1:{up.port}"] and up.accepted == 1
                    else:
                        r = httpx.post(plexus.url + "/v1/chat/completions", trust_env=False, timeout=10,
                                       json={"model": "gpt", "messages": [{"role": "user", "content": "hi"}]})
                        assert r.status_code == 502
                        err = r.json()["error"]
                        assert px.display in err["message"] and "HTTP 403" in err["message"]
                        assert "secret" not in r.text
                    assert "secret" not in plexus.stderr()
        finally:
            for server in (good, bad):
                bg.run(server.aclose())
            bg.run(up.__aexit__(None, None, None))
