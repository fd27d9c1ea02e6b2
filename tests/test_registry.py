"""The dialect registry: one complete record per dialect, and nothing else switches on a name.

- the registry holds exactly the three dialects, every record has every field, and each
  record's modules fulfil the dialect contract (request, build, decode, encode);
- a fourth dialect is one record: a copy of a record under a new name works everywhere the
  stream relay, the translator and the error edge look a dialect up;
- stream.py, errors.py, registry.py and common.py contain no `== "openai"`-style switches;
- routes, model/stream extraction, error shapes, stop reasons, upstream paths, auth headers and
  the forwarding table (the same as API.md's) are what the gateway has always used.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import orjson
import pytest

from plexus import ir
from plexus.dialects import common, registry
from plexus.dialects.registry import DIALECTS, Dialect, get, guess, match
from plexus.errors import GatewayError, render, stream_error_event
from plexus.stream import Passthrough, Translator

ROOT = Path(__file__).resolve().parent.parent / "plexus"
API_MD = ROOT / "API.md"
NAMES = ("openai", "anthropic", "gemini")
OPTIONAL = {"parse_path", "sse_query", "array_type", "array_relay", "hint_header", "relay_to"}
CONTRACT = {
    "request": ("parse_request", "model_and_stream"),
    "build": ("build_request",),
    "decode": ("parse_response", "StreamDecoder"),
    "encode": ("render_response", "StreamEncoder", "error_object", "error_event", "STREAM_CONTENT_TYPE"),
}


# ---------------------------------------------------------------- one complete record each

def test_exactly_the_four_dialects():
    assert tuple(DIALECTS) == (*NAMES, "responses")
    for name, d in DIALECTS.items():
        assert d.name == name and get(name) is d and get(d) is d
    with pytest.raises(LookupError, match="unknown dialect 'cohere'"):
        get("cohere")


def test_the_responses_record_is_a_client_dialect():
    """Responses is spoken by clients only: no provider type of its own (no build/decode); it
    is relayed to OpenAI-type providers flagged `responses: true`, at /responses, Bearer auth."""
    r = DIALECTS["responses"]
    assert r.build is None and r.decode is None and r.relay_to == "responses"
    for a in CONTRACT["request"]:
        assert hasattr(r.request, a)
    for a in CONTRACT["encode"]:
        assert hasattr(r.encode, a)
    assert r.request.__name__ == "plexus.dialects.responses.request"
    assert r.upstream_path("m", True, True) == "/responses" and r.auth_header(b"k") == (b"authorization", b"Bearer k")
    m = match(b"/v1/responses")
    assert m is not None and m.dialect is r and m.method == b"POST"
    assert r.stops is common.STOPS["responses"]
    assert [r.stops.to_ir(x) for x in ("completed", "max_output_tokens", "content_filter")] == [
        "end_turn", "max_tokens", "refusal"]
    status, _, body = r.render_error(GatewayError(429, "slow"))
    assert status == 429 and orjson.loads(body)["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize("body,done", [
    (b"event: response.created\ndata: {}\n\nevent: response.completed\ndata: {}\n\n", True),
    (b"event: response.created\ndata: {}\n\nevent: response.failed\ndata: {}\n\n", True),
    (b"event: error\ndata: {\"type\":\"error\"}\n\n", True),
    (b'event: response.incomplete\ndata: {"response":{"incomplete_details":{"reason":"max_output_tokens"}}}\n\n', True),
    (b'event: response.created\ndata: {"response":{"incomplete_details":null}}\n\n', False),
    (b'event: response.output_text.delta\ndata: {"delta":"event: response.completed"}\n\n', False),
])
def test_responses_relay_end(body, done):
    """A relayed Responses stream is over at response.completed / response.failed / error, or a
    response.incomplete (its non-null incomplete_details); else the client gets an error event."""
    for cut in range(len(body) + 1):
        p = Passthrough(DIALECTS["responses"])
        out = p.feed(body[:cut]) + p.feed(body[cut:])
        tail = p.close()
        assert out == body
        assert (tail == b"") is done, cut
        if not done:
            assert tail.startswith(b"event: error\n") or b"event: error\n" in tail


@pytest.mark.parametrize("name", NAMES)
def test_every_record_has_every_field(name):
    d = DIALECTS[name]
    for f in dataclasses.fields(Dialect):
        v = getattr(d, f.name)
        assert v is not None or f.name in OPTIONAL, f.name
    assert d.routes and all(r.method == b"POST" and r.path.startswith(b"/v1") for r in d.routes)
    assert (d.parse_path is None) == (not any(r.prefix for r in d.routes))
    assert (d.array_type is None) == (d.array_relay is None) == (d.sse_query is None)
    assert d.stops is common.STOPS[name]


@pytest.mark.parametrize("name", NAMES)
def test_packages_are_laid_out_alike(name):
    d = DIALECTS[name]
    for part, attrs in CONTRACT.items():
        module = getattr(d, part)
        assert module.__name__ == f"plexus.dialects.{name}.{part}"
        for a in attrs:
            assert hasattr(module, a), f"{module.__name__}.{a}"


def test_a_new_dialect_is_one_record():
    """A record under a new name (here OpenAI's codecs) works in the relay, the translator and
    the error edge with no other change."""
    new = dataclasses.replace(DIALECTS["openai"], name="responses")
    body = (b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
            b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n')
    p = Passthrough(new)
    assert p.dialect == "responses" and p.feed(body) == body and p.close() == b""
    ctx = ir.Context(model="m", id_seed="seed", created=1)
    tr = Translator(new, "anthropic", ctx)
    out = tr.feed(body) + tr.close()
    assert out.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    tr = Translator("anthropic", new, ir.Context(model="m", id_seed="seed", created=1))
    assert b"upstream stream ended early" in tr.close()
    status, headers, out = new.render_error(GatewayError(429, "slow"))
    assert status == 429 and orjson.loads(out)["error"]["type"] == "rate_limit_error"


_SWITCH = re.compile(r"""(==|!=)\s*["'](openai|anthropic|gemini)["']|["'](openai|anthropic|gemini)["']\s*(==|!=)"""
                     r"""|\bin\s*[(\[{][^)\]}\n]*["'](openai|anthropic|gemini)["']""")


@pytest.mark.parametrize("path", ["stream.py", "errors.py", "dialects/registry.py", "dialects/common.py"])
def test_no_dialect_switches(path):
    src = (ROOT / path).read_text()
    assert not _SWITCH.findall(src), [m.group(0) for m in _SWITCH.finditer(src)]


# ---------------------------------------------------------------- client side

@pytest.mark.parametrize("path,name,rest", [
    (b"/v1/chat/completions", "openai", b""),
    (b"/v1/messages", "anthropic", b""),
    (b"/v1beta/models/gem:generateContent", "gemini", b"gem:generateContent"),
    (b"/v1/models/models%2Fg:streamGenerateContent", "gemini", b"models%2Fg:streamGenerateContent"),
])
def test_routes(path, name, rest):
    m = match(path)
    assert m is not None and m.dialect is DIALECTS[name] and m.method == b"POST" and m.rest == rest


@pytest.mark.parametrize("path", [b"/v1/models", b"/v1/models/gpt", b"/v1beta/models", b"/health",
                                  b"/v1/messages/count_tokens", b"/v1/chat/completions/x", b"/x:y"])
def test_no_route(path):
    assert match(path) is None


def test_gemini_path_args():
    g = DIALECTS["gemini"]
    assert g.path_args(b"models%2Fgem%20x:streamGenerateContent") == ("models/gem x", True)
    assert g.path_args(b"gem:generateContent") == ("gem", False)
    with pytest.raises(GatewayError) as ei:
        g.path_args(b"gem:countTokens")
    assert (ei.value.status, ei.value.message) == (404, "unknown method 'countTokens'")
    assert DIALECTS["openai"].path_args(b"") is None


@pytest.mark.parametrize("name", ["openai", "anthropic"])
def test_model_and_stream_from_the_body(name):
    mas = DIALECTS[name].model_and_stream
    assert mas({"model": "m", "messages": []}, None, {}) == ("m", False)
    assert mas({"model": "m", "stream": True, "messages": []}, None, {}) == ("m", True)
    for body, param, message in [
        ({"messages": []}, "model", "`model` is required and must be a non-empty string"),
        ({"model": "", "messages": []}, "model", "`model` is required and must be a non-empty string"),
        ({"model": "m", "stream": "yes", "messages": []}, "stream", "`stream` must be a boolean"),
        ({"model": "m", "stream": None, "messages": []}, "stream", "`stream` must be a boolean"),
        ({"model": "m"}, "messages", "`messages` is required and must be an array"),
    ]:
        with pytest.raises(GatewayError) as ei:
            mas(body, None, {})
        assert (ei.value.status, ei.value.param, ei.value.message) == (400, param, message)


def test_model_and_stream_gemini():
    mas = DIALECTS["gemini"].model_and_stream
    assert mas({"contents": []}, ("models/gem", True), {}) == ("gem", True)
    assert mas({"contents": [], "model": "x"}, ("gem", False), {}) == ("gem", False)
    with pytest.raises(GatewayError) as ei:
        mas({"contents": {}}, ("gem", False), {})
    assert ei.value.message == "`contents` is required and must be an array"


def test_stream_framing():
    g, o = DIALECTS["gemini"], DIALECTS["openai"]
    assert g.sse({"alt": "sse"}) and not g.sse({}) and o.sse({})
    assert g.content_type(True) == o.content_type(False) == b"text/event-stream"
    assert g.content_type(False) == b"application/json"


def test_guess():
    none = {}.get
    assert guess(b"/v1/messages/count_tokens", none).name == "anthropic"
    assert guess(b"/v1/whatever", {b"anthropic-version": b"x"}.get).name == "anthropic"
    assert guess(b"/v1beta/cachedContents", none).name == "gemini"
    assert guess(b"/v2/models/x:generateContent", none).name == "gemini"
    assert guess(b"/v1/completions", none) is registry.DEFAULT is DIALECTS["openai"]


@pytest.mark.parametrize("name", NAMES)
def test_errors_render_through_the_record(name):
    d = DIALECTS[name]
    e = GatewayError(503, "busy", headers=[(b"retry-after", b"3")])
    assert render(e, name) == d.render_error(e)
    status, headers, body = d.render_error(e)
    assert status == 503 and headers == [(b"content-type", b"application/json"), (b"retry-after", b"3")]
    assert orjson.loads(body) == d.error_object(e)
    assert stream_error_event(e, name) == d.stream_error_event(e)
    assert orjson.dumps(d.error_object(e)) in d.stream_error_event(e)


# ---------------------------------------------------------------- stop reasons

@pytest.mark.parametrize("name", NAMES)
def test_stop_reasons_round_trip(name):
    s = common.STOPS[name]
    for r in ir.STOP_REASONS:
        assert s.to_ir(s.from_ir(r)) in ir.STOP_REASONS
    for r in ("end_turn", "max_tokens", "refusal"):
        assert s.to_ir(s.from_ir(r)) == r
    assert s.to_ir(s.from_ir("tool_use", True), True) == "tool_use"
    assert s.to_ir("no such reason") == "end_turn" and s.to_ir(None, True) == "tool_use"
    assert s.to_ir({"not": "hashable"}) == "end_turn"
    assert s.from_ir(None) == s.from_ir("end_turn")


def test_stop_reason_tables():
    o, a, g = (common.STOPS[n] for n in NAMES)
    assert [o.from_ir(r) for r in ("end_turn", "stop_sequence", "max_tokens", "tool_use", "refusal")] == [
        "stop", "stop", "length", "tool_calls", "content_filter"]
    assert o.from_ir("stop_sequence", tools=True) == "tool_calls" and o.to_ir("function_call") == "tool_use"
    assert a.to_ir("model_context_window_exceeded") == "max_tokens" and a.to_ir("pause_turn") == "pause_turn"
    assert a.from_ir("error") == "end_turn" and a.from_ir("error", True) == "tool_use"
    assert a.from_ir("stop_sequence", True) == "stop_sequence"
    assert g.to_ir("CONTINUATION") == "max_tokens" and g.to_ir("JAILBREAK") == "refusal"
    assert g.from_ir("tool_use") == "STOP" and g.from_ir("error") == "OTHER" and g.from_ir("refusal") == "SAFETY"


# ---------------------------------------------------------------- provider side

def test_upstream_paths():
    assert DIALECTS["openai"].upstream_path("gpt-4o", True, True) == "/chat/completions"
    assert DIALECTS["anthropic"].upstream_path("claude", False, True) == "/messages"
    g = DIALECTS["gemini"].upstream_path
    assert g("gemini-2.5-flash", False, True) == "/models/gemini-2.5-flash:generateContent"
    assert g("models/gemini-2.5-flash", True, True) == "/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert g("tunedModels/a b", True, False) == "/tunedModels/a%20b:streamGenerateContent"


def test_auth_headers():
    assert DIALECTS["openai"].auth_header(b"k") == (b"authorization", b"Bearer k")
    assert DIALECTS["anthropic"].auth_header(b"k") == (b"x-api-key", b"k")
    assert DIALECTS["gemini"].auth_header(b"k") == (b"x-goog-api-key", b"k")
    assert DIALECTS["anthropic"].upstream_headers == ((b"anthropic-version", b"2023-06-01"),)
    assert DIALECTS["openai"].upstream_headers == DIALECTS["gemini"].upstream_headers == ()


def test_api_md_lists_the_forwarding_table_of_the_records():
    text = API_MD.read_text()
    m = re.search(r"<!-- forwarded-to-provider -->(.*?)<!-- /forwarded-to-provider -->", text, re.S)
    assert m, "API.md has no forwarded-to-provider table"
    rows = re.findall(r"^\|\s*(\w+)\s*\|\s*([^|]*)\|\s*([^|]*)\|", m.group(1), re.M)
    table = {ptype.lower(): (h, q) for ptype, h, q in rows if ptype.lower() in DIALECTS}
    assert set(table) == set(DIALECTS)
    for name, (headers, query) in table.items():
        d = DIALECTS[name]
        assert set(re.findall(r"`([a-z0-9-]+)`", headers)) == {h.decode() for h in d.forwarded_headers}
        want = {f"{k}={v}" for k, vs in d.forwarded_query.items() for v in vs}
        assert set(re.findall(r"`([a-z]+=[a-z]+)`", query)) == want


def test_responses_relay_cut_continues_the_sequence():
    """The error event after a cut relayed Responses stream numbers itself after the last event
    the client got, however the stream was split (a number split across reads included)."""
    body = (b'event: response.created\ndata: {"type":"response.created","sequence_number":0}\n\n'
            b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
            b'"delta":"\\"sequence_number\\":99","sequence_number":12}\n\n'
            b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
            b'"sequence_number":137,"delta":"x"}\n\n')
    for cut in range(len(body) + 1):
        p = Passthrough(DIALECTS["responses"])
        assert p.feed(body[:cut]) + p.feed(body[cut:]) == body
        ev = p.close()
        data = orjson.loads(ev.split(b"data: ", 1)[1])
        assert data["type"] == "error" and data["sequence_number"] == 138, cut
