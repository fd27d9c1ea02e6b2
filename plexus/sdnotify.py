"""systemd's readiness protocol (sd_notify), without libsystemd: one datagram to $NOTIFY_SOCKET.

Theory (sd_notify(3)): a service started with ``Type=notify`` tells the service manager how it is
doing by sending newline-separated ``KEY=VALUE`` assignments as one datagram to the AF_UNIX
socket named in ``$NOTIFY_SOCKET``. A name starting with ``@`` is in the abstract namespace (the
``@`` stands for a leading NUL byte). Plexus sends:

    READY=1 + STATUS=listening on …            once the listener is open (systemctl start returns)
    RELOADING=1 + MONOTONIC_USEC=<now, µs>     when SIGHUP starts a config reload
    READY=1 + STATUS=…                         when that reload is over (applied or rejected)
    STOPPING=1 + STATUS=…                      when SIGTERM/SIGINT starts the graceful shutdown

Outside systemd (no ``$NOTIFY_SOCKET``) ``notify`` does nothing. A failure to send (the socket
went away, a ``vsock:`` address this module does not speak) is logged at DEBUG level and never
raised: readiness reporting must not be able to stop the gateway. The send is a blocking
``sendto`` on a fresh socket with a short timeout; it happens a handful of times per process life,
never on the request path.
"""

from __future__ import annotations

import logging
import os
import socket
import time

__all__ = ["notify", "monotonic_usec", "address"]

log = logging.getLogger("plexus")

SEND_TIMEOUT = 1.0  # seconds a send may wait for room in the manager's queue


def address(value: str | None = None) -> str | None:
    """The socket address to send to ($NOTIFY_SOCKET unless ``value``), '@' turned into the NUL
    of the abstract namespace; None when there is none or it is not an AF_UNIX path."""
    name = os.environ.get("NOTIFY_SOCKET") if value is None else value
    if not name:
        return None
    if name[0] == "@":
        return "\0" + name[1:]
    if name[0] == "/":
        return name
    return None  # e.g. "vsock:CID:PORT" (systemd ≥ 254, VMs): not supported here


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as RELOADING=1 wants it in MONOTONIC_USEC=."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def notify(*assignments: str) -> bool:
    """Send ``KEY=VALUE`` assignments (one datagram); True if it was sent. A value must not
    contain a newline (it would start another assignment); newlines are replaced by spaces."""
    addr = address()
    if addr is None or not assignments:
        return False
    data = "\n".join(a.replace("\n", " ") for a in assignments).encode("utf-8", "replace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.settimeout(SEND_TIMEOUT)
            s.sendto(data, addr)
    except OSError as e:
        log.debug("sd_notify to %s failed: %s", os.environ.get("NOTIFY_SOCKET"), e)
        return False
    return True
