"""A stand-in for `config.Provider` with just what the request builders read (tests only).

`host` decides whether an OpenAI target is OpenAI itself (api.openai.com / Azure: then
`max_completion_tokens`); `base_path` is what the Gemini builder reads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StubProvider:
    name: str = "p"
    type: str = "openai"
    max_tokens: int = 0
    stream_usage: bool = True
    host: str = "api.openai.com"
    reasoning: bool = True
    base_path: str = "/v1beta"
