"""Gemini signatures across dialects: the interface between the Gemini codecs and the others.

Theory: a thought signature must come back on the same part it left, whichever client dialect
carried the conversation in between. Gemini → Anthropic/OpenAI client → Gemini request: the
signatures of function calls and text return to their parts (the stream is marked
ctx.extra["upstream"] = "gemini", so the other encoders tag them). Anthropic → Gemini client
(the real google-genai chat, which re-encodes thoughtSignature) → Anthropic request: Claude's
thinking text and signature come back byte for byte.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx
import orjson

from plexus import ir
from plexus.dialects.anthropic import build as abuild, decode as adecode, encode as aencode, request as arequest
from plexus.dialects.gemini import build, decode, encode, request
from plexus.dialects.openai import encode as oencode, request as orequest
from test_gemini_request import Prov
from test_gemini_stream import fixture


def gemini_ctx(**kw):
    return ir.Context(model="m", id_seed="seed", created=1, extra={"upstream": "gemini"}, **kw)


def anthropic_content(sse: bytes) -> list:
    """The assistant content blocks an Anthropic client assembles from a stream."""
    blocks: dict = {}
    for ev in sse.decode().split("\n\n"):
        if not ev.strip():
            continue
        d = json.loads(ev.split("data: ", 1)[1])
        if d["type"] == "content_block_start":
            blocks[d["index"]] = dict(d["content_block"], _json="")
        elif d["type"] == "content_block_delta":
            b, dl = blocks[d["index"]], d["delta"]
            key = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "_json"}.get(dl["type"])
            if key:
                b[key] += dl["text" if key == "text" else "thinking" if key == "thinking" else "partial_json"]
            elif dl["type"] == "signature_delta":
                b["signature"] = dl["signature"]
    out = []
    for i in sorted(blocks):
        b = blocks[i]
        raw = b.pop("_json")
        if b["type"] == "tool_use":
            b["input"] = json.loads(raw or "{}")
        out.append(b)
    return out


def through_anthropic_client(name: str) -> list:
    enc = aencode.StreamEncoder(gemini_ctx())
    dec = decode.StreamDecoder(enc)
    dec.feed(fixture(name))
    dec.close()
    content = anthropic_content(enc.take())
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": content}]
    ids = [b["id"] for b in content if b["type"] == "tool_use"]
    msgs.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": i, "content": "ok"} for i in ids]
                 or "more"})
    req = arequest.parse_request({"model": "x", "max_tokens": 100, "messages": msgs})
    return orjson.loads(build.build_request(req, "gm", Prov()))["contents"]


def test_gemini_signatures_survive_an_anthropic_client():
    contents = through_anthropic_client("parallel_tools.sse")
    assert contents[1] == {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris", "units": "c"}},
         "thoughtSignature": "c2lnLWNhbGwtMQ=="},
        {"functionCall": {"name": "get_weather", "args": {"city": "Tōkyō"}}, "thoughtSignature": "c2lnLWNhbGwtMg=="},
        {"functionCall": {"name": "get_time", "args": {}}}]}
    assert [p["functionResponse"]["name"] for p in contents[2]["parts"]] == ["get_weather", "get_weather", "get_time"]
    # a text signature that arrived after the text goes back on that text part
    assert through_anthropic_client("thinking.sse")[1]["parts"] == [
        {"text": "2 + 2 = 4.", "thoughtSignature": "EpYCCpMCAdHtim9Vq0a1wLc+Gx/7kQ=="}]
    assert through_anthropic_client("thought_signature.sse")[1]["parts"] == [
        {"text": "Let me think.", "thought": True, "thoughtSignature": "c2lnLXRob3VnaHQ="},
        {"text": "Answer done.", "thoughtSignature": "c2lnLXRleHQ="}]


def test_gemini_signatures_survive_an_openai_client():
    enc = oencode.StreamEncoder(gemini_ctx())
    dec = decode.StreamDecoder(enc)
    dec.feed(fixture("parallel_tools.sse"))
    dec.close()
    calls: dict = {}
    for ev in enc.take().decode().split("\n\n"):
        if ev.startswith("data: {"):
            for ch in json.loads(ev[6:])["choices"]:
                for tc in ch["delta"].get("tool_calls") or ():
                    c = calls.setdefault(tc["index"], {"type": "function", "function": {"name": "", "arguments": ""}})
                    c["id"] = tc.get("id") or c.get("id")
                    c["function"]["name"] += tc["function"].get("name") or ""
                    c["function"]["arguments"] += tc["function"].get("arguments") or ""
    msgs = [{"role": "user", "content": "q"},
            {"role": "assistant", "content": None, "tool_calls": [calls[k] for k in sorted(calls)]}]
    msgs += [{"role": "tool", "tool_call_id": c["id"], "content": "ok"} for c in msgs[1]["tool_calls"]]
    req = orequest.parse_request({"model": "x", "messages": msgs})
    contents = orjson.loads(build.build_request(req, "gm", Prov()))["contents"]
    assert [p.get("thoughtSignature") for p in contents[1]["parts"]] == ["c2lnLWNhbGwtMQ==", "c2lnLWNhbGwtMg==", None]


def test_claude_thinking_survives_a_gemini_client():
    from google import genai
    from google.genai import types
    data = fixture("../anthropic/thinking_text.sse")
    enc = encode.StreamEncoder(ir.Context(model="m", id_seed="s", created=1, extra={"upstream": "anthropic"}))
    dec = adecode.StreamDecoder(enc)
    dec.feed(data)
    dec.close()
    out = enc.take()
    sent = []

    def handler(r):
        sent.append(json.loads(r.content))
        return httpx.Response(200, content=out, headers={"content-type": "text/event-stream"})
    client = genai.Client(api_key="k", http_options=types.HttpOptions(
        base_url="http://plexus.test", api_version="v1beta",
        httpx_client=httpx.Client(transport=httpx.MockTransport(handler))))
    chat = client.chats.create(model="a")
    list(chat.send_message_stream("hi"))
    list(chat.send_message_stream("again"))
    req = request.parse_request(sent[1], model="claude-alias")

    @dataclass
    class AProv:
        name: str = "a"
        type: str = "anthropic"
        max_tokens: int = 4096
        stream_usage: bool = False
        base_path: str = "/v1"
    body = orjson.loads(abuild.build_request(req, "claude-x", AProv()))
    thinking = body["messages"][1]["content"][0]
    upstream = [json.loads(e.split("data: ", 1)[1]) for e in data.decode().replace("\r\n", "\n").split("\n\n")
                if '"signature_delta"' in e][0]["delta"]["signature"]
    assert thinking["type"] == "thinking" and thinking["signature"] == upstream
    assert thinking["thinking"].startswith("I need to find the GCD")
