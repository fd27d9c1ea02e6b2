"""JSON Schema ↔ Gemini schema conversions (plexus/dialects/gemini/schema.py).

Theory: clean() keeps JSON Schema for parametersJsonSchema but inlines refs (cutting cycles),
drops meta keywords and never mutates its input; to_gemini() yields what the SDK's own Schema
type accepts; from_gemini() reads both spellings the google-genai SDK sends.
"""

from __future__ import annotations

from plexus.dialects.gemini import schema


def test_clean_inlines_refs_and_cuts_cycles():
    s = {"$schema": "x", "type": "object", "definitions": {"Node": {"type": "object", "properties": {
        "child": {"$ref": "#/definitions/Node"}, "v": {"const": "a", "description": "d"}}}},
         "properties": {"root": {"$ref": "#/definitions/Node", "description": "top"},
                        "p": {"$ref": "#/properties/root"}, "bad": {"$ref": "http://x/y"}}}
    node = {"type": "object", "description": "top", "properties": {
        "child": {}, "v": {"enum": ["a"], "description": "d"}}}
    assert schema.clean(s) == {"type": "object", "properties": {"root": node, "p": node, "bad": {}}}
    assert s["properties"]["root"] == {"$ref": "#/definitions/Node", "description": "top"}  # input untouched


def test_clean_root_defaults():
    assert schema.clean(None) == {"type": "object", "properties": {}}
    assert schema.clean({"properties": {"a": {}}}) == {"properties": {"a": {}}, "type": "object"}
    assert schema.clean({"type": "string"}, root_object=False) == {"type": "string"}


def test_to_gemini_subset():
    s = {"type": "object", "additionalProperties": False, "required": ["a", "ghost"],
         "properties": {
             "a": {"anyOf": [{"type": "string", "format": "email"}, {"type": "null"}], "description": "A"},
             "b": {"type": ["integer", "string"]},
             "c": {"oneOf": [{"type": "number"}, {"type": "boolean"}]},
             "d": {"type": "integer", "enum": [1, 2, None]},
             "e": {"type": "array"},
             "f": {"allOf": [{"type": "object", "properties": {"x": {"type": "string", "format": "date-time"}}},
                             {"required": ["x"]}]},
             "g": {"const": True, "examples": ["ex"]},
         }}
    assert schema.to_gemini(s) == {"type": "OBJECT", "required": ["a"], "properties": {
        "a": {"type": "STRING", "description": "A", "nullable": True},
        "b": {"anyOf": [{"type": "INTEGER"}, {"type": "STRING"}]},
        "c": {"anyOf": [{"type": "NUMBER"}, {"type": "BOOLEAN"}]},
        "d": {"type": "INTEGER", "nullable": True, "enum": ["1", "2"]},
        "e": {"type": "ARRAY", "items": {}},
        "f": {"type": "OBJECT", "properties": {"x": {"type": "STRING", "format": "date-time"}}, "required": ["x"]},
        "g": {"example": "ex", "enum": ["true"], "type": "STRING"},
    }}
    from google.genai import types
    types.Schema.model_validate(schema.to_gemini(s))


def test_from_gemini_both_spellings():
    g = {"type": "OBJECT", "nullable": False, "properties": {
        "a": {"type": "ARRAY", "items": {"type": "STRING", "enum": ["x"]}, "max_items": "3", "minItems": 1},
        "b": {"any_of": [{"type": "STRING"}, {"type": "INTEGER", "minimum": 1}], "nullable": True},
        "c": {"type": "NUMBER", "nullable": True, "example": 1.5, "format": "float"},
        "d": {"type": "TYPE_UNSPECIFIED", "description": "anything"}},
        "required": ["a"], "property_ordering": ["a", "b"], "propertyOrdering": ["a"]}
    assert schema.from_gemini(g) == {"type": "object", "required": ["a"], "properties": {
        "a": {"type": "array", "items": {"type": "string", "enum": ["x"]}, "maxItems": 3, "minItems": 1},
        "b": {"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 1}, {"type": "null"}]},
        "c": {"type": ["number", "null"], "examples": [1.5], "format": "float"},
        "d": {"description": "anything"}}}


