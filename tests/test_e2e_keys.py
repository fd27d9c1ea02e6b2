"""Inbound API keys end to end: a real Plexus process (tests/spawn.py) with two keys and an admin
key, called the way users call it, with the official SDKs (openai, anthropic, google-genai) and
raw httpx.

    alice   every alias                     bob   only `only-one-alias`
    admin   the management API only (never an inference key, and no inference key is an admin key)

Each SDK's own way of sending its key works (OpenAI `Authorization: Bearer`, Anthropic
`x-api-key`, google-genai `x-goog-api-key`, Gemini REST `?key=`); a missing or wrong key is a 401
in the caller's dialect and the SDK raises its authentication error; a key outside its `models:`
is a 403 (the SDK's permission error). The client's key never reaches the provider (the fake
upstream sees the provider's key, and no `?key=`), the usage record names the key (never its
secret), and the secret is in no line Plexus logs at debug level.
"""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from fake_upstream import FakeUpstream
from spawn import start_plexus, usage_record

MARK = "k3y-SeCrEt"  # in every secret below: it must never show up in a log line or a response
ALICE = f"alice-{MARK}-9a8b"
BOB = f"bob-{MARK}-7c6d"
ADMIN = f"admin-{MARK}-5e4f"
WRONG = f"wrong-{MARK}-3210"
UP = {"openai": f"sk-prov-{MARK}-o", "anthropic": f"sk-prov-{MARK}-a", "gemini": f"g-prov-{MARK}-g"}
ALIAS = {"openai": "gpt", "anthropic": "claude", "gemini": "gem"}
# how each provider type carries the provider's key upstream
UP_AUTH = {"openai": ("authorization", f"Bearer {UP['openai']}"), "anthropic": ("x-api-key", UP["anthropic"]),
           "gemini": ("x-goog-api-key", UP["gemini"])}
MSGS = [{"role": "user", "content": "hi"}]
GEM_BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}

CONFIG = """\
admin_key: {admin}
usage: {{path: usage.db}}
routing: {{direct_addressing: true}}
keys:
  alice: {{secret: {alice}}}
  bob: {{secret: {bob}, models: [only-one-alias]}}
providers:
  p_openai: {{type: OpenAI, api_base_url: "{base}/v1", api_key: {up_o}, models: [up-gpt]}}
  p_anthropic: {{type: Anthropic, api_base_url: "{base}/v1", api_key: {up_a}, models: [up-claude]}}
  p_gemini: {{type: Gemini, api_base_url: "{base}/v1beta", api_key: {up_g}, models: [up-gemini]}}
models:
  gpt: {{targets: [{{provider: p_openai, model: up-gpt}}]}}
  claude: {{targets: [{{provider: p_anthropic, model: up-claude}}]}}
  gem: {{targets: [{{provider: p_gemini, model: up-gemini}}]}}
  only-one-alias: {{targets: [{{provider: p_openai, model: up-gpt}}]}}
"""


class World:
    def __init__(self, fake, px) -> None:
        self.fake, self.px, self.url = fake, px, px.url

    def openai(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=10)

    def anthropic(self, key: str) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=key, max_retries=0, timeout=10)

    def genai(self, key: str) -> genai.Client:
        return genai.Client(api_key=key, vertexai=False, http_options=genai_types.HttpOptions(
            base_url=self.url, api_version="v1beta", timeout=10_000))

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, trust_env=False)

    def record(self, rid: str) -> dict:
        return usage_record(self.url, ADMIN, rid)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with FakeUpstream() as fake:
        cfg = CONFIG.format(admin=ADMIN, alice=ALICE, bob=BOB, base=fake.base_url, up_o=UP["openai"],
                            up_a=UP["anthropic"], up_g=UP["gemini"])
        with start_plexus(cfg, tmp_path_factory.mktemp("keys"), log_level="debug") as px:
            yield World(fake, px)


@pytest.fixture
def w(world):
    world.fake.reset()
    return world


def assert_client_key_not_forwarded(fake) -> None:
    """No request the provider got carries a client secret (headers, path and query, body)."""
    for rec in fake.requests:
        seen = rec.target + " " + repr(rec.headers.items()) + rec.body.decode("utf-8", "replace")
        for secret in (ALICE, BOB, ADMIN, WRONG):
            assert secret not in seen, f"client secret forwarded upstream: {rec!r}"
        assert "key" not in rec.query, rec.target


def _genai_call(client: genai.Client, fn):
    """Run ``fn(client)``; returns (its result, the x-plexus-request-id of the last response)."""
    seen = {}
    hooks = client._api_client._httpx_client.event_hooks
    hooks["response"] = [lambda r: seen.__setitem__("id", r.headers.get("x-plexus-request-id"))]
    try:
        return fn(client), seen.get("id")
    finally:
        hooks["response"] = []


# ----------------------------------------------------------------------------- each SDK's key

@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_openai_sdk_bearer_key(w, stream):
    with w.openai(ALICE) as c:
        if stream:
            with c.chat.completions.with_streaming_response.create(model="gpt", messages=MSGS, stream=True) as r:
                text = "".join(ch.choices[0].delta.content or "" for ch in r.parse() if ch.choices)
                rid = r.headers["x-plexus-request-id"]
        else:
            r = c.chat.completions.with_raw_response.create(model="gpt", messages=MSGS)
            text, rid = r.parse().choices[0].message.content, r.headers["x-plexus-request-id"]
    assert text == "Hello from the fake upstream."
    up = w.fake.last
    assert up.headers.getall("authorization") == [f"Bearer {UP['openai']}"]
    assert_client_key_not_forwarded(w.fake)
    rec = w.record(rid)
    assert rec["key"] == "alice" and rec["alias"] == "gpt" and MARK not in repr(rec)
    # (a stream the SDK closes at [DONE] may be recorded client_closed: see
    # test_e2e_usage_lifecycle.py::test_openai_sdk_stream_closed_at_done_is_a_success)
    assert stream or rec["status"] == "success"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_anthropic_sdk_x_api_key(w, stream):
    with w.anthropic(ALICE) as c:
        kw = dict(model="claude", max_tokens=64, messages=MSGS)
        if stream:
            with c.messages.with_streaming_response.create(stream=True, **kw) as r:
                events = list(r.parse())
                assert events[-1].type == "message_stop"
                rid = r.headers["x-plexus-request-id"]
        else:
            r = c.messages.with_raw_response.create(**kw)
            assert r.parse().content[0].text == "Hello from the fake upstream."
            rid = r.headers["x-plexus-request-id"]
    up = w.fake.last
    assert up.headers.getall("x-api-key") == [UP["anthropic"]] and "authorization" not in up.headers
    assert_client_key_not_forwarded(w.fake)
    assert w.record(rid)["key"] == "alice"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_genai_sdk_x_goog_api_key(w, stream):
    client = w.genai(ALICE)
    if stream:
        text, rid = _genai_call(client, lambda c: "".join(
            ch.text or "" for ch in c.models.generate_content_stream(model="gem", contents="hi")))
    else:
        text, rid = _genai_call(client, lambda c: c.models.generate_content(model="gem", contents="hi").text)
    assert text == "Hello from the fake upstream."
    up = w.fake.last
    assert up.headers.getall("x-goog-api-key") == [UP["gemini"]]
    assert_client_key_not_forwarded(w.fake)
    assert w.record(rid)["key"] == "alice"


def test_gemini_query_key_is_accepted_and_not_forwarded(w):
    with w.http() as c:
        r = c.post(f"/v1beta/models/gem:generateContent?key={ALICE}", json=GEM_BODY)
        assert r.status_code == 200, r.text
        assert w.fake.last.raw_query == "" and w.fake.last.headers["x-goog-api-key"] == UP["gemini"]
        assert w.record(r.headers["x-plexus-request-id"])["key"] == "alice"
        r = c.post(f"/v1beta/models/gem:streamGenerateContent?alt=sse&key={ALICE}", json=GEM_BODY)
        assert r.status_code == 200 and b"Hello" in r.content
        assert w.fake.last.query == {"alt": ["sse"]}
        # "all are accepted on every route": ?key= on an OpenAI path, translated to another provider
        r = c.post(f"/v1/chat/completions?key={ALICE}", json={"model": "claude", "messages": MSGS})
        assert r.status_code == 200 and w.fake.last.headers["x-api-key"] == UP["anthropic"]
    assert_client_key_not_forwarded(w.fake)


def test_a_wrong_credential_beside_the_right_one_does_not_hide_it(w):
    with w.http() as c:
        r = c.post("/v1/messages", json={"model": "claude", "max_tokens": 9, "messages": MSGS},
                   headers={"authorization": f"Bearer {WRONG}", "x-api-key": ALICE})
        assert r.status_code == 200, r.text
        r = c.post("/v1/chat/completions", json={"model": "gpt", "messages": MSGS},
                   headers={"authorization": f"bearer {ALICE}"})  # the scheme is case-insensitive
        assert r.status_code == 200, r.text
    assert_client_key_not_forwarded(w.fake)


# ----------------------------------------------------------------------------- 401

def _assert_401_shape(dialect: str, r: httpx.Response, missing: bool) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Bearer")
    body = r.json()
    if dialect == "openai":
        assert set(body) == {"error"} and body["error"]["type"] == "authentication_error"
        assert body["error"]["code"] == (None if missing else "invalid_api_key")
        message = body["error"]["message"]
    elif dialect == "anthropic":
        assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
        message = body["error"]["message"]
    else:
        assert body["error"]["code"] == 401 and body["error"]["status"] == "UNAUTHENTICATED"
        message = body["error"]["message"]
    assert message.startswith("Missing API key" if missing else "Incorrect API key")
    assert MARK not in r.text


CALLS = {  # dialect -> (path, body, how that dialect's clients send a key)
    "openai": ("/v1/chat/completions", {"model": "gpt", "messages": MSGS}, lambda k: {"authorization": f"Bearer {k}"}),
    "anthropic": ("/v1/messages", {"model": "claude", "max_tokens": 9, "messages": MSGS}, lambda k: {"x-api-key": k}),
    "gemini": ("/v1beta/models/gem:generateContent", GEM_BODY, lambda k: {"x-goog-api-key": k}),
}


@pytest.mark.parametrize("dialect", list(CALLS))
def test_missing_and_wrong_key_are_401_in_the_dialects_shape(w, dialect):
    path, body, auth = CALLS[dialect]
    with w.http() as c:
        _assert_401_shape(dialect, c.post(path, json=body), missing=True)
        _assert_401_shape(dialect, c.post(path, json=body, headers=auth(WRONG)), missing=False)
        _assert_401_shape(dialect, c.post(path, json=body, headers=auth(ALICE[:-1])), missing=False)  # a prefix
        r = c.post(path, json={**body, "stream": True}, headers=auth(WRONG))
        _assert_401_shape(dialect, r, missing=False)
        rec = w.record(r.headers["x-plexus-request-id"])
        assert rec["key"] is None and rec["http_status"] == 401 and rec["status"] == "error"
    if dialect == "gemini":
        with w.http() as c:
            r = c.post(f"{path}?key={WRONG}", json=body)
            _assert_401_shape(dialect, r, missing=False)
    assert w.fake.requests == []  # nothing reached the provider


def test_sdks_raise_their_authentication_errors(w):
    with w.openai(WRONG) as c, pytest.raises(openai.AuthenticationError) as oe:
        c.chat.completions.create(model="gpt", messages=MSGS)
    assert oe.value.status_code == 401 and oe.value.code == "invalid_api_key"
    with w.anthropic(WRONG) as c, pytest.raises(anthropic.AuthenticationError) as ae:
        c.messages.create(model="claude", max_tokens=9, messages=MSGS)
    assert ae.value.status_code == 401 and ae.value.body["error"]["type"] == "authentication_error"
    wrong_genai = w.genai(WRONG)  # (kept referenced: a collected genai.Client closes its HTTP client)
    with pytest.raises(genai_errors.ClientError) as ge:
        wrong_genai.models.generate_content(model="gem", contents="hi")
    assert ge.value.code == 401 and ge.value.status == "UNAUTHENTICATED"
    with pytest.raises(genai_errors.ClientError) as ge:
        list(wrong_genai.models.generate_content_stream(model="gem", contents="hi"))
    assert ge.value.code == 401
    for e in (oe.value, ae.value, ge.value):
        assert MARK not in str(e)
    assert w.fake.requests == []


# ----------------------------------------------------------------------------- 403

def test_restricted_key_gets_403_outside_its_models(w):
    with w.openai(BOB) as c:
        r = c.chat.completions.with_raw_response.create(model="only-one-alias", messages=MSGS)
        assert r.parse().choices[0].message.content and w.fake.last.json["model"] == "up-gpt"
        assert w.record(r.headers["x-plexus-request-id"])["key"] == "bob"
        with pytest.raises(openai.PermissionDeniedError) as oe:
            c.chat.completions.create(model="gpt", messages=MSGS)
    err = oe.value
    assert err.status_code == 403 and err.body["type"] == "permission_error"
    assert "only-one-alias" not in err.message  # the allowed aliases are not revealed
    rec = w.record(err.response.headers["x-plexus-request-id"])
    assert (rec["key"], rec["http_status"], rec["status"]) == ("bob", 403, "error")

    with w.anthropic(BOB) as c:
        assert c.messages.create(model="only-one-alias", max_tokens=9, messages=MSGS).content
        with pytest.raises(anthropic.PermissionDeniedError) as ae:
            c.messages.create(model="claude", max_tokens=9, messages=MSGS)
    assert ae.value.body["error"]["type"] == "permission_error"
    bob_genai = w.genai(BOB)
    assert bob_genai.models.generate_content(model="only-one-alias", contents="hi").text
    with pytest.raises(genai_errors.ClientError) as ge:
        bob_genai.models.generate_content(model="gem", contents="hi")
    assert ge.value.code == 403 and ge.value.status == "PERMISSION_DENIED"

    n = len(w.fake.requests)
    with w.http() as c:
        def as_(key, model):
            return c.post("/v1/chat/completions", json={"model": model, "messages": MSGS},
                          headers={"authorization": f"Bearer {key}"}).status_code

        # direct addressing names no alias: a restricted key may not use it (alice may)
        assert as_(BOB, "p_openai/up-gpt") == 403
        # an alias that does not exist: still 403 for bob (it learns nothing about which exist)
        assert as_(BOB, "no-such-alias") == 403
        assert len(w.fake.requests) == n
        assert as_(ALICE, "p_openai/up-gpt") == 200
    assert_client_key_not_forwarded(w.fake)


# ----------------------------------------------------------------------------- other routes

def test_health_is_open_and_model_lists_need_a_key(w):
    with w.http() as c:
        r = c.get("/health")
        assert r.status_code == 200 and r.text == "OK"
        _assert_401_shape("openai", c.get("/v1/models"), missing=True)
        _assert_401_shape("openai", c.get("/v1/models", headers={"authorization": f"Bearer {WRONG}"}), missing=False)
        _assert_401_shape("gemini", c.get("/v1beta/models"), missing=True)
        _assert_401_shape("openai", c.get("/v1/models/gpt"), missing=True)
        r = c.get("/v1/models", headers={"authorization": f"Bearer {ALICE}"})
        assert r.status_code == 200 and {m["id"] for m in r.json()["data"]} >= {"gpt", "claude", "gem"}
        r = c.get("/v1/models", headers={"x-api-key": ALICE, "anthropic-version": "2023-06-01"})
        assert r.status_code == 200
        r = c.get(f"/v1beta/models?key={ALICE}")
        assert r.status_code == 200 and "models/gem" in {m["name"] for m in r.json()["models"]}
        assert c.get("/v1beta/models/gem", headers={"x-goog-api-key": ALICE}).status_code == 200
    with w.openai(ALICE) as oc:
        assert "gpt" in {m.id for m in oc.models.list()}
    with w.openai(WRONG) as oc, pytest.raises(openai.AuthenticationError):
        oc.models.list()


def test_admin_key_and_inference_keys_are_separate(w):
    with w.http() as c:
        chat = {"model": "gpt", "messages": MSGS}
        for headers in ({"authorization": f"Bearer {ADMIN}"}, {"x-api-key": ADMIN}, {"x-admin-key": ADMIN}):
            r = c.post("/v1/chat/completions", json=chat, headers=headers)
            assert r.status_code == 401, (headers, r.text)
        with w.openai(ADMIN) as oc, pytest.raises(openai.AuthenticationError):
            oc.chat.completions.create(**chat)
        for headers in ({"x-admin-key": ALICE}, {"authorization": f"Bearer {ALICE}"}, {"x-api-key": ALICE},
                        {"x-admin-key": BOB}):
            for path in ("/v0/management/usage", "/v0/management/config", "/metrics"):
                r = c.get(path, headers=headers)
                assert r.status_code == 401, (headers, path, r.text)
                assert MARK not in r.text
        assert c.get("/v0/management/usage", headers={"x-admin-key": ADMIN}).status_code == 200
        assert c.get("/v0/management/usage", headers={"authorization": f"Bearer {ADMIN}"}).status_code == 200
        assert c.get("/metrics", headers={"x-admin-key": ADMIN}).status_code == 200
        r = c.get("/v0/management/config", headers={"x-admin-key": ADMIN})  # secrets are masked
        assert r.status_code == 200 and "alice:" in r.text and MARK not in r.text
    assert w.fake.requests == []


def test_no_secret_in_the_debug_log(w):
    """Every path a key takes (accepted, missing, wrong, forbidden, admin) at DEBUG log level; then
    the whole log so far (this module's other tests included) holds no secret, only key names."""
    with w.http() as c:
        for dialect, (path, body, auth) in CALLS.items():
            for key in (ALICE, BOB, WRONG, ADMIN):
                c.post(path, json=body, headers=auth(key))
                c.post(path, json={**body, "stream": True}, headers=auth(key))
        c.post(f"/v1beta/models/gem:generateContent?key={ALICE}", json=GEM_BODY)
        c.post(f"/v1beta/models/gem:generateContent?key={WRONG}", json=GEM_BODY)
        c.get("/v1/models", headers={"authorization": f"Bearer {WRONG}"})
        c.get("/v0/management/usage", headers={"x-admin-key": WRONG})
        c.get("/v0/management/usage", headers={"x-admin-key": ADMIN})
    log = w.px.stderr()
    assert " DEBUG " in log, log[-2000:]  # the process does log at debug level
    leaked = [line for line in log.splitlines() if MARK in line]
    assert not leaked, leaked


# ----------------------------------------------------------------------------- keys and reload

def test_key_changes_apply_at_once_on_reload(tmp_path):
    """A reload swaps the key ring whole: a new key works on the next request, a removed one is
    refused, a changed `models:` limit applies; the admin key may come from $PLEXUS_ADMIN_KEY."""
    with FakeUpstream() as fake:
        cfg = CONFIG.format(admin=ADMIN, alice=ALICE, bob=BOB, base=fake.base_url, up_o=UP["openai"],
                            up_a=UP["anthropic"], up_g=UP["gemini"])
        env_admin = f"env-admin-{MARK}-1"
        cfg = cfg.replace(f"admin_key: {ADMIN}\n", "")  # the admin key from the environment instead
        with start_plexus(cfg, tmp_path, env={"PLEXUS_ADMIN_KEY": env_admin}) as px, \
                httpx.Client(base_url=px.url, timeout=10, trust_env=False) as c:
            def call(key, model="gpt"):
                return c.post("/v1/chat/completions", json={"model": model, "messages": MSGS},
                              headers={"authorization": f"Bearer {key}"}).status_code

            carol = f"carol-{MARK}-0"
            assert (call(ALICE), call(BOB, "claude"), call(carol)) == (200, 403, 401)
            new = cfg.replace(f"  alice: {{secret: {ALICE}}}\n", f"  carol: {{secret: {carol}}}\n")
            new = new.replace("models: [only-one-alias]", "models: [only-one-alias, claude]")
            r = c.post("/v0/management/config", headers={"x-admin-key": env_admin}, content=new)
            assert r.status_code == 200, r.text
            assert (call(ALICE), call(BOB, "claude"), call(BOB, "gpt"), call(carol)) == (401, 200, 403, 200)
            r = c.get("/v0/management/usage", headers={"x-admin-key": env_admin}, params={"key": "carol"})
            assert r.status_code == 200
            log = px.stderr()
        assert MARK not in log, [line for line in log.splitlines() if MARK in line]


def test_a_restricted_key_lists_only_its_models(w):
    with w.openai(BOB) as c:
        assert [m.id for m in c.models.list()] == ["only-one-alias"]
        with pytest.raises(openai.NotFoundError):
            c.models.retrieve("gpt")
    with w.openai(ALICE) as c:
        assert "gpt" in [m.id for m in c.models.list()]
    with httpx.Client(base_url=w.url, timeout=10, trust_env=False) as c:
        r = c.get("/v1/models", headers={"x-api-key": BOB, "anthropic-version": "2023-06-01"})
        assert r.json()["data"][0]["id"] == "only-one-alias" and r.json()["first_id"] == "only-one-alias"
        r = c.get("/v1beta/models", headers={"x-goog-api-key": BOB})
        assert [m["name"] for m in r.json()["models"]] == ["models/only-one-alias"]
