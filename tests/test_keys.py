"""Inbound key authentication: every place an SDK puts its key, 401 vs 403, each dialect's error
shape, the admin check, and that no presented value ever appears in an error."""

from __future__ import annotations

import time

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from plexus.config_control import InboundKey
from plexus.control.keys import KeyRing, check_admin
from plexus.dialects import registry
from plexus.errors import GatewayError
from plexus.server.messages import Request

KEYS = (
    InboundKey("team-a", "sk-team-a-1"),
    InboundKey("ci", "sk-ci-2", frozenset({"fast", "cheap"})),
)
RING = KeyRing(KEYS)


def req(headers=(), target=b"/v1/chat/completions") -> Request:
    return Request(b"POST", target, [(b"host", b"plexus"), (b"content-type", b"application/json"),
                                     *headers], b"{}")


def fail(request, dialect="openai", alias=None, ring=RING) -> GatewayError:
    with pytest.raises(GatewayError) as ei:
        ring.check(request, dialect, alias)
    return ei.value


@pytest.mark.parametrize("headers, target", [
    ([(b"authorization", b"Bearer sk-team-a-1")], b"/v1/chat/completions"),
    ([(b"authorization", b"bearer   sk-team-a-1 ")], b"/v1/chat/completions"),  # scheme case, spaces
    ([(b"x-api-key", b"sk-team-a-1")], b"/v1/messages"),
    ([(b"x-goog-api-key", b"sk-team-a-1")], b"/v1beta/models/m:generateContent"),
    ([], b"/v1beta/models/m:streamGenerateContent?alt=sse&key=sk-team-a-1"),
    ([], b"/v1beta/models/m:generateContent?key=sk%2Dteam%2Da%2D1"),           # percent-encoded
    # a wrong or foreign credential next to the right one does not hide it
    ([(b"authorization", b"Bearer sk-upstream"), (b"x-api-key", b"sk-team-a-1")], b"/v1/messages"),
    ([(b"authorization", b"Basic dXNlcjpwdw=="), (b"x-api-key", b"sk-team-a-1")], b"/v1/messages"),
    ([(b"x-api-key", b"nope")], b"/v1beta/models/m:generateContent?key=sk-team-a-1"),
])
def test_every_place_a_client_puts_its_key(headers, target):
    assert RING.check(req(headers, target), "openai", None) == "team-a"
    assert RING.check(req(headers, target), registry.get("gemini"), "anything") == "team-a"


def test_disabled_ring_admits_everyone():
    ring = KeyRing(())
    assert ring.enabled is False and RING.enabled is True
    assert ring.check(req(), "openai", "fast") is None
    assert ring.check(req([(b"authorization", b"Bearer whatever")]), "anthropic", None) is None


@pytest.mark.parametrize("dialect, where", [
    ("openai", "Authorization header as 'Bearer <key>'"),
    ("anthropic", "x-api-key header"),
    ("gemini", "x-goog-api-key header (or the key query parameter)"),
    (None, "Authorization header"),
])
def test_missing_key_is_401_naming_the_header(dialect, where):
    for request in (req(), req([(b"authorization", b"Basic dXNlcjpwdw==")]), req([(b"authorization", b"Bearer")]),
                    req([(b"x-api-key", b"")]), req([(b"x-goog-api-key", b" ")]),
                    req(target=b"/x?alt=sse&keys=1")):
        e = fail(request, dialect)
        assert (e.status, e.kind, e.code) == (401, "authentication", None)
        assert e.message.startswith("Missing API key") and where in e.message
        assert (b"www-authenticate", b'Bearer realm="plexus"') in e.headers


@pytest.mark.parametrize("headers, target", [
    ([(b"authorization", b"Bearer sk-WRONG-value")], b"/v1/chat/completions"),
    ([(b"x-api-key", b"sk-WRONG-value")], b"/v1/messages"),
    ([(b"x-goog-api-key", b"sk-WRONG-value")], b"/v1beta/models/m:generateContent"),
    ([], b"/v1beta/models/m:generateContent?key=sk-WRONG-value"),
    ([(b"authorization", b"Bearer sk-team-a-1x")], b"/v1/chat/completions"),   # a prefix is not the key
    ([(b"authorization", b"Bearer sk-team-a-")], b"/v1/chat/completions"),
])
def test_wrong_key_is_401_without_echoing_it(headers, target):
    e = fail(req(headers, target))
    assert (e.status, e.kind, e.code) == (401, "authentication", "invalid_api_key")
    assert e.message.startswith("Incorrect API key provided")
    assert "WRONG" not in e.message and "sk-team" not in e.message and "sk-" not in repr(e)


def test_401_renders_as_each_dialects_auth_error():
    e = fail(req([(b"x-api-key", b"bad")]), "openai")
    status, headers, body = registry.get("openai").render_error(e)
    err = orjson.loads(body)["error"]
    assert status == 401 and err["type"] == "authentication_error" and err["code"] == "invalid_api_key"
    assert (b"www-authenticate", b'Bearer realm="plexus"') in headers
    status, _, body = registry.get("anthropic").render_error(fail(req(), "anthropic"))
    assert status == 401 and orjson.loads(body)["error"]["type"] == "authentication_error"
    status, _, body = registry.get("gemini").render_error(fail(req(), "gemini"))
    assert status == 401 and orjson.loads(body)["error"]["status"] == "UNAUTHENTICATED"
    assert orjson.loads(body)["error"]["code"] == 401


def test_key_limited_to_some_aliases():
    ci = req([(b"authorization", b"Bearer sk-ci-2")])
    assert RING.check(ci, "openai", "fast") == "ci" and RING.check(ci, "openai", "cheap") == "ci"
    assert RING.check(ci, "openai", None) == "ci"  # authentication only
    e = fail(ci, "openai", "smart")
    assert (e.status, e.kind, e.param) == (403, "permission", "model")
    assert "'ci'" in e.message and "'smart'" in e.message
    assert "fast" not in e.message and "cheap" not in e.message and "sk-ci" not in e.message
    assert orjson.loads(registry.get("openai").render_error(e)[2])["error"]["type"] == "permission_error"
    assert orjson.loads(registry.get("anthropic").render_error(e)[2])["error"]["type"] == "permission_error"
    assert orjson.loads(registry.get("gemini").render_error(e)[2])["error"]["status"] == "PERMISSION_DENIED"
    assert fail(ci, "openai", "prov/fast").status == 403  # direct addressing names no alias
    # an unlimited key may call any alias
    assert RING.check(req([(b"x-api-key", b"sk-team-a-1")]), "anthropic", "smart") == "team-a"


def test_repr_shows_no_secret():
    assert "sk-" not in repr(RING) and "sk-" not in repr(KEYS)


@given(st.lists(st.tuples(st.sampled_from([b"authorization", b"x-api-key", b"x-goog-api-key", b"x-other"]),
                          st.binary(max_size=40))), st.binary(max_size=60))
@settings(max_examples=300, deadline=None)
def test_any_input_is_a_name_or_a_401(headers, query):
    request = Request(b"POST", b"/v1/x?" + query, headers)
    try:
        name = RING.check(request, "openai", None)
    except GatewayError as e:
        assert e.status == 401
    else:
        assert name in ("team-a", "ci")


def test_check_is_cheap():
    """A few µs per request with keys on (loose bound: this is a shared test machine)."""
    request = req([(b"accept", b"application/json"), (b"user-agent", b"OpenAI/Python 1.0"),
                   *[(b"x-stainless-%d" % i, b"v") for i in range(8)],
                   (b"authorization", b"Bearer sk-ci-2"), (b"content-length", b"2")])
    n = 20000
    t0 = time.perf_counter()
    for _ in range(n):
        RING.check(request, "openai", "fast")
    assert (time.perf_counter() - t0) / n < 20e-6


# --------------------------------------------------------------------------- admin

@pytest.mark.parametrize("headers, ok", [
    ([(b"x-admin-key", b"adm-1")], True),
    ([(b"authorization", b"Bearer adm-1")], True),
    ([(b"authorization", b"bearer adm-1")], True),
    ([(b"x-api-key", b"adm-1")], False),          # the inbound-key headers are not admin headers
    ([(b"x-admin-key", b"adm-2")], False),
    ([(b"x-admin-key", b"adm-1x")], False),
    ([(b"x-admin-key", b"")], False),
    ([(b"authorization", b"Basic adm-1")], False),
    ([(b"x-admin-key", b"wrong"), (b"authorization", b"Bearer adm-1")], True),
    ([], False),
])
def test_check_admin(headers, ok):
    assert check_admin(req(headers), "adm-1") is ok


def test_admin_off_admits_no_one():
    for headers in ([], [(b"x-admin-key", b"")], [(b"authorization", b"Bearer ")]):
        assert check_admin(req(headers), "") is False
