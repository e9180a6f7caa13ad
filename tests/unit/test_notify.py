"""systemd notifications never block a daemon's loop, even when nobody drains the socket."""

from __future__ import annotations

import socket
import time

from etcdguard.common.base.notify import Notifier


def test_a_full_notify_socket_drops_messages_instead_of_blocking(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        monkeypatch.setenv("WATCHDOG_USEC", "1000000")
        n = Notifier()
        started = time.monotonic()
        n.ready("up")
        for i in range(200):   # far more than a datagram socket queues (net.unix.max_dgram_qlen, 10 here)
            n.watchdog()
            n.status(f"tick {i}")
        assert time.monotonic() - started < 5   # it used to block at the 11th message, for good
        sock.settimeout(1)
        assert sock.recv(4096).decode() == "READY=1\nSTATUS=up"
    finally:
        sock.close()
