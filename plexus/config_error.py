"""ConfigError: what is wrong with a config, naming the file and the key path."""

from __future__ import annotations


class ConfigError(Exception):
    """A config problem: ``str()`` is "<file>: <key_path>: <message>"."""

    def __init__(self, file: str, key_path: str, message: str) -> None:
        self.file = file
        self.key_path = key_path
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.key_path:
            return f"{self.file}: {self.key_path}: {self.message}"
        return f"{self.file}: {self.message}"

    def detail(self) -> dict[str, str]:
        """The problem as the management API reports it: {"path", "message"}."""
        return {"path": self.key_path, "message": self.message}
