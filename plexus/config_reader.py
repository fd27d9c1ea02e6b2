"""Config value readers: typed accessors that raise ConfigError naming the key path.

``Reader`` substitutes ``${VAR}`` / ``${VAR:-default}`` (``$${`` is a literal ``${``) in every
string it reads, accepts numbers and booleans from ``${...}`` references only (a bare quoted
"5" is a mistake worth reporting), and suggests the nearest allowed key for a typo.  Shared by
config.py (server, upstream, providers), config_models.py (aliases, routing) and
config_control.py (keys, usage, metrics, debug, pricing).

Collecting: a Reader built with an ``errors`` list reports every problem instead of the first.
Each independent part of the config (a section, a provider, an alias, a key) is read inside
``with r.entry():``; a ConfigError inside it is appended to ``errors`` and the part is skipped
(without a list it propagates, as usual).  Unknown keys are appended one by one and reading
goes on (the key is ignored); everything else stops its entry, since later reads of that entry
may depend on the bad value.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from .config_error import ConfigError

__all__ = ["Reader", "join", "kind"]

_ENV_REF = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")
BAD_NAME_CHAR = re.compile(r"[\s\x00-\x1f\x7f]")


def join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


class Reader:
    """Typed accessors that raise ConfigError with the key path; substitutes ${VAR}."""

    __slots__ = ("file", "env", "errors")

    def __init__(self, file: str, env: Mapping[str, str], errors: list[ConfigError] | None = None) -> None:
        self.file = file
        self.env = env
        self.errors = errors

    def fail(self, path: str, message: str):
        raise ConfigError(self.file, path, message)

    @contextmanager
    def entry(self) -> Iterator[None]:
        """One independent part: with an ``errors`` list, its ConfigError is collected."""
        try:
            yield
        except ConfigError as e:
            if self.errors is None:
                raise
            self.errors.append(e)

    def mapping(self, value: object, path: str, allowed: tuple[str, ...],
                required: tuple[str, ...] = (), what: str = "a mapping") -> dict:
        if not isinstance(value, dict):
            self.fail(path, f"must be {what}, got {kind(value)}")
        for key in value:
            if key not in allowed:
                hint = difflib.get_close_matches(str(key), allowed, n=1)
                suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
                with self.entry():
                    self.fail(join(path, key), f"unknown key '{key}' (allowed: {', '.join(allowed)}){suggestion}")
        for key in required:
            if key not in value:
                self.fail(join(path, key), "missing required key")
        return value

    def substitute(self, text: str, path: str) -> tuple[str, tuple[str, ...]]:
        if "$" not in text:
            return text, ()
        used: list[str] = []

        def repl(m: re.Match) -> str:
            whole = m.group(0)
            if whole == "$${":
                return "${"
            name = m.group(1)
            if name is None:
                self.fail(path, "malformed '${' reference: use ${VAR} or ${VAR:-default} "
                                "(write $${ for a literal ${)")
            used.append(name)
            value = self.env.get(name)
            if m.group(2) is not None:
                return value if value else (m.group(2) or "")
            if value is None:
                self.fail(path, f"environment variable {name} is not set "
                                f"(set it, or write ${{{name}:-default}})")
            return value

        return _ENV_REF.sub(repl, text), tuple(dict.fromkeys(used))

    def string(self, value: object, path: str) -> str:
        if not isinstance(value, str):
            self.fail(path, f"must be a string, got {kind(value)} (quote it)")
        return self.substitute(value, path)[0]

    def name(self, value: object, path: str, what: str) -> str:
        """A name used in URLs/headers: non-empty, no whitespace or control characters."""
        if not isinstance(value, str):
            self.fail(path, f"{what} must be a string, got {kind(value)} (quote it)")
        if not value or BAD_NAME_CHAR.search(value):
            self.fail(path, f"{what} {value!r} must be non-empty without spaces or control characters")
        return value

    def _from_env(self, value: object, path: str, what: str) -> tuple[object, bool]:
        """A quoted string is only accepted for a number/boolean when it is a ${...} reference."""
        if isinstance(value, str):
            if "${" not in value:
                self.fail(path, f"must be {what}, got a string")
            return self.substitute(value, path)[0].strip(), True
        return value, False

    def integer(self, value: object, path: str, lo: int, hi: int | None = None) -> int:
        value, from_env = self._from_env(value, path, "an integer")
        if from_env:
            try:
                value = int(value)
            except ValueError:
                self.fail(path, f"must be an integer, got {value!r} from the environment")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"must be an integer, got {kind(value)}")
        if value < lo or (hi is not None and value > hi):
            self.fail(path, f"must be between {lo} and {hi}, got {value}" if hi is not None
                      else f"must be at least {lo}, got {value}")
        return value

    def seconds(self, value: object, path: str, zero_ok: bool = False) -> float:
        """A positive, finite number of seconds; with ``zero_ok`` also 0 (meaning "no limit")."""
        what = "0 (no limit) or a positive number of seconds" if zero_ok else "a positive number of seconds"
        return self.number(value, path, "a number of seconds", what, zero_ok)

    def number(self, value: object, path: str, noun: str = "a number",
               what: str = "a positive number", zero_ok: bool = False) -> float:
        """A positive (or, with ``zero_ok``, non-negative) finite number, as a float."""
        value, from_env = self._from_env(value, path, noun)
        if from_env:
            try:
                value = float(value)
            except ValueError:
                self.fail(path, f"must be {noun}, got {value!r} from the environment")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(path, f"must be {noun}, got {kind(value)}")
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
            self.fail(path, f"must be {what}, got {value}")
        return float(value)

    def boolean(self, value: object, path: str) -> bool:
        value, from_env = self._from_env(value, path, "true or false")
        if from_env:
            lowered = value.lower()
            if lowered in ("true", "yes", "on", "1"):
                return True
            if lowered in ("false", "no", "off", "0"):
                return False
        if not isinstance(value, bool):
            self.fail(path, f"must be true or false, got {kind(value)}")
        return value


def kind(value: object) -> str:
    if value is None:
        return "nothing (null)"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)
