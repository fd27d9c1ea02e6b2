"""Upstream TLS: trust per provider, built once at startup (plexus/upstream/tls.py, app.make_transports).

Theory: real TLS servers on 127.0.0.1 with certificates from a throwaway ``trustme`` CA, which no
default trust store knows. So "trusted" can only come from ``ca_file`` or ``SSL_CERT_FILE``, and
"untrusted" is the default. The server side is the witness: it counts accepted (that is, handshaken)
connections, so reuse is "one connection for many requests", and it records the ALPN protocol it
selected. Errors are checked as the handler sees them, GatewayError 502 from ``call.mapped``.
Every async test runs on asyncio and on uvloop (the ``run`` fixture from test_transport).
"""

from __future__ import annotations

import asyncio
import ssl
from types import SimpleNamespace

import pytest
import trustme

from plexus.app import make_transports
from plexus.config import ConfigError, parse_config
from plexus.errors import GatewayError
from plexus.upstream.call import open_upstream, read_all
from plexus.upstream.tls import TLSSetupError, client_context
from plexus.upstream.transport import PlexusTransport
from test_transport import Upstream, fetch, keep_alive, read_request, run  # noqa: F401 (run: fixture)


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_pem(ca, tmp_path_factory):
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def server_context(ca, *names: str, alpn=("h2", "http/1.1")) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*(names or ("127.0.0.1", "localhost"))).configure_cert(ctx)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


class TLSUpstream(Upstream):
    """Upstream over TLS; `accepted` counts completed handshakes, `alpn` what each one selected."""

    def __init__(self, handler, ctx: ssl.SSLContext) -> None:
        super().__init__(handler)
        self.ctx, self.alpn = ctx, []

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0, ssl=self.ctx)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _conn(self, reader, writer):
        self.alpn.append(writer.get_extra_info("ssl_object").selected_alpn_protocol())
        await super()._conn(reader, writer)

    def url(self, path: str = "/") -> str:
        return f"https://127.0.0.1:{self.port}{path}"


def provider(name="p", max_response_bytes=1 << 20):
    return SimpleNamespace(name=name, ttfb_timeout=5.0, read_timeout=5.0, max_response_bytes=max_response_bytes)


async def stream_and_json(reader, writer):
    """/stream: a chunked body in three writes; anything else: a small Content-Length body."""
    while (req := await read_request(reader)) is not None:
        if req[1] == "/stream":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(3):
                await asyncio.sleep(0.002)
                ev = b"data: %d\n\n" % i
                writer.write(b"%x\r\n%s\r\n" % (len(ev), ev))
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"ok\":true}")


def test_ca_file_is_trusted_and_alpn_is_http11(run, ca, ca_pem):
    async def main():
        async with TLSUpstream(keep_alive, server_context(ca)) as up:
            t = PlexusTransport(ssl_context=client_context(ca_file=ca_pem))
            assert (await fetch(t, up.url(), b"POST", b"!"))[1] == b"ok!"
            assert up.alpn == ["http/1.1"]  # offered h2 and http/1.1, the client only http/1.1
            await t.aclose()
    run(main)


def test_untrusted_ca_is_a_502(run, ca):
    async def main():
        async with TLSUpstream(keep_alive, server_context(ca)) as up:
            t = PlexusTransport(ssl_context=client_context())  # certifi: knows nothing of this CA
            with pytest.raises(GatewayError) as err:
                await open_upstream(t, provider("secure"), up.url("/v1/x"), [], b"{}")
            e = err.value
            assert e.status == 502 and "could not connect to provider 'secure'" in e.message
            assert "CERTIFICATE_VERIFY_FAILED" in e.message and up.accepted == 0
            await t.aclose()
    run(main)


def test_hostname_is_checked(run, ca, ca_pem):
    async def main():
        async with TLSUpstream(keep_alive, server_context(ca, "other.example")) as up:
            t = PlexusTransport(ssl_context=client_context(ca_file=ca_pem))  # trusted CA, wrong name
            with pytest.raises(GatewayError, match="CERTIFICATE_VERIFY_FAILED") as err:
                await open_upstream(t, provider(), up.url(), [], b"")
            assert err.value.status == 502
            await t.aclose()
    run(main)


def test_ssl_cert_file_is_honoured(run, ca, ca_pem, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", ca_pem)
    from_env = client_context()  # os.environ, read when the context is built
    monkeypatch.delenv("SSL_CERT_FILE")
    explicit = client_context(env={"SSL_CERT_FILE": ca_pem})
    default = client_context(env={})

    async def main():
        async with TLSUpstream(keep_alive, server_context(ca)) as up:
            for ctx in (from_env, explicit):
                t = PlexusTransport(ssl_context=ctx)
                assert (await fetch(t, up.url()))[1] == b"ok"
                await t.aclose()
            t = PlexusTransport(ssl_context=default)
            with pytest.raises(GatewayError, match="CERTIFICATE_VERIFY_FAILED"):
                await open_upstream(t, provider(), up.url(), [], b"")
            await t.aclose()
    run(main)


def test_tls_verify_false_accepts_an_untrusted_certificate(run, ca):
    async def main():
        async with TLSUpstream(keep_alive, server_context(ca, "not-this-host.example")) as up:
            t = PlexusTransport(ssl_context=client_context(verify=False))
            assert (await fetch(t, up.url()))[1] == b"ok" and up.alpn == ["http/1.1"]
            await t.aclose()
    run(main)


def test_many_requests_stream_and_not_share_one_handshake(run, ca, ca_pem):
    async def main():
        async with TLSUpstream(stream_and_json, server_context(ca)) as up:
            t = PlexusTransport(ssl_context=client_context(ca_file=ca_pem))
            p = provider()
            for i in range(30):
                if i % 3 == 0:
                    r = await open_upstream(t, p, up.url("/stream"), [], b"{}")
                    chunks = [c async for c in r]
                    await r.aclose()
                    assert b"".join(chunks) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
                else:
                    r = await open_upstream(t, p, up.url("/json"), [], b"{}")
                    assert await read_all(r, p) == b'{"ok":true}'
                    await r.aclose()
            assert up.accepted == 1 and len(t._conns) == 1
            await t.aclose()
    run(main)


def config_with(tmp_path, providers: dict):
    models = {f"m{i}": {"targets": [{"provider": name, "model": "x"}]} for i, name in enumerate(providers)}
    raw = {"providers": {name: {"type": "OpenAI", "models": ["x"], **p} for name, p in providers.items()},
           "models": models}
    return parse_config(raw, str(tmp_path / "plexus.yaml"), env={})


def test_make_transports_builds_contexts_once_and_shares_them(tmp_path, ca_pem):
    config = config_with(tmp_path, {
        "a": {"api_base_url": "https://a.example/v1", "ca_file": ca_pem},
        "b": {"api_base_url": "https://b.example/v1", "ca_file": ca_pem},
        "c": {"api_base_url": "https://c.example/v1"},
        "d": {"api_base_url": "https://d.example/v1", "tls_verify": False, "ca_file": ca_pem},
        "e": {"api_base_url": "http://e.example/v1"},
    })
    ts = make_transports(config)
    ctx = {name: t._ssl for name, t in ts.items()}
    assert ctx["a"] is ctx["b"] and ctx["a"] is not ctx["c"] and ctx["e"] is None
    assert ctx["d"].verify_mode == ssl.CERT_NONE and not ctx["d"].check_hostname
    assert ctx["a"].verify_mode == ssl.CERT_REQUIRED and ctx["a"].check_hostname
    assert len(ctx["a"].get_ca_certs()) == len(ctx["c"].get_ca_certs()) + 1  # in addition to the defaults


@pytest.mark.parametrize("content", [b"", b"not a certificate\n",
                                     b"-----BEGIN CERTIFICATE-----\nMIIBroken\n-----END CERTIFICATE-----\n"])
def test_bad_ca_file_fails_at_startup(tmp_path, content):
    bad = tmp_path / "bad.pem"
    bad.write_bytes(content)
    config = config_with(tmp_path, {"ok": {"api_base_url": "https://a.example/v1"},
                                    "corp": {"api_base_url": "https://b.example/v1", "ca_file": str(bad)}})
    with pytest.raises(ConfigError) as err:
        make_transports(config)
    assert err.value.key_path == "providers.corp.ca_file"
    assert str(bad) in str(err.value) and "cannot load ca_file" in str(err.value)
    with pytest.raises(TLSSetupError):
        client_context(ca_file=str(bad))
