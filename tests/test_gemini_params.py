"""Gemini seed / presencePenalty / frequencyPenalty ⇄ OpenAI seed / presence_penalty /
frequency_penalty through the IR (Anthropic has none: dropped), and `model_path`, the one place a
Gemini model name becomes a URL path."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

import orjson
import pytest

from plexus.dialects.anthropic import build as anthropic_build
from plexus.dialects.gemini import build as gemini_build, request as gemini
from plexus.dialects.gemini.build import model_path
from plexus.dialects.openai import build as openai_build, request as openai
from plexus.dialects.registry import DIALECTS
from plexus.errors import GatewayError


@dataclass
class Prov:
    name: str = "p"
    max_tokens: int = 0
    stream_usage: bool = False
    base_path: str = "/v1beta"
    reasoning: bool = True
    host: str = "upstream.test"


CONTENTS = [{"role": "user", "parts": [{"text": "hi"}]}]
MESSAGES = [{"role": "user", "content": "hi"}]


def to_openai(req) -> dict:
    return orjson.loads(openai_build.build_request(req, "gpt", Prov()))


def to_anthropic(req) -> dict:
    return orjson.loads(anthropic_build.build_request(req, "claude", Prov()))


def to_gemini(req) -> tuple[str, dict]:
    body = gemini_build.build_request(req, "gemini-2.5-flash", Prov())
    return DIALECTS["gemini"].upstream_path("gemini-2.5-flash", req.stream, True), orjson.loads(body)


@pytest.mark.parametrize("gc", [
    {"seed": 42, "presencePenalty": 0.5, "frequencyPenalty": -0.25},
    {"seed": 42, "presence_penalty": 0.5, "frequency_penalty": -0.25},     # snake_case (SDK dicts)
    {"seed": 42.0, "presencePenalty": 0.5, "frequencyPenalty": -0.25},     # an integral float seed
])
def test_gemini_client_to_openai_provider(gc):
    key = "generation_config" if "presence_penalty" in gc else "generationConfig"
    req = gemini.parse_request({"contents": CONTENTS, key: gc}, model="alias")
    assert (req.seed, req.presence_penalty, req.frequency_penalty) == (42, 0.5, -0.25)
    body = to_openai(req)
    assert (body["seed"], body["presence_penalty"], body["frequency_penalty"]) == (42, 0.5, -0.25)
    assert type(body["seed"]) is int
    # and back: the Gemini target gets them where a Gemini client sent them
    assert {k: to_gemini(req)[1]["generationConfig"][k] for k in ("seed", "presencePenalty", "frequencyPenalty")} \
        == {"seed": 42, "presencePenalty": 0.5, "frequencyPenalty": -0.25}


def test_gemini_sdk_config_reaches_openai():
    from google.genai import types

    cfg = types.GenerateContentConfig(seed=7, presence_penalty=0.1, frequency_penalty=0.2)
    gc = cfg.model_dump(exclude_none=True)       # snake_case, as a dict-building client sends it
    req = gemini.parse_request({"contents": CONTENTS, "generationConfig": gc}, model="alias")
    body = to_openai(req)
    assert (body["seed"], body["presence_penalty"], body["frequency_penalty"]) == (7, 0.1, 0.2)


def test_openai_client_to_gemini_provider():
    req = openai.parse_request({"model": "a", "messages": MESSAGES, "seed": 3, "presence_penalty": 1,
                                "frequency_penalty": 0.75})
    _, body = to_gemini(req)
    gc = body["generationConfig"]
    assert (gc["seed"], gc["presencePenalty"], gc["frequencyPenalty"]) == (3, 1, 0.75)
    assert not {"seed", "presence_penalty", "frequency_penalty"} & set(body)
    again = to_openai(req)                      # OpenAI → OpenAI (translated path) keeps them too
    assert (again["seed"], again["presence_penalty"], again["frequency_penalty"]) == (3, 1, 0.75)


def test_anthropic_provider_drops_them():
    for req in (openai.parse_request({"model": "a", "messages": MESSAGES, "seed": 3, "presence_penalty": 1,
                                      "frequency_penalty": 0.5}),
                gemini.parse_request({"contents": CONTENTS, "generationConfig": {
                    "seed": 3, "presencePenalty": 1, "frequencyPenalty": 0.5}}, model="alias")):
        body = to_anthropic(req)
        assert not {"seed", "presence_penalty", "frequency_penalty", "presencePenalty"} & set(body)
        assert "seed" not in orjson.dumps(body).decode()


def test_absent_means_not_sent():
    req = openai.parse_request({"model": "a", "messages": MESSAGES})
    assert not {"seed", "presence_penalty", "frequency_penalty"} & set(to_openai(req))
    assert "generationConfig" not in to_gemini(req)[1]
    req = gemini.parse_request({"contents": CONTENTS, "generationConfig": {"seed": None}}, model="alias")
    assert req.seed is None and "seed" not in to_openai(req)


@pytest.mark.parametrize("body,param", [
    ({"seed": 1.5}, "seed"), ({"seed": "1"}, "seed"), ({"seed": True}, "seed"),
    ({"presence_penalty": "a"}, "presence_penalty"), ({"frequency_penalty": [1]}, "frequency_penalty"),
])
def test_openai_bad_values_are_400(body, param):
    with pytest.raises(GatewayError) as ei:
        openai.parse_request({"model": "a", "messages": MESSAGES, **body})
    assert ei.value.status == 400 and param in ei.value.message


@pytest.mark.parametrize("gc", [{"seed": 1.5}, {"seed": "1"}, {"presencePenalty": "a"},
                                {"frequency_penalty": False}])
def test_gemini_bad_values_are_400(gc):
    with pytest.raises(GatewayError) as ei:
        gemini.parse_request({"contents": CONTENTS, "generationConfig": gc}, model="alias")
    assert ei.value.status == 400


# ---------------------------------------------------------------- model_path

@pytest.mark.parametrize("model,path", [
    ("gemini-2.5-flash", "models/gemini-2.5-flash"),
    ("models/gemini-2.5-flash", "models/gemini-2.5-flash"),
    ("tunedModels/my-model-7x", "tunedModels/my-model-7x"),
    ("gemini-2.0-flash-exp_v1.2~beta", "models/gemini-2.0-flash-exp_v1.2~beta"),
    ("a/b:generateContent?alt=x#y z%", "models/a%2Fb%3AgenerateContent%3Falt%3Dx%23y%20z%25"),
    ("tunedModels/x/../../y", "tunedModels/x%2F..%2F..%2Fy"),
    ("gémini", "models/g%C3%A9mini"),
])
def test_model_path(model, path):
    assert model_path(model) == path
    collection, _, ident = path.partition("/")
    assert "/" not in ident and ":" not in ident and "?" not in ident and "#" not in ident
    assert unquote(ident) == model.removeprefix(collection + "/")


def test_upstream_path_uses_model_path():
    path = DIALECTS["gemini"].upstream_path
    assert path("tunedModels/t 1", False, True) == "/tunedModels/t%201:generateContent"
    assert path("models/g:x", True, True) == "/models/g%3Ax:streamGenerateContent?alt=sse"
    assert path("models/g:x", True, False) == "/models/g%3Ax:streamGenerateContent"
