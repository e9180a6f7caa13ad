"""Captured changes waiting for their segment (pure): when to write one, and what it holds.

A segment is written at least every ``flush`` seconds after its first change
arrived (so no change waits longer than that for the vault), or as soon as
``size`` bytes wait, and always holds whole revisions: the revisions after
the last one written, up to the last one received, contiguously. A batch
that does not continue exactly where the last one ended is refused: a
missing revision would make every point after it unrestorable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from etcdguard.common.capture.segment import Event

OVERHEAD = 64        # bytes of a segment line beside its key and value (for the size bound)


class Discontinuous(ValueError):
    """A batch of changes that does not continue where the capture is."""


def size_of(e: Event) -> int:
    """About the bytes ``e`` takes in a segment (base64 of key and value, and the line's fields)."""
    return (len(e.key) + len(e.value)) * 4 // 3 + OVERHEAD


def check_batch(events: Sequence[Event], after: int, last: int) -> None:
    """A batch said to hold revisions ``after + 1`` .. ``last``: every one of them, in order."""
    at = after
    for e in events:
        if e.revision == at and at > after:
            continue                            # another event of the same revision
        if e.revision != at + 1:
            raise Discontinuous(f"the batch after revision {after} holds revision {e.revision} where {at + 1} "
                                "was expected")
        at = e.revision
    if at != last:
        raise Discontinuous(f"the batch after revision {after} ends at revision {at}, it says {last}")


class Pending:
    """Changes received and not written yet; ``written`` is the last revision the vault holds."""

    def __init__(self, written: int) -> None:
        self.written = written
        self.events: list[Event] = []
        self.bytes = 0
        self.since: Optional[float] = None      # when the oldest waiting change arrived (monotonic)

    @property
    def last(self) -> int:
        return self.events[-1].revision if self.events else self.written

    def add(self, events: Sequence[Event], now: float) -> None:
        if not events:
            return
        if self.since is None:
            self.since = now
        self.events.extend(events)
        self.bytes += sum(size_of(e) for e in events)

    def due(self, now: float, flush: float, size: int) -> bool:
        return bool(self.events) and (self.bytes >= size or (self.since is not None and now - self.since >= flush))

    def segment(self, size: int) -> tuple[int, int, list[Event]]:
        """(first, last, events) of the next segment to write: whole revisions from the oldest waiting, up to
        about ``size`` bytes (at least one revision). Nothing changes until ``written_through``."""
        taken: list[Event] = []
        used = 0
        for i, e in enumerate(self.events):
            if taken and e.revision != taken[-1].revision and used >= size:
                break
            taken.append(e)
            used += size_of(e)
            if i + 1 == len(self.events):
                break
        return self.written + 1, taken[-1].revision if taken else self.written, taken

    def written_through(self, revision: int, now: float) -> None:
        """The vault holds every change up to ``revision`` now: they wait no longer."""
        keep = [e for e in self.events if e.revision > revision]
        self.bytes -= sum(size_of(e) for e in self.events[: len(self.events) - len(keep)])
        self.events = keep
        self.written = max(self.written, revision)
        self.since = self.since if keep else None

    def skip_to(self, revision: int) -> None:
        """The vault holds up to ``revision`` another way (a gap recorded, a fresh start): nothing waits."""
        self.written, self.events, self.bytes, self.since = revision, [], 0, None
