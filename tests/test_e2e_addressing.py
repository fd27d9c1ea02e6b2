"""End-to-end: direct `<provider>/<model>` addressing, `models: "*"` providers, and a target's
total_timeout, through a real Plexus process (tests/spawn.py) and the official OpenAI SDK.

- `routing.direct_addressing: true`: a client model `<provider>/<model>` reaches that provider
  with that model (checked against its list; any name for `models: "*"`); an alias of the same
  name wins; unknown provider or unlisted model is 404.
- `total_timeout` bounds the whole attempt: a stream that keeps sending but runs past it ends
  with the dialect's error event; a non-stream answer slower than it fails over to the next
  target.
"""

from __future__ import annotations

import threading

import httpx
import pytest

from fake_upstream import FakeUpstream, Reply, openai_chunk, sse_data
from spawn import start_plexus

MSGS = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    with FakeUpstream() as fake:
        base = fake.base_url
        cfg = f"""
routing: {{direct_addressing: true}}
providers:
  listed: {{type: OpenAI, api_base_url: "{base}/v1", api_key: k, models: [m1, m2]}}
  anything: {{type: OpenAI, api_base_url: "{base}/v1", api_key: k, models: "*"}}
  claude: {{type: Anthropic, api_base_url: "{base}/v1", api_key: k, models: [c1]}}
models:
  listed/m2: {{targets: [{{provider: listed, model: m1}}]}}
  bounded:
    selector: in_order
    targets:
      - {{provider: listed, model: m1, total_timeout: 0.6}}
      - {{provider: anything, model: backup}}
  bounded-stream: {{targets: [{{provider: listed, model: m2, total_timeout: 0.6}}]}}
"""
        with start_plexus(cfg, tmp_path_factory.mktemp("addr")) as px, \
                httpx.Client(base_url=px.url, timeout=10, trust_env=False) as http:
            yield fake, px, http


def chat(http, model, stream=False):
    return http.post("/v1/chat/completions", json={"model": model, "messages": MSGS, "stream": stream})


def test_direct_addressing_and_any_model(setup):
    fake, px, http = setup
    fake.reset()
    r = chat(http, "listed/m1")
    assert r.status_code == 200 and fake.last.json["model"] == "m1"
    assert r.headers["x-plexus-target"] == "listed/m1"
    r = chat(http, "anything/some-vendor/model-x:free")  # the first "/" splits; the rest is the model
    assert r.status_code == 200 and fake.last.json["model"] == "some-vendor/model-x:free"
    # translated: an OpenAI client addressing an Anthropic provider directly
    r = chat(http, "claude/c1")
    assert r.status_code == 200 and fake.last.path.endswith("/messages") and fake.last.json["model"] == "c1"
    # an alias with the same name wins
    r = chat(http, "listed/m2")
    assert r.status_code == 200 and fake.last.json["model"] == "m1"
    for bad in ("listed/nope", "nobody/m1", "claude/"):
        r = chat(http, bad)
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found", bad


def test_total_timeout_fails_over_before_the_first_byte(setup):
    fake, px, http = setup
    fake.reset()
    fake.script(Reply(hang=True))  # the first target never answers: the total limit ends the attempt
    r = chat(http, "bounded")
    assert r.status_code == 200 and r.headers["x-plexus-attempts"] == "2"
    assert r.headers["x-plexus-target"] == "anything/backup"


def test_total_timeout_ends_a_long_stream_with_an_error_event(setup):
    fake, px, http = setup
    fake.reset()
    chunks = [sse_data(openai_chunk("m2", {"content": f"{i} "})) for i in range(40)]
    reply = Reply.sse(chunks, delay=0.05)  # 2 s of steady events: never idle, longer than 0.6 s
    fake.script(reply)
    r = chat(http, "bounded-stream", stream=True)
    body = r.content
    assert r.status_code == 200
    last = [ln for ln in body.split(b"\n") if ln.startswith(b"data: ")][-1]
    assert last.startswith(b'data: {"error"') and b"total" in last
    assert fake.requests[-1].closed.wait(3)
