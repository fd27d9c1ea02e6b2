"""Routing: alias name -> the one target a request is sent to.

Theory: this is the single seam where a target is chosen.  Today the choice is uniform random
among an alias's targets (a single-target alias never touches the rng); load balancing and
failover will grow here, as bookkeeping that *returns* the next target to try, never as I/O.
Everything is precomputed from the frozen Config at construction, so ``resolve`` is one dict
lookup and ``pick`` is at most one rng call.  Pure: no I/O, no clock; the rng is injectable so
tests are deterministic.
"""

from __future__ import annotations

import random

from .config import Alias, Config, Target

__all__ = ["Router"]


class Router:
    __slots__ = ("_aliases", "_names", "_randrange")

    def __init__(self, config: Config, rng: random.Random | None = None) -> None:
        self._aliases: dict[str, Alias] = dict(config.aliases)
        self._names: list[str] = list(config.aliases)
        self._randrange = (rng if rng is not None else random.Random()).randrange

    def resolve(self, alias: str) -> Alias | None:
        """The Alias for a client's ``model`` value, or None (the caller answers 404)."""
        return self._aliases.get(alias)

    def pick(self, alias: Alias) -> Target:
        """The target to call for this request."""
        targets = alias.targets
        if len(targets) == 1:
            return targets[0]
        return targets[self._randrange(len(targets))]

    def aliases(self) -> list[str]:
        """Alias names in config order (for GET /v1/models); a shared list: do not mutate."""
        return self._names
