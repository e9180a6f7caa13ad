"""The vault's background listing: one thread that lists on request and every ``every`` seconds.

The daemon's loop answers systemd's watchdog and the control socket answers
operators; neither may wait on the backend. So the listing (and, the first
time, opening the backend) runs here, and the catalog (catalog.py) keeps its
result for them. Requests made while a listing runs are folded into one more
listing after it, so a burst of ``status`` calls lists at most twice.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Optional

log = logging.getLogger(__name__)


class Lister:
    """Runs ``refresh`` in its own thread: when ``request``-ed, and at least every ``every`` seconds."""

    def __init__(self, refresh: Callable[[], object], every: float,
                 on_done: Callable[[], None] = lambda: None) -> None:
        self._refresh = refresh
        self.every = every
        self._on_done = on_done
        self._wanted = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread; its first listing runs at once."""
        self._wanted.set()
        self._thread = threading.Thread(target=self._run, name="vault-list", daemon=True)
        self._thread.start()

    def request(self) -> bool:
        """Ask for a listing soon; False when no thread runs to do it."""
        if not self.running:
            return False
        self._wanted.set()
        return True

    def stop(self, timeout: float = 1.0) -> None:
        """Stop after the listing that runs (a daemon thread: a listing that hangs does not hold the exit)."""
        self._stop.set()
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wanted.wait(self.every)
            if self._stop.is_set():
                return
            self._wanted.clear()
            try:
                self._refresh()
            except Exception:   # a bug must not end the listing for good; it is logged
                log.exception("vault listing: internal error")
            self._on_done()
