"""Byte-exact relay of a JSON request body: replace the top-level ``model`` value in place (pure).

Theory
------
A same-dialect call forwards the client's body untouched except for the model name. Parsing and
re-serialising would rewrite numbers (orjson turns an integer above 2**64 into a float), key
order, spacing and escapes, so instead the byte span of every top-level ``"model"`` value is
found in the raw bytes and the new value (``orjson.dumps(model)``) is spliced in. Everything
else stays byte for byte. The caller has already parsed the body (a JSON object whose
``model`` is a string), so the input is known to be valid JSON.

Finding the span without a second full parse (the body may be 20 MB of base64):

* In valid JSON a real (unescaped) quote followed by ``model"`` and then ``:`` after optional
  white space can only be a key ``"model"``: inside a string the quotes would be escaped, and a
  closing quote cannot be followed by ``model"``. So ``bytes.find`` lists the candidates at C
  speed, each checked with a backslash count.
* Exactly one literal candidate key is the top-level one, unless the top-level key was spelled
  with escapes (``"mod\\u0065l"``). Such a key must contain ``\\u006`` (m, o, d, e and l are
  U+006x), so when that byte string is absent, one candidate settles it with no scan.
* The common small body has no backslash at all: then one literal ``"model"`` is the key, found
  with three ``find`` calls.
* A large body is large because of a few big strings (images, documents). Searching all its
  bytes costs ~0.7 ns a byte (~15 ms for 20 MB). When the caller passes the parsed tree and a
  walk of it (bounded: a few thousand containers) finds exactly one "model" key in the whole
  tree, any literal key in the raw bytes is that key, so the search looks at the first and last
  64 KiB first (SDKs put ``model`` first or after ``messages``): microseconds.
* Otherwise (several ``"model"`` keys, e.g. a tool schema property, or an escaped key) a full
  structural scan finds every key at depth 1: strings are skipped with ``find``, braces and
  brackets tracked. Every top-level ``model`` key's value is replaced, so a body with a
  duplicated key (where parsers keep the last) cannot smuggle the alias upstream either.
"""

from __future__ import annotations

import re

import orjson

__all__ = ["replace_model"]

_STRUCT = re.compile(rb'[{}\[\]"]')
_WS = b" \t\r\n"


def _string_end(raw: bytes, start: int) -> int:
    """Index just past the string whose opening quote is at ``start``."""
    j = raw.find(b'"', start + 1)
    while j != -1:
        k = j - 1
        while raw[k] == 92:  # backslash
            k -= 1
        if (j - 1 - k) % 2 == 0:
            return j + 1
        j = raw.find(b'"', j + 1)
    raise ValueError("unterminated string")


def _skip_ws(raw: bytes, i: int) -> int:
    n = len(raw)
    while i < n and raw[i] in _WS:
        i += 1
    return i


def _value_span(raw: bytes, after_key: int) -> tuple[int, int] | None:
    """The string value after a key that ends at ``after_key`` (None if not a key or not a string)."""
    i = _skip_ws(raw, after_key)
    if i >= len(raw) or raw[i] != 58:  # ":"
        return None
    i = _skip_ws(raw, i + 1)
    if i >= len(raw) or raw[i] != 34:
        return None
    return i, _string_end(raw, i)


def _literal_candidates(raw: bytes) -> list[tuple[int, int]]:
    spans = []
    i = raw.find(b'"model"')
    while i != -1:
        k = i - 1
        while k >= 0 and raw[k] == 92:
            k -= 1
        if (i - 1 - k) % 2 == 0:  # the quote is real
            span = _value_span(raw, i + 7)
            if span is not None:
                spans.append(span)
        i = raw.find(b'"model"', i + 7)
    return spans


def _top_level_spans(raw: bytes) -> list[tuple[int, int]]:
    """Value spans of every depth-1 key that decodes to "model" (a full structural scan)."""
    spans = []
    depth = 0
    pos = 0
    search = _STRUCT.search
    while True:
        m = search(raw, pos)
        if m is None:
            return spans
        i = m.start()
        c = raw[i]
        if c == 34:
            end = _string_end(raw, i)
            pos = end
            if depth == 1:
                key = raw[i:end]
                if (key == b'"model"' or (92 in key and orjson.loads(key) == "model")):
                    span = _value_span(raw, end)
                    if span is not None:
                        spans.append(span)
                        pos = span[1]
        else:
            depth += 1 if c == 123 or c == 91 else -1
            pos = i + 1


def _model_keys(obj, budget: int = 4096) -> int | None:
    """How many "model" keys the parsed tree holds (None: more containers than ``budget``)."""
    n = 0
    stack = [obj]
    pop, push = stack.pop, stack.append
    while stack:
        budget -= 1
        if budget < 0:
            return None
        x = pop()
        if type(x) is dict:
            if "model" in x:
                n += 1
            values = x.values()
        else:
            values = x
        for v in values:
            t = type(v)
            if t is dict or t is list:
                push(v)
    return n


def _first_key(raw: bytes) -> tuple[int, int] | None:
    """The span of some literal ``"model"`` key's value, looking near both ends first."""
    n = len(raw)
    for lo, hi, backwards in ((0, min(n, _WINDOW), False), (max(0, n - _WINDOW), n, True), (0, n, False)):
        i = raw.rfind(b'"model"', lo, hi) if backwards else raw.find(b'"model"', lo, hi)
        while i != -1:
            k = i - 1
            while k >= 0 and raw[k] == 92:
                k -= 1
            if (i - 1 - k) % 2 == 0:
                span = _value_span(raw, i + 7)
                if span is not None:
                    return span
            i = raw.rfind(b'"model"', lo, i) if backwards else raw.find(b'"model"', i + 7, hi)
    return None


_WINDOW = 64 * 1024


def replace_model(raw: bytes, model: str, parsed: dict | None = None) -> bytes:
    """``raw`` with every top-level ``"model"`` string value replaced by ``model``.

    ``parsed`` (the body as parsed, if the caller has it) lets a body whose tree holds exactly
    one "model" key skip the scan of all of its bytes: any literal key found is that one.
    """
    if raw.find(b"\\") == -1:  # no escapes at all: every quote is real, no key is spelled escaped
        i = raw.find(b'"model"')
        if i != -1 and raw.find(b'"model"', i + 7) == -1:  # the one and only "model": the key
            span = _value_span(raw, i + 7)
            if span is not None:
                return raw[:span[0]] + orjson.dumps(model) + raw[span[1]:]
    spans = None
    if parsed is not None and len(raw) > _WINDOW and _model_keys(parsed) == 1:
        span = _first_key(raw)
        spans = [span] if span is not None else _top_level_spans(raw)  # (an escaped key)
    if spans is None:
        spans = _literal_candidates(raw)
        # an escaped key needs a backslash: memchr first, the 5-byte search only when one exists
        if len(spans) != 1 or (raw.find(b"\\") != -1 and raw.find(b"\\u006") != -1):
            spans = _top_level_spans(raw)
    if not spans:  # the caller saw a top-level string "model"; unreachable for valid JSON
        raise ValueError("no top-level model value found")
    value = orjson.dumps(model)
    view = memoryview(raw)  # slices without copies: one copy of the body in all, by join
    parts = []
    last = 0
    for a, b in spans:
        parts.append(view[last:a])
        parts.append(value)
        last = b
    parts.append(view[last:])
    return b"".join(parts)
