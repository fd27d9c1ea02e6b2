"""What the pipeline precomputes per provider: its dialect record, URL, upstream headers and the
rules for which headers cross the gateway, plus the model listings.

`ProviderRuntime` holds, per provider and computed once at startup, the base URL, the
dialect record it speaks (`dialects.registry`), the upstream header block (auth in the
dialect's form, `content-type`, the dialect's fixed headers, the provider's own `headers`), and:

- what crosses from the client to the provider is the record's explicit list,
  `forwarded_headers` / `forwarded_query` (API.md has the same table; a test holds them
  equal): to an Anthropic provider `anthropic-version` and `anthropic-beta`, and the query
  parameter `beta=true`. Nothing else: the client's credentials (and `?key=`) never;
  `openai-organization`/`openai-project` name the client's own OpenAI account, not the
  gateway's key (set them in the provider's `headers:`).
- back to the client: content-type, request ids (the provider's `x-request-id` renamed
  `x-upstream-request-id`: `x-request-id` is the gateway's own), retry-after and rate-limit headers;
  never hop-by-hop headers, content-length (re-framed by us), cookies or server names.

`models_response` renders GET /v1/models once, in OpenAI, Anthropic and Gemini shapes.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import orjson

from ..dialects import registry
from ..splice import replace_model
from ..upstream.call import mapped

_FORWARD = {b"content-type", b"request-id", b"retry-after", b"retry-after-ms",
            b"openai-processing-ms", b"openai-version"}
_FORWARD_PREFIXES = (b"x-ratelimit-", b"anthropic-ratelimit-", b"x-goog-")


class ProviderRuntime:
    __slots__ = ("provider", "dialect", "transport", "base_url", "headers", "key_bytes", "_base",
                 "_fixed", "_target_headers", "_marks", "map_ttfb", "map_read", "map_stream", "inflight",
                 "max_inflight")

    def __init__(self, provider, transport) -> None:
        self.provider = provider
        d = self.dialect = registry.get(provider.type)
        self.transport = transport
        self.inflight = 0  # attempts using this runtime now (a replaced provider closes when 0)
        self.max_inflight = provider.max_inflight  # 0: no limit (a reload may change it: Gateway.apply)
        self.base_url = provider.base_url
        h = [(b"content-type", b"application/json")]
        key = self.key_bytes = provider.api_key.encode()
        if key:
            h.append(d.auth_header(key))
        for name, value in provider.headers:
            h.append((name.lower().encode(), value.encode()))
        self._base = h
        self._fixed = d.upstream_headers
        self.headers = h + list(d.upstream_headers)
        self._target_headers: dict[str, bytes] = {}
        self._marks: dict[tuple[str, str], tuple] = {}
        # httpx error → GatewayError mappers, one per phase (stateless, so built once)
        self.map_ttfb = mapped(provider.name, provider.ttfb_timeout)
        self.map_read = mapped(provider.name, provider.read_timeout, "finish its answer")
        self.map_stream = mapped(provider.name, provider.read_timeout, "send more of its stream")

    def target_header(self, model: str) -> bytes:
        v = self._target_headers.get(model)
        if v is None:
            v = self._target_headers[model] = f"{self.provider.name}/{model}".encode()
        return v

    def marks(self, alias: str, model: str) -> tuple:
        """The x-plexus-alias / x-plexus-target response headers (built once per alias and model)."""
        key = (alias, model)
        m = self._marks.get(key)
        if m is None:
            if len(self._marks) >= 4096:  # aliases x models are few; bound it anyway
                self._marks.clear()
            m = self._marks[key] = ((b"x-plexus-alias", alias.encode()),
                                    (b"x-plexus-target", self.target_header(model)))
        return m

    def request_headers(self, req) -> list[tuple[bytes, bytes]]:
        """The upstream headers plus the client headers the dialect forwards (a forwarded
        header replaces a fixed one of the same name, e.g. the client's anthropic-version)."""
        names = self.dialect.forwarded_headers
        if not names:
            return self.headers
        fwd = [(n, v) for n in names if (v := req.header(n)) is not None]
        if not fwd:
            return self.headers
        sent = {n for n, _ in fwd}
        return self._base + [h for h in self._fixed if h[0] not in sent] + fwd

    def url(self, model: str, stream: bool, sse: bool = True, query: dict | None = None, d=None) -> str:
        """The upstream URL; ``query``: the client's, when it speaks this provider's dialect
        (only the dialect's forwarded parameters with allowed values pass). ``d``: the dialect
        the request is relayed in, when not the provider's own (Responses at an OpenAI provider)."""
        d = d or self.dialect
        url = self.base_url + d.upstream_path(model, stream, sse)
        if query:
            for name, allowed in d.forwarded_query.items():
                value = query.get(name)
                if value is not None and value in allowed:
                    url += ("&" if "?" in url else "?") + f"{name}={value}"
        return url

    @staticmethod
    def relay_body(raw: bytes, body: dict, model: str, path_model: bool) -> bytes:
        """A same-dialect body: the client's bytes with only the model value replaced (none when
        the dialect carries the model in the URL path)."""
        return raw if path_model else replace_model(raw, model, body)

    @staticmethod
    def forward_headers(up, extra) -> list[tuple[bytes, bytes]]:
        out = []
        for k, v in up.raw_headers:
            lk = k.lower()
            if lk in _FORWARD or lk.startswith(_FORWARD_PREFIXES):
                out.append((lk, v))
            elif lk == b"x-request-id":  # the client's x-request-id is Plexus's (see handler.py)
                out.append((b"x-upstream-request-id", v))
        out.extend(extra)
        return out


def models_response(aliases: list[str]) -> dict[str, tuple[bytes, dict[str, bytes]]]:
    """{shape: (list body, {alias: single-model body})} for the three shapes."""
    now = int(time.time())
    iso = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    oa = [{"id": a, "object": "model", "created": now, "owned_by": "plexus"} for a in aliases]
    an = [{"type": "model", "id": a, "display_name": a, "created_at": iso} for a in aliases]
    ge = [{"name": f"models/{a}", "displayName": a, "description": f"Plexus alias {a}",
           "supportedGenerationMethods": ["generateContent", "streamGenerateContent"]} for a in aliases]
    return {
        "openai": (orjson.dumps({"object": "list", "data": oa}),
                   {m["id"]: orjson.dumps(m) for m in oa}),
        "anthropic": (orjson.dumps({"data": an, "has_more": False,
                                    "first_id": aliases[0] if aliases else None,
                                    "last_id": aliases[-1] if aliases else None}),
                      {m["id"]: orjson.dumps(m) for m in an}),
        "gemini": (orjson.dumps({"models": ge}), {m["displayName"]: orjson.dumps(m) for m in ge}),
    }


def models_listing(shape: str, items: dict[str, bytes]) -> bytes:
    """The list body of ``shape`` made of these single-model bodies (a restricted key's view)."""
    joined = b",".join(items.values())
    if shape == "openai":
        return b'{"object":"list","data":[' + joined + b"]}"
    if shape == "gemini":
        return b'{"models":[' + joined + b"]}"
    names = list(items)
    return (b'{"data":[' + joined + b'],"has_more":false,"first_id":' + orjson.dumps(names[0] if names else None)
            + b',"last_id":' + orjson.dumps(names[-1] if names else None) + b"}")
