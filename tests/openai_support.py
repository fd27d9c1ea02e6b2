"""Shared helpers for the OpenAI dialect stream tests: fixtures, a recording ir.Sink, decode and
transcode drivers, and an openai SDK client that reads given bytes (in-memory httpx transport)."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai

from plexus import ir
from plexus.dialects.openai.decode import StreamDecoder
from plexus.dialects.openai.encode import STREAM_CONTENT_TYPE, StreamEncoder
from plexus.errors import GatewayError
from recording_sink import RecordingSink

FIX = Path(__file__).parent / "fixtures" / "openai"
FIXTURES = sorted(p.name for p in FIX.glob("*.sse"))


class Rec(RecordingSink):
    """An ir.Sink that records its calls as tuples (errors as (kind, status, message))."""

    def error(self, err):
        assert isinstance(err, GatewayError), err
        self.calls.append(("error", err.kind, err.status, err.message))


def decode(chunks) -> list[tuple]:
    rec = Rec()
    d = StreamDecoder(rec)
    for c in chunks:
        d.feed(c)
    d.close()
    return rec.calls


def check_order(calls: list[tuple]) -> None:
    """The ir.py call order: start first; finish at most once, then only usage; end|error last."""
    assert calls[0][0] == "start" and [c[0] for c in calls].count("start") == 1
    assert calls[-1][0] in ("end", "error")
    assert sum(c[0] in ("end", "error") for c in calls) == 1
    names = [c[0] for c in calls]
    if "finish" in names:
        assert names.count("finish") == 1
        assert all(n in ("usage", "end", "error") for n in names[names.index("finish") + 1:])


def data(name: str) -> bytes:
    return (FIX / name).read_bytes()


def sdk_client(body: bytes, content_type: bytes = STREAM_CONTENT_TYPE) -> openai.OpenAI:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": content_type.decode()}, content=body)
    return openai.OpenAI(api_key="k", base_url="http://test/v1", max_retries=0,
                         http_client=httpx.Client(transport=httpx.MockTransport(handler)))


def transcode(raw: bytes, ctx: ir.Context) -> bytes:
    enc = StreamEncoder(ctx)
    d = StreamDecoder(enc)
    out = []
    for i in range(0, len(raw), 97):
        d.feed(raw[i:i + 97])
        out.append(enc.take())
    d.close()
    out.append(enc.close())
    return b"".join(out)


def events(body: bytes) -> list[bytes]:
    return [blk[6:] for blk in body.split(b"\n\n") if blk]
