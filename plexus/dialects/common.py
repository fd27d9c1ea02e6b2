"""What every dialect package shares: one copy of each small helper, each with one contract,
and the stop-reason table of every dialect (pure).

Values read out of upstream JSON (decoders). "Malformed" means TypeError, which each decoder
turns into its 502 "malformed event/message" error; lenient readers never raise:

    opt_str(v)       v if it is a str, else None                    (lenient)
    str_or_empty(v)  v if it is a str, else ""                      (lenient)
    need_str(v)      v if it is a str, else TypeError               (strict)
    need_opt_str(v)  None or a str, else TypeError                  (strict)
    opt_int(v)       v if it is an int (not a bool), else None      (lenient)
    need_opt_int(v)  None or an int (not a bool), else TypeError    (strict)

Fields of a client body:

    either(d, camel, snake)   a field in either spelling (Gemini accepts lowerCamelCase and
                              snake_case for the same field)
    body_model / body_stream  the `model` / `stream` of a body that carries them (OpenAI,
                              Anthropic), 400 naming the field, with the messages the gateway
                              has always answered
    require_array(body, f)    `f` must be a JSON array (the minimal shape a request needs)
    from_body(field)          the `model_and_stream` of such a dialect (see registry.py)

Tool-call arguments (a JSON text in the IR, an object in Anthropic and Gemini bodies):

    args_object(text)         the object; {} when the text is empty, invalid JSON (a model's
                              broken output) or not an object
    args_text(obj)            an object's JSON text; "{}" for anything that is not a dict

Errors are built with `errors.invalid` (400, client input) and `errors.bad_gateway` (502,
upstream output), not here.

Stop reasons: `STOPS[dialect]` is a `StopMap`, the one place a dialect's stop/finish reasons
meet the IR's (ir.STOP_REASONS), in both directions, for streams and whole responses alike.
"""

from __future__ import annotations

from typing import Any, Callable

import orjson

from ..errors import invalid
from ..ir import STOP_REASONS


# ---------------------------------------------------------------- values from upstream JSON

def opt_str(v: Any) -> str | None:
    return v if type(v) is str else None


def str_or_empty(v: Any) -> str:
    return v if type(v) is str else ""


def need_str(v: Any) -> str:
    if type(v) is not str:
        raise TypeError("expected a string")
    return v


def need_opt_str(v: Any) -> str | None:
    if v is None or type(v) is str:
        return v
    raise TypeError("expected a string")


def opt_int(v: Any) -> int | None:
    return v if type(v) is int else None


def need_opt_int(v: Any) -> int | None:
    if v is None or type(v) is int:
        return v
    raise TypeError("expected an integer")


# ---------------------------------------------------------------- client bodies

def either(d: dict, camel: str, snake: str | None = None) -> Any:
    v = d.get(camel)
    if v is None and snake is not None:
        v = d.get(snake)
    return v


def body_model(body: dict) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("`model` is required and must be a non-empty string", "model")
    return model


def body_stream(body: dict) -> bool:
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise invalid("`stream` must be a boolean", "stream")
    return stream


def require_array(body: dict, field: str) -> None:
    if not isinstance(body.get(field), list):
        raise invalid(f"`{field}` is required and must be an array", field)


def from_body(field: str) -> Callable[[dict, Any, Any], tuple[str, bool]]:
    """model_and_stream(body, path_args, query) of a dialect whose body names the model and the
    stream flag and whose conversation is the array `field`."""
    def model_and_stream(body: dict, path_args: Any = None, query: Any = None) -> tuple[str, bool]:
        model, stream = body_model(body), body_stream(body)
        require_array(body, field)
        return model, stream
    return model_and_stream


# ---------------------------------------------------------------- tool-call arguments

def args_object(arguments: str) -> dict:
    if not arguments:
        return {}
    try:
        v = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {}
    return v if isinstance(v, dict) else {}


def args_text(obj: Any) -> str:
    return orjson.dumps(obj).decode() if type(obj) is dict else "{}"


# ---------------------------------------------------------------- stop reasons

class StopMap:
    """One dialect's stop reasons ⇄ the IR's.

    to_ir(wire, tools): the IR reason of a reason the dialect sent; unknown values (and values
      that are not strings) are "end_turn". `tools`: the turn made tool calls, so "end_turn"
      becomes "tool_use" (sources that say a plain stop after tool calls: Gemini STOP, Ollama
      and some vLLM versions "stop"). Decoders that trust the source pass tools=False.
    from_ir(reason, tools): the dialect's reason for an IR reason (unknown or None: the
      end_turn one). `tools`: the turn sent tool calls, so the end_turn reason becomes the
      tool_use one (clients' agent loops key on it).
    """

    __slots__ = ("_in", "_out", "_stop", "_tool")

    def __init__(self, to_ir: dict[str, str], from_ir: dict[str, str]) -> None:
        missing = set(STOP_REASONS) - from_ir.keys()
        if missing or not set(to_ir.values()) <= set(STOP_REASONS):
            raise ValueError(f"stop map incomplete or not IR reasons: {sorted(missing)}")
        self._in = to_ir
        self._out = from_ir
        self._stop = from_ir["end_turn"]
        self._tool = from_ir["tool_use"]

    def to_ir(self, wire: object, tools: bool = False) -> str:
        r = self._in.get(wire, "end_turn") if type(wire) is str else "end_turn"
        return "tool_use" if tools and r == "end_turn" else r

    def from_ir(self, reason: str | None, tools: bool = False) -> str:
        w = self._out.get(reason, self._stop)
        return self._tool if tools and w == self._stop else w


_SAME = {r: r for r in STOP_REASONS if r != "error"}
_GEMINI_REFUSAL = ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "LANGUAGE",
                   "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "MODEL_ARMOR",
                   "JAILBREAK")

STOPS: dict[str, StopMap] = {
    # finish_reason
    "openai": StopMap(
        {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
         "function_call": "tool_use", "content_filter": "refusal"},
        {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "error": "stop",
         "max_tokens": "length", "tool_use": "tool_calls", "refusal": "content_filter"}),
    # stop_reason: the IR's own names
    "anthropic": StopMap(
        {**_SAME, "model_context_window_exceeded": "max_tokens"},
        {**_SAME, "error": "end_turn"}),
    # finishReason (MALFORMED_FUNCTION_CALL, OTHER, ...: end_turn, the turn just ended)
    "gemini": StopMap(
        {"STOP": "end_turn", "MAX_TOKENS": "max_tokens", "CONTINUATION": "max_tokens",
         **dict.fromkeys(_GEMINI_REFUSAL, "refusal")},
        {"end_turn": "STOP", "stop_sequence": "STOP", "pause_turn": "STOP", "tool_use": "STOP",
         "max_tokens": "MAX_TOKENS", "refusal": "SAFETY", "error": "OTHER"}),
    # Responses API: a response's `status`, or its `incomplete_details.reason` when incomplete
    "responses": StopMap(
        {"completed": "end_turn", "max_output_tokens": "max_tokens", "content_filter": "refusal",
         "failed": "error"},
        {"end_turn": "completed", "stop_sequence": "completed", "pause_turn": "completed",
         "tool_use": "completed", "error": "failed", "max_tokens": "max_output_tokens",
         "refusal": "content_filter"}),
}
