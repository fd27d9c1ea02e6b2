"""Shared harness of the routing/failover e2e tests (test_e2e_failover.py, test_e2e_routing.py).

Theory: a "world" is two plain-HTTP fake upstreams, ``fa`` and ``fb``, each serving one provider of
every type (``a_openai``/``a_anthropic``/``a_gemini`` on fa, ``b_*`` on fb; ``models: "*"``), plus
``dead_*`` providers on a port bound but never listening (connection refused), ``hole_*`` on a port
whose accept queue is full (a connect there times out), and one real Plexus
process (``spawn.start_plexus``) whose aliases the test module generates. The fake a request landed
on and the model it names say which target was tried, so "which targets were called, in which
order" is read from the two request logs. Every provider key holds ``KEYMARK`` so a leak shows.
The clients are the official SDKs (``max_retries=0``): ``ask`` returns the answer text and the
response headers in any dialect, stream or not; ``ask_error`` the status, headers and JSON body of
an error answer (read from the SDK's exception).
"""

from __future__ import annotations

import contextlib
import json
import socket
from dataclasses import dataclass, field

import httpx

from fake_upstream import (CLIENT_KEY, FakeUpstream, Reply, anthropic_error, gemini_error, openai_error,
                           sse_data, sse_event)
from spawn import start_plexus

DIALECTS = ("openai", "anthropic", "gemini")
NEXT = {"openai": "anthropic", "anthropic": "gemini", "gemini": "openai"}  # the backup's provider type
TYPES = {"openai": "OpenAI", "anthropic": "Anthropic", "gemini": "Gemini"}
KEYMARK = "KEYMARK"
MSGS = [{"role": "user", "content": "hi"}]
GEMINI_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 413: "INVALID_ARGUMENT",
                 422: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
                 529: "UNAVAILABLE"}
ANTHROPIC_TYPE = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                  413: "request_too_large", 422: "invalid_request_error", 429: "rate_limit_error",
                  500: "api_error", 503: "api_error", 529: "overloaded_error"}
OPENAI_TYPE = {429: "rate_limit_error", 500: "server_error", 503: "server_error", 529: "server_error"}


def provider_model(rec) -> str:
    """The model a recorded upstream request named (body.model, or the Gemini URL path)."""
    if rec.json and isinstance(rec.json, dict) and "model" in rec.json:
        return rec.json["model"]
    return rec.path.rsplit("/", 1)[-1].partition(":")[0]


def error_body(ptype: str, status: int, message: str) -> dict:
    """An upstream error body in the provider type's own shape."""
    if ptype == "openai":
        return openai_error(message, OPENAI_TYPE.get(status, "invalid_request_error"))
    if ptype == "anthropic":
        return anthropic_error(ANTHROPIC_TYPE[status], message)
    return gemini_error(status, message, GEMINI_STATUS[status])


def error_reply(ptype: str, status: int, message: str = "upstream says no", **kw) -> Reply:
    return Reply(status, json=error_body(ptype, status, message), **kw)


def first_event_error(ptype: str, message: str = "Overloaded") -> Reply:
    """A 200 stream whose FIRST event is an error (the provider type's way of saying so)."""
    if ptype == "anthropic":
        return Reply.sse([sse_event("error", anthropic_error("overloaded_error", message))])
    if ptype == "openai":
        return Reply.sse([sse_data(openai_error(message, "server_error"))])
    return Reply.sse([sse_data(gemini_error(503, message, "UNAVAILABLE"), crlf=True)])


@dataclass
class World:
    fa: FakeUpstream
    fb: FakeUpstream
    dead_port: int
    hole_port: int
    px: object
    clients: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.px.url

    def reset(self) -> None:
        self.fa.reset()
        self.fb.reset()

    def calls(self) -> tuple[list[str], list[str]]:
        """The models requested from fa and from fb, in arrival order."""
        return ([provider_model(r) for r in self.fa.requests], [provider_model(r) for r in self.fb.requests])

    def addresses(self) -> list[str]:
        """Every upstream host:port (and bare port) that must never reach a client."""
        ports = (self.fa.port, self.fb.port, self.dead_port, self.hole_port)
        return [f"127.0.0.1:{p}" for p in ports] + [f"localhost:{p}" for p in ports] + [f", {p})" for p in ports]


def config(fa: FakeUpstream, fb: FakeUpstream, dead_port: int, hole_port: int, aliases: dict,
           cooldown: list[float], server: str = "write_timeout: 5") -> str:
    """The Plexus config: the nine providers and ``aliases`` = {name: (selector, [(provider, model,
    {target extras})])}."""
    lines = [f"server: {{host: 127.0.0.1, {server}}}",
             f"routing: {{cooldown: [{', '.join(str(c) for c in cooldown)}]}}",
             "providers:"]
    for host, url in (("a", fa.base_url), ("b", fb.base_url), ("dead", f"http://127.0.0.1:{dead_port}"),
                      ("hole", f"http://127.0.0.1:{hole_port}")):
        for d in DIALECTS:
            version = "v1beta" if d == "gemini" else "v1"
            lines.append(f'  {host}_{d}: {{type: {TYPES[d]}, api_base_url: "{url}/{version}", '
                         f'api_key: sk-{KEYMARK}-{host}-{d}, models: "*"}}')
    lines.append("models:")
    for name, (selector, targets) in aliases.items():
        ts = []
        for provider, model, extra in targets:
            more = "".join(f", {k}: {v}" for k, v in extra.items())
            ts.append(f"{{provider: {provider}, model: {model}{more}}}")
        lines.append(f"  {name}: {{selector: {selector}, targets: [{', '.join(ts)}]}}")
    return "\n".join(lines) + "\n"


def black_hole() -> tuple[socket.socket, socket.socket]:
    """A listening socket whose accept queue is full (listen(0) and one connection never
    accepted): the kernel drops further SYNs, so a connect to it times out."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    filler = socket.socket()
    filler.settimeout(1)
    filler.connect(hole.getsockname())
    return hole, filler


@contextlib.contextmanager
def world(tmp_path, aliases: dict, cooldown: list[float]):
    dead = socket.socket()  # bound, never listening: connecting is refused at once
    dead.bind(("127.0.0.1", 0))
    hole, filler = black_hole()
    try:
        with FakeUpstream() as fa, FakeUpstream() as fb:
            ports = dead.getsockname()[1], hole.getsockname()[1]
            with start_plexus(config(fa, fb, *ports, aliases, cooldown), tmp_path) as px:
                w = World(fa, fb, *ports, px)
                with clients(px.url) as cs:
                    w.clients = cs
                    yield w
    finally:
        dead.close()
        filler.close()
        hole.close()


@contextlib.contextmanager
def clients(base_url: str, timeout: float = 10):
    import anthropic
    import openai
    from google import genai
    from google.genai import types

    oc = openai.OpenAI(base_url=f"{base_url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=timeout)
    ac = anthropic.Anthropic(base_url=base_url, api_key=CLIENT_KEY, max_retries=0, timeout=timeout)
    gc = genai.Client(api_key=CLIENT_KEY, vertexai=False, http_options=types.HttpOptions(
        base_url=base_url, api_version="v1beta", timeout=int(timeout * 1000)))
    try:
        yield {"openai": oc, "anthropic": ac, "gemini": gc}
    finally:
        oc.close()
        ac.close()


# ---------------------------------------------------------------- asking through the SDKs

@dataclass
class Answer:
    text: str
    headers: httpx.Headers

    @property
    def target(self) -> str | None:
        return self.headers.get("x-plexus-target")

    @property
    def attempts(self) -> str | None:
        return self.headers.get("x-plexus-attempts")


def ask(w: World, dialect: str, alias: str, stream: bool, **kw) -> Answer:
    """One SDK call; the whole answer text and the response headers."""
    c = w.clients[dialect]
    if dialect == "openai":
        raw = c.chat.completions.with_raw_response.create(model=alias, messages=kw.pop("messages", MSGS),
                                                          stream=stream, **kw)
        out = raw.parse()
        if stream:
            text = "".join(ch.choices[0].delta.content or "" for ch in out if ch.choices)
        else:
            text = out.choices[0].message.content
        return Answer(text, httpx.Headers(raw.headers))
    if dialect == "anthropic":
        kw.setdefault("max_tokens", 64)
        raw = c.messages.with_raw_response.create(model=alias, messages=kw.pop("messages", MSGS), stream=stream,
                                                  **kw)
        out = raw.parse()
        if stream:
            text = "".join(ev.delta.text for ev in out
                           if ev.type == "content_block_delta" and ev.delta.type == "text_delta")
        else:
            text = "".join(b.text for b in out.content if b.type == "text")
        return Answer(text, httpx.Headers(raw.headers))
    contents = kw.pop("contents", "hi")
    if stream:
        chunks = list(c.models.generate_content_stream(model=alias, contents=contents, **kw))
        text = "".join(ch.text or "" for ch in chunks)
        headers = chunks[0].sdk_http_response.headers
    else:
        r = c.models.generate_content(model=alias, contents=contents, **kw)
        text, headers = r.text, r.sdk_http_response.headers
    return Answer(text, httpx.Headers(headers or {}))


@dataclass
class ErrorAnswer:
    status: int
    headers: httpx.Headers
    body: dict
    raw: str

    @property
    def message(self) -> str:
        return self.body["error"]["message"]


def ask_error(w: World, dialect: str, alias: str, stream: bool, **kw) -> ErrorAnswer:
    """One SDK call that must fail with an HTTP error status; what the client got."""
    import anthropic
    import openai
    from google.genai import errors as gerrors

    try:
        ask(w, dialect, alias, stream, **kw)
    except (openai.APIStatusError, anthropic.APIStatusError) as e:
        r = e.response
        return ErrorAnswer(r.status_code, httpx.Headers(r.headers), r.json(), r.text)
    except gerrors.APIError as e:
        r = e.response
        headers = httpx.Headers(getattr(r, "headers", None) or {})
        body = {"error": e.details["error"]} if isinstance(e.details, dict) and "error" in e.details else e.details
        return ErrorAnswer(e.code, headers, body, json.dumps(body))
    raise AssertionError(f"{dialect} call to {alias} did not fail")


def check_dialect_error(dialect: str, e: ErrorAnswer, status: int) -> str:
    """The error is in the caller's dialect with ``status``; returns its message."""
    assert e.status == status, (e.status, e.raw[:600])
    err = e.body["error"]
    if dialect == "openai":
        assert {"message", "type", "param", "code"} <= set(err), err
    elif dialect == "anthropic":
        assert e.body["type"] == "error" and isinstance(err["type"], str), e.body
    else:
        assert err["code"] == status and isinstance(err["status"], str), err
    assert isinstance(err["message"], str) and err["message"]
    return err["message"]
