"""Rendering of answers for ``plexus test-request`` (see plexus/test_request.py for the tool).

Theory: an answer is a sequence of typed pieces (text, thinking, tool calls, notes), whatever
the dialect and whether it arrived whole or as a stream. `Out` writes the pieces to the
terminal as *segments*: a segment starts on a fresh line with its label (`[thinking]`,
`[tool_call name]`, `[refusal]`, `[error]`, …; plain text has none) and the pieces of the same
segment continue it, so a streamed answer reads the same as the whole one. Colors (thinking
dim, tool calls cyan, notes yellow, errors red) only when the caller says so (a TTY without
NO_COLOR); the labels are always there (on every line of thinking), so a copy or a pipe keeps
the distinction.

One `Reader` per dialect turns that dialect's answer into pieces and gathers what the summary
prints: `usage` (input / output / cached / cache_write / reasoning tokens, exactly as the answer
reported them, absent when not reported), `finish` (the answer's own stop/finish reason),
`error` (an error event inside a 200 stream) and `finished` (the stream reached its finish).

    reader = READERS[dialect](out)
    reader.whole(obj)            # a non-stream answer (a JSON object; a JSON array of chunks)
    reader.event(name, obj)      # one SSE event: its `event:` name (or None) and parsed data
                                 # (the string "[DONE]" for OpenAI's end marker)

Shapes read: OpenAI chat.completion / chat.completion.chunk (`content`, `reasoning_content` or
`reasoning`, `refusal`, `tool_calls` by index, a usage chunk); Anthropic message / its event
stream (text, thinking, redacted_thinking, tool_use and server tools by block index, usage
merged from message_start and message_delta); Gemini GenerateContentResponse (thought parts,
text, functionCall whole, usageMetadata of the last chunk, promptFeedback); Responses
`response` objects and their typed events (output_text, reasoning_summary_text and
reasoning_text, function_call / custom_tool_call arguments by output index, the final response
of response.completed / .incomplete / .failed). Only the first choice / candidate is shown.
"""

from __future__ import annotations

import json
from typing import Any, TextIO

_STYLE = {"thinking": "\x1b[2m", "tool": "\x1b[36m", "note": "\x1b[33m", "error": "\x1b[31m", "meta": "\x1b[2m"}
_RESET = "\x1b[0m"


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": "))


class Out:
    """Labelled segments on a text stream, flushed at every write (a stream shows as it comes)."""

    def __init__(self, stream: TextIO, color: bool = False) -> None:
        self.stream, self.color = stream, color
        self.current: Any = None      # the key of the open segment
        self.at_line_start = True
        self.wrote_content = False    # any text / thinking / tool call so far
        self.tools_printed: set = set()   # tool keys whose arguments were printed

    def _w(self, s: str, style: str | None = None) -> None:
        if not s:
            return
        self.stream.write(f"{_STYLE[style]}{s}{_RESET}" if self.color and style else s)
        self.stream.flush()
        self.at_line_start = s.endswith("\n")

    def newline(self) -> None:
        if not self.at_line_start:
            self._w("\n")

    def _segment(self, key: Any, label: str, style: str | None) -> None:
        if self.current != key:
            self.newline()
            if label:
                self._w(label + " ", style)
            self.current = key

    def text(self, s: str) -> None:
        if s:
            self._segment("text", "", None)
            self._w(s)
            self.wrote_content = True

    def thinking(self, s: str, key: Any = None) -> None:
        """Thinking text; every line of it is labelled (the label tells it from the answer)."""
        if s:
            self._segment(("thinking", key), "[thinking]", "thinking")
            for i, line in enumerate(s.split("\n")):
                if i:
                    self._w("\n")
                if line and self.at_line_start:
                    self._w("[thinking] ", "thinking")
                self._w(line, "thinking")
            self.wrote_content = True

    def tool_start(self, key: Any, name: str, kind: str = "tool_call") -> None:
        """A tool call begins: its label now, its arguments as they come (tool_args)."""
        self.current = None
        self._segment(("tool", key), f"[{kind} {name}]", "tool")
        self.wrote_content = True

    def tool_args(self, key: Any, s: str, name: str = "?") -> None:
        if s:
            if self.current != ("tool", key):   # a call resumed after another segment
                self._segment(("tool", key), f"[tool_call {name} …]", "tool")
            self._w(s, "tool")
            self.tools_printed.add(key)

    def tool_call(self, key: Any, name: str, args: Any, kind: str = "tool_call") -> None:
        """A whole tool call (args: a JSON text as sent, or a value, shown as JSON)."""
        self.tool_start(key, name, kind)
        self.tool_args(key, args if isinstance(args, str) else _dumps(args), name)

    def note(self, label: str, s: str = "", style: str = "note") -> None:
        """A line of its own: `[label] s` (every note stands alone)."""
        self.newline()
        self._w(f"[{label}] {s}" if s else f"[{label}]", style)
        self.current = None

    def error(self, s: str) -> None:
        self.note("error", s, "error")

    def raw(self, s: str) -> None:
        """A block of text as it is (an error body), on lines of its own."""
        self.newline()
        self.current = None
        self._w(s if s.endswith("\n") else s + "\n")

    def meta(self, s: str) -> None:
        """A line of the summary (dim with colors)."""
        self.newline()
        self.current = None
        self._w(s, "meta")
        self._w("\n")


def _dig(obj: Any, *keys: Any) -> Any:
    for k in keys:
        if isinstance(obj, dict):
            obj = obj.get(k)
        elif isinstance(obj, list) and isinstance(k, int) and -len(obj) <= k < len(obj):
            obj = obj[k]
        else:
            return None
    return obj


def _error_text(err: Any) -> str:
    if isinstance(err, dict):
        msg = err.get("message")
        kind = err.get("type") or err.get("status") or err.get("code")
        if isinstance(msg, str):
            return f"{kind}: {msg}" if isinstance(kind, str) and kind else msg
    return _dumps(err)


class Reader:
    """What every dialect's reader shares: the output and the summary's facts."""

    def __init__(self, out: Out) -> None:
        self.out = out
        self.usage: dict[str, int] = {}
        self.finish: str | None = None
        self.error: str | None = None
        self.finished = False
        self.model: str | None = None

    def _usage(self, **figures: Any) -> None:
        self.usage.update({k: v for k, v in figures.items() if isinstance(v, int) and not isinstance(v, bool)})

    def _error(self, err: Any) -> None:
        self.error = _error_text(err)
        self.out.error(self.error)
        self.finished = True

    def whole(self, obj: Any) -> None:
        for chunk in obj if isinstance(obj, list) else [obj]:
            if isinstance(chunk, dict):
                self.answer(chunk)

    def answer(self, obj: dict) -> None:
        raise NotImplementedError

    def event(self, name: str | None, obj: Any) -> None:
        raise NotImplementedError


class OpenAIReader(Reader):
    def _openai_usage(self, u: Any) -> None:
        if isinstance(u, dict):
            self._usage(input=u.get("prompt_tokens"), output=u.get("completion_tokens"),
                        cached=_dig(u, "prompt_tokens_details", "cached_tokens"),
                        reasoning=_dig(u, "completion_tokens_details", "reasoning_tokens"))

    def answer(self, obj: dict) -> None:
        if "error" in obj:
            return self._error(obj["error"])
        self.model = obj.get("model") or self.model
        self._openai_usage(obj.get("usage"))
        choice = _dig(obj, "choices", 0) or {}
        m = choice.get("message") or {}
        self.out.thinking(m.get("reasoning_content") or m.get("reasoning") or "")
        content = m.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        self.out.text(content or "")
        if m.get("refusal"):
            self.out.note("refusal", m["refusal"])
        for i, tc in enumerate(m.get("tool_calls") or ()):
            fn = tc.get("function") or {}
            self.out.tool_call(("oa", i), fn.get("name", "?"), fn.get("arguments") or "")
        self.finish = choice.get("finish_reason") or self.finish
        self.finished = True

    def event(self, name: str | None, obj: Any) -> None:
        if obj == "[DONE]":
            self.finished = True
            return
        if not isinstance(obj, dict):
            return
        if "error" in obj:
            return self._error(obj["error"])
        self.model = obj.get("model") or self.model
        self._openai_usage(obj.get("usage"))
        choice = _dig(obj, "choices", 0)
        if not isinstance(choice, dict):
            return
        d = choice.get("delta") or {}
        self.out.thinking(d.get("reasoning_content") or d.get("reasoning") or "")
        self.out.text(d.get("content") or "")
        if d.get("refusal"):
            self.out.note("refusal", d["refusal"])
        for tc in d.get("tool_calls") or ():
            key, fn = ("oa", tc.get("index", 0)), tc.get("function") or {}
            if fn.get("name"):
                self.out.tool_start(key, fn["name"])
            self.out.tool_args(key, fn.get("arguments") or "")
        if choice.get("finish_reason"):
            self.finish, self.finished = choice["finish_reason"], True


class AnthropicReader(Reader):
    def __init__(self, out: Out) -> None:
        super().__init__(out)
        self.names: dict[int, str] = {}

    def _anthropic_usage(self, u: Any) -> None:
        if isinstance(u, dict):
            self._usage(input=u.get("input_tokens"), output=u.get("output_tokens"),
                        cached=u.get("cache_read_input_tokens"), cache_write=u.get("cache_creation_input_tokens"))

    def _block(self, i: int, b: dict, whole: bool) -> None:
        t = b.get("type")
        if t == "text":
            self.out.text(b.get("text") or "")
        elif t == "thinking":
            self.out.thinking(b.get("thinking") or "", i)
        elif t == "redacted_thinking":
            self.out.note("redacted_thinking")
        elif t in ("tool_use", "server_tool_use", "mcp_tool_use"):
            name = b.get("name", "?")
            self.names[i] = name
            kind = "tool_call" if t == "tool_use" else t
            inp = b.get("input")
            if whole or inp:
                self.out.tool_call(("an", i), name, inp if inp is not None else {}, kind)
            else:
                self.out.tool_start(("an", i), name, kind)
        else:
            self.out.note(str(t))

    def answer(self, obj: dict) -> None:
        if obj.get("type") == "error":
            return self._error(obj.get("error"))
        self.model = obj.get("model") or self.model
        for i, b in enumerate(obj.get("content") or ()):
            if isinstance(b, dict):
                self._block(i, b, True)
        self._anthropic_usage(obj.get("usage"))
        self.finish, self.finished = obj.get("stop_reason"), True

    def event(self, name: str | None, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        t = obj.get("type") or name
        if t == "message_start":
            m = obj.get("message") or {}
            self.model = m.get("model") or self.model
            self._anthropic_usage(m.get("usage"))
        elif t == "content_block_start":
            self._block(obj.get("index", 0), obj.get("content_block") or {}, False)
        elif t == "content_block_delta":
            i, d = obj.get("index", 0), obj.get("delta") or {}
            dt = d.get("type")
            if dt == "text_delta":
                self.out.text(d.get("text") or "")
            elif dt == "thinking_delta":
                self.out.thinking(d.get("thinking") or "", i)
            elif dt == "input_json_delta":
                self.out.tool_args(("an", i), d.get("partial_json") or "", self.names.get(i, "?"))
        elif t == "content_block_stop":
            i = obj.get("index", 0)
            if i in self.names and ("an", i) not in self.out.tools_printed:
                self.out.tool_args(("an", i), "{}", self.names[i])
        elif t == "message_delta":
            self._anthropic_usage(obj.get("usage"))
            if (obj.get("delta") or {}).get("stop_reason"):
                self.finish, self.finished = obj["delta"]["stop_reason"], True
        elif t == "message_stop":
            self.finished = True
        elif t == "error":
            self._error(obj.get("error"))


class GeminiReader(Reader):
    def __init__(self, out: Out) -> None:
        super().__init__(out)
        self.calls = 0

    def answer(self, obj: dict) -> None:
        if "error" in obj:
            return self._error(obj["error"])
        self.model = obj.get("modelVersion") or self.model
        um = obj.get("usageMetadata")
        if isinstance(um, dict):
            self.usage = {}   # every chunk reports the whole answer so far: the last one counts
            self._usage(input=um.get("promptTokenCount"), output=um.get("candidatesTokenCount"),
                        cached=um.get("cachedContentTokenCount"), reasoning=um.get("thoughtsTokenCount"))
        if reason := _dig(obj, "promptFeedback", "blockReason"):
            self.out.note("blocked", str(reason))
            self.finish, self.finished = str(reason), True
        cand = _dig(obj, "candidates", 0) or {}
        for p in _dig(cand, "content", "parts") or ():
            if not isinstance(p, dict):
                continue
            if "functionCall" in p:
                fc = p["functionCall"] or {}
                self.calls += 1
                self.out.tool_call(("ge", self.calls), fc.get("name", "?"), fc.get("args") or {})
            elif p.get("thought"):
                self.out.thinking(p.get("text") or "")
            elif "text" in p:
                self.out.text(p.get("text") or "")
            elif "executableCode" in p:
                self.out.note("code", _dig(p, "executableCode", "code") or "")
            elif "codeExecutionResult" in p:
                self.out.note("code_result", _dig(p, "codeExecutionResult", "output") or "")
        if cand.get("finishReason"):
            self.finish, self.finished = cand["finishReason"], True

    def event(self, name: str | None, obj: Any) -> None:
        if isinstance(obj, dict):
            self.answer(obj)


class ResponsesReader(Reader):
    def __init__(self, out: Out) -> None:
        super().__init__(out)
        self.names: dict[int, str] = {}

    def _response(self, r: dict) -> None:
        """The summary's facts from a `response` object."""
        self.model = r.get("model") or self.model
        u = r.get("usage")
        if isinstance(u, dict):
            self._usage(input=u.get("input_tokens"), output=u.get("output_tokens"),
                        cached=_dig(u, "input_tokens_details", "cached_tokens"),
                        reasoning=_dig(u, "output_tokens_details", "reasoning_tokens"))
        status = r.get("status")
        reason = _dig(r, "incomplete_details", "reason")
        self.finish = f"{status} ({reason})" if reason else status

    def _item(self, i: int, item: dict) -> None:
        t = item.get("type")
        if t == "reasoning":
            for k, s in enumerate(item.get("summary") or ()):
                self.out.thinking(s.get("text") or "", (i, k))
            for s in item.get("content") or ():
                self.out.thinking(s.get("text") or "", (i, "content"))
        elif t == "message":
            for c in item.get("content") or ():
                if c.get("type") == "refusal":
                    self.out.note("refusal", c.get("refusal") or "")
                else:
                    self.out.text(c.get("text") or "")
        elif t == "function_call":
            self.out.tool_call(("re", i), item.get("name", "?"), item.get("arguments") or "")
        elif t == "custom_tool_call":
            self.out.tool_call(("re", i), item.get("name", "?"), item.get("input") or "", "custom_tool_call")
        else:
            self.out.note(str(t))

    def answer(self, obj: dict) -> None:
        if obj.get("error"):
            return self._error(obj["error"])
        for i, item in enumerate(obj.get("output") or ()):
            if isinstance(item, dict):
                self._item(i, item)
        self._response(obj)
        self.finished = True

    def event(self, name: str | None, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        t = obj.get("type") or name or ""
        i = obj.get("output_index", 0)
        if t == "response.output_item.added":
            item = obj.get("item") or {}
            if item.get("type") in ("function_call", "custom_tool_call"):
                self.names[i] = item.get("name", "?")
                kind = "tool_call" if item["type"] == "function_call" else "custom_tool_call"
                self.out.tool_start(("re", i), self.names[i], kind)
        elif t == "response.output_item.done":
            item = obj.get("item") or {}
            if i in self.names and ("re", i) not in self.out.tools_printed:   # arguments never streamed
                self.out.tool_args(("re", i), item.get("arguments") or item.get("input") or "", self.names[i])
        elif t == "response.output_text.delta":
            self.out.text(obj.get("delta") or "")
        elif t == "response.refusal.delta":
            self.out.note("refusal", obj.get("delta") or "")
        elif t == "response.reasoning_summary_text.delta":
            self.out.thinking(obj.get("delta") or "", (i, obj.get("summary_index", 0)))
        elif t == "response.reasoning_text.delta":
            self.out.thinking(obj.get("delta") or "", (i, "content"))
        elif t in ("response.function_call_arguments.delta", "response.custom_tool_call_input.delta"):
            self.out.tool_args(("re", i), obj.get("delta") or "", self.names.get(i, "?"))
        elif t in ("response.created", "response.in_progress"):
            self.model = _dig(obj, "response", "model") or self.model
        elif t in ("response.completed", "response.incomplete"):
            self._response(obj.get("response") or {})
            self.finished = True
        elif t == "response.failed":
            self._response(obj.get("response") or {})
            self._error(_dig(obj, "response", "error") or "response.failed")
        elif t == "error":
            self._error(obj.get("error") or obj)


READERS: dict[str, type[Reader]] = {"openai": OpenAIReader, "anthropic": AnthropicReader,
                                    "gemini": GeminiReader, "responses": ResponsesReader}


def usage_line(usage: dict[str, int]) -> str:
    if not usage:
        return "usage: not reported"
    order = ("input", "output", "cached", "cache_write", "reasoning")
    return "usage: " + " · ".join(f"{k} {usage[k]}" for k in order if k in usage)


def sse_lines(chunks):
    """Lines of a byte stream as they complete: LF, CRLF and CR ends (the SSE rules), decoded as
    UTF-8; a JSON string's raw U+2028 is not a line end (str.splitlines would say it is)."""
    buf = b""
    skip_lf = False
    for chunk in chunks:
        if not chunk:
            continue
        if skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        skip_lf = False
        buf += chunk
        start = 0
        n = len(buf)
        while start < n:
            lf, cr = buf.find(b"\n", start), buf.find(b"\r", start)
            if lf < 0 and cr < 0:
                break
            end = lf if cr < 0 or (0 <= lf < cr) else cr
            yield buf[start:end].decode("utf-8", "replace")
            if buf[end:end + 1] == b"\r":
                if end + 1 < n and buf[end + 1:end + 2] == b"\n":
                    end += 1
                elif end + 1 == n:
                    skip_lf = True
            start = end + 1
        buf = buf[start:]
    if buf:
        yield buf.decode("utf-8", "replace")


def sse_events(lines):
    """(event name or None, data text) per SSE event; comments skipped."""
    name, data = None, []
    for line in lines:
        if not line:
            if data:
                yield name, "\n".join(data)
            name, data = None, []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
    if data:
        yield name, "\n".join(data)
