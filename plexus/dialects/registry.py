"""The dialect registry: one frozen record per API dialect, found by name (pure).

Everything the gateway does differently per dialect is a field of its record, so the server,
the stream relay and the error edge look a record up once and never switch on a dialect's name.
A provider declares the dialect it speaks (`Provider.type`, the same names), so the same record
serves both sides of a call. Adding a dialect (e.g. the OpenAI Responses API) is one package
laid out like the others (request.py, build.py, decode.py, encode.py) plus one `Dialect(...)`
below. Model: Python's `codecs` registry (`codecs.lookup(name) -> CodecInfo`).

    DIALECTS[name] / get(name)       the record ("openai", "anthropic", "gemini"); get() also
                                     passes a record through, and raises LookupError otherwise
    match(path) -> Match | None      the inbound route of a request path, no per-request branching:
                                     exact paths in one dict, then the prefix routes
    guess(path, header) -> Dialect   whose error shape a request that matched no route gets

The fields of a record, by who uses them:

client side (inbound)
    routes                 Route(method, path, prefix): an exact path, or a prefix the path
                           continues as `{model}:{action}` (Gemini)
    path_args(rest)        (model, stream) from what follows a prefix route (404 for an
                           unknown action), None for an exact route
    model_and_stream(body, path_args, query) -> (model, stream)   400 for a missing/bad
                           `model` or `stream` and a missing conversation array (`messages` /
                           `contents`), with the messages the gateway always answered
    sse(query)             the client's stream is SSE (Gemini: only with ?alt=sse; else its
                           JSON-array stream)
    content_type(sse)      the content type of a stream to the client
    render_error(err)      (status, headers, body) of a JSON error response
    stream_error_event(err)  the event that ends a started stream with an error
    error_object(err)      the error body as a dict
codecs (modules; the contract every dialect package fulfils)
    request                parse_request(body, *, model=None, stream=None) -> ir.Request
    build                  build_request(req, model, provider) -> bytes (the provider body)
    decode                 parse_response(bytes) -> ir.Response; StreamDecoder(sink)
                           (None for a client-only dialect: Responses, which no provider type
                           speaks alone; it is relayed to providers flagged `relay_to`)
    encode                 render_response(resp, ctx) -> bytes; StreamEncoder(ctx)
    stops                  common.StopMap: its stop reasons ⇄ the IR's
stream relay (stream.Passthrough)
    stream_end             StreamEnd: the line markers and the finish key that end a stream
    array_relay            factory of the relay of the non-SSE stream body (Gemini's
                           framing.ArrayRelay), else None
provider side (upstream)
    upstream_path(model, stream, sse) -> str   the URL path after the provider's base URL
                           (it may carry a query: Gemini's `?alt=sse`)
    auth_header(key: bytes) -> (name, value)   the provider key in this dialect's header
    upstream_headers       headers always sent to such a provider (Anthropic's default
                           anthropic-version); a forwarded client header of the same name wins
    forwarded_headers      client request headers passed on to such a provider (lowercase)
    forwarded_query        client query parameters passed on: name -> allowed values
                           (API.md "What is sent to a provider" lists the same table)
    relay_to               the `Provider` flag (e.g. "responses") of providers of another type
                           that also speak this dialect: requests are relayed to them byte for
                           byte, at this record's upstream_path; other providers get a translation

Records are built once at import; the hot paths (stream.Passthrough / Translator) read what
they need from them at construction, never per event.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType, ModuleType
from typing import Any, Callable, Mapping, NamedTuple

import orjson

from ..errors import GatewayError
from . import common
from .anthropic import build as _ab, decode as _ad, encode as _ae, request as _ar
from .gemini import build as _gb, decode as _gd, encode as _ge, request as _gr
from .gemini.framing import ArrayRelay
from .openai import build as _ob, decode as _od, encode as _oe, request as _or
from .responses import encode as _re, request as _rr

__all__ = ["Dialect", "Route", "Match", "StreamEnd", "DIALECTS", "get", "match", "guess", "DEFAULT"]

_JSON = (b"content-type", b"application/json")


class Route(NamedTuple):
    method: bytes           # b"POST"
    path: bytes             # the exact path, or the prefix of a prefix route
    prefix: bool = False    # the path continues "{model}:{action}" after `path`


class Match(NamedTuple):
    dialect: "Dialect"
    method: bytes           # the method the route allows (else 405 with `allow`)
    rest: bytes             # what follows a prefix route's prefix (b"" for an exact route)


class StreamEnd(NamedTuple):
    """When a relayed stream is over (see stream.py): `marker` (and `marker2`, `marker3`) right
    after their `field` (+ one optional space) at a line start, or a non-null value of `finish_key`."""
    marker: bytes
    field: bytes
    marker2: bytes | None
    field2: bytes | None
    finish_key: bytes
    one_line_events: bool = False   # every event is one `data: {...}` line (OpenAI): Passthrough's fast path
    marker3: bytes | None = None
    field3: bytes | None = None
    counter_key: bytes | None = None  # events are numbered by this key (Responses sequence_number):
                                      # the error event after a cut continues the count


@dataclass(frozen=True, slots=True, eq=False)
class Dialect:
    name: str
    # client side
    routes: tuple[Route, ...]
    model_and_stream: Callable[[dict, Any, Mapping[str, str]], tuple[str, bool]]
    parse_path: Callable[[bytes], tuple[str, bool]] | None
    sse_query: tuple[str, str] | None       # the stream is SSE only with this query parameter
    error_object: Callable[[GatewayError], dict]
    stream_error_event: Callable[[GatewayError], bytes]
    stream_type: bytes                       # content type of an SSE stream
    array_type: bytes | None                 # content type of the non-SSE stream (Gemini)
    hint_prefixes: tuple[bytes, ...]         # guess(): paths that suggest this dialect
    hint_markers: tuple[bytes, ...]          # guess(): path substrings that suggest it
    hint_header: bytes | None                # guess(): a request header that suggests it
    # codecs
    request: ModuleType
    build: ModuleType | None                 # None: a client-only dialect (Responses)
    decode: ModuleType | None
    encode: ModuleType
    stops: common.StopMap
    # stream relay
    stream_end: StreamEnd
    array_relay: Callable[[int], Any] | None
    # provider side
    upstream_path: Callable[[str, bool, bool], str]
    auth: tuple[bytes, bytes]                # (header name, value prefix) of the provider key
    upstream_headers: tuple[tuple[bytes, bytes], ...]
    forwarded_headers: tuple[bytes, ...]
    forwarded_query: Mapping[str, tuple[str, ...]]
    relay_to: str | None                     # the Provider flag of providers of another type that
                                             # also serve this dialect (relayed to them byte for byte)

    def path_args(self, rest: bytes) -> tuple[str, bool] | None:
        return self.parse_path(rest) if rest else None

    def sse(self, query: Mapping[str, str]) -> bool:
        q = self.sse_query
        return q is None or query.get(q[0]) == q[1]

    def content_type(self, sse: bool = True) -> bytes:
        return self.stream_type if sse or self.array_type is None else self.array_type

    def render_error(self, err: GatewayError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        return err.status, [_JSON, *err.headers], orjson.dumps(self.error_object(err))

    def auth_header(self, key: bytes) -> tuple[bytes, bytes]:
        name, prefix = self.auth
        return name, prefix + key

    def __repr__(self) -> str:
        return f"<Dialect {self.name}>"


def _fixed(path: str) -> Callable[[str, bool, bool], str]:
    def upstream_path(model: str, stream: bool, sse: bool = True) -> str:
        return path
    return upstream_path


def _dialect(**fields: Any) -> Dialect:
    fields["forwarded_query"] = MappingProxyType(fields.get("forwarded_query", {}))
    defaults = dict(parse_path=None, sse_query=None, array_type=None, array_relay=None,
                    hint_prefixes=(), hint_markers=(), hint_header=None, upstream_headers=(),
                    forwarded_headers=(), relay_to=None)
    m = fields["encode"]
    return Dialect(**{**defaults, "stops": common.STOPS[fields["name"]],
                      "error_object": m.error_object, "stream_error_event": m.error_event,
                      "stream_type": m.STREAM_CONTENT_TYPE, **fields})


DIALECTS: Mapping[str, Dialect] = MappingProxyType({d.name: d for d in (
    _dialect(
        name="openai",
        routes=(Route(b"POST", b"/v1/chat/completions"),),
        model_and_stream=_or.model_and_stream,
        request=_or, build=_ob, decode=_od, encode=_oe,
        stream_end=StreamEnd(b"[DONE]", b"data:", b'{"error"', b"data:", b'"finish_reason":',
                             one_line_events=True),
        upstream_path=_fixed("/chat/completions"),
        auth=(b"authorization", b"Bearer "),
    ),
    _dialect(
        name="anthropic",
        routes=(Route(b"POST", b"/v1/messages"),),
        model_and_stream=_ar.model_and_stream,
        hint_prefixes=(b"/v1/messages",), hint_header=b"anthropic-version",
        request=_ar, build=_ab, decode=_ad, encode=_ae,
        stream_end=StreamEnd(b"message_stop", b"event:", b"error", b"event:", b'"stop_reason":'),
        upstream_path=_fixed("/messages"),
        auth=(b"x-api-key", b""),
        upstream_headers=((b"anthropic-version", b"2023-06-01"),),
        forwarded_headers=(b"anthropic-version", b"anthropic-beta"),
        forwarded_query={"beta": ("true",)},
    ),
    _dialect(
        name="gemini",
        routes=(Route(b"POST", b"/v1beta/models/", True), Route(b"POST", b"/v1/models/", True)),
        model_and_stream=_gr.model_and_stream,
        parse_path=_gr.parse_path,
        sse_query=("alt", "sse"),
        array_type=_ge.ARRAY_CONTENT_TYPE,
        hint_prefixes=(b"/v1beta",), hint_markers=(b":generateContent", b":streamGenerateContent"),
        request=_gr, build=_gb, decode=_gd, encode=_ge,
        stream_end=StreamEnd(b'{"error"', b"data:", None, None, b'"finishReason":'),
        array_relay=ArrayRelay,
        upstream_path=_gb.upstream_path,
        auth=(b"x-goog-api-key", b""),
    ),
    # The OpenAI Responses API: a client dialect only (no provider type speaks it alone): relayed
    # to OpenAI-type providers with `responses: true`, translated for every other provider.
    _dialect(
        name="responses",
        routes=(Route(b"POST", b"/v1/responses"),),
        model_and_stream=_rr.model_and_stream,
        request=_rr, build=None, decode=None, encode=_re,
        stream_end=StreamEnd(b"response.completed", b"event:", b"response.failed", b"event:",
                             b'"incomplete_details":', marker3=b"error", field3=b"event:",
                             counter_key=b'"sequence_number":'),
        upstream_path=_fixed("/responses"),
        auth=(b"authorization", b"Bearer "),
        relay_to="responses",
    ),
)})

DEFAULT = DIALECTS["openai"]   # the error shape of a request nothing else claims

_EXACT: dict[bytes, Match] = {}
_PREFIX: list[tuple[bytes, Match]] = []
for _d in DIALECTS.values():
    for _r in _d.routes:
        if _r.prefix:
            _PREFIX.append((_r.path, Match(_d, _r.method, b"")))
        else:
            _EXACT[_r.path] = Match(_d, _r.method, b"")
_PREFIX_STARTS = tuple(p for p, _ in _PREFIX)
_HINTED = tuple(d for d in DIALECTS.values() if d.hint_prefixes or d.hint_markers or d.hint_header)


def get(name: str | Dialect) -> Dialect:
    if type(name) is Dialect:
        return name
    d = DIALECTS.get(name)
    if d is None:
        raise LookupError(f"unknown dialect {name!r} (known: {', '.join(DIALECTS)})")
    return d


def match(path: bytes) -> Match | None:
    """The route of an inbound request path: an exact path, or a prefix route whose path goes
    on with `{model}:{action}` (`rest` holds that part; GET /v1/models/{alias} is no match)."""
    m = _EXACT.get(path)
    if m is not None:
        return m
    if path.startswith(_PREFIX_STARTS):
        for prefix, m in _PREFIX:
            if path.startswith(prefix):
                rest = path[len(prefix):]
                if b":" in rest:
                    return m._replace(rest=rest)
    return None


def guess(path: bytes, header: Callable[[bytes], Any]) -> Dialect:
    """The dialect a request that matched no route most likely speaks (for its error's shape):
    the first record (in DIALECTS order) whose hints fit, else DEFAULT. `header(name)` returns
    the request header's value or None."""
    for d in _HINTED:
        if (path.startswith(d.hint_prefixes) or any(m in path for m in d.hint_markers)
                or (d.hint_header is not None and header(d.hint_header) is not None)):
            return d
    return DEFAULT
