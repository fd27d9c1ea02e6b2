"""The dialect-neutral internal model that every translation passes through.

Three dialects meet here, so a new dialect is one package (request, build, decode, encode)
plus one record in dialects/registry.py, not N×N pairs. Its shape follows Anthropic's content
blocks, the richest of the three (thinking with signatures, tool results with rich content),
with slots for what the others carry (Gemini's thoughtSignature on any part, OpenAI's
reasoning_effort).

Requests and non-stream responses are slotted dataclasses (built once per request).

Streams do NOT build an object per delta: a decoder drives a `Sink` by method calls, and each
dialect's stream encoder is a Sink that writes client bytes. The call order a decoder must
follow (the encoders rely on it):

    start(...)                                       exactly once, first
    ( text(s) | thinking(s) | signature(sig) | redacted_thinking(data)
      | tool_start(index, id, name, signature) | tool_args(index, fragment)
      | block_end() | usage(u) )*
    finish(stop_reason, stop_sequence)               at most once
    usage(u)*                                        final usage may follow finish
    end()                                            the upstream's terminal event was seen,
                                                     or its body ended after the finish
  or error(err)                                      anywhere after start; nothing follows it

- text/thinking deltas go to the open block of that kind, opening one if the open block is of
  another kind (the encoder closes the previous block itself). `block_end()` only says a block
  ended where the source said so (two text blocks in a row stay two blocks).
- `tool_start`/`tool_args` carry the SOURCE's tool index (OpenAI `tool_calls[].index`, Anthropic
  content block index, Gemini part order), so interleaved parallel calls can be separated.
- `signature` belongs to the thinking block open at the time (Anthropic signature_delta,
  Gemini thoughtSignature on a thought part).
- usage() may be called several times with cumulative figures; the last values win, fields
  left None keep their previous value.

Canonical stop reasons (`STOP_REASONS`): Anthropic's names plus "content_filter" folded into
"refusal": end_turn, max_tokens, stop_sequence, tool_use, refusal, pause_turn, error. Each
dialect's own reasons map to and from them in one table, dialects/common.py `STOPS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Union

from .errors import stream_cut

STOP_REASONS = ("end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal", "pause_turn", "error")

# The one reasoning-effort ⇄ thinking-budget table every dialect uses (documented in API.md).
EFFORT_BUDGET = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576, "xhigh": 32768, "max": 32768}


def budget_effort(budget: int) -> str:
    """Thinking budget tokens → reasoning effort."""
    return "low" if budget <= 2048 else "medium" if budget <= 8192 else "high"


# ---------------------------------------------------------------- content parts

@dataclass(slots=True)
class Text:
    text: str
    cache_control: dict | None = None
    signature: str | None = None          # Gemini thoughtSignature on a text part


@dataclass(slots=True)
class Image:
    media_type: str | None = None         # "image/png" ...
    data: str | None = None               # base64 (no data: prefix)
    url: str | None = None                # http(s) URL, when not inline
    cache_control: dict | None = None


@dataclass(slots=True)
class Thinking:
    text: str                             # "" for a signature-only block
    signature: str | None = None          # Anthropic signature / Gemini thoughtSignature, byte for byte
    redacted: bool = False                # Anthropic redacted_thinking: `text` holds its `data`
    source: str | None = None             # whose signature: "anthropic" | "gemini" (see dialects/signatures.py)


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str                        # JSON text of the arguments object
    signature: str | None = None          # Gemini thoughtSignature of this functionCall
    extra: dict | None = None             # unknown fields of the source block, kept for same-dialect


@dataclass(slots=True)
class ToolResult:
    call_id: str
    content: list[Union["Text", "Image"]] | str
    is_error: bool = False
    name: str | None = None               # Gemini pairs results by function name
    cache_control: dict | None = None


Part = Union[Text, Image, Thinking, ToolCall, ToolResult]


@dataclass(slots=True)
class Message:
    role: str                             # "user" | "assistant" | "system" (a mid-conversation system turn)
    parts: list[Part]


@dataclass(slots=True)
class Tool:
    name: str
    description: str | None
    parameters: dict                      # JSON Schema of the arguments object
    cache_control: dict | None = None
    extra: dict | None = None             # e.g. Anthropic defer_loading; dropped for other dialects


# ---------------------------------------------------------------- request

@dataclass(slots=True)
class Request:
    model: str
    messages: list[Message]
    system: list[Text] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    tool_choice: str | None = None        # "auto" | "none" | "required" | "tool" (then tool_choice_name)
    tool_choice_name: str | None = None
    parallel_tool_calls: bool | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = field(default_factory=list)
    user: str | None = None
    n: int | None = None
    seed: int | None = None               # OpenAI seed ⇄ Gemini generationConfig.seed (Anthropic: none)
    presence_penalty: float | None = None   # ⇄ generationConfig.presencePenalty (Anthropic: none)
    frequency_penalty: float | None = None  # ⇄ generationConfig.frequencyPenalty (Anthropic: none)
    response_format: dict | None = None   # {"type":"json_object"} | {"type":"json_schema","name","schema","strict"}
    reasoning_effort: str | None = None   # "none" | "minimal" | "low" | "medium" | "high" | "xhigh"
    thinking_budget: int | None = None    # tokens, when the source gave a budget
    thinking: bool | None = None          # True enabled, False disabled, None unspecified
    stream: bool = False
    include_usage: bool = False           # OpenAI client asked stream_options.include_usage
    metadata: dict | None = None
    extra: dict[str, Any] = field(default_factory=dict)   # dialect hints (e.g. "gemini_alt_sse")


# ---------------------------------------------------------------- response

@dataclass(slots=True)
class Usage:
    input_tokens: int | None = None       # prompt tokens NOT counting cache reads/creation (Anthropic sense)
    output_tokens: int | None = None      # includes reasoning tokens
    cache_read_tokens: int | None = None
    cache_creation_tokens: int | None = None
    reasoning_tokens: int | None = None

    def update(self, other: "Usage") -> None:
        """Merge a later report: fields it leaves None keep their value (unrolled: per event)."""
        v = other.input_tokens
        if v is not None:
            self.input_tokens = v
        v = other.output_tokens
        if v is not None:
            self.output_tokens = v
        v = other.cache_read_tokens
        if v is not None:
            self.cache_read_tokens = v
        v = other.cache_creation_tokens
        if v is not None:
            self.cache_creation_tokens = v
        v = other.reasoning_tokens
        if v is not None:
            self.reasoning_tokens = v

    @property
    def prompt_total(self) -> int:
        """Prompt tokens in the OpenAI/Gemini sense (cached ones included)."""
        return (self.input_tokens or 0) + (self.cache_read_tokens or 0) + (self.cache_creation_tokens or 0)


@dataclass(slots=True)
class Response:
    id: str | None
    model: str
    parts: list[Part]                     # Text | Thinking | ToolCall
    stop_reason: str = "end_turn"
    stop_sequence: str | None = None
    usage: Usage = field(default_factory=Usage)


# ---------------------------------------------------------------- stream context and sink

@dataclass(slots=True)
class Context:
    """Per-request facts a translator needs; made by the handler (the clock lives there)."""
    model: str                            # model name shown to the client (the upstream model)
    id_seed: str                          # random hex from the handler; ids are derived from it
    created: int                          # unix seconds
    include_usage: bool = False           # OpenAI client: emit the usage chunk (choices: [])
    alias: str = ""
    gemini_sse: bool = True               # Gemini client: SSE (alt=sse) or JSON-array stream
    extra: dict[str, Any] = field(default_factory=dict)


class EncoderOutput:
    """The output half every stream encoder shares: sink methods append client bytes to `_out`
    and set `_done` at end()/error(); `take()` hands the bytes out, `close()` ends a stream
    whose upstream never finished with the dialect's error event (through `self.error`)."""

    __slots__ = ("_out", "_done", "failure")  # failure: the message of the error event written, if any

    def take(self) -> bytes:
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def close(self) -> bytes:
        if not self._done:
            self.error(stream_cut())
        return self.take()


class Sink(Protocol):
    def start(self, id: str | None, model: str | None, usage: Usage | None) -> None: ...
    def text(self, s: str) -> None: ...
    def thinking(self, s: str) -> None: ...
    def signature(self, sig: str) -> None: ...
    def redacted_thinking(self, data: str) -> None: ...
    def tool_start(self, index: int, id: str, name: str, signature: str | None = None) -> None: ...
    def tool_args(self, index: int, fragment: str) -> None: ...
    def block_end(self) -> None: ...
    def usage(self, u: Usage) -> None: ...
    def finish(self, stop_reason: str, stop_sequence: str | None = None) -> None: ...
    def end(self) -> None: ...
    def error(self, err: Exception) -> None: ...
