"""systemd notifications (READY, STATUS, WATCHDOG); silent when not under systemd."""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self) -> None:
        self._n: Optional[Any] = None
        if os.environ.get("NOTIFY_SOCKET"):
            import sdnotify

            self._n = sdnotify.SystemdNotifier()
            sock = getattr(self._n, "socket", None)
            if sock is not None:
                # A notification never blocks the loop: if nobody drains the socket (its queue is
                # full), it is dropped, and the loop still sees SIGTERM and the next tick.
                sock.setblocking(False)
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        self.watchdog_interval: Optional[float] = None
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1e6 / 2

    def _send(self, text: str) -> None:
        if self._n is not None:
            self._n.notify(text)

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}")

    def status(self, text: str) -> None:
        self._send(f"STATUS={text}")

    def watchdog(self) -> None:
        if self.watchdog_interval is not None:
            self._send("WATCHDOG=1")

    def reloading(self) -> None:
        self._send("RELOADING=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")
