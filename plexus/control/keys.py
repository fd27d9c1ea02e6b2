"""Inbound key authentication (pure: a request in, a key name or a GatewayError out).

Theory: a ``KeyRing`` is built once per config (load and reload) from ``Config.keys``; ``check``
runs on every request while keys are configured, so the per-request work is one pass over the
request headers, one SHA-256 of the presented value, one dict lookup and one constant-time
compare (about 1-2 µs).  The dict is keyed by the SHA-256 of each secret, so the lookup never
compares secret bytes with ``==`` (whose time depends on how many leading bytes match); the
``hmac.compare_digest`` after it is the comparison of record.

Where a client puts its key, as each SDK sends it (all are accepted on every route, so any SDK
works against any dialect's endpoint):

    Authorization: Bearer <key>    OpenAI SDKs (and Anthropic's ``auth_token``)
    x-api-key: <key>               Anthropic SDKs
    x-goog-api-key: <key>          google-genai
    ?key=<key>                     Gemini REST examples, older Google clients

Every presented value is tried; the first that is a configured secret wins.  No credential
-> 401; credentials that match no key -> 401.  The message says which header this dialect's
clients use and never echoes what was sent.  The 401 renders as each dialect's own auth error
(``kind="authentication"``): OpenAI ``authentication_error`` with code ``invalid_api_key`` (as
OpenAI answers an unknown key; a missing one has no code, as there), Anthropic
``authentication_error``, Gemini ``UNAUTHENTICATED``, with ``www-authenticate: Bearer``
(RFC 9110 section 11.6.1: a 401 names its scheme).

A valid key whose ``models:`` does not list the requested alias -> 403 (``kind="permission"``:
OpenAI/Anthropic ``permission_error``, Gemini ``PERMISSION_DENIED``).  403, not 404: the
caller proved who it is, the alias exists, and "not allowed" is the true and actionable answer
(ask for access, or use another alias); a 404 would send an operator chasing a config typo
that is not there.  What a restricted key may learn is only the name of an alias it asked
for, never the others (the list of allowed aliases is not in the message).

``check(req, dialect, None)`` authenticates only (routes that name no model, and the first
step of a completion before its body is parsed); ``check(req, dialect, model)`` also applies
the key's ``models`` limit to the name the client asked for: a direct ``<provider>/<model>``
is not an alias, so a restricted key is refused it.

``limits``: name -> ``max_inflight`` of the keys that have one (empty when none does, so the
handler's per-request cost is one truth test); the counts live in the Gateway, across reloads.

``check_admin(req, admin_key)`` guards the management API: ``x-admin-key: <key>`` or
``Authorization: Bearer <key>``, compared in constant time (lengths included: both sides are
hashed first).  An empty admin key (management off) admits no one.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import unquote_to_bytes

from ..config_control import InboundKey
from ..errors import GatewayError

__all__ = ["KeyRing", "check_admin"]

_sha256 = hashlib.sha256
_KEY_HEADERS = frozenset({b"authorization", b"x-api-key", b"x-goog-api-key"})
_WWW_AUTHENTICATE = (b"www-authenticate", b'Bearer realm="plexus"')
# where each dialect's clients put the key (for the 401 message)
_WHERE = {
    "openai": "the Authorization header as 'Bearer <key>'",
    "responses": "the Authorization header as 'Bearer <key>'",
    "anthropic": "the x-api-key header",
    "gemini": "the x-goog-api-key header (or the key query parameter)",
}
_WHERE_ANY = "the Authorization header as 'Bearer <key>' (or x-api-key, x-goog-api-key)"


def _bearer(value: bytes) -> bytes | None:
    """The token of ``Bearer <token>`` (scheme case-insensitive, RFC 9110 section 11.1)."""
    if len(value) > 7 and value[:7].lower() == b"bearer ":
        return value[7:].strip()
    return None


def _query_key(query: bytes) -> bytes | None:
    if b"key=" not in query:
        return None
    for part in query.split(b"&"):
        if part.startswith(b"key="):
            return unquote_to_bytes(part[4:])
    return None


def _dialect_name(dialect) -> str | None:
    return dialect if isinstance(dialect, str) or dialect is None else getattr(dialect, "name", None)


class KeyRing:
    """The inbound keys of one config; ``enabled`` is False when none are configured."""

    __slots__ = ("enabled", "_by_digest", "_names", "_models", "limits")

    def __init__(self, keys: tuple[InboundKey, ...]) -> None:
        # digest -> (secret bytes, name, allowed aliases or None)
        self._by_digest: dict[bytes, tuple[bytes, str, frozenset[str] | None]] = {}
        for k in keys:
            secret = k.secret.encode("utf-8")
            self._by_digest[_sha256(secret).digest()] = (secret, k.name, k.models)
        self._names = tuple(k.name for k in keys)
        self._models = {k.name: k.models for k in keys}
        self.limits = {k.name: k.max_inflight for k in keys if k.max_inflight}  # empty: no key has one
        self.enabled = bool(self._by_digest)

    def allowed(self, name: str) -> frozenset | None:
        """The aliases key ``name`` may call (None: every alias)."""
        return self._models.get(name)

    def allow(self, name: str, alias_name: str) -> None:
        """403 unless key ``name`` (as ``check`` returned it) may call ``alias_name`` (the
        second step of a completion, once its body named the model: no second hash)."""
        models = self._models.get(name)
        if models is not None and alias_name not in models:
            raise GatewayError(403, f"API key '{name}' is not allowed to use model '{alias_name}'",
                               "permission", param="model")

    def check(self, req, dialect, alias_name: str | None) -> str | None:
        """The name of the request's key (None when keys are disabled); GatewayError 401 for a
        missing or unknown key, 403 when the key may not call ``alias_name``."""
        if not self.enabled:
            return None
        entry = None
        presented = False
        by_digest = self._by_digest
        for name, value in req.headers:
            if name in _KEY_HEADERS:
                if name == b"authorization":
                    if value[:7].lower() != b"bearer " or len(value) <= 7:
                        continue
                    value = value[7:].strip()
                elif not value.strip():
                    continue  # an empty header is no credential (a missing key, not a wrong one)
                presented = True
                entry = by_digest.get(_sha256(value).digest())
                if entry is not None and hmac.compare_digest(entry[0], value):
                    break
                entry = None
        if entry is None and req.query:
            value = _query_key(req.query)
            if value is not None:
                presented = True
                entry = by_digest.get(_sha256(value).digest())
                if entry is not None and not hmac.compare_digest(entry[0], value):
                    entry = None
        if entry is None:
            raise self._unauthorized(dialect, presented)
        if alias_name is not None:
            self.allow(entry[1], alias_name)
        return entry[1]

    @staticmethod
    def _unauthorized(dialect, presented: bool) -> GatewayError:
        where = _WHERE.get(_dialect_name(dialect), _WHERE_ANY)
        if presented:
            message, code = f"Incorrect API key provided. Send a Plexus key in {where}.", "invalid_api_key"
        else:
            message, code = f"Missing API key. Send a Plexus key in {where}.", None
        return GatewayError(401, message, "authentication", code=code, headers=[_WWW_AUTHENTICATE])

    def __repr__(self) -> str:
        return f"<KeyRing {len(self._names)} keys>"


def check_admin(req, admin_key: str) -> bool:
    """True when the request carries the admin key (``x-admin-key`` or ``Authorization: Bearer``)."""
    if not admin_key:
        return False
    want = _sha256(admin_key.encode("utf-8")).digest()
    ok = False
    for name, value in req.headers:
        if name == b"x-admin-key":
            value = value.strip()
        elif name == b"authorization":
            value = _bearer(value)
            if value is None:
                continue
        else:
            continue
        ok |= hmac.compare_digest(_sha256(value).digest(), want)
    return ok
