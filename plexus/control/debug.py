"""Debug capture: the full exchange of selected requests, kept in a ring of the last N.

Theory: capture is off by default and then costs the request path one attribute check
(``if debug.enabled``). When on, ``DebugLog.begin(request_id, alias, key)`` applies the filters
(only these aliases / inbound key names; None = all) and returns a ``Capture`` or None. The
gateway feeds the capture what crosses each edge, in order:

    client_request(method, target, headers, body)      once
    upstream_request(provider, url, headers, body)     once per attempt
    upstream_response(status, headers, data)           per chunk of that attempt (data appended;
                                                       the first status and non-empty headers kept)
    client_response(status, headers, data)             per chunk sent to the client (the same)
    finish(usage)                                      the Usage record; the capture is stored

Recording only copies: header pairs into a list, body bytes into a bytearray capped at
``body_cap`` (1 MiB) per body, the real size still counted. Memory is bounded by
``max_entries`` x (2 + 2 x attempts) x ``body_cap``. Decoding and masking happen only when a
capture is read (``Capture.render``), off the request path.

Masking (render): the values of the credential headers (``MASKED_HEADERS``, plus the header
names a provider's ``headers:`` config sets) become ``****``, keeping an auth scheme
("Bearer ****"); the ``key=`` query parameter of targets and URLs becomes ``key=****``; and every
secret string — the providers' ``api_key`` values passed in, plus each credential actually seen
in the capture's own headers and ``key=`` parameters (so a key rotated since is still hidden) —
is replaced by ``****`` wherever it appears: bodies, URLs, other headers, the usage error.
Secrets shorter than ``MIN_SECRET`` characters are only masked in headers (replacing "x"
everywhere in a body would destroy it, and protects nothing). A body cut at the cap also loses
any tail that is the start of a secret.
"""

from __future__ import annotations

import re
import time
from collections import deque

__all__ = ["BODY_CAP", "Capture", "DebugLog", "MASK", "MASKED_HEADERS", "MIN_SECRET", "mask_url"]

MASK = "****"
BODY_CAP = 1 << 20
MIN_SECRET = 8
MASKED_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "x-goog-api-key",
                            "x-admin-key", "api-key"})
_KEY_PARAM = re.compile(r"([?&]key=)([^&#\s]*)", re.IGNORECASE)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9_-]*\s+)(\S.*)\Z", re.DOTALL)


def _text(b) -> str:
    return b if isinstance(b, str) else bytes(b).decode("utf-8", "replace")


def _pairs(headers) -> list:
    """A copy of any header collection: (name, value) pairs, a mapping, or httpx.Headers."""
    if headers is None:
        return []
    raw = getattr(headers, "raw", None)  # httpx.Headers: the pairs as sent
    if raw is not None and not callable(raw):
        return list(raw)
    if hasattr(headers, "items"):
        return list(headers.items())
    return list(headers)


class _Body:
    __slots__ = ("data", "size")

    def __init__(self) -> None:
        self.data = bytearray()
        self.size = 0

    def add(self, chunk: bytes, cap: int) -> None:
        if chunk:
            self.size += len(chunk)
            room = cap - len(self.data)
            if room > 0:
                self.data += chunk[:room]


class _Message:
    """One request or response at one edge: a first line, headers, and a (capped) body."""

    __slots__ = ("line", "headers", "body")

    def __init__(self, line: dict, headers) -> None:
        self.line = line
        self.headers = _pairs(headers)
        self.body = _Body()


class Capture:
    """One request's exchange, as the gateway reports it (see the module docstring)."""

    __slots__ = ("_log", "id", "time", "alias", "key", "client", "attempts", "response", "usage")

    def __init__(self, log: "DebugLog", request_id: str, alias, key) -> None:
        self._log = log
        self.id, self.alias, self.key = request_id, alias, key
        self.time = time.time()
        self.client: _Message | None = None
        self.attempts: list[list] = []  # [provider, request _Message, response _Message | None]
        self.response: _Message | None = None
        self.usage = None

    def client_request(self, method: bytes, target: bytes, headers, body: bytes) -> None:
        self.client = _Message({"method": _text(method), "target": _text(target)}, headers)
        self.client.body.add(body, self._log.body_cap)

    def upstream_request(self, provider: str, url: str, headers, body: bytes) -> None:
        m = _Message({"url": _text(url)}, headers)
        m.body.add(body, self._log.body_cap)
        self.attempts.append([provider, m, None])

    def upstream_response(self, status: int, headers, data: bytes) -> None:
        if not self.attempts:
            self.attempts.append(["", _Message({"url": ""}, ()), None])
        attempt = self.attempts[-1]
        if attempt[2] is None:
            attempt[2] = _Message({"status": status}, headers)
        elif headers and not attempt[2].headers:  # later chunks may come with () as their headers
            attempt[2].headers = _pairs(headers)
        attempt[2].body.add(data, self._log.body_cap)

    def client_response(self, status: int, headers, data: bytes) -> None:
        if self.response is None:
            self.response = _Message({"status": status}, headers)
        elif headers and not self.response.headers:
            self.response.headers = _pairs(headers)
        self.response.body.add(data, self._log.body_cap)

    def finish(self, usage) -> None:
        """The request is over: keep the capture (once) in the log's ring."""
        if self.usage is not None:
            return
        self.usage = usage
        if getattr(usage, "time", None):
            self.time = usage.time
        self._log._store(self)

    # ------------------------------------------------------------------ reading

    def summary(self) -> dict:
        u = self.usage
        return {"id": self.id, "time": self.time, "alias": self.alias, "key": self.key,
                "provider": getattr(u, "provider", None), "model": getattr(u, "model", None),
                "status": getattr(u, "status", None), "http_status": getattr(u, "http_status", None),
                "duration_ms": getattr(u, "duration_ms", None), "attempts": len(self.attempts),
                "request_bytes": self.client.body.size if self.client else 0,
                "response_bytes": self.response.body.size if self.response else 0}

    def render(self, secrets=(), secret_headers=frozenset()) -> dict:
        """The whole capture as JSON-ready text, every credential masked (see the module docstring)."""
        names = MASKED_HEADERS | {h.lower() for h in secret_headers}
        found = {s for s in secrets if s}
        messages = [m for m in (self.client, self.response) if m is not None]
        messages += [m for a in self.attempts for m in a[1:] if m is not None]
        for m in messages:
            found.update(_header_secrets(m.headers, names))
            for part in ("target", "url"):
                if part in m.line:
                    found.update(v for _, v in _KEY_PARAM.findall(m.line[part]) if v)
        m = _Masker(found, names, self._log.body_cap)
        out = self.summary()
        out["client_request"] = m.message(self.client)
        out["upstream"] = [{"provider": p, "request": m.message(req), "response": m.message(resp)}
                           for p, req, resp in self.attempts]
        out["client_response"] = m.message(self.response)
        u = self.usage
        if u is not None:
            usage = u.as_dict() if hasattr(u, "as_dict") else dict(u)
            if isinstance(usage.get("error"), str):
                usage["error"] = m.text(usage["error"])
            out["usage"] = usage
        else:
            out["usage"] = None
        return out


def _header_secrets(headers: list, names: frozenset) -> set:
    out = set()
    for name, value in headers:
        if _text(name).lower() in names:
            v = _text(value).strip()
            out.add(v)
            scheme = _SCHEME.match(v)
            if scheme:
                out.add(scheme.group(2).strip())
    return out


def mask_url(url: str) -> str:
    """``key=`` query parameters masked (``?key=****``)."""
    return _KEY_PARAM.sub(lambda m: m.group(1) + MASK, url)


class _Masker:
    """Masks one capture's text: credential headers, ``key=`` parameters, secret strings."""

    __slots__ = ("secrets", "names", "cap")

    def __init__(self, secrets: set, names: frozenset, cap: int) -> None:
        # longest first, so that a secret containing another is replaced whole
        self.secrets = sorted((s for s in secrets if len(s) >= MIN_SECRET), key=len, reverse=True)
        self.names = names
        self.cap = cap

    def text(self, s: str) -> str:
        for secret in self.secrets:
            if secret in s:
                s = s.replace(secret, MASK)
        return s

    def header(self, name, value) -> list:
        n, v = _text(name), _text(value)
        if n.lower() in self.names:
            scheme = _SCHEME.match(v.strip())
            return [n, scheme.group(1) + MASK if scheme else MASK]
        return [n, self.text(v)]

    def message(self, msg: _Message | None) -> dict | None:
        if msg is None:
            return None
        out = {}
        for k, v in msg.line.items():
            out[k] = self.text(mask_url(v)) if k in ("target", "url") else v
        out["headers"] = [self.header(n, v) for n, v in msg.headers]
        body = msg.body
        text = self.text(bytes(body.data).decode("utf-8", "replace"))
        truncated = body.size > len(body.data)
        if truncated:
            text = self._cut_secret_tail(text)
        out["body"] = text
        out["body_bytes"] = body.size
        out["body_truncated"] = truncated
        if truncated:
            out["note"] = f"body truncated: the first {self.cap} of {body.size} bytes are kept"
        return out

    def _cut_secret_tail(self, text: str) -> str:
        """A body cut at the cap may end inside a secret: drop such a partial secret."""
        for secret in self.secrets:
            for k in range(len(secret) - 1, 3, -1):
                if text.endswith(secret[:k]):
                    return text[:-k] + MASK
        return text


class DebugLog:
    """The capture switch, its filters, and the ring of the last ``max_entries`` captures."""

    __slots__ = ("enabled", "aliases", "keys", "max_entries", "body_cap", "entries")

    def __init__(self, max_entries: int = 100, body_cap: int = BODY_CAP) -> None:
        self.enabled = False
        self.aliases: frozenset[str] | None = None  # None = every alias
        self.keys: frozenset[str] | None = None     # None = every inbound key name
        self.max_entries = max(0, max_entries)  # 0 keeps none: begin() then captures nothing
        self.body_cap = body_cap
        self.entries: deque[Capture] = deque(maxlen=self.max_entries)

    def configure(self, enabled: bool, aliases=None, keys=None) -> None:
        self.aliases = None if aliases is None else frozenset(aliases)
        self.keys = None if keys is None else frozenset(keys)
        self.enabled = bool(enabled)

    def resize(self, max_entries: int) -> None:
        """A new ring size (config reload); the newest captures are kept."""
        self.max_entries = max(0, max_entries)
        self.entries = deque(self.entries, maxlen=self.max_entries)

    def settings(self) -> dict:
        return {"enabled": self.enabled,
                "aliases": None if self.aliases is None else sorted(self.aliases),
                "keys": None if self.keys is None else sorted(self.keys),
                "max_entries": self.max_entries, "count": len(self.entries)}

    def begin(self, request_id: str, alias, key) -> Capture | None:
        """A capture for this request, or None when capture is off or the filters exclude it."""
        if not self.enabled or not self.max_entries:
            return None
        if self.aliases is not None and alias not in self.aliases:
            return None
        if self.keys is not None and key not in self.keys:
            return None
        return Capture(self, request_id, alias, key)

    def _store(self, capture: Capture) -> None:
        self.entries.append(capture)

    def list(self) -> list[dict]:
        """Every stored capture's summary, newest first."""
        return [c.summary() for c in reversed(self.entries)]

    def get(self, request_id: str) -> Capture | None:
        for c in self.entries:
            if c.id == request_id:
                return c
        return None

    def clear(self) -> int:
        n = len(self.entries)
        self.entries.clear()
        return n
