"""Routing: a client's model name → the ordered targets one request may try.

Theory: the decision is a small pure object fed outcomes; the caller awaits the attempts.
``Router.plan(alias, now)`` returns the targets to try, in order (the pipeline tries the first,
and on an outcome that fails over, the next); ``Router.report(target, outcome, now, ...)``
feeds back what happened.  Nothing here awaits, reads a clock or does I/O: ``now`` (a
monotonic clock, e.g. ``loop.time()``) and the rng are passed in.

A plan holds each *healthy* target at most once (cooling ones are left out: cooldowns.py),
ordered by the alias's selector, and at most ``routing.max_attempts`` long (0 = all of them).
When every target of the alias is cooling down, the plan is the one whose cooldown ends first:
a call that may work beats an error without a call.  Selectors (small objects, one per kind,
``order(targets, now, limit)``; only the first ``limit`` positions need to be right):

- ``random`` (default): a uniform shuffle (Fisher-Yates over ``rng.random``).
- ``weighted``: weighted random order without replacement: the first target is drawn with
  probability weight/total, the next among the rest, and so on.
- ``in_order``: config order: primary, then backups (first healthy target wins).
- ``least_latency``: power of two choices (Finagle/Linkerd): two distinct random targets, the
  one with the lower moving average of time to first byte goes first, the rest follow by
  average.  The average is exponentially weighted and decays with time: a sample counts for
  ``1 - (1 - ALPHA) * exp(-dt / TAU)`` of it, dt being the time since the previous sample (0.2
  for back-to-back samples, almost all of it after a long silence).  Exploration: a target
  with no sample in the last ``EXPLORE_AFTER`` seconds (never tried, slow and so never
  chosen, or back from a cooldown) is put first for *one* request, then not again for
  ``EXPLORE_AFTER`` seconds, whatever its average says.  It is time-based, not a coin flip:
  at most one probe per target per 30 s, deterministic under test.  Targets without a sample
  count as infinitely slow in the comparison, so a probe in flight draws no crowd.

Cost: a single-target alias returns its own precomputed tuple (no rng call, no allocation);
with no failures recorded anywhere, ``plan`` does no lookups; otherwise O(targets) with one
list for the result.  Cooldown and latency state is keyed by (provider, model), shared by all
aliases naming it; ``snapshot(now)`` is the one read-out for the management API.

Direct addressing (``routing.direct_addressing: true``): a client model ``<provider>/<model>``
that is not an alias routes to that provider (split at the first "/", so the model may hold
more "/"); the model must be in the provider's list unless it has ``models: "*"``.  The
synthesized single-target alias is cached (bounded).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence

from ..config import Alias, Config, Provider, Target
from ..config_models import make_target
from .cooldowns import Cooldowns
from .outcome import AUTH, OK, RETRY, Outcome

__all__ = ["Router", "RandomOrder", "WeightedOrder", "InOrder", "LeastLatency"]

EXPLORE_AFTER = 30.0    # s without a sample before a target is probed again
TAU = 10.0              # s: the time constant of the latency average's decay
ALPHA = 0.2             # weight of a sample that follows the previous one immediately
DIRECT_CACHE = 1024     # synthesized <provider>/<model> aliases kept
_DIRECT_MODEL = re.compile(r"[\x21-\x7e]{1,256}\Z")  # printable ASCII, no spaces: goes into URLs and headers


class RandomOrder:
    __slots__ = ("_random",)

    def __init__(self, rng: random.Random) -> None:
        self._random = rng.random

    def order(self, targets: Sequence[Target], now: float, limit: int) -> list[Target]:
        if len(targets) == 2:  # the common pair: one draw, no loop
            a, b = targets
            return [a, b] if self._random() < 0.5 else [b, a]
        out = list(targets)
        n = len(out)
        rnd = self._random
        for k in range(min(limit, n - 1)):
            j = k + int(rnd() * (n - k))
            out[k], out[j] = out[j], out[k]
        return out


class WeightedOrder:
    __slots__ = ("_random",)

    def __init__(self, rng: random.Random) -> None:
        self._random = rng.random

    def order(self, targets: Sequence[Target], now: float, limit: int) -> list[Target]:
        out = list(targets)
        n = len(out)
        last = n - 1
        total = 0.0
        for t in out:
            total += t.weight
        rnd = self._random
        for k in range(min(limit, last)):
            r = rnd() * total
            j = k
            acc = out[k].weight
            while acc <= r and j < last:
                j += 1
                acc += out[j].weight
            chosen = out[j]
            out[k], out[j] = chosen, out[k]
            total -= chosen.weight
        return out


class InOrder:
    __slots__ = ()

    def order(self, targets: Sequence[Target], now: float, limit: int) -> Sequence[Target]:
        return targets


class _Latency:
    __slots__ = ("ewma", "at", "probe")

    def __init__(self) -> None:
        self.ewma = math.inf      # s to first byte; inf = no sample yet
        self.at = -math.inf       # time of the last sample
        self.probe = -math.inf    # time the target was last put first to explore it

    def add(self, sample: float, now: float) -> None:
        if self.ewma == math.inf:
            self.ewma = sample
        else:
            dt = now - self.at
            keep = (1.0 - ALPHA) * math.exp(-dt / TAU) if dt > 0 else 1.0 - ALPHA
            self.ewma = self.ewma * keep + sample * (1.0 - keep)
        self.at = now


class LeastLatency:
    __slots__ = ("_random", "_table")

    def __init__(self, rng: random.Random, table: dict[tuple[str, str], _Latency]) -> None:
        self._random = rng.random
        self._table = table

    def order(self, targets: Sequence[Target], now: float, limit: int) -> list[Target]:
        table = self._table
        for t in targets:  # exploration: a target not heard from lately goes first, once
            s = table[t.key]
            if now - s.at >= EXPLORE_AFTER and now - s.probe >= EXPLORE_AFTER:
                s.probe = now
                rest = [u for u in targets if u is not t]
                rest.sort(key=lambda u: table[u.key].ewma)
                return [t, *rest]
        n = len(targets)
        rnd = self._random
        i = int(rnd() * n)
        j = int(rnd() * (n - 1))
        if j >= i:
            j += 1
        a, b = targets[i], targets[j]
        if table[b.key].ewma < table[a.key].ewma:
            a, b = b, a
        if n == 2:
            return [a, b]
        rest = [u for u in targets if u is not a and u is not b]
        if limit > 2:
            rest.sort(key=lambda u: table[u.key].ewma)
        return [a, b, *rest]


class Router:
    """Alias resolution, per-request plans, and the outcomes fed back (one per process)."""

    __slots__ = ("cooldowns", "_entries", "_aliases", "_names", "_randrange", "_order", "_latency",
                 "_max_attempts", "_direct", "_providers", "_offers", "_direct_cache")

    def __init__(self, config: Config, rng: random.Random | None = None,
                 cooldowns: Cooldowns | None = None) -> None:
        rng = rng if rng is not None else random.Random()
        self._aliases: dict[str, Alias] = dict(config.aliases)
        self._names: list[str] = list(config.aliases)
        self._randrange = rng.randrange
        routing = config.routing
        self.cooldowns = cooldowns if cooldowns is not None else Cooldowns(routing.cooldown)
        self._entries = self.cooldowns.entries  # read in plan(): empty = nothing failing
        self._latency = {t.key: _Latency() for a in config.aliases.values() for t in a.targets}
        self._order = {"random": RandomOrder(rng).order, "weighted": WeightedOrder(rng).order,
                       "in_order": InOrder().order, "least_latency": LeastLatency(rng, self._latency).order}
        self._max_attempts = routing.max_attempts
        self._direct = routing.direct_addressing
        self._providers: dict[str, Provider] = dict(config.providers)
        self._offers = {name: frozenset(p.models) for name, p in config.providers.items()}
        self._direct_cache: dict[str, Alias] = {}

    # ------------------------------------------------------------------ names

    def resolve(self, name: str) -> Alias | None:
        """The Alias for a client's ``model`` value, or None (the caller answers 404).

        An alias wins; then, with direct addressing, ``<provider>/<model>``."""
        alias = self._aliases.get(name)
        if alias is not None or not self._direct:
            return alias
        alias = self._direct_cache.get(name)
        if alias is not None:
            return alias
        pname, _, model = name.partition("/")
        provider = self._providers.get(pname)
        if provider is None or not _DIRECT_MODEL.match(model):
            return None
        if not provider.any_model and model not in self._offers[pname]:
            return None
        if len(self._direct_cache) >= DIRECT_CACHE:
            self._direct_cache.clear()
        alias = self._direct_cache[name] = Alias(name=name, targets=(make_target(provider, model),),
                                                 selector="in_order")
        return alias

    def aliases(self) -> list[str]:
        """Alias names in config order (for GET /v1/models); a shared list: do not mutate."""
        return self._names

    # ------------------------------------------------------------------ plans and outcomes

    def plan(self, alias: Alias, now: float) -> Sequence[Target]:
        """The targets to try for one request, in order (never empty; do not mutate it)."""
        targets = alias.targets
        n = len(targets)
        if n == 1:
            return targets
        entries = self._entries
        if entries:
            healthy = [t for t in targets if (e := entries.get(t.key)) is None or e.until <= now]
            if len(healthy) != n:
                if not healthy:  # all cooling: the one that comes back first
                    return (min(targets, key=lambda t: entries[t.key].until),)
                if len(healthy) == 1:
                    return healthy
                targets, n = healthy, len(healthy)
        limit = self._max_attempts
        if not limit or limit > n:
            limit = n
        order = self._order[alias.selector](targets, now, limit)
        return order if len(order) == limit else order[:limit]

    def report(self, target: Target, outcome: Outcome, now: float, ttfb: float | None = None,
               retry_after: float | None = None, status: int | None = None) -> None:
        """What one attempt came to (``outcome.classify``).  OK clears the target's cooldown and,
        with ``ttfb`` (seconds from sending to the first byte), feeds its latency average;
        RETRY and AUTH cool it down (``retry_after`` in seconds wins over the schedule;
        ``status`` is kept for the snapshot); FATAL changes nothing (the request was at fault)."""
        if outcome is OK:
            if self._entries:
                self.cooldowns.success(target.key)
            if ttfb is not None:
                s = self._latency.get(target.key)
                if s is not None:
                    s.add(ttfb, now)
        elif outcome is RETRY or outcome is AUTH:
            self.cooldowns.failure(target.key, now, retry_after, status)

    def pick(self, alias: Alias) -> Target:
        """One target, uniformly at random (the pre-failover API: use ``plan``)."""
        targets = alias.targets
        if len(targets) == 1:
            return targets[0]
        return targets[self._randrange(len(targets))]

    def snapshot(self, now: float) -> list[dict]:
        """One row per (provider, model) that is configured or has failures: cooldown state and
        the latency average (None without samples), for the management API."""
        rows = {(r["provider"], r["model"]): r for r in self.cooldowns.snapshot(now)}
        out = []
        for key, s in self._latency.items():
            row = rows.pop(key, None) or {"provider": key[0], "model": key[1], "cooling": False, "until": 0.0,
                                           "remaining": 0.0, "failures": 0, "step": 0, "last_status": None,
                                           "last_failure": None}
            row["ttfb_ewma"] = None if s.ewma == math.inf else s.ewma
            out.append(row)
        for row in rows.values():
            row["ttfb_ewma"] = None
            out.append(row)
        return out
