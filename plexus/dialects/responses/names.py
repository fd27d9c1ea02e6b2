"""What the Responses dialect carries through providers that have no field for it (pure).

Tool names. Codex sends `namespace` tools ({"type": "namespace", "name", "description",
"tools": [function tools]}) and answers name a function with `name` + `namespace`. Other
providers take flat names only, matching ^[A-Za-z0-9_-]{1,64}$ (OpenAI, Anthropic) and starting
with a letter or "_" (Gemini). `flat_name(namespace, name)` is "<namespace>__<name>" when that
fits those rules, else a sanitized, cut name ending in 8 hex digits of a SHA-256 of both (stable:
the same tool always gets the same flat name, so a later turn's history matches). `flat_name(None,
name)` is the name itself when it fits (a plain function tool is never renamed), else made to fit
the same way. The request parser records every renamed tool as
`req.extra["tool_names"] = {flat: (namespace or None, name)}`; the encoders read the same map
from `ctx.extra["tool_names"]` and split a call's flat name back (`split_name`), so Codex sees
the names it sent.

Reasoning items. A provider's thinking signature must come back verbatim on the next turn
(Anthropic `signature`, Gemini `thoughtSignature`). A Responses client sends back the reasoning
items it received, `encrypted_content` included, so the signature, the source provider type and
the thinking text (Anthropic checks it against the signature) ride in `encrypted_content`:
"plexus:" + base64url(JSON {"p": source, "s": signature, "t": text, "r": redacted}). OpenAI's
own encrypted_content is a Fernet token ("gAAAA..."), never starting with "plexus:" (":" is not
a base64url character), so `unwrap_reasoning` tells them apart: None for a value that is not
Plexus's (a reasoning item of another provider: dropped, never forwarded to another type).
"""

from __future__ import annotations

import base64
import hashlib
import re

import orjson

__all__ = ["flat_name", "split_name", "wrap_reasoning", "unwrap_reasoning", "REASONING_PREFIX", "REASONING_MARK"]

REASONING_PREFIX = "plexus:"
REASONING_MARK = b"plexus:eyJwIjoi"   # how every wrapped value starts ({"p":" in base64url): a body
                                      # holding one came through another provider type
_MAX = 64
_OK = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}\Z")
_BAD = re.compile(r"[^A-Za-z0-9_-]")


def flat_name(namespace: str | None, name: str) -> str:
    """The name a provider is sent for function `name` (of `namespace`, if any)."""
    full = f"{namespace}__{name}" if namespace else name
    if _OK.match(full):
        return full
    digest = hashlib.sha256(f"{namespace or ''}\x00{name}".encode()).hexdigest()[:8]
    base = _BAD.sub("_", full)
    if not base[:1].isalpha() and base[:1] != "_":
        base = "_" + base
    return f"{base[:_MAX - 9]}_{digest}"


def split_name(flat: str, names: dict | None) -> tuple[str | None, str]:
    """(namespace or None, name) of a provider's call to `flat`, by the request's map."""
    if names:
        hit = names.get(flat)
        if hit is not None:
            return hit[0], hit[1]
    return None, flat


def wrap_reasoning(source: str, signature: str | None, text: str = "", redacted: bool = False) -> str:
    doc = {"p": source, "s": signature, "t": text}
    if redacted:
        doc["r"] = True
    return REASONING_PREFIX + base64.urlsafe_b64encode(orjson.dumps(doc)).decode().rstrip("=")


def unwrap_reasoning(value) -> dict | None:
    """{"p", "s", "t", "r"} of a value `wrap_reasoning` made; None for anything else."""
    if type(value) is not str or not value.startswith(REASONING_PREFIX):
        return None
    raw = value[len(REASONING_PREFIX):]
    try:
        doc = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return None
    if type(doc) is not dict or type(doc.get("p")) is not str:
        return None
    sig = doc.get("s")
    return {"p": doc["p"], "s": sig if type(sig) is str else None,
            "t": doc.get("t") if type(doc.get("t")) is str else "", "r": doc.get("r") is True}
