"""plexus/sdnotify.py: one datagram of KEY=VALUE lines to $NOTIFY_SOCKET (a path, or '@' for the
abstract namespace); nothing without the variable; a failure is never raised."""

from __future__ import annotations

import os
import socket
import tempfile
import time

import pytest

from plexus import sdnotify


@pytest.fixture
def receiver(monkeypatch):
    """A bound datagram socket and NOTIFY_SOCKET naming it (path and abstract variants)."""
    made = []

    def make(abstract: bool):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.settimeout(5)
        if abstract:
            name = f"plexus-sdnotify-test-{os.getpid()}-{time.monotonic_ns()}"
            s.bind("\0" + name)
            monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        else:
            d = tempfile.mkdtemp(prefix="pxn", dir="/tmp")
            path = os.path.join(d, "n")
            s.bind(path)
            monkeypatch.setenv("NOTIFY_SOCKET", path)
            made.append(d)
        made.append(s)
        return s

    yield make
    for x in made:
        if isinstance(x, socket.socket):
            x.close()
        else:
            for f in os.listdir(x):
                os.unlink(os.path.join(x, f))
            os.rmdir(x)


@pytest.mark.parametrize("abstract", [False, True])
def test_notify_sends_one_datagram(receiver, abstract):
    s = receiver(abstract)
    assert sdnotify.notify("READY=1", "STATUS=listening on http://127.0.0.1:3000 (2 aliases)")
    assert s.recv(4096) == b"READY=1\nSTATUS=listening on http://127.0.0.1:3000 (2 aliases)"


def test_newline_in_a_value_cannot_start_another_assignment(receiver):
    s = receiver(False)
    assert sdnotify.notify("STATUS=bad\nREADY=1")
    assert s.recv(4096) == b"STATUS=bad READY=1"


def test_no_socket_means_nothing_sent(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert sdnotify.notify("READY=1") is False


def test_unusable_socket_is_not_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert sdnotify.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")  # not an AF_UNIX address: not supported
    assert sdnotify.notify("READY=1") is False


def test_address():
    assert sdnotify.address("@name") == "\0name"
    assert sdnotify.address("/run/systemd/notify") == "/run/systemd/notify"
    assert sdnotify.address("") is None and sdnotify.address("vsock:1:2") is None


def test_monotonic_usec_is_clock_monotonic():
    assert abs(sdnotify.monotonic_usec() / 1e6 - time.monotonic()) < 1  # the same clock on Linux
