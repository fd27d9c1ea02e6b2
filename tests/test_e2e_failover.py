"""End-to-end: failover between targets, through a real Plexus process and the official SDKs.

Theory (the spec under test, gateway/attempt.py and relay.py): an attempt that fails before
anything reached the client moves on to the next planned target, whatever the failure: connection
refused, no response head within the target's ``ttfb_timeout``, 429 / 5xx / 401 / 403, a 2xx that
is not a valid answer, a 200 stream whose FIRST event is an error, or a stream head with no event
within ``first_event_timeout``. The client then gets the next target's normal answer, with
``x-plexus-attempts`` counting the tries and ``x-plexus-target`` naming the one that answered, and
the failed target cools down (the next request skips it). What is never retried: a request the
provider calls wrong (400/413/422: one upstream call, the provider's error returned), and anything
after the first byte reached the client (the stream ends with the dialect's error event). When
every target fails: one error in the caller's dialect naming the alias and every attempt, with the
most meaningful status (429 + retry-after only when every target rate-limited), and no key or
upstream address in it. Failover between provider types never carries a signature to a provider
that did not make it. A client that goes away mid-failover leaves no upstream call running.

Every alias here has its own target models, so one test's cooldowns never touch another's
(cooldown 30 s); fa serves the first targets, fb the backups (tests/failover_world.py).
"""

from __future__ import annotations

import base64
import json
import threading
import time

import httpx
import pytest

from fake_upstream import (DEFAULT_TEXT, Reply, anthropic_error, anthropic_stream, gemini_error, gemini_sse,
                           openai_error, openai_stream, parse_sse, sse_data, sse_event)
from failover_world import (DIALECTS, KEYMARK, NEXT, ask, ask_error, check_dialect_error, error_reply,
                            first_event_error, world)
from matrix_cases import ANTHROPIC_SIG, GEMINI_SIG

MODES = {"json": False, "stream": True}
KINDS = ("refused", "connect", "timeout", "429", "500", "503", "529", "401", "403", "html", "event", "comment",
         "empty", "partial")
STREAM_ONLY = ("event", "comment", "empty", "partial")  # kinds of a 200 stream's failure
TTFB = 0.3        # the ttfb_timeout of the hanging targets
CONNECT = 0.3     # the connect_timeout of the targets on the black hole
FIRST_EVENT = 0.3  # the first_event_timeout of the stalling targets
READ = 0.3        # the read_timeout of the targets that stall mid-stream

ALIASES: dict = {}


def pair(name: str, dialect: str, first: dict | None = None, *, first_host: str = "a", second_type: str | None = None,
         first_type: str | None = None, second: dict | None = None) -> str:
    """An in_order alias [first target on fa (or dead), backup on fb] with models of its own."""
    ft = first_type or dialect
    ALIASES[name] = ("in_order", [(f"{first_host}_{ft}", f"m1-{name}", first or {}),
                                  (f"b_{second_type or NEXT[dialect]}", f"m2-{name}", second or {})])
    return name


def cases(kinds=KINDS, modes=MODES):
    for kind in kinds:
        for d in DIALECTS:
            for mode in modes:
                if kind in STREAM_ONLY and mode == "json":
                    continue
                yield kind, d, mode


HOSTS = {"refused": "dead", "connect": "hole"}
EXTRAS = {"timeout": {"ttfb_timeout": TTFB}, "connect": {"connect_timeout": CONNECT}}
for _k, _d, _m in cases():
    pair(f"fo-{_k}-{_d}-{_m}", _d, EXTRAS.get(_k), first_host=HOSTS.get(_k, "a"))


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    with world(tmp_path_factory.mktemp("failover"), ALIASES, cooldown=[30]) as wd:
        yield wd


@pytest.fixture(autouse=True)
def _fresh(request):
    if "w" in request.fixturenames:
        request.getfixturevalue("w").reset()


def failing_reply(kind: str, ptype: str):
    if kind in ("refused", "timeout"):
        return Reply(hang=True)
    if kind == "html":
        return Reply(200, body=b"<html><body><h1>502 Bad Gateway</h1></body></html>", content_type="text/html")
    if kind == "event":
        return first_event_error(ptype)
    if kind == "comment":  # a comment is no event: the error after it is still the first one
        return Reply.sse([b": OPENROUTER PROCESSING\n\n"] + first_event_error(ptype).chunks)
    if kind == "empty":    # a 200 stream that ends without a single event
        return Reply.sse([])
    if kind == "partial":  # ... or in the middle of its first one
        first = {"openai": openai_stream, "anthropic": anthropic_stream, "gemini": gemini_sse}[ptype]("up")[0]
        return Reply.sse([first[:len(first) // 2]])
    status = int(kind)
    return error_reply(ptype, status, f"upstream status {status}", headers={"retry-after": "20"} if status == 429 else None)


# ---------------------------------------------------------------- failover for each failure kind

@pytest.mark.parametrize("kind,dialect,mode", list(cases()))
def test_failover_gives_the_second_targets_answer(w, kind, dialect, mode):
    alias = f"fo-{kind}-{dialect}-{mode}"
    if kind not in HOSTS:
        w.fa.script(failing_reply(kind, dialect))
    t0 = time.monotonic()
    a = ask(w, dialect, alias, MODES[mode])
    took = time.monotonic() - t0
    assert a.text == DEFAULT_TEXT
    assert a.attempts == "2", dict(a.headers)
    assert a.target == f"b_{NEXT[dialect]}/m2-{alias}"
    assert a.headers.get("x-plexus-alias") == alias
    fa, fb = w.calls()
    assert fa == ([] if kind in HOSTS else [f"m1-{alias}"])
    assert fb == [f"m2-{alias}"]
    if kind in ("timeout", "connect"):
        wait = TTFB if kind == "timeout" else CONNECT
        assert wait * 0.9 < took < wait + 3, took
    # the failed target cools down: the next request goes straight to the backup
    a2 = ask(w, dialect, alias, MODES[mode])
    assert a2.text == DEFAULT_TEXT and a2.attempts == "1" and a2.target == f"b_{NEXT[dialect]}/m2-{alias}"
    fa2, fb2 = w.calls()
    assert fa2 == fa and fb2 == [f"m2-{alias}"] * 2


# ---------------------------------------------------------------- what is never retried

NO_RETRY = [(s, d, m) for s in (400, 413, 422) for d in DIALECTS for m in MODES]
for _s, _d, _m in NO_RETRY:
    pair(f"nr-{_s}-{_d}-{_m}", _d)


@pytest.mark.parametrize("status,dialect,mode", NO_RETRY)
def test_request_errors_are_not_retried(w, status, dialect, mode):
    alias = f"nr-{status}-{dialect}-{mode}"
    w.fa.script(error_reply(dialect, status, f"prompt is wrong {status}"))
    e = ask_error(w, dialect, alias, MODES[mode])
    msg = check_dialect_error(dialect, e, status)
    assert f"prompt is wrong {status}" in msg  # the provider's own error
    assert e.headers.get("x-plexus-target") == f"a_{dialect}/m1-{alias}"
    assert w.calls() == ([f"m1-{alias}"], []), "a request error must reach exactly one target"
    # and it does not cool the target down: the next request goes to it again
    a = ask(w, dialect, alias, MODES[mode])
    assert a.text == DEFAULT_TEXT and a.target == f"a_{dialect}/m1-{alias}" and a.attempts == "1"


def partial_then(ptype: str, end: str) -> Reply:
    """A 200 stream that starts normally, then fails: ``cut`` (connection closed without the end)
    or ``error`` (the provider's error event after the first events)."""
    if ptype == "openai":
        chunks = openai_stream("up")[:3]
        err = sse_data(openai_error("overloaded mid-way", "server_error"))
    elif ptype == "anthropic":
        chunks = anthropic_stream("up")[:4]
        err = sse_event("error", anthropic_error("overloaded_error", "overloaded mid-way"))
    else:
        chunks = gemini_sse("up")[:2]
        err = sse_data(gemini_error(503, "overloaded mid-way", "UNAVAILABLE"), crlf=True)
    return Reply.sse(chunks, cut=True) if end == "cut" else Reply.sse(chunks + [err])


STREAM_ENDS = [(end, d, p) for end in ("cut", "error") for d in DIALECTS for p in (d, NEXT[NEXT[d]])]
for _e, _d, _p in STREAM_ENDS:
    pair(f"late-{_e}-{_d}-{_p}", _d, first_type=_p)

STREAM_REQUEST = {
    "openai": lambda alias: ("/v1/chat/completions", {"model": alias, "messages": [{"role": "user", "content": "hi"}],
                                                      "stream": True}),
    "anthropic": lambda alias: ("/v1/messages", {"model": alias, "max_tokens": 64, "stream": True,
                                                 "messages": [{"role": "user", "content": "hi"}]}),
    "gemini": lambda alias: (f"/v1beta/models/{alias}:streamGenerateContent?alt=sse",
                             {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}),
}


def is_error_event(dialect: str, event: tuple) -> bool:
    name, data = event
    obj = json.loads(data) if data.startswith("{") else None
    if dialect == "anthropic":
        return name == "error" and obj["type"] == "error" and isinstance(obj["error"]["message"], str)
    return isinstance(obj, dict) and isinstance(obj.get("error"), dict) and bool(obj["error"].get("message"))


@pytest.mark.parametrize("end,dialect,ptype", STREAM_ENDS)
def test_failure_after_the_first_byte_ends_the_stream_with_an_error_event(w, end, dialect, ptype):
    alias = f"late-{end}-{dialect}-{ptype}"
    w.fa.script(partial_then(ptype, end))
    path, body = STREAM_REQUEST[dialect](alias)
    with httpx.Client(base_url=w.url, timeout=10) as c:
        r = c.post(path, json=body, headers={"anthropic-version": "2023-06-01"})
    assert r.status_code == 200 and r.headers["x-plexus-target"] == f"a_{ptype}/m1-{alias}"
    events = parse_sse(r.content)
    assert len(events) >= 2 and not any(is_error_event(dialect, e) for e in events[:-1]), events
    assert is_error_event(dialect, events[-1]), events[-1]
    if dialect == "openai":
        assert b"[DONE]" not in r.content  # an error is not a clean end
    assert w.calls() == ([f"m1-{alias}"], []), "nothing is retried once the client has bytes"
    # the target cooled down: the next request skips it
    w.fa.script(partial_then(ptype, end))
    a = ask(w, dialect, alias, True)
    assert a.target == f"b_{NEXT[dialect]}/m2-{alias}" and a.attempts == "1" and a.text == DEFAULT_TEXT


# ---------------------------------------------------------------- every target failed

# case: (first target kind, second target kind, expected status)
ALL_FAILED = {"5xx": ("500", "503", 503), "refused": ("refused", "500", 502), "timeout": ("timeout", "timeout", 504),
              "connect": ("connect", "refused", 502),
              "429": ("429", "429", 429), "mixed": ("429", "500", 503), "auth": ("401", "html", 502),
              "event": ("event", "event", 503)}
ALL_CASES = [(c, d, m) for c in ALL_FAILED for d in DIALECTS for m in MODES if not (c == "event" and m == "json")]
for _c, _d, _m in ALL_CASES:
    _k1, _k2, _ = ALL_FAILED[_c]
    ALIASES[f"af-{_c}-{_d}-{_m}"] = ("in_order", [
        (f"{HOSTS.get(_k1, 'a')}_{_d}", f"m1-af-{_c}-{_d}-{_m}", EXTRAS.get(_k1, {})),
        (f"{'dead' if _k2 == 'refused' else 'b'}_{NEXT[_d]}", f"m2-af-{_c}-{_d}-{_m}", EXTRAS.get(_k2, {}))])


@pytest.mark.parametrize("case,dialect,mode", ALL_CASES)
def test_all_targets_failed(w, case, dialect, mode):
    alias = f"af-{case}-{dialect}-{mode}"
    k1, k2, status = ALL_FAILED[case]
    if k1 not in HOSTS:
        w.fa.script(error_reply(dialect, 429, f"slow down {KEYMARK}", headers={"retry-after": "20"}) if k1 == "429"
                    else first_event_error(dialect, f"Incorrect API key: sk-{KEYMARK}-a-{dialect}") if k1 == "event"
                    else failing_reply(k1, dialect))
    if k2 not in HOSTS:
        p2 = NEXT[dialect]
        w.fb.script(error_reply(p2, 429, "slow down", headers={"retry-after": "7"}) if k2 == "429"
                    else first_event_error(p2, f"Incorrect API key: sk-{KEYMARK}-b-{p2}") if k2 == "event"
                    else failing_reply(k2, p2))
    e = ask_error(w, dialect, alias, MODES[mode])
    msg = check_dialect_error(dialect, e, status)
    assert f"'{alias}'" in msg
    first = f"{HOSTS.get(k1, 'a')}_{dialect}/m1-{alias}"
    second = f"{'dead' if k2 == 'refused' else 'b'}_{NEXT[dialect]}/m2-{alias}"
    assert first in msg and second in msg, msg
    assert msg.index(first) < msg.index(second)  # in the order they were tried
    assert KEYMARK not in e.raw and "sk-" not in e.raw
    for addr in w.addresses():
        assert addr not in e.raw, f"upstream address {addr} in {e.raw}"
    assert "127.0.0.1" not in e.raw
    if case == "429":
        assert e.headers.get("retry-after") == "7", dict(e.headers)  # the sooner of the two
    elif case == "mixed":  # not "too many requests" when a target is broken, but when to come back
        assert e.headers.get("retry-after") == "20", dict(e.headers)
    else:
        assert "retry-after" not in e.headers
    assert w.calls() == ([] if k1 in HOSTS else [f"m1-{alias}"], [] if k2 in HOSTS else [f"m2-{alias}"])


# ---------------------------------------------------------------- stalls

def stalled(ptype: str, after: int, gate: threading.Event) -> Reply:
    """A 200 stream that sends its head and ``after`` events, then nothing (until ``gate``)."""
    chunks = {"openai": openai_stream, "anthropic": anthropic_stream, "gemini": gemini_sse}[ptype]("up")
    return Reply.sse(chunks, hold=gate, hold_after=after)


for _d in DIALECTS:
    pair(f"stall-first-{_d}", _d, {"first_event_timeout": FIRST_EVENT})
    pair(f"stall-mid-{_d}", _d, {"read_timeout": READ})


@pytest.fixture
def gate():
    g = threading.Event()
    yield g
    g.set()  # release the fake's sender whatever happened


@pytest.mark.parametrize("dialect", DIALECTS)
def test_stall_before_the_first_event_fails_over_within_first_event_timeout(w, gate, dialect):
    alias = f"stall-first-{dialect}"
    w.fa.script(stalled(dialect, 0, gate))
    t0 = time.monotonic()
    a = ask(w, dialect, alias, True)
    took = time.monotonic() - t0
    assert a.text == DEFAULT_TEXT and a.attempts == "2" and a.target == f"b_{NEXT[dialect]}/m2-{alias}"
    assert FIRST_EVENT * 0.9 < took < FIRST_EVENT + 2.5, took
    assert w.fa.requests[0].closed.wait(2), "the stalled upstream call must be closed"
    assert w.calls() == ([f"m1-{alias}"], [f"m2-{alias}"])


@pytest.mark.parametrize("dialect", DIALECTS)
def test_stall_mid_stream_ends_it_with_an_error_within_read_timeout(w, gate, dialect):
    alias = f"stall-mid-{dialect}"
    w.fa.script(stalled(dialect, 2, gate))
    path, body = STREAM_REQUEST[dialect](alias)
    t0 = time.monotonic()
    with httpx.Client(base_url=w.url, timeout=10) as c:
        r = c.post(path, json=body, headers={"anthropic-version": "2023-06-01"})
    took = time.monotonic() - t0
    assert r.status_code == 200 and r.headers["x-plexus-target"] == f"a_{dialect}/m1-{alias}"
    events = parse_sse(r.content)
    assert len(events) == 3 and is_error_event(dialect, events[-1]), events  # two events, then the error
    assert "did not send" in events[-1][1] or "timed out" in events[-1][1] or "within" in events[-1][1], events[-1]
    assert READ * 0.9 < took < READ + 2.5, took
    assert w.fa.requests[0].closed.wait(2), "the stalled upstream connection must be closed"
    assert not gate.is_set() and w.calls() == ([f"m1-{alias}"], [])


# ---------------------------------------------------------------- signatures across a failover

CLAUDE_TURN = [{"role": "user", "content": "What is 6*7?"},
               {"role": "assistant", "content": [
                   {"type": "thinking", "thinking": "Six sevens: 42.", "signature": ANTHROPIC_SIG},
                   {"type": "text", "text": "42."}]}]
GEMINI_TURN = [{"role": "user", "content": "And 7*8?"},
               {"role": "assistant", "content": [
                   {"type": "thinking", "thinking": "", "signature": "plexus-gemini:" + GEMINI_SIG},
                   {"type": "text", "text": "56."}]}]
HISTORIES = {"claude": CLAUDE_TURN, "gemini": GEMINI_TURN, "both": CLAUDE_TURN + GEMINI_TURN}
SIG_CASES = [(h, o, m) for h in HISTORIES for o in ("anthropic-first", "gemini-first") for m in MODES]
for _h, _o, _m in SIG_CASES:
    pair(f"sig-{_h}-{_o}-{_m}", "anthropic", first_type="anthropic" if _o == "anthropic-first" else "gemini",
         second_type="gemini" if _o == "anthropic-first" else "anthropic")


def _b64_forms(sig: str) -> list[bytes]:
    raw = base64.b64decode(sig)
    return [sig.encode(), base64.urlsafe_b64encode(raw), base64.b64encode(raw).rstrip(b"="),
            base64.urlsafe_b64encode(raw).rstrip(b"=")]


def check_anthropic_received(rec, history: str) -> None:
    """What an Anthropic provider got: Claude's own signed block unchanged, no Gemini signature."""
    assert b"plexus-gemini" not in rec.body and not any(f in rec.body for f in _b64_forms(GEMINI_SIG)), rec.body
    blocks = [b for m in rec.json["messages"] if isinstance(m["content"], list) for b in m["content"]]
    thinking = [b for b in blocks if b["type"] in ("thinking", "redacted_thinking")]
    if history == "gemini":
        assert thinking == []
    else:
        assert thinking == [CLAUDE_TURN[1]["content"][0]], thinking


def check_gemini_received(rec, history: str) -> None:
    """What a Gemini provider got: no Anthropic signature in any form, its own one restored."""
    for form in _b64_forms(ANTHROPIC_SIG) + [b"plexus-gemini", b"plexus-anthropic", b"cGxleHVz"]:
        assert form not in rec.body, (form, rec.body)
    sigs = [p["thoughtSignature"] for c in rec.json["contents"] for p in c["parts"] if "thoughtSignature" in p]
    assert sigs == ([GEMINI_SIG] if history != "claude" else []), sigs
    texts = [p["text"] for c in rec.json["contents"] if c["role"] == "model" for p in c["parts"] if "text" in p]
    assert "Six sevens: 42." not in texts  # Claude's thinking is not Gemini's to see as a thought


@pytest.mark.parametrize("history,order,mode", SIG_CASES)
def test_signatures_after_failover_between_provider_types(w, history, order, mode):
    alias = f"sig-{history}-{order}-{mode}"
    first, second = ("anthropic", "gemini") if order == "anthropic-first" else ("gemini", "anthropic")
    w.fa.script(error_reply(first, 503, "overloaded"))
    msgs = HISTORIES[history] + [{"role": "user", "content": "Thanks. And 8*9?"}]
    a = ask(w, "anthropic", alias, MODES[mode], messages=msgs, max_tokens=2048,
            thinking={"type": "enabled", "budget_tokens": 1024})
    assert a.text == DEFAULT_TEXT and a.attempts == "2" and a.target == f"b_{second}/m2-{alias}"
    (rec_a,), (rec_b,) = w.fa.requests, w.fb.requests
    checks = {"anthropic": check_anthropic_received, "gemini": check_gemini_received}
    checks[first](rec_a, history)
    checks[second](rec_b, history)


# ---------------------------------------------------------------- the client goes away

GONE = [(c, d) for c in ("no-head", "after-failover", "no-first-event") for d in DIALECTS]
for _c, _d in GONE:
    pair(f"gone-{_c}-{_d}", _d)


def impatient(w, dialect: str, alias: str, stream: bool, timeout: float = 0.3):
    """The SDK call with a client timeout: the client hangs up while Plexus waits upstream."""
    import anthropic
    import openai
    from google import genai
    from google.genai import types

    if dialect == "gemini":
        c = genai.Client(api_key="k", vertexai=False, http_options=types.HttpOptions(
            base_url=w.url, api_version="v1beta", timeout=int(timeout * 1000)))
        call = c.models.generate_content_stream if stream else c.models.generate_content
        with pytest.raises(Exception) as info:
            r = call(model=alias, contents="hi")
            list(r) if stream else r
        assert "timed out" in repr(info.value).lower() or "timeout" in type(info.value).__name__.lower(), info.value
        return
    c = w.clients[dialect].with_options(timeout=timeout)
    errors = (openai.APITimeoutError, anthropic.APITimeoutError)
    with pytest.raises(errors):
        if dialect == "openai":
            list(c.chat.completions.create(model=alias, messages=[{"role": "user", "content": "hi"}], stream=True)) \
                if stream else c.chat.completions.create(model=alias, messages=[{"role": "user", "content": "hi"}])
        else:
            kw = {"model": alias, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
            list(c.messages.create(stream=True, **kw)) if stream else c.messages.create(**kw)


@pytest.mark.parametrize("case,dialect", GONE)
def test_a_client_that_goes_away_leaves_no_upstream_call_running(w, gate, case, dialect):
    alias = f"gone-{case}-{dialect}"
    if case == "no-head":
        w.fa.script(Reply(hang=True))
    elif case == "after-failover":
        w.fa.script(error_reply(dialect, 503, "overloaded"))
        w.fb.script(Reply(hang=True))
    else:
        w.fa.script(stalled(dialect, 0, gate))
    impatient(w, dialect, alias, case == "no-first-event")
    fake = w.fb if case == "after-failover" else w.fa
    rec = fake.wait_requests(1)[0]
    assert rec.closed.wait(3), "the upstream call outlived its client"
    assert rec.closed_by_peer, "Plexus must be the one closing it"
    time.sleep(0.1)
    fa, fb = w.calls()
    assert fa == [f"m1-{alias}"] and fb == ([f"m2-{alias}"] if case == "after-failover" else []), (fa, fb)


pair("array-html", "gemini")


def test_gemini_json_array_stream_that_is_not_json_fails_over(w):
    """Gemini's stream without alt=sse is a JSON array relayed as it comes; an HTML answer is not one."""
    w.fa.script(Reply(200, body=b"<html><body>proxy error</body></html>", content_type="text/html"))
    r = httpx.post(f"{w.url}/v1beta/models/array-html:streamGenerateContent",
                   json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}, timeout=10)
    assert r.status_code == 200 and r.headers["x-plexus-attempts"] == "2", r.text
    assert r.headers["x-plexus-target"] == "b_openai/m2-array-html"
    items = r.json()  # a valid JSON array, translated from the OpenAI backup
    assert "".join(p["text"] for it in items for p in it["candidates"][0]["content"]["parts"]) == DEFAULT_TEXT
    assert w.calls() == (["m1-array-html"], ["m2-array-html"])
