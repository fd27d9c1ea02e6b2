"""Config reload: from the management API (``post``) and from edits of the file (the watcher).

Theory (nginx): a new config is checked fully before it serves; a bad one changes nothing.
Both paths run the same steps under one lock, so they never interleave:

    validate_text(text, path)     every problem, as [{"path", "message"}]; nothing applied on any
    gateway.apply(config)         swaps the config for new requests (in-flight ones finish on the
                                  old); a ConfigError here (e.g. an unreadable ca_file) is a failure

``post(text)`` (POST /config) also writes the file before applying: a temp file in the same
directory (written, flushed, fsynced, given the old file's mode), the old file copied to
``<path>.bak`` the same way, then ``os.replace`` and an fsync of the directory. If apply then
fails, the old text is written back the same way. A symlinked path is written through to its
target (the link stays).

The watcher polls the file's (mtime_ns, size) every ``interval`` s. On a change it waits until
the pair has been unchanged for ``settle`` s (an editor writing in several steps), then reads
the file and compares its SHA-256 with the applied text's: equal (the API's own write, or an
edit undone) changes nothing; different is validated and applied. A bad edit keeps the old
config serving, logs one ERROR naming every problem, and shows in ``status()["last_error"]``
until a later change is applied (or the file again holds the applied text). ``reload_file()``
(SIGHUP) runs the same step at once, without waiting for the poll. The loop never
touches the disk: stat, read, validate (which checks ca_file) and write run in the default
executor.

``status()``: path, loaded_at (unix time of the applied config), source ("startup", "api" or
"file"), last_error (None or {time, source, details}), last_check (unix time of the last poll).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import stat as stat_mod
import tempfile
import time

from ..config import validate_text
from ..config_error import ConfigError

__all__ = ["Reloader", "write_atomic"]

log = logging.getLogger("plexus.config")


def _stat(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _read(path: str) -> tuple[tuple[int, int] | None, bytes]:
    """(stat, bytes) of the file, stat taken before reading (a later change is seen again)."""
    st = _stat(path)
    with open(path, "rb") as f:
        return st, f.read()


def _replace(path: str, data: bytes, mode: int) -> None:
    """Write ``path`` atomically: temp file beside it, fsync, chmod, os.replace."""
    directory, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def fsync_dir(directory: str) -> None:
    """Make a rename or a new file in ``directory`` durable (best effort)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes, backup: bool = True) -> bytes | None:
    """Replace the file at ``path`` with ``data``; the old content is kept in ``<path>.bak``
    (when ``backup``) and returned (None if there was no file)."""
    path = os.path.realpath(path)
    try:
        st = os.stat(path)
        mode = stat_mod.S_IMODE(st.st_mode)
        with open(path, "rb") as f:
            old = f.read()
    except FileNotFoundError:
        mode, old = 0o600, None
    if old is not None and backup:
        _replace(path + ".bak", old, mode)
    _replace(path, data, mode)
    fsync_dir(os.path.dirname(path))
    return old


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8-sig")


def _details(e: ConfigError) -> list[dict]:
    return [{"path": e.key_path, "message": e.message}]


class Reloader:
    """Watches ``path`` and applies config changes to ``gateway`` (see the module docstring)."""

    def __init__(self, gateway, path: str, loop: asyncio.AbstractEventLoop, interval: float = 1.0,
                 settle: float = 0.3, text: str | None = None) -> None:
        self.gateway = gateway
        self.path = path
        self.loop = loop
        self.interval = interval
        self.settle = settle
        self.text = text  # the applied config's text (None until read from the file)
        self.digest = _digest(text.encode()) if text is not None else None
        self.stat: tuple[int, int] | None = None
        self.loaded_at = time.time()
        self.source = "startup"
        self.last_error: dict | None = None
        self.last_check: float | None = None
        self._lock = asyncio.Lock()
        self._ready = asyncio.Event()
        self._task: asyncio.Task | None = None

    @property
    def has_file(self) -> bool:
        """False for a config built in memory (path "" or "<config>"): nothing to watch or write."""
        return bool(self.path) and not self.path.startswith("<")

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Begin watching (reads the file once as the baseline, then polls)."""
        if self._task is None and self.has_file:
            self._task = self.loop.create_task(self._watch())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _io(self, fn, *args):
        return await self.loop.run_in_executor(None, fn, *args)

    async def _watch(self) -> None:
        try:
            await self._baseline()
        finally:
            self._ready.set()
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:  # the watcher must outlive any one bad poll
                log.exception("config watcher: checking %s failed", self.path)

    async def _baseline(self) -> None:
        try:
            st, raw = await self._io(_read, self.path)
        except OSError as e:
            log.error("config watcher: cannot read %s: %s", self.path, e.strerror or e)
            return
        if self.text is None:
            async with self._lock:
                self.stat, self.digest = st, _digest(raw)
                try:
                    self.text = _decode(raw)
                except UnicodeDecodeError:
                    self.text = raw.decode("utf-8", "replace")
        elif _digest(raw) != self.digest:  # edited between startup and now
            async with self._lock:
                await self._from_file(st, raw)
        else:
            self.stat = st

    async def applied_text(self) -> str | None:
        """The applied config's text (waits for the first read of the file)."""
        if self.text is None and self._task is not None:
            await self._ready.wait()
        return self.text

    # ------------------------------------------------------------------ the two paths

    async def check(self) -> None:
        """One poll: if the file changed, wait for it to settle, then reload it."""
        st = await self._io(_stat, self.path)
        self.last_check = time.time()
        if st == self.stat:
            return
        while True:  # debounce: unchanged for `settle` seconds
            await asyncio.sleep(self.settle)
            now = await self._io(_stat, self.path)
            if now == st:
                break
            st = now
        async with self._lock:
            try:
                st, raw = await self._io(_read, self.path)
            except OSError as e:
                self.stat = st
                self._failed("file", [{"path": "", "message": f"cannot read {self.path}: {e.strerror or e}"}])
                return
            await self._from_file(st, raw)

    async def reload_file(self) -> list[dict]:
        """Read the file now and apply it if it differs from the applied text (SIGHUP): the
        watcher's step without its poll and debounce. [] when applied or unchanged, else the
        problems (the old config keeps serving; logged at ERROR, as a bad edit is)."""
        if not self.has_file:
            return [{"path": "", "message": "the config was not loaded from a file"}]
        async with self._lock:
            try:
                st, raw = await self._io(_read, self.path)
            except OSError as e:
                details = [{"path": "", "message": f"cannot read {self.path}: {e.strerror or e}"}]
                self._failed("file", details)
                return details
            await self._from_file(st, raw)
        err = self.last_error
        return err["details"] if err is not None and err["source"] == "file" else []

    async def _from_file(self, st, raw: bytes) -> None:
        self.stat = st
        digest = _digest(raw)
        if digest == self.digest:  # our own write, or the edit was undone
            if self.last_error is not None and self.last_error["source"] == "file":
                self.last_error = None
            return
        try:
            text = _decode(raw)
        except UnicodeDecodeError as e:
            self._failed("file", [{"path": "", "message": f"not valid UTF-8 (byte {e.start})"}])
            return
        details = await self._validate_apply(text)
        if details:
            self._failed("file", details)
        else:
            self._applied(text, digest, "file")

    async def post(self, text: str) -> list[dict]:
        """Validate, write (atomically, keeping .bak) and apply ``text``; [] on success, else the
        problems (nothing changed: the file is restored if apply failed). OSError if the file
        cannot be written."""
        async with self._lock:
            config, details = await self._io(validate_text, text, self.path)
            if config is None:
                self._failed("api", details)
                return details
            raw = text.encode("utf-8")
            old = await self._io(write_atomic, self.path, raw)
            try:
                self.gateway.apply(config)
            except Exception as e:
                await self._io(self._restore, old)
                if not isinstance(e, ConfigError):
                    raise
                self._failed("api", _details(e))
                return _details(e)
            self.stat = await self._io(_stat, self.path)
            self._applied(text, _digest(raw), "api")
            return []

    def _restore(self, old: bytes | None) -> None:
        if old is None:
            try:
                os.unlink(os.path.realpath(self.path))
            except OSError:
                pass
        else:
            write_atomic(self.path, old, backup=False)

    async def _validate_apply(self, text: str) -> list[dict]:
        config, details = await self._io(validate_text, text, self.path)
        if config is None:
            return details or [{"path": "", "message": "invalid config"}]
        try:
            self.gateway.apply(config)
        except ConfigError as e:
            return _details(e)
        return []

    # ------------------------------------------------------------------ state

    def _applied(self, text: str, digest: str, source: str) -> None:
        self.text, self.digest = text, digest
        self.loaded_at = time.time()
        self.source = source
        self.last_error = None
        log.info("config %s applied (source: %s)", self.path, source)

    def _failed(self, source: str, details: list[dict]) -> None:
        self.last_error = {"time": time.time(), "source": source, "details": details}
        problems = "; ".join(f"{d.get('path') or '<file>'}: {d.get('message')}" for d in details)
        if source == "file":
            log.error("config %s changed but was NOT applied (the previous config keeps serving): %s",
                      self.path, problems)
        else:
            log.warning("config posted to the management API was rejected: %s", problems)

    def status(self) -> dict:
        return {"path": self.path, "loaded_at": self.loaded_at, "source": self.source,
                "last_error": self.last_error, "last_check": self.last_check}
