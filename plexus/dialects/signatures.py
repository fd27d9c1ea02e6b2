"""Where a Gemini thoughtSignature travels through dialects that have no field for it.

Gemini 3 rejects a conversation whose earlier functionCall parts come back without the
thoughtSignature it sent. Clients of other dialects send back only their documented fields,
so the signature rides inside a field those clients keep verbatim:

- OpenAI dialect: inside the tool call `id`: "<call id>__thought__<signature>". Clients echo
  tool call ids in `tool_calls[].id` and `tool_call_id`, so both come back. The suffix is
  stripped before any provider sees the id (`unwrap_id`).
- Anthropic dialect: as the `signature` of a thinking block placed before the tool_use (or the
  text) it belongs to: "plexus-gemini:<signature>". ":" is not a base64 character, so a real
  Anthropic signature never carries this prefix, and such blocks are dropped for Anthropic
  targets (they would fail Anthropic's signature check).

Pure functions, no state.
"""

from __future__ import annotations

ID_SEP = "__thought__"
SIG_PREFIX = "plexus-gemini:"


def wrap_id(call_id: str, signature: str | None) -> str:
    return f"{call_id}{ID_SEP}{signature}" if signature else call_id


def unwrap_id(value: str) -> tuple[str, str | None]:
    """(call id as the provider knows it, Gemini signature or None)."""
    i = value.find(ID_SEP)
    if i < 0:
        return value, None
    return value[:i], value[i + len(ID_SEP):] or None


def wrap_sig(signature: str) -> str:
    return SIG_PREFIX + signature


def unwrap_sig(value: str | None) -> tuple[str | None, str | None]:
    """(anthropic_signature, gemini_signature): exactly one is set for a non-empty value."""
    if not value:
        return None, None
    if value.startswith(SIG_PREFIX):
        return None, value[len(SIG_PREFIX):]
    return value, None
