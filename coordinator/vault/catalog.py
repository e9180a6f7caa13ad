"""The vault's catalog as last listed, kept for the answers that must not wait on the backend.

``etcdguardctl status`` and ``snapshots`` answer from here within a second or
two whatever the backend does: an S3 endpoint that accepts connections and
never answers would otherwise hold them for minutes (a read timeout times the
attempts, per request). The catalog is refreshed by every listing (the
daemon's background lister, every pull, retention), and at once by every
change the coordinator makes itself (a save, a pin, a deletion), so what it
just did shows without a listing.

What it holds always says how old it is and how the last listing went: a
listing that failed keeps the entries of the last one that answered, with its
time, and is never shown as an empty vault.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional

from etcdguard.coordinator.vault.entry import VaultEntry, newest_first

KEEP_CHANGES = 256   # the coordinator's own recent changes, replayed over a listing that started before them

OK = "ok"              # the last listing answered
FAILED = "failed"      # the last listing failed (entries: the last one that answered, if any)
PENDING = "pending"    # no listing has answered or failed yet since the coordinator started


@dataclass(frozen=True)
class Listing:
    """The catalog at one moment: entries newest first, and the listing they come from."""

    entries: tuple[VaultEntry, ...] = ()
    listed_at: Optional[float] = None      # when a listing last answered (None: never since the start)
    error: Optional[str] = None            # why the last listing failed; None once one answers
    failed_at: Optional[float] = None
    asking_since: Optional[float] = None   # a listing runs since then
    generation: int = 0                    # counts listing results, answered or failed
    recovered_at: Optional[float] = None   # when a listing last answered right after one failed

    @property
    def known(self) -> bool:
        """Whether the entries come from a listing (else they are unknown, not none)."""
        return self.listed_at is not None

    @property
    def state(self) -> str:
        if self.error is not None:
            return FAILED
        return OK if self.known else PENDING

    def newest(self) -> Optional[VaultEntry]:
        return self.entries[0] if self.entries else None

    def to_json(self, now: float) -> dict[str, Any]:
        """What ``status`` and ``snapshots`` report of it (``*_at`` are unix seconds, stamped by the CLI)."""
        return {
            "state": self.state,
            "listed_at": self.listed_at,
            "age_seconds": None if self.listed_at is None else max(0.0, now - self.listed_at),
            "error": self.error,
            "failed_at": self.failed_at,
            "asking_seconds": None if self.asking_since is None else max(0.0, now - self.asking_since),
        }


class Catalog:
    """The last Listing, updated from any thread; ``wait_past`` waits for the next listing's result."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._view = Listing()
        self._changes: list[tuple[float, str, Optional[VaultEntry]]] = []   # (when, sha256, entry; None: deleted)

    def view(self) -> Listing:
        with self._cond:
            return self._view

    def _set(self, view: Listing) -> None:
        with self._cond:
            self._view = view
            self._cond.notify_all()

    def asking(self) -> float:
        """A listing starts now; when that is (what ``answered`` is told)."""
        with self._cond:
            now = self._clock()
            if self._view.asking_since is None:
                self._set(replace(self._view, asking_since=now))
            return now

    def answered(self, entries: Iterable[VaultEntry], started: Optional[float] = None) -> Listing:
        """A listing that started at ``started`` answered with ``entries``; the error of an earlier one is
        cleared. The coordinator's own changes made since it started are kept: the listing may predate them."""
        with self._cond:
            now = self._clock()
            found = {e.sha256: e for e in entries}
            for at, sha, changed in self._changes:
                if started is not None and at >= started:
                    if changed is None:
                        found.pop(sha, None)
                    else:
                        found[sha] = changed
            recovered = now if self._view.error is not None else self._view.recovered_at
            self._set(Listing(tuple(newest_first(found.values())), now, None, None, None,
                              self._view.generation + 1, recovered))
            return self._view

    def failed(self, error: str) -> Listing:
        """A listing failed: its error, beside the entries of the last one that answered."""
        with self._cond:
            self._set(replace(self._view, error=error, failed_at=self._clock(), asking_since=None,
                              generation=self._view.generation + 1))
            return self._view

    def put(self, entry: VaultEntry) -> None:
        """The coordinator stored or changed ``entry`` (a save, a pin): shown at once, without a listing.
        Before the first listing the rest is unknown, so nothing is shown then."""
        with self._cond:
            self._changed(entry.sha256, entry)
            if self._view.known:
                others = [e for e in self._view.entries if e.sha256 != entry.sha256]
                self._set(replace(self._view, entries=tuple(newest_first([*others, entry]))))

    def drop(self, sha256: str) -> None:
        """The coordinator deleted the entry ``sha256``."""
        with self._cond:
            self._changed(sha256, None)
            self._set(replace(self._view, entries=tuple(e for e in self._view.entries if e.sha256 != sha256)))

    def _changed(self, sha256: str, entry: Optional[VaultEntry]) -> None:
        self._changes = [*self._changes[-(KEEP_CHANGES - 1):], (self._clock(), sha256, entry)]

    def wait_past(self, generation: int, timeout: float) -> Listing:
        """The catalog once a listing result newer than ``generation`` is in, or after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._view.generation <= generation:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return self._view


def stale(view: Listing, now: float, fresh_for: float) -> bool:
    """Pure: whether a new listing is worth asking for (none runs, and the last result is older than
    ``fresh_for`` seconds)."""
    if view.asking_since is not None:
        return False
    last = max((t for t in (view.listed_at, view.failed_at) if t is not None), default=None)
    return last is None or now - last >= fresh_for


def summary(entries: Sequence[VaultEntry]) -> tuple[int, int]:
    """(count, bytes) of a listing."""
    return len(entries), sum(e.size for e in entries)
