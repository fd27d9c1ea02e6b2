"""``plexus test-request <alias> <json_file>``: send a request file to a running Plexus, show the answer.

Also ``python -m plexus.test_request``. The file's body goes to the gateway in the dialect its
shape implies (or ``--dialect``), with the alias as the model; the answer is shown as it arrives
(text plain, ``[thinking] …`` dimmed, ``[tool_call name] {args}`` cyan, ``[refusal]``,
``[error]``; colors only when stdout is a TTY and NO_COLOR is unset), then a summary: HTTP
status, time to the response headers (ttfb), to the first content and in total, the finish
reason, the usage the answer reported, and the ``x-plexus-target`` / ``x-plexus-attempts`` /
``x-plexus-request-id`` headers. Options: ``--url`` (default ``$PLEXUS_URL``, else
http://127.0.0.1:3000), ``--key`` (default ``$PLEXUS_KEY``; sent as ``Authorization: Bearer``,
which Plexus accepts on every route), ``--dialect``, ``--stream`` / ``--no-stream`` (override
the file), ``-H 'name: value'`` (extra request headers), ``--timeout`` (s of silence allowed).
``-`` as the file reads standard input. Proxy variables apply only to a non-loopback URL.

Exit codes: 0 the answer came and finished; 1 an HTTP error status (its status and body are
printed), an error event inside a stream, or a stream that ended before its finish; 2 a usage
problem (unreadable file, a shape that names no dialect) or no connection to Plexus (one line on
stderr); 130 interrupted (Ctrl-C; the summary of what came so far is still printed).

Shape rules (``detect_dialect``), for a JSON object:

1. Exactly one of ``messages``, ``contents``, ``input`` must be present (else: pass --dialect).
   ``contents`` → Gemini; ``input`` → Responses.
2. ``messages``: Anthropic and OpenAI Chat both use it, so the rest of the body decides.
   Anthropic markers: a top-level ``system``, ``thinking``, ``stop_sequences``,
   ``context_management``, ``output_config``, ``container`` or ``mcp_servers``; a content block
   of an Anthropic-only type (``tool_use``, ``tool_result``, ``thinking``, ``redacted_thinking``,
   ``image``, ``document``, ``search_result``, server tool blocks) or carrying ``cache_control``;
   a tool with ``input_schema`` (or a ``name`` without ``function``: server tools); a
   ``tool_choice`` object of type auto / any / tool / none.
   OpenAI markers: a message role ``system`` / ``developer`` / ``tool`` / ``function``, or a
   message with ``tool_calls`` / ``tool_call_id``; a content part ``image_url`` /
   ``input_audio`` / ``file`` / ``refusal``; a top-level field only Chat Completions has
   (``max_completion_tokens``, ``reasoning_effort``, ``response_format``, ``n``, ``stop``,
   ``stream_options``, ``frequency_penalty``, ``presence_penalty``, ``logprobs``,
   ``top_logprobs``, ``logit_bias``, ``seed``, ``parallel_tool_calls``, ``user``, ``modalities``,
   ``audio``, ``prediction``, ``web_search_options``, ``store``, ``verbosity``); a tool with
   ``function`` / ``custom``; a string ``tool_choice`` or one of type function.
   Markers of one side only decide. Markers of both are an error naming them (pass --dialect).
   Neither: ``max_tokens`` (required by Anthropic, optional and legacy in Chat) → Anthropic,
   else OpenAI.

What is sent (``prepare``): OpenAI → ``POST /v1/chat/completions``, Anthropic → ``/v1/messages``
(plus ``anthropic-version: 2023-06-01`` unless -H gives one), Responses → ``/v1/responses``,
each with ``model`` set to the alias; a stream flag is the body's ``stream: true`` (or the
override). An OpenAI stream without ``stream_options`` gets ``{"include_usage": true}`` so that
its usage can be shown. Gemini → ``/v1beta/models/{alias}:generateContent``, or
``:streamGenerateContent?alt=sse`` when the file has a top-level ``"stream": true`` (or
--stream); ``stream`` and ``model`` are removed from the Gemini body (the URL carries both).

The answer: a ``text/event-stream`` body is parsed incrementally (LF, CRLF or CR line ends) and
every event shown as it arrives; any other body is read whole, and printed once (a JSON answer
rendered like a stream, anything else as it is). Rendering per dialect: test_request_render.py.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx

from .test_request_render import READERS, Out, sse_events, sse_lines, usage_line

PROG = "plexus test-request"
DEFAULT_URL = "http://127.0.0.1:3000"
DIALECTS = ("openai", "anthropic", "gemini", "responses")
PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages", "responses": "/v1/responses"}
SHOWN_HEADERS = ("x-plexus-target", "x-plexus-attempts", "x-plexus-request-id", "retry-after")

_ANTHROPIC_FIELDS = ("system", "thinking", "stop_sequences", "context_management", "output_config",
                     "container", "mcp_servers")
_ANTHROPIC_BLOCKS = {"tool_use", "tool_result", "thinking", "redacted_thinking", "image", "document",
                     "search_result", "server_tool_use", "web_search_tool_result", "web_fetch_tool_result",
                     "mcp_tool_use", "mcp_tool_result", "container_upload"}
_OPENAI_FIELDS = ("max_completion_tokens", "reasoning_effort", "response_format", "n", "stop", "stream_options",
                  "frequency_penalty", "presence_penalty", "logprobs", "top_logprobs", "logit_bias", "seed",
                  "parallel_tool_calls", "user", "modalities", "audio", "prediction", "web_search_options",
                  "store", "verbosity")
_OPENAI_PARTS = {"image_url", "input_audio", "file", "refusal"}
_OPENAI_ROLES = {"system", "developer", "tool", "function"}


class UsageError(Exception):
    """A problem with the command line or the request file: one line, exit code 2."""


def _markers(body: dict) -> tuple[list[str], list[str]]:
    """(Anthropic markers, OpenAI markers) of a body with `messages`, as short descriptions."""
    a = [f"`{k}`" for k in _ANTHROPIC_FIELDS if k in body]
    o = [f"`{k}`" for k in _OPENAI_FIELDS if k in body]
    for m in body.get("messages") or ():
        if not isinstance(m, dict):
            continue
        if m.get("role") in _OPENAI_ROLES:
            o.append(f"role {m['role']}")
        o += [f"message `{k}`" for k in ("tool_calls", "tool_call_id") if k in m]
        for part in m.get("content") if isinstance(m.get("content"), list) else ():
            if not isinstance(part, dict):
                continue
            t = part.get("type")
            if t in _ANTHROPIC_BLOCKS:
                a.append(f"{t} block")
            elif t in _OPENAI_PARTS:
                o.append(f"{t} part")
            if "cache_control" in part:
                a.append("cache_control")
    for tool in body.get("tools") or ():
        if isinstance(tool, dict):
            if "function" in tool or isinstance(tool.get("custom"), dict):
                o.append("tool `function`")
            elif "input_schema" in tool or "name" in tool:
                a.append("tool `input_schema`")
    tc = body.get("tool_choice")
    if isinstance(tc, str):
        o.append("string tool_choice")
    elif isinstance(tc, dict):
        (a if tc.get("type") in ("auto", "any", "tool", "none") else o).append(f"tool_choice {tc.get('type')}")
    return list(dict.fromkeys(a)), list(dict.fromkeys(o))


def detect_dialect(body: dict) -> str:
    """The dialect a request body's shape implies (the rules are in the module docstring)."""
    keys = [k for k in ("messages", "contents", "input") if k in body]
    if len(keys) != 1:
        what = "none of `messages`, `contents`, `input`" if not keys else " and ".join(f"`{k}`" for k in keys)
        raise UsageError(f"cannot tell the dialect: the body has {what}; pass --dialect")
    if keys[0] == "contents":
        return "gemini"
    if keys[0] == "input":
        return "responses"
    a, o = _markers(body)
    if a and o:
        raise UsageError(f"cannot tell the dialect: Anthropic ({', '.join(a)}) and OpenAI ({', '.join(o)}) "
                         "fields in one body; pass --dialect")
    if a or (not o and "max_tokens" in body):
        return "anthropic"
    return "openai"


def prepare(body: dict, alias: str, dialect: str, stream: bool | None = None) -> tuple[str, dict, bool]:
    """(path with query, body to send, stream) for `alias`; the body given is not changed."""
    body = copy.deepcopy(body)
    if dialect == "gemini":
        flag = body.pop("stream", None)
        body.pop("model", None)
        stream = flag is True if stream is None else stream
        action = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"/v1beta/models/{quote(alias, safe='')}:{action}", body, stream
    body["model"] = alias
    if stream is not None:
        body["stream"] = stream
    stream = body.get("stream") is True
    if dialect == "openai" and stream and "stream_options" not in body:
        body["stream_options"] = {"include_usage": True}
    return PATHS[dialect], body, stream


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Send a request file to a running Plexus and show "
                                "the answer as it arrives (text, thinking, tool calls), then status, "
                                "timings, usage and the x-plexus-* headers.")
    p.add_argument("alias", help="the model alias to call")
    p.add_argument("json_file", help="the request body (JSON; - reads standard input)")
    p.add_argument("--url", default=None, help=f"Plexus base URL (default: $PLEXUS_URL, else {DEFAULT_URL})")
    p.add_argument("--key", default=None, help="inbound API key, sent as Bearer (default: $PLEXUS_KEY)")
    p.add_argument("--dialect", choices=DIALECTS, help="the request's dialect (default: from its shape)")
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                   help="stream or not, whatever the file says")
    p.add_argument("-H", "--header", action="append", default=[], metavar="'NAME: VALUE'",
                   help="an extra request header (repeatable)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds of silence allowed (default 600)")
    return p


def _load(path: str) -> dict:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"{path}: {e.strerror or e}") from None
    try:
        body = json.loads(text)
    except ValueError as e:
        raise UsageError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise UsageError(f"{path}: the request body must be a JSON object")
    return body


def _headers(dialect: str, key: str | None, extra: list[str]) -> dict[str, str]:
    h = {"content-type": "application/json", "user-agent": "plexus-test-request"}
    if dialect == "anthropic":
        h["anthropic-version"] = "2023-06-01"
    if key:
        h["authorization"] = f"Bearer {key}"
    for line in extra:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"-H {line!r}: expected 'name: value'")
        h[name.strip().lower()] = value.strip()
    return h


def _is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host == "localhost" or host == "::1" or host.startswith("127.")


def _ms(seconds: float | None) -> str:
    return f"{seconds * 1000:.1f} ms"


class _Exchange:
    """One request and how its answer went (timings are seconds after the request was sent)."""

    def __init__(self, out: Out, dialect: str) -> None:
        self.out, self.reader = out, READERS[dialect](out)
        self.t0 = time.perf_counter()
        self.ttfb = self.first_content = self.total = None
        self.response: httpx.Response | None = None

    def _tick(self) -> None:
        if self.first_content is None and self.out.wrote_content:
            self.first_content = time.perf_counter() - self.t0

    def run(self, client: httpx.Client, url: str, data: bytes, headers: dict) -> int:
        self.t0 = time.perf_counter()
        with client.stream("POST", url, content=data, headers=headers) as r:
            self.response = r
            self.ttfb = time.perf_counter() - self.t0
            if r.status_code >= 400:
                body = r.read()
                self.total = time.perf_counter() - self.t0
                self.out.error(f"HTTP {r.status_code} {r.reason_phrase}")
                self.out.raw(_pretty(body))
                return 1
            if "text/event-stream" in r.headers.get("content-type", ""):
                rc = self._stream(r)
            else:
                rc = self._whole(r.read())
            self.total = time.perf_counter() - self.t0
            return rc

    def _stream(self, r: httpx.Response) -> int:
        reader = self.reader
        try:
            for name, data in sse_events(sse_lines(r.iter_bytes())):
                if data.strip() == "[DONE]":
                    reader.event(name, "[DONE]")
                    continue
                try:
                    obj = json.loads(data)
                except ValueError:
                    self.out.note("not JSON", data)
                    continue
                reader.event(name, obj)
                self._tick()
        except httpx.TransportError as e:
            self.out.error(f"{type(e).__name__}: {e}")
            return 1
        if reader.error is not None:
            return 1
        if not reader.finished:
            self.out.error("the stream ended before its finish")
            return 1
        return 0

    def _whole(self, body: bytes) -> int:
        try:
            obj = json.loads(body)
        except ValueError:
            self.out.note("not JSON", body.decode("utf-8", "replace"))
            return 1
        self.reader.whole(obj)
        return 1 if self.reader.error is not None else 0

    def summary(self) -> None:
        out, r, rd = self.out, self.response, self.reader
        out.raw("")
        if r is None:
            return
        out.meta(f"status: {r.status_code} {r.reason_phrase}")
        times = [f"ttfb {_ms(self.ttfb)}"]
        if self.first_content is not None:
            times.append(f"first content {_ms(self.first_content)}")
        times.append(f"total {_ms(self.total if self.total is not None else time.perf_counter() - self.t0)}")
        out.meta("time: " + " · ".join(times))
        if r.status_code < 400:
            if rd.finish or rd.model:
                out.meta(" · ".join(x for x in (rd.finish and f"finish: {rd.finish}",
                                               rd.model and f"model: {rd.model}") if x))
            out.meta(usage_line(rd.usage))
        for h in SHOWN_HEADERS:
            if h in r.headers:
                out.meta(f"{h}: {r.headers[h]}")


def _pretty(body: bytes) -> str:
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        return body.decode("utf-8", "replace")


def use_color(stream, environ=os.environ) -> bool:
    """Colors only on a terminal, and never with NO_COLOR set (to anything but empty)."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not environ.get("NO_COLOR")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stdout = sys.stdout
    try:
        body = _load(args.json_file)
        dialect = args.dialect or detect_dialect(body)
        path, body, stream = prepare(body, args.alias, dialect, args.stream)
        headers = _headers(dialect, args.key or os.environ.get("PLEXUS_KEY"), args.header)
    except UsageError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    base = (args.url or os.environ.get("PLEXUS_URL") or DEFAULT_URL).rstrip("/")
    url = base + path
    out = Out(stdout, use_color(stdout))
    out.meta(f"POST {url} · {dialect}{' · stream' if stream else ''}")
    ex = _Exchange(out, dialect)
    timeout = httpx.Timeout(args.timeout, connect=10.0)
    try:
        with httpx.Client(timeout=timeout, trust_env=not _is_loopback(base)) as client:
            rc = ex.run(client, url, json.dumps(body, ensure_ascii=False).encode(), headers)
    except (httpx.ConnectError, httpx.ConnectTimeout) as e:
        print(f"{PROG}: cannot connect to {base}: {e or type(e).__name__} (is Plexus running? set --url or "
              "$PLEXUS_URL)", file=sys.stderr)
        return 2
    except httpx.TransportError as e:
        if ex.response is None:
            print(f"{PROG}: {base}: {type(e).__name__}: {e}", file=sys.stderr)
            return 2
        out.error(f"{type(e).__name__}: {e}")
        rc = 1
    except httpx.InvalidURL as e:
        print(f"{PROG}: invalid --url {base!r}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        out.error("interrupted")
        rc = 130
    ex.summary()
    return rc


if __name__ == "__main__":
    sys.exit(main())
