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
from collections.abc import Iterator
from typing import Callable, Optional


class Slot:
    """A non-reentrant lock with a label; ``doing`` is None while it is free."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._doing: Optional[str] = None

    @property
    def doing(self) -> Optional[str]:
        """What the holder does now (it may update it as it goes), None while free."""
        return self._doing

    def locked(self) -> bool:
        return self._lock.locked()

    def try_take(self, label: str) -> bool:
        """Take the slot if it is free; True when taken."""
        if not self._lock.acquire(blocking=False):
            return False
        self._doing = label
        return True

    def take(self, label: str, timeout: Optional[float] = None) -> bool:
        """Wait for the slot (up to ``timeout`` seconds, None: forever); True when taken."""
        if not self._lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            return False
        self._doing = label
        return True

    def update(self, label: str) -> None:
        """The holder says what it does now."""
        if self._lock.locked():
            self._doing = label

    def release(self) -> None:
        self._doing = None
        self._lock.release()

    @contextlib.contextmanager
    def held(self, label: str, *, waiting: Optional[Callable[[str], None]] = None) -> Iterator[Slot]:
        """Hold the slot for the block; ``waiting(what the holder does)`` is called once if it must wait."""
        if not self.try_take(label):
            if waiting is not None:
                waiting(self._doing or "another operation")
            self.take(label)
        try:
            yield self
        finally:
            self.release()
