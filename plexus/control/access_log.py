"""The access log: one line per request on stdout, written by a thread, never by the event loop.

Theory: the line is made from the request's settled usage record (control/usage.py), so it says
what the record says and costs the request path nothing: the control plane hands each settled
record to `AccessLog.add` (a deque append, in its settle batch), and a writer thread wakes every
`FLUSH_EVERY` seconds (or at `BATCH` queued lines), formats the lines and writes them in one
`write` + `flush`. A stdout that blocks (a full pipe, a slow terminal) slows that thread only;
past `MAX_QUEUED` waiting records the oldest are dropped and counted (logged once a minute), so
memory stays bounded. `close()` writes what is queued.

Formats (`log.access` in the config, `--access-log` on the command line):

  text  2026-12-06T18:40:29.123Z 127.0.0.1 key=team-a POST /v1/chat/completions openai
        alias=fast-model target=openai_direct/gpt-4o-mini attempts=1 200 success in=12 out=34
        duration=152.3ms ttft=80.1ms bytes=512 id=<request id>      (one line; "-" = unknown)
  json  {"time", "request_id", "id", "client_ip", "key", "dialect", "endpoint", "alias",
        "provider", "model", "attempts", "http_status", "status", "input_tokens",
        "output_tokens", "cached_tokens", "duration_ms", "ttft_ms", "bytes", "error"}

No secret can appear: the record holds the key's name, never its secret, and the endpoint is the
path without its query (where Gemini clients may put `?key=`).
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time

import orjson

__all__ = ["AccessLog", "FORMATS"]

log = logging.getLogger("plexus")

FORMATS = ("off", "text", "json")
FLUSH_EVERY = 0.2      # seconds between writes when traffic is light
BATCH = 512            # queued lines that wake the writer at once
MAX_QUEUED = 100_000   # beyond this the oldest queued records are dropped (counted)
WARN_EVERY = 60.0

_JSON_FIELDS = ("request_id", "id", "client_ip", "key", "dialect", "endpoint", "alias", "provider", "model",
                "attempts", "http_status", "status", "input_tokens", "output_tokens", "cached_tokens",
                "duration_ms", "ttft_ms", "bytes", "error")


def _iso(t: float) -> str:
    ms = int(t * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{ms:03d}Z"


def _ms(v) -> str:
    return "-" if v is None else f"{v:.1f}ms"


def _n(v) -> str:
    return "-" if v is None else str(v)


def text_line(u) -> str:
    target = f"{u.provider}/{u.model}" if u.provider else "-"
    return (f"{_iso(u.time)} {u.client_ip or '-'} key={u.key or '-'} POST {u.endpoint} {u.dialect} "
            f"alias={u.alias or '-'} target={target} attempts={u.attempts} {u.http_status} {u.status} "
            f"in={_n(u.input_tokens)} out={_n(u.output_tokens)} duration={_ms(u.duration_ms)} "
            f"ttft={_ms(u.ttft_ms)} bytes={u.bytes} id={u.request_id}\n")


def json_line(u) -> bytes:
    d = {"time": _iso(u.time)}
    for f in _JSON_FIELDS:
        d[f] = getattr(u, f)
    return orjson.dumps(d) + b"\n"


class AccessLog:
    """Queue settled usage records; a daemon thread writes their lines to ``stream``."""

    def __init__(self, fmt: str, stream=None) -> None:
        if fmt not in ("text", "json"):
            raise ValueError(f"access log format must be text or json, got {fmt!r}")
        self.format = fmt
        self._stream = stream if stream is not None else sys.stdout
        self._q: collections.deque = collections.deque()
        self._wake = threading.Event()
        self._stop = False
        self.dropped = 0
        self._warned = 0.0
        self._thread = threading.Thread(target=self._run, name="plexus-access-log", daemon=True)
        self._thread.start()

    def add(self, u) -> None:
        q = self._q
        q.append(u)
        n = len(q)
        if n >= BATCH:
            if n > MAX_QUEUED:
                try:
                    q.popleft()
                    self.dropped += 1
                except IndexError:
                    pass
            self._wake.set()

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(FLUSH_EVERY)
            self._wake.clear()
            self._write()
        self._write()

    def _write(self) -> None:
        q = self._q
        if not q:
            return
        records = []
        try:
            while True:
                records.append(q.popleft())
        except IndexError:
            pass
        try:
            if self.format == "json":
                self._binary(b"".join(json_line(u) for u in records))
            else:
                self._stream.write("".join(text_line(u) for u in records))
            self._stream.flush()
        except Exception as e:  # a closed or broken stdout must not kill the thread
            self.dropped += len(records)
            now = time.monotonic()
            if now - self._warned >= WARN_EVERY:
                self._warned = now
                log.warning("access log: %d lines could not be written: %r", self.dropped, e)

    def _binary(self, data: bytes) -> None:
        buf = getattr(self._stream, "buffer", None)
        if buf is not None:
            self._stream.flush()     # (text written before keeps its place)
            buf.write(data)
            buf.flush()
        else:
            self._stream.write(data.decode())

    def close(self) -> None:
        """Write what is queued and stop the thread."""
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=5.0)
