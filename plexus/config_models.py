"""Config, routing part: aliases (``models:``), their targets, timeouts, and ``routing:``.

Theory: everything a request needs to know about a target is resolved here, at load, onto
the frozen ``Target``: the provider, the upstream model name, the selector weight, the
cooldown/latency ``key`` and the five effective timeouts (target override, else the
provider's, else ``upstream:``, else the defaults below).  The request path never merges
settings.

Timeouts, in the order a call meets them (seconds; defaults suit long reasoning streams):

    connect_timeout      10   TCP + proxy CONNECT + TLS handshake
    ttfb_timeout        300   request sent → response headers (a non-stream answer often
                              arrives with its headers: this bounds a whole non-stream call)
    first_event_timeout 300   response headers → first body bytes / first stream event
                              (reasoning models may think minutes before their first event)
    read_timeout        300   longest silence between two body chunks / stream events;
                              ``idle_timeout`` is accepted as the same key (one setting, two
                              spellings; giving both in one place is an error)
    total_timeout         0   the whole attempt, from connect to the last byte; 0 = no limit

``weight`` (a positive number, default 1) is only meaningful for ``selector: weighted``; on
an alias with another selector it is an error, not silently ignored (explicit beats a
setting that does nothing).  ``routing:`` holds ``max_attempts`` (0 = each healthy target
once), the ``cooldown`` escalation (seconds, non-decreasing, capped at the last) and
``direct_addressing`` (a client ``model`` of ``<provider>/<model>``; off by default).

Each alias is one ``Reader.entry()``: a collecting Reader reports every bad alias.  An alias
with a target on a provider that itself failed validation (``failed``) is skipped without a
second error: the provider's own error says what to fix.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .config_reader import Reader, kind

if TYPE_CHECKING:
    from .config import Provider

__all__ = ["Alias", "RoutingSettings", "SELECTORS", "TIMEOUT_DEFAULTS", "TIMEOUT_KEYS", "Target",
           "make_target", "parse_aliases", "parse_routing", "read_timeouts"]

TIMEOUT_DEFAULTS = {"connect_timeout": 10.0, "ttfb_timeout": 300.0, "first_event_timeout": 300.0,
                    "read_timeout": 300.0, "total_timeout": 0.0}
TIMEOUT_KEYS = tuple(TIMEOUT_DEFAULTS)
TIMEOUT_SPELLINGS = (*TIMEOUT_KEYS, "idle_timeout")  # idle_timeout = read_timeout
SELECTORS = ("random", "weighted", "in_order", "least_latency")
DEFAULT_COOLDOWN = (5.0, 30.0, 120.0, 600.0)

_ALIAS_KEYS = ("targets", "selector")
_TARGET_KEYS = ("provider", "model", "weight", *TIMEOUT_SPELLINGS)
_ROUTING_KEYS = ("max_attempts", "cooldown", "direct_addressing")


@dataclass(frozen=True, slots=True, eq=False)
class Target:
    """One place an alias can send a request; compared and hashed by identity."""
    provider: Provider
    model: str
    key: tuple[str, str]          # (provider name, model): the cooldown and latency key
    weight: float                 # selector: weighted only (1.0 elsewhere)
    connect_timeout: float
    ttfb_timeout: float
    first_event_timeout: float
    read_timeout: float           # idle gap inside a body / stream (config key also idle_timeout)
    total_timeout: float          # 0.0 = no limit


@dataclass(frozen=True, slots=True)
class Alias:
    name: str
    targets: tuple[Target, ...]
    selector: str = "random"      # one of SELECTORS


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    max_attempts: int = 0                           # 0 = every healthy target once
    cooldown: tuple[float, ...] = DEFAULT_COOLDOWN  # consecutive-failure escalation, capped at the last
    direct_addressing: bool = False                 # `<provider>/<model>` as a client model


def make_target(provider: Provider, model: str, weight: float = 1.0,
                overrides: Mapping[str, float] | None = None) -> Target:
    """A Target with the provider's timeouts, replaced by ``overrides`` where given."""
    t = {k: getattr(provider, k) for k in TIMEOUT_KEYS}
    if overrides:
        t.update(overrides)
    return Target(provider=provider, model=model, key=(provider.name, model), weight=weight, **t)


def read_timeouts(r: Reader, d: Mapping, path: str, inherited: Mapping[str, float],
                  only_given: bool = False) -> dict[str, float]:
    """The five timeouts of one config level over ``inherited``; ``only_given``: just the keys set here."""
    if d.get("idle_timeout") is not None and d.get("read_timeout") is not None:
        r.fail(f"{path}.idle_timeout", "idle_timeout and read_timeout are the same setting; give one")
    out: dict[str, float] = {}
    for k in TIMEOUT_KEYS:
        key, raw = k, d.get(k)
        if raw is None and k == "read_timeout":
            key, raw = "idle_timeout", d.get("idle_timeout")
        if raw is not None:
            out[k] = r.seconds(raw, f"{path}.{key}", zero_ok=k == "total_timeout")
        elif not only_given:
            out[k] = inherited[k]
    return out


def parse_routing(r: Reader, raw: object) -> RoutingSettings:
    if raw is None:
        return RoutingSettings()
    d = r.mapping(raw, "routing", _ROUTING_KEYS)
    max_attempts = 0 if d.get("max_attempts") is None else r.integer(d["max_attempts"], "routing.max_attempts", 0, 100)
    cooldown = DEFAULT_COOLDOWN
    if d.get("cooldown") is not None:
        steps = d["cooldown"]
        if not isinstance(steps, list) or not steps:
            r.fail("routing.cooldown", f"must be a non-empty list of seconds, e.g. [5, 30, 120, 600], "
                                       f"got {kind(steps)}")
        cooldown = tuple(r.seconds(s, f"routing.cooldown[{i}]") for i, s in enumerate(steps))
        for i in range(1, len(cooldown)):
            if cooldown[i] < cooldown[i - 1]:
                r.fail(f"routing.cooldown[{i}]", f"cooldowns must not decrease ({cooldown[i - 1]:g} then "
                                                 f"{cooldown[i]:g}): each consecutive failure waits as long or longer")
    direct = False if d.get("direct_addressing") is None else r.boolean(d["direct_addressing"],
                                                                        "routing.direct_addressing")
    return RoutingSettings(max_attempts=max_attempts, cooldown=cooldown, direct_addressing=direct)


class _FailedProvider(Exception):
    """A target names a provider that failed validation: skip the alias (already reported)."""


def parse_aliases(r: Reader, raw: object, providers: Mapping[str, Provider],
                  failed: Collection[str] = ()) -> dict[str, Alias]:
    if not isinstance(raw, dict) or not raw:
        r.fail("models", "must be a non-empty mapping of alias name to {targets: [...]}")
    aliases: dict[str, Alias] = {}
    folded: dict[str, str] = {}
    for name, body in raw.items():
        with r.entry():
            name = r.name(name, f"models.{name}", "alias name")
            other = folded.setdefault(name.casefold(), name)
            if other != name:
                r.fail(f"models.{name}", f"alias '{name}' collides with alias '{other}' "
                                         "(names differ only in case); rename one")
            try:
                aliases[name] = _alias(r, name, body, providers, failed)
            except _FailedProvider:
                pass
    return aliases


def _alias(r: Reader, name: str, raw: object, providers: Mapping[str, Provider],
           failed: Collection[str] = ()) -> Alias:
    path = f"models.{name}"
    d = r.mapping(raw, path, _ALIAS_KEYS, ("targets",), what="a mapping with 'targets'")
    selector = "random"
    if d.get("selector") is not None:
        selector = r.string(d["selector"], f"{path}.selector").strip()
        if selector not in SELECTORS:
            r.fail(f"{path}.selector", f"unknown selector '{selector}' (expected one of {', '.join(SELECTORS)})")
    targets_raw = d["targets"]
    if not isinstance(targets_raw, list):
        r.fail(f"{path}.targets", f"must be a list of {{provider, model}}, got {kind(targets_raw)}")
    if not targets_raw:
        r.fail(f"{path}.targets", "alias has no targets; list at least one {provider, model}")
    targets: list[Target] = []
    seen: set[tuple[str, str]] = set()
    for i, t in enumerate(targets_raw):
        tpath = f"{path}.targets[{i}]"
        t = r.mapping(t, tpath, _TARGET_KEYS, ("provider", "model"), what="a mapping with 'provider' and 'model'")
        pname = r.string(t["provider"], f"{tpath}.provider")
        provider = providers.get(pname)
        if provider is None and pname in failed:
            raise _FailedProvider(pname)
        if provider is None:
            r.fail(f"{tpath}.provider", f"unknown provider '{pname}' (defined: {', '.join(providers)})")
        model = r.string(t["model"], f"{tpath}.model")
        if provider.any_model:
            r.name(model, f"{tpath}.model", "model name")
        elif model not in provider.models:
            r.fail(f"{tpath}.model", f"model '{model}' is not offered by provider '{pname}'; "
                                     f"add it to providers.{pname}.models")
        if (pname, model) in seen:
            r.fail(tpath, f"target {pname}/{model} is listed twice in this alias")
        seen.add((pname, model))
        weight = 1.0
        if t.get("weight") is not None:
            weight = r.number(t["weight"], f"{tpath}.weight")
            if selector != "weighted":
                r.fail(f"{tpath}.weight", f"weight only applies with 'selector: weighted' "
                                          f"(this alias uses '{selector}'); remove it or set the selector")
        overrides = read_timeouts(r, t, tpath, {}, only_given=True)
        targets.append(make_target(provider, model, weight, overrides))
    return Alias(name=name, targets=tuple(targets), selector=selector)
