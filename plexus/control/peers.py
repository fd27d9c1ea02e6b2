"""A worker's link to the other workers (supervisor.py): shared cooldowns and summed metrics.

Only used with `--workers` > 1. The worker holds one end of a SOCK_SEQPACKET socketpair whose
other end is the parent's; the parent passes each datagram a worker sends on to every other
worker (it never parses them, except `ready`).

- **Cooldowns.** The router's `Cooldowns.listener` is this object: a failure that cools a
  target, a success that ends a streak and a management `DELETE /cooldowns` are sent as small
  JSON datagrams (`{"c": "fail"|"ok"|"clear", ...}`), times as wall-clock seconds; a receiving
  worker applies them to its own table on its own clock (`Cooldowns.apply`/`forget`/`drop`,
  which do not call the listener back: no echo). The healthy path sends nothing: only failures
  and the success that ends one do. Sending never blocks: a full buffer drops the message.
- **Metrics.** Every `SNAPSHOT_EVERY` seconds (and at close) the worker writes its counters
  (`Metrics.snapshot`) to `<shared>/metrics-<slot>.json` (a temp file renamed over it); a
  scrape (`others()`) reads the other slots' files. A worker started in a slot that already has
  a file (a restart) first adds that file's counts to its own, so summed counters never go back.
"""

from __future__ import annotations

import logging
import os
import socket
import time

import orjson

from ..routing.cooldowns import apply_message, failure_message

__all__ = ["Peers", "SNAPSHOT_EVERY"]

log = logging.getLogger("plexus")

SNAPSHOT_EVERY = 1.0
MAX_MESSAGE = 65536


class Peers:
    def __init__(self, chan: socket.socket, slot: int, shared: str, gateway, metrics, loop) -> None:
        self._chan = chan
        self.slot = slot
        self.shared = shared
        self._gateway = gateway
        self._metrics = metrics
        self._loop = loop
        self._timer = None
        chan.setblocking(False)
        self._path = os.path.join(shared, f"metrics-{slot}.json")
        try:  # a restart in this slot: continue its counts
            with open(self._path, "rb") as f:
                metrics.absorb(orjson.loads(f.read()))
        except (OSError, orjson.JSONDecodeError):
            pass
        plane = getattr(gateway, "plane", None)
        if plane is not None:   # the plane points the cooldown table at us (and Redis) after each reload
            plane.add_listener(self)
        else:                   # a bare gateway (tests)
            self.attach()
            gateway.on_apply.append(lambda config: self.attach())

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Listen to the others and tell the parent this worker is ready."""
        self._loop.add_reader(self._chan.fileno(), self._receive)
        self._send_raw(b"ready")
        self._timer = self._loop.call_later(SNAPSHOT_EVERY, self._tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            self._loop.remove_reader(self._chan.fileno())
        except (ValueError, OSError):
            pass
        self.write_snapshot()

    def attach(self) -> None:
        """Listen to the cooldown table in force (a reload may have made a new one)."""
        self._gateway.router.cooldowns.listener = self

    # ---- cooldowns out -------------------------------------------------------------------------

    def cooled(self, key, e, now: float) -> None:
        self._send(failure_message(key, e, time.time() - now))

    def healthy(self, key) -> None:
        self._send({"c": "ok", "p": key[0], "m": key[1]})

    def cleared(self, provider, model) -> None:
        self._send({"c": "clear", "p": provider, "m": model})

    def _send(self, msg: dict) -> None:
        self._send_raw(orjson.dumps(msg))

    def _send_raw(self, data: bytes) -> None:
        try:
            self._chan.send(data)
        except OSError:  # full, or the parent is gone: cooldowns are advisory
            pass

    # ---- cooldowns in --------------------------------------------------------------------------

    def _receive(self) -> None:
        while True:
            try:
                data = self._chan.recv(MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:  # the parent is gone
                self._loop.remove_reader(self._chan.fileno())
                return
            try:
                self._apply(orjson.loads(data))
            except Exception:
                log.warning("workers: a message from another worker could not be applied", exc_info=True)

    def _apply(self, msg: dict) -> None:
        apply_message(self._gateway.router.cooldowns, msg, self._loop.time() - time.time())

    # ---- metrics -------------------------------------------------------------------------------

    def _tick(self) -> None:
        self.write_snapshot()
        self._timer = self._loop.call_later(SNAPSHOT_EVERY, self._tick)

    def write_snapshot(self) -> None:
        tmp = f"{self._path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(orjson.dumps(self._metrics.snapshot()))
            os.replace(tmp, self._path)
        except OSError as e:
            log.warning("workers: metrics snapshot not written: %s", e)

    def others(self) -> list[dict]:
        """The other workers' last snapshots (for a scrape)."""
        out = []
        try:
            names = os.listdir(self.shared)
        except OSError:
            return out
        mine = os.path.basename(self._path)
        for name in names:
            if name.startswith("metrics-") and name.endswith(".json") and name != mine:
                try:
                    with open(os.path.join(self.shared, name), "rb") as f:
                        out.append(orjson.loads(f.read()))
                except (OSError, orjson.JSONDecodeError):
                    pass
        return out
