"""The access log and the request id (plexus/control/access_log.py, gateway/handler.py).

- Units: the text and JSON line of a record (every field the issue lists; "-" for unknowns),
  the writer thread (lines reach the stream in order, `close()` writes what is queued, a broken
  stream drops and counts instead of raising), the `log:` config section.
- A real Plexus process with `log: {access: json}` (and `text`): one line per request on stdout
  with request id, client address, key name, dialect, alias, target, attempts, status, tokens,
  duration, TTFT and bytes; errors get a line too; no secret (provider key, inbound key, a Gemini
  `?key=`) appears in it.
- `x-request-id`: a valid client id is returned on the response, sent upstream and stored in the
  usage record (`request_id`); an invalid or missing one is replaced by the record's own id; the
  provider's own x-request-id comes back as `x-upstream-request-id`; error answers carry it too.
"""

from __future__ import annotations

import io
import json

import httpx
import pytest

from fake_upstream import FakeUpstream, Reply
from spawn import start_plexus, usage_record, wait_for
from plexus.config import ConfigError, parse_config
from plexus.control.access_log import AccessLog, json_line, text_line
from plexus.control.usage import Usage

ADMIN = "adm-access-log-7"
SECRET = "sk-provider-secret-123"
INBOUND = "inbound-secret-456"


def _record(**kw) -> Usage:
    u = Usage("ab12cd", 1_780_000_000.25, "10.1.2.3", "openai", "/v1/chat/completions")
    u.key, u.alias, u.provider, u.model, u.attempts = "team-a", "fast", "p1", "m1", 2
    u.input_tokens, u.output_tokens, u.duration_ms, u.ttft_ms, u.bytes = 12, 34, 152.34, 80.06, 512
    for k, v in kw.items():
        setattr(u, k, v)
    return u


def test_text_line_has_every_field():
    line = text_line(_record(request_id="client-7"))
    assert line.endswith("\n") and line.count("\n") == 1
    for part in ("2026-05-28T", ".250Z", "10.1.2.3", "key=team-a", "POST /v1/chat/completions", "openai",
                 "alias=fast", "target=p1/m1", "attempts=2", " 200 success", "in=12", "out=34",
                 "duration=152.3ms", "ttft=80.1ms", "bytes=512", "id=client-7"):
        assert part in line, (part, line)


def test_text_line_unknowns_are_dashes():
    u = Usage("x1", 1.0, "", "gemini", "/v1beta/models/a:generateContent")
    u.status, u.http_status = "error", 404
    line = text_line(u)
    assert " - key=- " in line and "alias=- target=- " in line and "in=- out=-" in line and "ttft=-" in line
    assert " 404 error " in line and "id=x1" in line


def test_json_line_fields():
    d = json.loads(json_line(_record(status="error_stream", error="cut")))
    assert d["time"].endswith("Z") and d["request_id"] == d["id"] == "ab12cd"
    assert {k: d[k] for k in ("client_ip", "key", "dialect", "alias", "provider", "model", "attempts",
                              "http_status", "status", "input_tokens", "output_tokens", "bytes", "error")} == {
        "client_ip": "10.1.2.3", "key": "team-a", "dialect": "openai", "alias": "fast", "provider": "p1",
        "model": "m1", "attempts": 2, "http_status": 200, "status": "error_stream", "input_tokens": 12,
        "output_tokens": 34, "bytes": 512, "error": "cut"}
    assert d["duration_ms"] == 152.34 and d["ttft_ms"] == 80.06


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_writer_thread_writes_in_order_and_flushes_on_close(fmt):
    out = io.StringIO()
    a = AccessLog(fmt, out)
    for i in range(1000):
        a.add(_record(id=f"r{i}", request_id=f"r{i}"))
    a.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1000
    ids = [json.loads(x)["id"] if fmt == "json" else x.rsplit("id=", 1)[1] for x in lines]
    assert ids == [f"r{i}" for i in range(1000)]


def test_a_broken_stream_is_counted_not_raised():
    class Broken(io.StringIO):
        def write(self, s):
            raise BrokenPipeError("gone")
    a = AccessLog("text", Broken())
    a.add(_record())
    a.close()
    assert a.dropped == 1


def _cfg(log: str) -> dict:
    return {"log": log, "providers": {"p": {"type": "openai", "api_base_url": "http://x/v1", "models": ["m"]}},
            "models": {"a": {"targets": [{"provider": "p", "model": "m"}]}}}


def test_log_section():
    assert parse_config(_cfg({"level": "DEBUG", "access": "json"}), "t.yaml", env={}).log.access == "json"
    assert parse_config(_cfg({"access": False}), "t.yaml", env={}).log.access == "off"  # YAML `off`
    assert parse_config(_cfg(None), "t.yaml", env={}).log.level is None  # the flag, else info
    for bad, path in (({"access": "xml"}, "log.access"), ({"level": "loud"}, "log.level"),
                      ({"acces": "json"}, "log.acces")):
        with pytest.raises(ConfigError) as ei:
            parse_config(_cfg(bad), "t.yaml", env={})
        assert ei.value.key_path == path


# ---------------------------------------------------------------- a real process

def _config(base: str, access: str) -> str:
    return f"""\
admin_key: {ADMIN}
usage: {{path: u.db}}
log: {{access: {access}}}
keys:
  team-a: {{secret: {INBOUND}}}
providers:
  p1: {{type: OpenAI, api_base_url: "{base}/v1", api_key: {SECRET}, models: [m1]}}
  g1: {{type: Gemini, api_base_url: "{base}/v1beta", api_key: {SECRET}, models: [g1]}}
models:
  a: {{targets: [{{provider: p1, model: m1}}]}}
  g: {{targets: [{{provider: g1, model: g1}}]}}
"""


@pytest.fixture(scope="module")
def fake():
    with FakeUpstream() as f:
        yield f


@pytest.fixture
def world(fake, tmp_path):
    fake.reset()
    with start_plexus(_config(fake.base_url, "json"), tmp_path) as px:
        yield px, fake


def _access_lines(px) -> list[dict]:
    return [json.loads(x) for x in px.stderr().splitlines() if x.startswith('{"time"')]


def test_one_json_line_per_request(world):
    px, fake = world
    auth = {"authorization": f"Bearer {INBOUND}"}
    with httpx.Client(base_url=px.url, timeout=10, trust_env=False) as c:
        ok = c.post("/v1/chat/completions", headers={**auth, "x-request-id": "my-req-1"},
                    json={"model": "a", "messages": [{"role": "user", "content": "hi"}]})
        assert ok.status_code == 200
        missing = c.post("/v1/chat/completions", headers=auth, json={"model": "nope", "messages": []})
        assert missing.status_code == 404
        gem = c.post(f"/v1beta/models/g:generateContent?key={INBOUND}",
                     json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
        assert gem.status_code == 200
    lines = wait_for(lambda: (ls := _access_lines(px)) and len(ls) >= 3 and ls, 5, what="3 access lines")
    assert len(lines) == 3
    first = next(x for x in lines if x["request_id"] == "my-req-1")
    assert first["client_ip"] == "127.0.0.1" and first["key"] == "team-a" and first["dialect"] == "openai"
    assert (first["alias"], first["provider"], first["model"], first["attempts"]) == ("a", "p1", "m1", 1)
    assert (first["http_status"], first["status"]) == (200, "success")
    assert first["input_tokens"] > 0 and first["output_tokens"] > 0 and first["ttft_ms"] is not None
    assert first["bytes"] == len(ok.content) and first["duration_ms"] > 0
    err = next(x for x in lines if x["http_status"] == 404)
    assert err["status"] == "error" and err["alias"] is None and err["bytes"] == len(missing.content)
    g = next(x for x in lines if x["dialect"] == "gemini")
    assert g["endpoint"] == "/v1beta/models/g:generateContent"
    text = px.stderr()
    assert SECRET not in text and INBOUND not in text


def test_text_format_and_request_ids(fake, tmp_path):
    fake.reset()
    fake.script(Reply(json={"id": "x", "object": "chat.completion", "created": 1, "model": "m1",
                            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                         "finish_reason": "stop"}],
                            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}},
                      headers=[("x-request-id", "req_upstream_9")]))
    with start_plexus(_config(fake.base_url, "text"), tmp_path) as px:
        auth = {"authorization": f"Bearer {INBOUND}"}
        with httpx.Client(base_url=px.url, timeout=10, trust_env=False) as c:
            r = c.post("/v1/chat/completions", headers={**auth, "x-request-id": "abc-123_X.y"},
                       json={"model": "a", "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200
            assert r.headers["x-request-id"] == "abc-123_X.y"
            assert r.headers["x-upstream-request-id"] == "req_upstream_9"
            assert r.headers.get_list("x-request-id") == ["abc-123_X.y"]
            assert fake.requests[-1].headers.get("x-request-id") == "abc-123_X.y"
            rec = usage_record(px.url, ADMIN, r.headers["x-plexus-request-id"])
            assert rec["request_id"] == "abc-123_X.y" and rec["id"] != "abc-123_X.y"
            assert rec["bytes"] == len(r.content)
            # an unfit id (a space, too long) is replaced by the record's own
            for bad in ("has space", "x" * 129, 'q"uote'):
                r2 = c.post("/v1/chat/completions", headers={**auth, "x-request-id": bad},
                            json={"model": "a", "messages": [{"role": "user", "content": "hi"}]})
                assert r2.headers["x-request-id"] == r2.headers["x-plexus-request-id"]
                assert fake.requests[-1].headers.get("x-request-id") == r2.headers["x-plexus-request-id"]
            # error answers carry both ids
            e = c.post("/v1/chat/completions", headers={**auth, "x-request-id": "err-1"},
                       json={"model": "nope", "messages": []})
            assert e.status_code == 404 and e.headers["x-request-id"] == "err-1" and e.headers["x-plexus-request-id"]
            no_key = c.post("/v1/chat/completions", headers={"x-request-id": "err-2"}, json={})
            assert no_key.status_code == 401 and no_key.headers["x-request-id"] == "err-2"
        line = wait_for(lambda: next((x for x in px.stderr().splitlines() if "id=abc-123_X.y" in x), None), 5,
                        what="the text access line")
        assert "key=team-a POST /v1/chat/completions openai alias=a target=p1/m1 attempts=1 200 success" in line
        assert "in=3 out=1" in line and f"bytes={len(r.content)}" in line
