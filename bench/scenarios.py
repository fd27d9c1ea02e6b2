"""The bench's data: dialect request builders, the scenario table, the budget table, Plexus's config.

Theory: everything a later issue extends is a row in a table here, not a branch in the runner.
- DIALECTS: how a client of one API shape builds a request (path, headers, body) and how the bench
  recognises a complete success (the terminal stream event; a key every non-stream answer has).
- SCENARIOS: one row per measured case. A row names the dialect the client speaks to Plexus and the
  alias it asks for, and the provider dialect + mock model behind that alias. The DIRECT baseline sends
  the request Plexus would send upstream (provider dialect, provider model) straight to the mock, so
  "Plexus - direct" is what the gateway hop (and any translation) adds.
  A row may also be measured over TLS (the mock's TLS port; Plexus's provider trusts the bench's
  throw-away CA through `ca_file`) and through nginx, the plain reverse-proxy reference.
- BUDGETS: the performance budget lines from the issue, each naming a scenario and a metric key that
  metrics.py computes (see its docstring for the formulas); a line with `ref` is relative: Plexus's
  value must stay within `limit` times nginx's value of the same metric on scenario `ref`.
- plexus_config(): the YAML config (as a dict) the bench starts Plexus with.
Adding a dialect (e.g. Gemini) = one Dialect entry + its responses in mock_upstream.RESPONDERS + a
provider/aliases in plexus_config + scenario rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import orjson

# kinds of scenario
CLOSED = "closed"  # fixed concurrency, each connection sends back-to-back (throughput + latency)
OPEN = "open"  # fixed arrival rate, latency measured from the scheduled send time
PACED = "paced"  # closed loop on a paced stream (20 ms between events): time to first byte
LARGE = "large"  # small closed-loop requests alone, then beside clients sending 20 MB bodies

STREAM_EVENTS = 100  # upstream events in every mock stream (see mock_upstream)
LARGE_BODY_BYTES = 20 * 1024 * 1024  # request body of the large-body clients (S7)
LARGE_CLIENTS = 2  # connections sending large bodies back to back, per kind of large traffic

_PROMPT_SYSTEM = "You are a helpful assistant used for a gateway benchmark."
_PROMPT_USER = "Write a short greeting for the benchmark, about one hundred tokens long."


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    # (model, stream[, user text]) -> (path, extra headers, body bytes)
    build: Callable[..., tuple[str, tuple[tuple[str, str], ...], bytes]]
    stream_marker: bytes  # terminal event; must be in the last bytes of a complete stream
    json_marker: bytes  # every successful non-stream answer contains it


def _openai(model: str, stream: bool, user: str = _PROMPT_USER):
    body = {
        "model": model,
        "messages": [
            {"role": "system", "content": _PROMPT_SYSTEM},
            {"role": "user", "content": user},
        ],
        "max_tokens": 256,
        "temperature": 0.7,
    }
    if stream:
        body["stream"] = True
    return "/v1/chat/completions", (("authorization", "Bearer sk-bench"),), orjson.dumps(body)


def _anthropic(model: str, stream: bool, user: str = _PROMPT_USER):
    body = {
        "model": model,
        "max_tokens": 256,
        "system": _PROMPT_SYSTEM,
        "messages": [{"role": "user", "content": user}],
        "temperature": 0.7,
    }
    if stream:
        body["stream"] = True
    headers = (("x-api-key", "sk-bench"), ("anthropic-version", "2023-06-01"))
    return "/v1/messages", headers, orjson.dumps(body)


def _responses(model: str, stream: bool, user: str = _PROMPT_USER):
    """What Codex-like Responses clients send: instructions, one user item, store false."""
    body = {
        "model": model,
        "instructions": _PROMPT_SYSTEM,
        "input": [{"role": "user", "content": [{"type": "input_text", "text": user}]}],
        "max_output_tokens": 256,
        "temperature": 0.7,
        "store": False,
    }
    if stream:
        body["stream"] = True
    return "/v1/responses", (("authorization", "Bearer sk-bench"),), orjson.dumps(body)


DIALECTS: dict[str, Dialect] = {
    "openai": Dialect("openai", _openai, b"data: [DONE]", b'"choices"'),
    "anthropic": Dialect("anthropic", _anthropic, b"event: message_stop", b'"content"'),
    # a client dialect only (no mock provider speaks it): the Responses rows are translated
    "responses": Dialect("responses", _responses, b"event: response.completed", b'"output"'),
}


@dataclass(frozen=True, slots=True)
class Scenario:
    key: str
    title: str
    client: str  # dialect the client speaks to Plexus
    alias: str  # Plexus alias in the client's body
    provider: str  # dialect of the upstream behind the alias (and of the direct baseline)
    upstream_model: str  # mock model name behind the alias
    stream: bool
    kind: str = CLOSED
    rate: float = 0.0  # requests/s for OPEN scenarios
    base: str | None = None  # scenario whose CPU/request is subtracted for CPU per event
    events: int = 0  # upstream events per response (denominator of CPU per event)
    tls: bool = False  # the upstream (and the direct baseline) speaks TLS
    nginx: bool = False  # also measured through nginx (passthrough rows only)

    @property
    def translated(self) -> bool:
        return self.client != self.provider


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("S1", "OpenAI → OpenAI, non-stream", "openai", "oa", "openai", "mock-gpt", False,
             nginx=True),
    Scenario("S1-TLS", "S1 with the upstream over TLS (client → gateway stays HTTP)", "openai",
             "oa-tls", "openai", "mock-gpt", False, tls=True, nginx=True),
    Scenario("S2", "OpenAI → OpenAI, 100-event stream, batched (mock writes it in one piece)",
             "openai", "oa", "openai", "mock-gpt", True, base="S1", events=STREAM_EVENTS,
             nginx=True),
    Scenario("S2-ev", "OpenAI → OpenAI, 100-event stream, one event per write", "openai",
             "oa-split", "openai", "mock-gpt-split", True, base="S1", events=STREAM_EVENTS,
             nginx=True),
    Scenario("S3b", "OpenAI client → Anthropic provider, non-stream (base of S3)", "openai", "an",
             "anthropic", "mock-claude", False),
    Scenario("S3", "OpenAI client → Anthropic provider, 100-event stream, batched", "openai", "an",
             "anthropic", "mock-claude", True, base="S3b", events=STREAM_EVENTS),
    Scenario("S3-ev", "OpenAI client → Anthropic provider, 100-event stream, one event per write",
             "openai", "an-split", "anthropic", "mock-claude-split", True, base="S3b",
             events=STREAM_EVENTS),
    Scenario("R3b", "Responses client → Anthropic provider, non-stream (base of R3)", "responses",
             "an", "anthropic", "mock-claude", False),
    Scenario("R3", "Responses client → Anthropic provider, 100-event stream, batched", "responses",
             "an", "anthropic", "mock-claude", True, base="R3b", events=STREAM_EVENTS),
    Scenario("R3-ev", "Responses client → Anthropic provider, 100-event stream, one event per write",
             "responses", "an-split", "anthropic", "mock-claude-split", True, base="R3b",
             events=STREAM_EVENTS),
    Scenario("S4", "Anthropic client → OpenAI provider, non-stream", "anthropic", "oa", "openai",
             "mock-gpt", False),
    Scenario("S5@20", "fixed 20 req/s, OpenAI → OpenAI non-stream", "openai", "oa", "openai",
             "mock-gpt", False, kind=OPEN, rate=20.0),
    Scenario("S5@100", "fixed 100 req/s, OpenAI → OpenAI non-stream", "openai", "oa", "openai",
             "mock-gpt", False, kind=OPEN, rate=100.0),
    Scenario("S6", "paced stream (20 ms/event), OpenAI → OpenAI: time to first byte", "openai",
             "oa-paced", "openai", "mock-gpt-paced", True, kind=PACED),
    Scenario("S7", "S1 requests beside clients sending 20 MB bodies (OpenAI → OpenAI, and → "
             "Anthropic)", "openai", "oa", "openai", "mock-gpt", False, kind=LARGE),
)


@dataclass(frozen=True, slots=True)
class Budget:
    label: str
    scenario: str | None  # None: a whole-run metric (peak RSS)
    metric: str  # key computed by metrics.py
    limit: float  # absolute, or a factor of nginx's value when `ref` is set
    unit: str
    ref: str | None = None  # relative line: nginx's `metric` on this scenario is the reference


BUDGETS: tuple[Budget, ...] = (
    Budget("S1 gateway CPU per request", "S1", "cpu_ms_per_req", 0.25, "ms"),
    Budget("S4 gateway CPU per request", "S4", "cpu_ms_per_req", 0.35, "ms"),
    Budget("CPU per relayed event, one event per write (S2-ev), vs nginx relaying S2-ev", "S2-ev",
           "cpu_us_per_event", 1.2, "µs", ref="S2-ev"),
    Budget("CPU per translated event, one event per write (S3-ev), vs nginx relaying S2-ev",
           "S3-ev", "cpu_us_per_event", 1.5, "µs", ref="S2-ev"),
    Budget("CPU per translated event to a Responses client (R3-ev), vs nginx relaying S2-ev",
           "R3-ev", "cpu_us_per_event", 1.5, "µs", ref="S2-ev"),
    Budget("S1-TLS upstream TLS handshakes by Plexus per client connection", "S1-TLS",
           "tls_handshakes_per_conn", 1.25, "×"),
    Budget("added latency p50 at 20 req/s", "S5@20", "added_p50_ms", 0.3, "ms"),
    Budget("added latency p99 at 20 req/s", "S5@20", "added_p99_ms", 1.5, "ms"),
    Budget("added time to first byte, paced stream (p50)", "S6", "added_ttfb_p50_ms", 0.5, "ms"),
    Budget("gateway peak RSS (VmHWM)", None, "peak_rss_mib", 60.0, "MiB"),
)


def plexus_config(port: int, mock_port: int, tls_port: int = 0, ca_file: str = "") -> dict:
    """The config Plexus is started with: one provider per mock dialect (and one for the mock's
    TLS port, trusting the bench CA through `ca_file`), one alias per mock model. `proxy: null`:
    the bench measures the direct path even when the environment names a proxy."""
    base = f"http://127.0.0.1:{mock_port}/v1"
    oa, an = ("mock-gpt", "mock-gpt-paced", "mock-gpt-split"), ("mock-claude",
                                                                "mock-claude-paced",
                                                                "mock-claude-split")
    providers = {
        "mock_openai": {"type": "OpenAI", "api_base_url": base, "api_key": "sk-bench",
                        "models": list(oa), "proxy": None},
        "mock_anthropic": {"type": "Anthropic", "api_base_url": base, "api_key": "sk-bench",
                           "models": list(an), "proxy": None},
    }
    models = {alias: {"targets": [{"provider": "mock_openai", "model": m}]}
              for alias, m in zip(("oa", "oa-paced", "oa-split"), oa)}
    models.update({alias: {"targets": [{"provider": "mock_anthropic", "model": m}]}
                   for alias, m in zip(("an", "an-paced", "an-split"), an)})
    if tls_port:
        providers["mock_openai_tls"] = {
            "type": "OpenAI", "api_base_url": f"https://127.0.0.1:{tls_port}/v1",
            "api_key": "sk-bench", "models": ["mock-gpt"], "ca_file": ca_file, "proxy": None}
        models["oa-tls"] = {"targets": [{"provider": "mock_openai_tls", "model": "mock-gpt"}]}
    # usage records on, as deployed (BENCH_USAGE=0 turns the store off, to measure what it costs)
    usage = {"enabled": os.environ.get("BENCH_USAGE", "1") != "0"}
    config = {"server": {"host": "127.0.0.1", "port": port}, "usage": usage, "providers": providers,
              "models": models}
    # many instances' stores (bench/shared.py starts them; or point these at running servers)
    for key, var in (("usage_store", "BENCH_USAGE_STORE"), ("state_store", "BENCH_STATE_STORE")):
        if os.environ.get(var):
            config[key] = os.environ[var]
    return config


@dataclass(frozen=True, slots=True)
class Wire:
    """One precomputed request and how to judge its response."""

    data: bytes
    marker: bytes | None  # stream terminal event expected at the end of the body
    expect: bytes | None  # substring a non-stream body must contain


def wire(dialect: str, model: str, stream: bool, port: int, user: str | None = None) -> Wire:
    d = DIALECTS[dialect]
    path, headers, body = d.build(model, stream) if user is None else d.build(model, stream, user)
    head = [f"POST {path} HTTP/1.1", f"host: 127.0.0.1:{port}", "content-type: application/json",
            f"content-length: {len(body)}", "accept: " + ("text/event-stream" if stream else
                                                          "application/json")]
    head += [f"{k}: {v}" for k, v in headers]
    data = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    return Wire(data, d.stream_marker if stream else None, None if stream else d.json_marker)


def direct_wire(s: Scenario, mock_port: int) -> Wire:
    return wire(s.provider, s.upstream_model, s.stream, mock_port)


def plexus_wire(s: Scenario, plexus_port: int) -> Wire:
    return wire(s.client, s.alias, s.stream, plexus_port)


_DOC = ("Section {n}. The quarterly report covers revenue, costs and the outlook; tables follow "
        "with \"quoted\" figures, tabs\tand a line break.\n")


def large_document(size: int) -> str:
    """A long ASCII document (what a long-document or many-page prompt looks like) whose JSON
    encoding is about `size` bytes."""
    parts, total, n = [], 0, 0
    while total < size:
        piece = _DOC.format(n=n)
        parts.append(piece)
        total += len(piece) + 4  # JSON escapes: two quotes, the tab and the newline
        n += 1
    return "".join(parts)


def large_wires(port: int, direct: bool, size: int = LARGE_BODY_BYTES) -> dict[str, Wire]:
    """S7's large requests: {"passthrough": OpenAI → OpenAI, "translated": OpenAI client →
    Anthropic provider}. Direct: what Plexus sends upstream (the provider's dialect and model)."""
    doc = large_document(size)
    if direct:
        return {"passthrough": wire("openai", "mock-gpt", False, port, doc),
                "translated": wire("anthropic", "mock-claude", False, port, doc)}
    return {"passthrough": wire("openai", "oa", False, port, doc),
            "translated": wire("openai", "an", False, port, doc)}
