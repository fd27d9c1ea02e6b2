"""What the handler precomputes: per-provider request/response header plumbing and the
model listings.

`ProviderRuntime` holds, per provider and computed once at startup, the base URL, the
upstream header block (auth in the provider type's form, `content-type`, the provider's own
`headers`), and the rules for which headers cross the gateway:

- upstream auth: OpenAI `authorization: Bearer`, Anthropic `x-api-key`, Gemini
  `x-goog-api-key`; none when the key is empty (keyless local servers). The client's own
  credentials are never forwarded (nor its `?key=`).
- what crosses from the client to the provider is an explicit list, `FORWARDED_HEADERS` and
  `FORWARDED_QUERY` below (API.md has the same table; a test holds them equal): to an
  Anthropic provider `anthropic-version` (default 2023-06-01) and `anthropic-beta`, and the
  query parameter `beta=true`. Nothing else: `openai-organization`/`openai-project` name the
  client's own OpenAI account, not the gateway's key (set them in the provider's `headers:`).
- back to the client: content-type, request ids, retry-after and rate-limit headers;
  never hop-by-hop headers, content-length (re-framed by us), cookies or server names.

`models_response` renders GET /v1/models once, in OpenAI, Anthropic and Gemini shapes.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import orjson

from ..dialects.gemini.request import model_path
from ..splice import replace_model
from ..upstream.call import mapped

ANTHROPIC_VERSION = b"2023-06-01"
# provider type -> client request headers passed on to it (lowercase), and query parameters
# passed on (name -> allowed values). Everything else the client sends stays here.
FORWARDED_HEADERS = {"openai": (), "anthropic": (b"anthropic-version", b"anthropic-beta"), "gemini": ()}
FORWARDED_QUERY = {"openai": {}, "anthropic": {"beta": ("true",)}, "gemini": {}}
_FORWARD = {b"content-type", b"request-id", b"x-request-id", b"retry-after", b"retry-after-ms",
            b"openai-processing-ms", b"openai-version"}
_FORWARD_PREFIXES = (b"x-ratelimit-", b"anthropic-ratelimit-", b"x-goog-")


class ProviderRuntime:
    __slots__ = ("provider", "transport", "base_url", "headers", "key_bytes", "_target_headers",
                 "_anthropic_base", "_marks", "map_ttfb", "map_read", "map_stream")

    def __init__(self, provider, transport) -> None:
        self.provider = provider
        self.transport = transport
        self.base_url = provider.base_url
        h = [(b"content-type", b"application/json")]
        key = self.key_bytes = provider.api_key.encode()
        if key:
            if provider.type == "openai":
                h.append((b"authorization", b"Bearer " + key))
            elif provider.type == "anthropic":
                h.append((b"x-api-key", key))
            else:
                h.append((b"x-goog-api-key", key))
        for name, value in provider.headers:
            h.append((name.lower().encode(), value.encode()))
        self._anthropic_base = h
        self.headers = h + [(b"anthropic-version", ANTHROPIC_VERSION)] if provider.type == "anthropic" else h
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
        """Anthropic upstream: keep the client's anthropic-version, forward anthropic-beta."""
        version = req.header(b"anthropic-version")
        beta = req.header(b"anthropic-beta")
        if version is None and beta is None:
            return self.headers
        h = self._anthropic_base + [(b"anthropic-version", version or ANTHROPIC_VERSION)]
        if beta is not None:
            h.append((b"anthropic-beta", beta))
        return h

    def passthrough(self, dialect: str, raw: bytes, body: dict, model: str, stream: bool, gem_sse: bool,
                    query: dict[str, str]) -> tuple[str, bytes]:
        """(upstream URL, body) for a same-dialect call: the client's bytes with only the model
        value replaced (Gemini: the model is in the URL, the body goes as is)."""
        if dialect == "gemini":
            method = "streamGenerateContent" if stream else "generateContent"
            url = f"{self.base_url}/{model_path(model)}:{method}"
            return (url + "?alt=sse" if stream and gem_sse else url), raw
        out = replace_model(raw, model, body)
        if dialect == "openai":
            return self.base_url + "/chat/completions", out
        url = self.base_url + "/messages"
        if query.get("beta") in FORWARDED_QUERY["anthropic"]["beta"]:
            url += "?beta=" + query["beta"]
        return url, out

    @staticmethod
    def forward_headers(up, extra) -> list[tuple[bytes, bytes]]:
        out = []
        for k, v in up.raw_headers:
            lk = k.lower()
            if lk in _FORWARD or lk.startswith(_FORWARD_PREFIXES):
                out.append((lk, v))
        out.extend(extra)
        return out


def guess_dialect(req) -> str:
    p = req.path
    if p.startswith(b"/v1/messages") or req.header(b"anthropic-version") is not None:
        return "anthropic"
    if p.startswith(b"/v1beta") or b":generateContent" in p or b":streamGenerateContent" in p:
        return "gemini"
    return "openai"


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
