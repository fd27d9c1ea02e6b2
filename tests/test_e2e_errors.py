"""End-to-end: every error reaches the caller in the caller's dialect, with the right status, and
never carries an API key.

Theory (the spec under test): OpenAI `{"error":{"message","type","param","code"}}`, Anthropic
`{"type":"error","error":{"type","message"}}`, Gemini `{"error":{"code","message","status"}}`.
Plexus's own errors: unknown alias 404 naming the alias; bad JSON / missing or mistyped fields 400
(nothing sent upstream); unreachable upstream 502 at once; no response headers within ttfb 504;
an upstream 200 whose body is not JSON 502; a stream cut mid-way ends with the dialect's error
event and no clean finish. Upstream error statuses are kept (429's retry-after too) and a 401 from
a provider whose key came from an unset env variable names that variable.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from fake_upstream import (CLIENT_KEY, Reply, anthropic_error, anthropic_stream, assert_no_secrets,
                           gemini_error, openai_error, openai_stream, parse_sse)

MSGS = [{"role": "user", "content": "hi"}]
DIALECTS = ["openai", "anthropic", "gemini"]
GEMINI_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
ANTHROPIC_TYPE = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                  404: "not_found_error", 429: "rate_limit_error", 500: "api_error", 503: "api_error",
                  529: "overloaded_error"}


def request_for(dialect: str, alias: str, stream: bool = False):
    """(method path, json body, headers) for a minimal valid request in `dialect` to `alias`."""
    if dialect == "openai":
        body = {"model": alias, "messages": MSGS}
        if stream:
            body["stream"] = True
        return "/v1/chat/completions", body, {"authorization": f"Bearer {CLIENT_KEY}"}
    if dialect == "anthropic":
        body = {"model": alias, "max_tokens": 16, "messages": MSGS}
        if stream:
            body["stream"] = True
        return "/v1/messages", body, {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}
    action = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return (f"/v1beta/models/{alias}:{action}", {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
            {"x-goog-api-key": CLIENT_KEY})


def upstream_error(dialect: str, status: int, message: str) -> dict:
    if dialect == "openai":
        return openai_error(message, "rate_limit_error" if status == 429 else "invalid_request_error")
    if dialect == "anthropic":
        return anthropic_error(ANTHROPIC_TYPE[status], message)
    return gemini_error(status, message, GEMINI_STATUS[status])


def check_error(dialect: str, r: httpx.Response, status: int) -> str:
    """Assert the dialect's error shape and status; return the error message."""
    assert r.status_code == status, (r.status_code, r.content[:500])
    assert_no_secrets(r.content)
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers.get("content-type")
    body = r.json()
    if dialect == "openai":
        err = body["error"]
        assert {"message", "type", "param", "code"} <= set(err), err
        assert isinstance(err["type"], str)
    elif dialect == "anthropic":
        assert body["type"] == "error"
        err = body["error"]
        assert isinstance(err["type"], str)
    else:
        err = body["error"]
        assert err["code"] == status and isinstance(err["status"], str)
    assert isinstance(err["message"], str) and err["message"]
    return err["message"]


def post(http, dialect, alias, stream=False, **kw):
    path, body, headers = request_for(dialect, alias, stream)
    return http.post(path, json=body, headers=headers, **kw)


# ---------------------------------------------------------------- Plexus's own errors
@pytest.mark.parametrize("dialect", DIALECTS)
def test_unknown_alias_404(fake, http, dialect):
    msg = check_error(dialect, post(http, dialect, "no-such-alias"), 404)
    assert "no-such-alias" in msg
    assert fake.requests == []


BAD_BODIES = {
    "openai": [b'{"model": "gpt", "messages": [', b"[]", b'{"messages": []}', b'{"model": "gpt"}',
               b'{"model": "gpt", "messages": "hi"}', b'{"model": 123, "messages": []}'],
    "anthropic": [b'{"model": "claude", "max_tokens": 5, "messages": [', b'"str"',
                  b'{"max_tokens": 5, "messages": []}', b'{"model": "claude", "max_tokens": 5}',
                  b'{"model": "claude", "max_tokens": 5, "messages": {"a": 1}}',
                  b'{"model": ["claude"], "max_tokens": 5, "messages": []}'],
    "gemini": [b'{"contents": [', b"[1]", b"{}", b'{"contents": "hi"}', b""],
}


@pytest.mark.parametrize("dialect,raw", [(d, b) for d in DIALECTS for b in BAD_BODIES[d]])
def test_bad_request_400(fake, http, dialect, raw):
    path, _, headers = request_for(dialect, "gem" if dialect == "gemini" else "x")
    r = http.post(path, content=raw, headers={**headers, "content-type": "application/json"})
    check_error(dialect, r, 400)
    assert fake.requests == [], "an invalid request must not reach the upstream"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_dead_upstream_502_quickly(fake, http, dialect):
    t = time.monotonic()
    r = post(http, dialect, "dead")
    check_error(dialect, r, 502)
    assert time.monotonic() - t < 5, "connection refused must not wait for a timeout"


@pytest.mark.parametrize("stream", [False, True])
def test_hanging_upstream_504_after_ttfb(fake, http, stream):
    fake.script(Reply(hang=True))
    t = time.monotonic()
    r = post(http, "openai", "slow", stream=stream)
    elapsed = time.monotonic() - t
    check_error("openai", r, 504)
    assert 0.8 <= elapsed < 5, elapsed
    assert fake.last.json["model"] == "slow"
    assert fake.last.closed.wait(3), "Plexus should drop the upstream connection that timed out"


BAD_200 = {"html": (b"<html><body>502 Bad Gateway</body></html>", "text/html"),
           "empty": (b"", "application/json"),
           "truncated": (b'{"id":"x","choices":[{"message":{"content":"Hel', "application/json")}


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("kind", list(BAD_200))
def test_upstream_200_not_json_502(fake, http, dialect, kind):
    body, ctype = BAD_200[kind]
    fake.script(Reply(body=body, content_type=ctype))
    alias = {"openai": "gpt", "anthropic": "claude", "gemini": "gem"}[dialect]
    check_error(dialect, post(http, dialect, alias), 502)


def test_upstream_closes_without_answer_502(fake, http):
    fake.script(Reply(close=True), Reply(close=True))  # a pool may retry once on a fresh connection
    check_error("openai", post(http, "openai", "gpt"), 502)


# ---------------------------------------------------------------- upstream errors relayed
ALIAS = {"openai": "gpt", "anthropic": "claude", "gemini": "gem"}


@pytest.mark.parametrize("dialect,status", [(d, s) for d in DIALECTS for s in (400, 401, 403, 404, 429, 500, 503, 529)
                                             if (d, s) != ("gemini", 529)])  # Gemini has no 529
def test_upstream_error_status_kept(fake, http, dialect, status):
    fake.script(Reply(status, json=upstream_error(dialect, status, f"upstream says {status}")))
    msg = check_error(dialect, post(http, dialect, ALIAS[dialect]), status)
    assert f"upstream says {status}" in msg


@pytest.mark.parametrize("dialect", DIALECTS)
def test_429_retry_after_forwarded(fake, http, dialect):
    fake.script(Reply(429, json=upstream_error(dialect, 429, "slow down"), headers={"retry-after": "7"}))
    r = post(http, dialect, ALIAS[dialect])
    check_error(dialect, r, 429)
    assert r.headers.get("retry-after") == "7"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_stream_request_upstream_error_is_plain_error(fake, http, dialect):
    fake.script(Reply(503, json=upstream_error(dialect, 503, "busy")))
    r = post(http, dialect, ALIAS[dialect], stream=True)
    assert "busy" in check_error(dialect, r, 503)


def test_keyless_401_hints_env_variable(fake, http):
    fake.script(Reply(401, json=openai_error("Incorrect API key provided", "invalid_request_error",
                                             "invalid_api_key")))
    msg = check_error("openai", post(http, "openai", "local"), 401)
    assert "PLEXUS_TEST_UNSET_KEY" in msg


# ---------------------------------------------------------------- a stream cut mid-way
def read_stream(http, dialect, alias) -> tuple[int, bytes]:
    """Whole client-side stream; a connection closed without the last chunk is tolerated."""
    path, body, headers = request_for(dialect, alias, stream=True)
    data = b""
    with http.stream("POST", path, json=body, headers=headers) as r:
        try:
            for chunk in r.iter_raw():
                data += chunk
        except httpx.RemoteProtocolError:
            pass
    return r.status_code, data


def test_openai_stream_cut_ends_with_error_event(fake, http):
    chunks = openai_stream("up-gpt")[:3]  # role chunk + two content chunks, then the upstream dies
    fake.script(Reply.sse(chunks, cut=True))
    status, data = read_stream(http, "openai", "gpt")
    assert status == 200
    events = parse_sse(data)
    assert [e[1] for e in events[:3]] == [e[1] for e in parse_sse(b"".join(chunks))]
    last = json.loads(events[-1][1])
    assert isinstance(last.get("error"), dict) and last["error"].get("message"), events[-1]
    assert all(e[1] != "[DONE]" for e in events), "a cut stream must not look finished"
    assert all('"finish_reason":"stop"' not in e[1] for e in events)
    assert_no_secrets(data)


def test_anthropic_stream_cut_ends_with_error_event(fake, http):
    chunks = anthropic_stream("up-claude")[:4]  # message_start, ping, block start, one delta
    fake.script(Reply.sse(chunks, cut=True))
    status, data = read_stream(http, "anthropic", "claude")
    assert status == 200
    events = parse_sse(data)
    assert [e[0] for e in events[:4]] == ["message_start", "ping", "content_block_start", "content_block_delta"]
    assert events[-1][0] == "error", events[-1]
    err = json.loads(events[-1][1])
    assert err["type"] == "error" and err["error"]["type"] and err["error"]["message"]
    assert all(e[0] not in ("message_stop", "message_delta") for e in events)
    assert_no_secrets(data)


# ---------------------------------------------------------------- the SDKs' error classes
def test_openai_sdk_errors(fake, openai_client):
    import openai

    with pytest.raises(openai.NotFoundError) as ei:
        openai_client.chat.completions.create(model="no-such-alias", messages=MSGS)
    assert "no-such-alias" in str(ei.value)
    fake.script(Reply(429, json=openai_error("slow down", "rate_limit_error"), headers={"retry-after": "3"}))
    with pytest.raises(openai.RateLimitError) as ei:
        openai_client.chat.completions.create(model="gpt", messages=MSGS)
    assert ei.value.response.headers.get("retry-after") == "3"
    with pytest.raises(openai.InternalServerError) as ei:
        openai_client.chat.completions.create(model="dead", messages=MSGS)
    assert ei.value.status_code == 502
    with pytest.raises(openai.BadRequestError):
        openai_client.chat.completions.create(model="gpt", messages=MSGS, extra_body={"messages": "not a list"})
    fake.script(Reply.sse(openai_stream("up-gpt")[:2], cut=True))
    with pytest.raises(openai.APIError):
        for _ in openai_client.chat.completions.create(model="gpt", messages=MSGS, stream=True):
            pass


def test_anthropic_sdk_errors(fake, anthropic_client):
    import anthropic

    with pytest.raises(anthropic.NotFoundError):
        anthropic_client.messages.create(model="no-such-alias", max_tokens=5, messages=MSGS)
    fake.script(Reply(429, json=anthropic_error("rate_limit_error", "slow down"), headers={"retry-after": "9"}))
    with pytest.raises(anthropic.RateLimitError) as ei:
        anthropic_client.messages.create(model="claude", max_tokens=5, messages=MSGS)
    assert ei.value.response.headers.get("retry-after") == "9"
    fake.script(Reply(529, json=anthropic_error("overloaded_error", "Overloaded")))
    with pytest.raises(anthropic.OverloadedError):
        anthropic_client.messages.create(model="claude", max_tokens=5, messages=MSGS)
    fake.script(Reply.sse(anthropic_stream("up-claude")[:3], cut=True))
    with pytest.raises(anthropic.APIError):
        with anthropic_client.messages.stream(model="claude", max_tokens=5, messages=MSGS) as s:
            s.get_final_message()


def test_genai_sdk_errors(fake, genai_client):
    from google.genai import errors

    with pytest.raises(errors.ClientError) as ei:
        genai_client.models.generate_content(model="no-such-alias", contents="hi")
    assert ei.value.code == 404 and "no-such-alias" in str(ei.value)
    fake.script(Reply(429, json=gemini_error(429, "quota", "RESOURCE_EXHAUSTED")))
    with pytest.raises(errors.ClientError) as ei:
        genai_client.models.generate_content(model="gem", contents="hi")
    assert ei.value.code == 429 and ei.value.status == "RESOURCE_EXHAUSTED"
    with pytest.raises(errors.ServerError) as ei:
        genai_client.models.generate_content(model="dead", contents="hi")
    assert ei.value.code == 502
