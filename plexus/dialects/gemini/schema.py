"""Tool and response schemas between JSON Schema and what the Gemini API accepts (pure).

The IR carries JSON Schema (ir.Tool.parameters, response_format.schema). Gemini has two fields
for a schema, and Plexus uses both, one per direction:

- `parametersJsonSchema` / `responseJsonSchema` (v1beta) take JSON Schema itself; the API
  documents a supported subset and ignores keywords outside it. `clean()` makes a schema safe
  for them: drops the meta keywords (`$schema`, `$id`, `$comment`, `$anchor`, `$vocabulary`),
  inlines local `$ref`s to `$defs`/`definitions` (a recursive reference is cut to `{}` at its
  second visit: "any value") and drops the definitions, turns `const` into a one-value `enum`,
  and makes sure the root of a parameters schema is an object. The rest (additionalProperties,
  anyOf, type arrays, formats, bounds) passes unchanged.
- `parameters` / `responseSchema` take the OpenAPI 3.0 `Schema` subset (UPPERCASE types,
  `nullable`). `to_gemini()` converts JSON Schema to it (used for v1 endpoints, which lack the
  JSON Schema fields): refs inlined as above; `type: [T, "null"]` and `anyOf` with a null
  member → `nullable`; several non-null types → `anyOf`; `oneOf` → `anyOf`; `allOf` merged;
  `const` → `enum`; enum values as strings (Gemini's rule); formats outside Gemini's list
  (date-time, enum, int32, int64, float, double) dropped; `examples[0]` → `example`;
  `required` names without a property dropped; an array without `items` gets `items: {}`;
  every other keyword (additionalProperties, patternProperties, ...) dropped.
- `from_gemini()` is the reverse, for Gemini clients that send `parameters`/`responseSchema`:
  lowercase types, `nullable` → a `"null"` in `type`, int64 bounds given as strings → ints,
  `example` → `examples`, `propertyOrdering` dropped, `ref`/`defs` → `$ref`/`$defs`. Both
  spellings are read (the google-genai SDK sends `any_of`, `max_items`, `property_ordering`).

All functions return new objects and never mutate their input.
"""

from __future__ import annotations

from typing import Any

_META = frozenset(("$schema", "$id", "$comment", "$anchor", "$vocabulary", "$dynamicAnchor"))
_DEFS = ("$defs", "definitions")
_MAX_DEPTH = 64

# ---------------------------------------------------------------- $ref resolution


def _defs_of(root: Any) -> dict:
    defs: dict = {}
    if isinstance(root, dict):
        for key in _DEFS:
            d = root.get(key)
            if isinstance(d, dict):
                for name, sub in d.items():
                    defs.setdefault(f"#/{key}/{name}", sub)
    return defs


def _resolve(ref: str, defs: dict, root: Any) -> Any:
    if ref in defs:
        return defs[ref]
    if ref == "#":
        return root
    if ref.startswith("#/"):  # a JSON pointer into the root
        node = root
        for tok in ref[2:].split("/"):
            tok = tok.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and tok in node:
                node = node[tok]
            elif isinstance(node, list) and tok.isdigit() and int(tok) < len(node):
                node = node[int(tok)]
            else:
                return None
        return node
    return None


# ---------------------------------------------------------------- JSON Schema → JSON Schema (clean)


def clean(schema: Any, *, root_object: bool = True) -> dict:
    """JSON Schema made safe for Gemini's `parametersJsonSchema`/`responseJsonSchema`."""
    if not isinstance(schema, dict):
        out: dict = {}
    else:
        out = _clean(schema, _defs_of(schema), schema, (), 0)
    if root_object:
        if not out:
            return {"type": "object", "properties": {}}
        if "type" not in out and "anyOf" not in out and "oneOf" not in out:
            out["type"] = "object"
    return out


def _clean(node: Any, defs: dict, root: Any, seen: tuple, depth: int) -> Any:
    if isinstance(node, list):
        return [_clean(v, defs, root, seen, depth + 1) for v in node]
    if not isinstance(node, dict):
        return node
    if depth > _MAX_DEPTH:
        return {}
    ref = node.get("$ref")
    if isinstance(ref, str):
        if ref in seen:
            return {}
        target = _resolve(ref, defs, root)
        if not isinstance(target, dict):
            return {}
        merged = _clean(target, defs, root, seen + (ref,), depth + 1)
        for k, v in node.items():  # siblings of $ref (description, ...) win
            if k != "$ref" and k not in _META and k not in _DEFS:
                merged[k] = _clean_value(k, v, defs, root, seen, depth)
        return merged
    out = {}
    for k, v in node.items():
        if k in _META or k in _DEFS:
            continue
        if k == "const":
            if "enum" not in node:
                out["enum"] = [v]
            continue
        out[k] = _clean_value(k, v, defs, root, seen, depth)
    return out


def _clean_value(key: str, v: Any, defs: dict, root: Any, seen: tuple, depth: int) -> Any:
    if key in ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas"):
        if isinstance(v, dict):
            return {name: _clean(sub, defs, root, seen, depth + 1) for name, sub in v.items()}
        return v
    if key in ("enum", "required", "examples", "default", "propertyOrdering"):
        return v  # data, not schemas
    if isinstance(v, (dict, list)):
        return _clean(v, defs, root, seen, depth + 1)
    return v


# ---------------------------------------------------------------- JSON Schema → Gemini Schema subset

_GEMINI_TYPES = {"string": "STRING", "number": "NUMBER", "integer": "INTEGER", "boolean": "BOOLEAN",
                 "array": "ARRAY", "object": "OBJECT", "null": "NULL"}
_GEMINI_FORMATS = frozenset(("date-time", "enum", "int32", "int64", "float", "double"))
_PASS = ("description", "title", "pattern", "minimum", "maximum", "minItems", "maxItems",
         "minLength", "maxLength", "minProperties", "maxProperties", "default", "example",
         "propertyOrdering")


def to_gemini(schema: Any) -> dict:
    """JSON Schema → Gemini's OpenAPI `Schema` subset (for `parameters` / `responseSchema`)."""
    if not isinstance(schema, dict):
        return {"type": "OBJECT", "properties": {}}
    flat = _clean(schema, _defs_of(schema), schema, (), 0)
    return _to_g(flat, 0)


def _merge_all_of(node: dict) -> dict:
    parts = node.get("allOf")
    if not isinstance(parts, list):
        return node
    merged = {k: v for k, v in node.items() if k != "allOf"}
    for p in parts:
        if not isinstance(p, dict):
            continue
        p = _merge_all_of(p)
        for k, v in p.items():
            if k == "properties" and isinstance(v, dict):
                merged["properties"] = {**merged.get("properties", {}), **v}
            elif k == "required" and isinstance(v, list):
                merged["required"] = list(dict.fromkeys([*merged.get("required", []), *v]))
            else:
                merged.setdefault(k, v)
    return merged


def _to_g(node: Any, depth: int) -> dict:
    if not isinstance(node, dict) or depth > _MAX_DEPTH:
        return {}
    node = _merge_all_of(node)
    out: dict = {}
    nullable = node.get("nullable") is True
    types = node.get("type")
    if isinstance(types, list):
        if "null" in types:
            nullable = True
        types = [t for t in types if t != "null"]
        if len(types) == 1:
            types = types[0]
        elif not types:
            types = None
        else:  # several types: anyOf of one schema per type
            rest = {k: v for k, v in node.items() if k != "type"}
            out["anyOf"] = [_to_g({**rest, "type": t}, depth + 1) for t in types]
            if nullable:
                out["nullable"] = True
            return out
    alts = node.get("anyOf")
    if alts is None:
        alts = node.get("oneOf")
    if isinstance(alts, list):
        real = []
        for a in alts:
            if isinstance(a, dict) and a.get("type") == "null":
                nullable = True
            else:
                real.append(a)
        if len(real) == 1 and isinstance(real[0], dict):
            inner = _to_g(real[0], depth + 1)
            for k in ("description", "title", "default"):
                if k in node and k not in inner:
                    inner[k] = node[k]
            if nullable:
                inner["nullable"] = True
            return inner
        if real:
            out["anyOf"] = [_to_g(a, depth + 1) for a in real]
    if isinstance(types, str) and types in _GEMINI_TYPES:
        out["type"] = _GEMINI_TYPES[types]
    if nullable:
        out["nullable"] = True
    for k in _PASS:
        if k in node:
            out[k] = node[k]
    if "example" not in out and isinstance(node.get("examples"), list) and node["examples"]:
        out["example"] = node["examples"][0]
    fmt = node.get("format")
    if isinstance(fmt, str) and fmt in _GEMINI_FORMATS:
        out["format"] = fmt
    enum = node.get("enum")
    if isinstance(enum, list):
        vals = []
        for v in enum:
            if v is None:
                out["nullable"] = True
                continue
            s = ("true" if v else "false") if isinstance(v, bool) else v if isinstance(v, str) else str(v)
            if s not in vals:
                vals.append(s)
        if vals:
            out["enum"] = vals
            if "type" not in out:
                out["type"] = "STRING"
    props = node.get("properties")
    if isinstance(props, dict):
        out["properties"] = {name: _to_g(sub, depth + 1) for name, sub in props.items()}
        if "type" not in out:
            out["type"] = "OBJECT"
    req = node.get("required")
    if isinstance(req, list):
        have = out.get("properties") or {}
        req = [r for r in req if isinstance(r, str) and r in have]
        if req:
            out["required"] = req
    items = node.get("items")
    if isinstance(items, dict):
        out["items"] = _to_g(items, depth + 1)
    elif out.get("type") == "ARRAY":
        pref = node.get("prefixItems")
        out["items"] = _to_g(pref[0], depth + 1) if isinstance(pref, list) and pref else {}
    return out


# ---------------------------------------------------------------- Gemini Schema → JSON Schema

_SNAKE = {
    "any_of": "anyOf", "max_items": "maxItems", "min_items": "minItems", "max_length": "maxLength",
    "min_length": "minLength", "max_properties": "maxProperties", "min_properties": "minProperties",
    "property_ordering": "propertyOrdering",
}
_INT_KEYS = frozenset(("maxItems", "minItems", "maxLength", "minLength", "maxProperties", "minProperties"))
_FLOAT_KEYS = frozenset(("minimum", "maximum"))
_DROP_FROM_GEMINI = frozenset(("propertyOrdering", "nullable"))


def from_gemini(schema: Any) -> dict:
    """Gemini `Schema` (either spelling) → JSON Schema."""
    if not isinstance(schema, dict):
        return {"type": "object", "properties": {}}
    out = _from_g(schema, 0)
    if not out:
        return {"type": "object", "properties": {}}
    return out


def _coerce_number(v: Any, as_int: bool) -> Any:
    if isinstance(v, str):
        try:
            return int(v) if as_int else float(v)
        except ValueError:
            return v
    if as_int and isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _from_g(node: Any, depth: int) -> Any:
    if not isinstance(node, dict) or depth > _MAX_DEPTH:
        return {}
    out: dict = {}
    nullable = node.get("nullable") is True
    for k, v in node.items():
        k = _SNAKE.get(k, k)
        if k in _DROP_FROM_GEMINI:
            continue
        if k == "type":
            if isinstance(v, str):
                t = v.lower()
                if t != "type_unspecified":
                    out["type"] = t
            elif isinstance(v, list):
                out["type"] = [t.lower() for t in v if isinstance(t, str)]
        elif k == "properties" and isinstance(v, dict):
            out["properties"] = {n: _from_g(s, depth + 1) for n, s in v.items()}
        elif k == "items":
            out["items"] = _from_g(v, depth + 1)
        elif k == "anyOf" and isinstance(v, list):
            out["anyOf"] = [_from_g(s, depth + 1) for s in v]
        elif k == "defs" and isinstance(v, dict):
            out["$defs"] = {n: _from_g(s, depth + 1) for n, s in v.items()}
        elif k == "ref" and isinstance(v, str):
            out["$ref"] = v.replace("#/defs/", "#/$defs/", 1)
        elif k == "example":
            out["examples"] = [v]
        elif k in _INT_KEYS:
            out[k] = _coerce_number(v, True)
        elif k in _FLOAT_KEYS:
            out[k] = _coerce_number(v, False)
        else:
            out[k] = v
    if nullable:
        t = out.get("type")
        if isinstance(t, str):
            out["type"] = [t, "null"]
        elif isinstance(t, list):
            if "null" not in t:
                out["type"] = [*t, "null"]
        elif "anyOf" in out:
            out["anyOf"] = [*out["anyOf"], {"type": "null"}]
    return out
