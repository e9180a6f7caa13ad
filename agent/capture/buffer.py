"""The captured changes an agent holds until the coordinator has read them (pure).

Whole revisions only: each entry is one revision's events, already encoded
as segment lines (common/capture/segment.py's event format), so a batch
never splits a transaction and the coordinator writes the lines as they
came. The coordinator acknowledges by reading from a later revision
(``drop_through``); the bytes held are bounded by the caller, who stops
reading etcd while ``full``.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass


@dataclass(frozen=True)
class Taken:
    """A batch: ``data`` holds ``lines`` event lines of revisions ``first``..``last`` (last < first: none)."""

    first: int
    last: int
    lines: int
    data: bytes
    more: bool


class RevisionBuffer:
    """Revisions in order, each with its encoded event lines; ``floor`` is the lowest it may still hold."""

    def __init__(self, floor: int, limit: int) -> None:
        self.floor = floor
        self.limit = limit
        self.received = floor - 1          # the newest revision added (or acknowledged past)
        self._items: collections.deque[tuple[int, int, bytes]] = collections.deque()   # (revision, lines, data)
        self.bytes = 0

    @property
    def full(self) -> bool:
        return self.bytes >= self.limit

    def add(self, revision: int, lines: int, data: bytes) -> bool:
        """Hold one revision's lines; False (nothing held) for a revision already acknowledged."""
        if revision < self.floor:
            return False
        if revision <= self.received:
            raise ValueError(f"revision {revision} added after {self.received}: revisions come in order")
        self._items.append((revision, lines, data))
        self.bytes += len(data)
        self.received = revision
        return True

    def drop_through(self, revision: int) -> None:
        """The reader has everything up to ``revision``: forget it, and refuse it from now on."""
        while self._items and self._items[0][0] <= revision:
            self.bytes -= len(self._items.popleft()[2])
        if revision + 1 > self.floor:
            self.floor = revision + 1
            self.received = max(self.received, revision)

    def take(self, after: int, max_bytes: int) -> Taken:
        """The revisions after ``after`` that fit ``max_bytes`` (always at least one, if any)."""
        parts: list[bytes] = []
        size = lines = 0
        last = after
        more = False
        for revision, count, data in self._items:
            if revision <= after:
                continue
            if parts and size + len(data) > max_bytes:
                more = True
                break
            parts.append(data)
            size += len(data)
            lines += count
            last = revision
        return Taken(after + 1, last, lines, b"".join(parts), more)
