"""Signal handling shared by the daemons: handlers only set flags and wake the loop.

SIGTERM and SIGINT ask the loop to stop, SIGHUP to reload its config; the loop
decides what that means between two of its steps.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Optional


class SignalFlags:
    def __init__(self) -> None:
        self._wake = threading.Event()
        self._stop = False
        self._reload = False

    def _stop_requested(self, reason: str) -> None:
        """Hook: what else a stop request does at once (e.g. cancel a transfer)."""

    def _on_term(self, signum: int, frame: Optional[FrameType]) -> None:
        self._stop = True
        self._stop_requested(f"signal {signal.Signals(signum).name}")
        self._wake.set()

    def _on_hup(self, signum: int, frame: Optional[FrameType]) -> None:
        self._reload = True
        self._wake.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGHUP, self._on_hup)

    def request_stop(self) -> None:
        self._on_term(signal.SIGTERM, None)
