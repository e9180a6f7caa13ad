"""The single slot for long work: one long operation at a time, and what it is doing.

Patroni runs one long action at a time in a single-slot executor so two can
never overlap; both daemons do the same (a snapshot and a restore step on an
agent; a vault pull, a backup and a restore on the coordinator). A ``Slot``
is a lock that also says who holds it and what it does now, so ``status``,
``busy`` replies and systemd's STATUS= read one value instead of a lock plus a
string kept beside it by hand.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Callable, Optional


class Slot:
    """A non-reentrant lock with a label; ``doing`` is None while it is free."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        # (what the holder does, when it took the slot): one value, so a reader never sees half of it
        self._holder: Optional[tuple[str, float]] = None

    @property
    def doing(self) -> Optional[str]:
        """What the holder does now (it may update it as it goes), None while free."""
        holder = self._holder
        return holder[0] if holder is not None else None

    def holder(self) -> Optional[tuple[str, float]]:
        """(what the holder does, seconds it has held the slot), None while free."""
        holder = self._holder
        return None if holder is None else (holder[0], self._clock() - holder[1])

    def locked(self) -> bool:
        return self._lock.locked()

    def try_take(self, label: str) -> bool:
        """Take the slot if it is free; True when taken."""
        if not self._lock.acquire(blocking=False):
            return False
        self._holder = (label, self._clock())
        return True

    def take(self, label: str, timeout: Optional[float] = None) -> bool:
        """Wait for the slot (up to ``timeout`` seconds, None: forever); True when taken."""
        if not self._lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            return False
        self._holder = (label, self._clock())
        return True

    def update(self, label: str) -> None:
        """The holder says what it does now."""
        holder = self._holder
        if self._lock.locked() and holder is not None:
            self._holder = (label, holder[1])

    def release(self) -> None:
        self._holder = None
        self._lock.release()

    @contextlib.contextmanager
    def held(self, label: str, *, waiting: Optional[Callable[[str], None]] = None) -> Iterator[Slot]:
        """Hold the slot for the block; ``waiting(what the holder does)`` is called once if it must wait."""
        if not self.try_take(label):
            if waiting is not None:
                waiting(self.doing or "another operation")
            self.take(label)
        try:
            yield self
        finally:
            self.release()
