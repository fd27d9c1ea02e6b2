"""No secret leaves the gateway in a repr, a log line or an error body, at any log level.

Marker secrets stand in every place one can be: provider api_keys and configured header values,
proxy credentials, and the client's own credentials (authorization, x-api-key, x-goog-api-key,
?key=). A Plexus process at DEBUG level serves successes, upstream errors (one that echoes the
provider's key back), unreachable providers, a refusing proxy, bad requests and cut streams in
all three dialects; then every response (status line, headers, body) and the whole log are
searched for the marker.
"""

from __future__ import annotations

import socket

import httpx
import pytest

from fake_upstream import Reply, openai_chunk, sse_data
from plexus.config import parse_config
from plexus.server.messages import Request
from spawn import start_plexus, wait_for

MARK = "SeCrEt7"
CLIENT = {"authorization": f"Bearer client-{MARK}", "x-api-key": f"client-{MARK}",
          "x-goog-api-key": f"client-{MARK}", "anthropic-version": "2023-06-01"}


def _config(fake_url: str, dead: int, ca: str) -> str:
    tls = f", ca_file: {ca}" if ca else ""
    return f"""
log: {{access: json}}   # the access log's lines are checked too
providers:
  s_openai: {{type: OpenAI, api_base_url: "{fake_url}/v1", api_key: sk-{MARK}-o, models: [up-gpt],
             headers: {{X-Org-Token: hdr-{MARK}}}{tls}}}
  s_anthropic: {{type: Anthropic, api_base_url: "{fake_url}/v1", api_key: sk-{MARK}-a, models: [up-claude]{tls}}}
  s_gemini: {{type: Gemini, api_base_url: "{fake_url}/v1beta", api_key: g-{MARK}-g, models: [up-gemini]{tls}}}
  s_dead: {{type: OpenAI, api_base_url: "http://127.0.0.1:{dead}/v1", api_key: sk-{MARK}-d, models: [d]}}
  s_proxied: {{type: Anthropic, api_base_url: "https://api.example.invalid/v1", api_key: sk-{MARK}-p,
              models: [p], proxy: "http://user-{MARK}:pw-{MARK}@127.0.0.1:{dead}"}}
models:
  gpt: {{targets: [{{provider: s_openai, model: up-gpt}}]}}
  claude: {{targets: [{{provider: s_anthropic, model: up-claude}}]}}
  gem: {{targets: [{{provider: s_gemini, model: up-gemini}}]}}
  dead: {{targets: [{{provider: s_dead, model: d}}]}}
  proxied: {{targets: [{{provider: s_proxied, model: p}}]}}
"""


def test_reprs_hold_no_secret():
    cfg = parse_config({
        "providers": {"p": {"type": "OpenAI", "api_base_url": "https://x/v1", "api_key": f"sk-{MARK}",
                            "models": ["m"], "headers": {"X-T": MARK},
                            "proxy": f"http://u:{MARK}@proxy:3128"}},
        "models": {"a": {"targets": [{"provider": "p", "model": "m"}]}}}, env={})
    text = repr(cfg) + repr(cfg.providers["p"]) + repr(cfg.providers["p"].proxy) + str(cfg.providers["p"].proxy.display)
    assert MARK not in text and "proxy:3128" in text
    r = Request(b"POST", f"/v1beta/models/g:generateContent?key={MARK}".encode(), [(b"x-goog-api-key", MARK.encode())])
    assert MARK not in repr(r)


def test_no_secret_in_any_response_or_log_line_at_debug(fake, tmp_path, request):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: refused at once
    ca = ""
    if fake.ssl_context is not None:
        ca = str(tmp_path / "ca.pem")
        (tmp_path / "ca.pem").write_bytes(request.getfixturevalue("upstream_ca")[0].cert_pem.bytes())
    seen: list[bytes] = []
    try:
        with start_plexus(_config(fake.base_url, dead.getsockname()[1], ca), tmp_path, log_level="debug") as px, \
                httpx.Client(base_url=px.url, timeout=10, trust_env=False) as c:
            def call(method, url, **kw):
                r = c.request(method, url, headers={**CLIENT, **kw.pop("headers", {})}, **kw)
                seen.append(f"{r.status_code} {r.headers!r}".encode() + r.content)
                return r

            msgs = [{"role": "user", "content": "hi"}]
            gem = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
            for alias in ("gpt", "claude", "gem"):  # every direction, stream and not
                for stream in (False, True):
                    assert call("POST", f"/v1/chat/completions?key=q-{MARK}",
                                json={"model": alias, "messages": msgs, "stream": stream}).status_code == 200
                    assert call("POST", "/v1/messages?beta=true", json={"model": alias, "max_tokens": 9,
                                "messages": msgs, "stream": stream}).status_code == 200
                    method = "streamGenerateContent?alt=sse&" if stream else "generateContent?"
                    assert call("POST", f"/v1beta/models/{alias}:{method}key=q-{MARK}", json=gem).status_code == 200
            # an upstream 401 that echoes the key it was given, passthrough and translated
            for path, body in (("/v1/chat/completions", {"model": "gpt", "messages": msgs}),
                               ("/v1/messages", {"model": "gpt", "max_tokens": 9, "messages": msgs})):
                fake.script(Reply(401, json={"error": {"message": f"Incorrect API key provided: sk-{MARK}-o",
                                                       "type": "invalid_request_error"}}))
                assert call("POST", path, json=body).status_code == 401
            fake.script(Reply(500, body=b"<html>oops</html>", content_type="text/html"))
            assert call("POST", "/v1/messages", json={"model": "claude", "max_tokens": 9, "messages": msgs}).status_code == 500
            fake.script(Reply.sse([sse_data(openai_chunk("up-gpt", {"content": "x"}))], cut=True))
            call("POST", "/v1/messages", json={"model": "gpt", "max_tokens": 9, "messages": msgs, "stream": True})
            for alias in ("dead", "proxied"):
                assert call("POST", "/v1/messages", json={"model": alias, "max_tokens": 9, "messages": msgs}).status_code == 502
            assert call("POST", "/v1/chat/completions", content=b"{not json").status_code == 400
            assert call("POST", "/v1/chat/completions", json={"model": "nope", "messages": msgs}).status_code == 404
            assert call("GET", f"/v1beta/models?key=q-{MARK}").status_code == 200
            inference = len(seen) - 1   # (the model listing leaves no record, so no access line)
            wait_for(lambda: px.stderr().count('{"time"') >= inference, 5, what="every access log line")
            log = px.stderr()
    finally:
        dead.close()
    assert "DEBUG" in log and "upstream failure" in log, log[-2000:]  # the log did run at debug
    assert "127.0.0.1:" in log  # the proxy is named (by host:port)
    for body in seen:
        assert MARK.encode() not in body, body[:400]
    assert MARK not in log, [line for line in log.splitlines() if MARK in line]
