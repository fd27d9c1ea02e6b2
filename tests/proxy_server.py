"""A small asyncio HTTP proxy for tests: CONNECT tunnels and absolute-form forwarding.

Theory: the proxy is the witness. It records every CONNECT target (``connects``), every
absolute-form request target (``forwarded``) and every ``Proxy-Authorization`` value it saw
(``auths``, None when absent), and counts the client connections it accepted (``accepted``). Tests
assert on those lists: one CONNECT for many requests means the tunnel was reused, and the
credentials arrived where they should. It can also misbehave on purpose: ``refuse=403`` answers
every request with that status, ``require=b"Basic ..."`` answers 407 unless that exact
credential came, ``cut_after_connect`` accepts a CONNECT and then drops the connection (a tunnel
that breaks during the TLS handshake), and ``silent`` reads the CONNECT and never answers.

It serves CONNECT by piping bytes both ways to the target. It serves absolute-form requests
(``POST http://host:port/path HTTP/1.1``) by rewriting each one to origin-form, dropping
Proxy-Authorization, and sending it on one origin connection per client connection; responses go
back as raw bytes. So keep-alive and streaming pass through unchanged. Request bodies must be
Content-Length framed (PlexusTransport only sends those).

``BackgroundLoop`` runs an event loop in a thread, for tests whose client is synchronous (an SDK
calling a Plexus subprocess) while the proxy and a fake upstream have to keep serving.
"""

from __future__ import annotations

import asyncio
import threading
from urllib.parse import urlsplit


def _headers(head: bytes) -> tuple[list[bytes], dict[bytes, bytes]]:
    lines = head.split(b"\r\n")
    fields = {}
    for line in lines[1:]:
        if b":" in line:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
    return lines, fields


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


class ProxyServer:
    def __init__(self, *, refuse: int | None = None, require: bytes | None = None,
                 cut_after_connect: bool = False, silent: bool = False) -> None:
        self.refuse, self.require = refuse, require
        self.cut_after_connect, self.silent = cut_after_connect, silent
        self.connects: list[str] = []
        self.forwarded: list[str] = []
        self.auths: list[bytes | None] = []
        self.accepted = 0
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> ProxyServer:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        self.display = f"127.0.0.1:{self.port}"
        return self

    def url(self, user: str = "", password: str = "") -> str:
        cred = f"{user}:{password}@" if user or password else ""
        return f"http://{cred}127.0.0.1:{self.port}"

    async def aclose(self) -> None:
        self.server.close()
        for w in list(self._writers):
            w.close()

    async def __aenter__(self) -> ProxyServer:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)

    def _answer(self, writer, status: int, reason: str, extra: bytes = b"") -> None:
        writer.write(b"HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n%s\r\n"
                     % (status, reason.encode(), extra))

    def _admit(self, fields: dict, writer) -> bool:
        auth = fields.get(b"proxy-authorization")
        self.auths.append(auth)
        if self.refuse is not None:
            self._answer(writer, self.refuse, "Refused by test proxy")
            return False
        if self.require is not None and auth != self.require:
            self._answer(writer, 407, "Proxy Authentication Required", b'Proxy-Authenticate: Basic realm="test"\r\n')
            return False
        return True

    async def _serve(self, reader, writer) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines, fields = _headers(head)
        method, target, version = lines[0].split(b" ")
        if method == b"CONNECT":
            self.connects.append(target.decode())
            if self.silent:
                await reader.read()
                return
            if not self._admit(fields, writer):
                return
            host, _, port = target.decode().rpartition(":")
            try:
                up_r, up_w = await asyncio.open_connection(host.strip("[]"), int(port))
            except OSError:
                self._answer(writer, 502, "Bad Gateway")
                return
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if self.cut_after_connect:
                await reader.read(1)  # the ClientHello starts: break the tunnel under it
                up_w.close()
                writer.transport.abort()
                return
            self._writers.add(up_w)
            await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))
            self._writers.discard(up_w)
            return
        if not self._admit(fields, writer):
            return
        u = urlsplit(target.decode())
        up_r, up_w = await asyncio.open_connection(u.hostname, u.port or 80)
        self._writers.add(up_w)
        back = asyncio.ensure_future(_pipe(up_r, writer))
        try:
            while True:  # one request at a time, rewritten to origin-form
                self.forwarded.append(target.decode())
                path = (u.path or "/") + (f"?{u.query}" if u.query else "")
                kept = [ln for ln in lines[1:] if ln and not ln.lower().startswith(b"proxy-authorization:")]
                up_w.write(b"\r\n".join([b"%s %s %s" % (method, path.encode(), version), *kept]) + b"\r\n\r\n")
                n = int(fields.get(b"content-length", b"0"))
                if n:
                    up_w.write(await reader.readexactly(n))
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    break
                lines, fields = _headers(head)
                method, target, version = lines[0].split(b" ")
                self.auths.append(fields.get(b"proxy-authorization"))
                u = urlsplit(target.decode())
        finally:
            up_w.close()
            self._writers.discard(up_w)
            await asyncio.gather(back, return_exceptions=True)


class BackgroundLoop:
    """An event loop in a daemon thread: ``run(coro)`` runs a coroutine there and returns its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> BackgroundLoop:
        self.thread.start()
        return self

    def run(self, coro, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
