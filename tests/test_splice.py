"""splice.replace_model: only the top-level model value changes; every other byte is the client's."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from plexus.splice import replace_model


def _check(raw: bytes, new: str = "up-model") -> bytes:
    out = replace_model(raw, new)
    before, after = json.loads(raw), json.loads(out)
    assert after["model"] == new
    before["model"] = new
    assert after == before  # nothing else changed in meaning
    return out


ODD = (b'{ "messages" : [ {"role":"user","content":"say \\"model\\": 1"} ] ,\n'
       b'  "n": 123456789012345678901234567890, "f": 1.0e+400000, "g": -0.000e-00,\r\n'
       b'  "u": "\\u00e9\\ud83d\\ude00\\/\\\\", "models": ["model"], "model_x": "model",\n'
       b'  "tools": [{"parameters": {"properties": {"model": {"type": "string"}}}}],\n'
       b'  "meta": {"model": "alias"},\t"model"\n:\t"alias" , "tail" : [1,2 , 3 ] }')


def test_only_the_model_value_changes_byte_for_byte():
    out = replace_model(ODD, "gpt-x")
    i = ODD.index(b'"model"\n:\t"alias"')
    expect = ODD[:i] + b'"model"\n:\t"gpt-x"' + ODD[i + len(b'"model"\n:\t"alias"'):]
    assert out == expect


@pytest.mark.parametrize("raw", [
    b'{"model":"a","messages":[]}',
    b'{"messages":[{"content":"x"}],"model":"a"}',
    b'  {"model" : "a\\"b\\\\"}  ',
    b'{"mod\\u0065l":"a","messages":[{"model":"a"}]}',            # escaped top-level key
    b'{"messages":[{"model":"a"}],"model":"a","x":{"model":"a"}}',  # nested keys with the same value
    b'{"a":"\\\\","model":"a"}',                                    # backslash at a string's end
    b'{"a":"x\\"model\\":\\"y","model":"a"}',                       # "model" text inside a string
])
def test_shapes(raw):
    out = _check(raw)
    # nested "model" keys are left alone
    nested_before = raw.count(b'{"model":"a"}')
    assert out.count(b'{"model":"a"}') == nested_before


def test_duplicate_top_level_keys_are_all_replaced():
    out = replace_model(b'{"model":"a","x":1,"model":"b"}', "t")
    assert out == b'{"model":"t","x":1,"model":"t"}'


def test_unicode_model_name_is_json_encoded():
    out = _check(b'{"model":"a"}', "m\u00e9/\"q\"")
    assert out == b'{"model":' + orjson.dumps("m\u00e9/\"q\"") + b"}"


def test_big_body_is_not_reserialised():
    img = "A" * 5_000_000
    raw = orjson.dumps({"messages": [{"role": "user", "content": img}], "model": "a"})
    out = replace_model(raw, "b")
    assert out == raw[:-4] + b'"b"}'


_keys = st.sampled_from(["model", "models", "mode", "x", "content", "modèl"])
_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                  st.text(max_size=8), st.sampled_from(["model", '"model":', "\\", "\\\"model\\\""]))
_json = st.recursive(_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                    st.dictionaries(_keys, inner, max_size=4)),
                     max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(body=st.dictionaries(_keys, _json, max_size=5), model=st.text(min_size=1, max_size=10),
       ascii_only=st.booleans(), indent=st.booleans())
def test_hypothesis_bodies(body, model, ascii_only, indent):
    body["model"] = model
    raw = json.dumps(body, ensure_ascii=ascii_only, indent=2 if indent else None).encode()
    out = replace_model(raw, "target")
    assert json.loads(out) == {**body, "model": "target"}
    # every byte outside the model value is unchanged ("target" is no leaf, so the first hit is ours)
    i = out.index(b'"model": "target"')
    old = json.dumps(model, ensure_ascii=ascii_only).encode()
    assert raw == out[:i] + b'"model": ' + old + out[i + len(b'"model": "target"'):]


@pytest.mark.parametrize("first", [True, False])
def test_large_bodies_with_the_parsed_tree(first):
    """The shortcut for large bodies (one "model" key in the tree) gives the same bytes."""
    big = "B" * 200_000
    body = {"model": "a", "messages": [{"role": "user", "content": big}]} if first else \
        {"messages": [{"role": "user", "content": big}], "model": "a", "stream": False}
    raw = json.dumps(body).encode()
    assert replace_model(raw, "t", json.loads(raw)) == replace_model(raw, "t") == raw.replace(b'"a"', b'"t"')
    # the middle: neither window holds the key
    mid = json.dumps({"x": big, "model": "a", "y": big}).encode()
    assert replace_model(mid, "t", json.loads(mid)) == mid.replace(b'"a"', b'"t"')
    # an escaped key and a "model" text value near the end
    esc = b'{"x":"' + big.encode() + b'","mod\\u0065l":"a","z":"model"}'
    assert json.loads(replace_model(esc, "t", json.loads(esc)))["model"] == "t"


@settings(max_examples=200, deadline=None)
@given(body=st.dictionaries(_keys, _json, max_size=5), model=st.text(min_size=1, max_size=10))
def test_hypothesis_large_bodies_agree(body, model):
    body["model"] = model
    body["pad"] = "p" * 70_000
    raw = json.dumps(body).encode()
    assert replace_model(raw, "target", json.loads(raw)) == replace_model(raw, "target")
