"""Capture lag (pure): how long ago the vault last held every change etcd had made.

The capturing agent reports sync points: a revision etcd was at, and when
(its watch had delivered every change up to it by then). Once the vault
holds that revision, everything etcd had at that moment is in the vault, so
the lag is the time since the newest such moment. On a cluster that writes,
it rises until each segment is written and falls back; on an idle cluster it
stays at about the sync interval; when the capture stops (no agent, vault
down) it grows until someone looks.
"""

from __future__ import annotations

import collections
from typing import Optional

MAX_POINTS = 4096


class SyncPoints:
    def __init__(self, started: float) -> None:
        self.caught_up_at: Optional[float] = None
        self.started = started
        self._points: collections.deque[tuple[int, float]] = collections.deque(maxlen=MAX_POINTS)

    def observe(self, revision: int, at: float) -> None:
        """Etcd was at ``revision`` at time ``at``, and the capture had received every change up to it."""
        if self._points and revision <= self._points[-1][0]:
            if at > self._points[-1][1]:
                self._points[-1] = (self._points[-1][0], at)
            return
        self._points.append((revision, at))

    def stored(self, revision: int) -> None:
        """The vault holds every change up to ``revision`` now."""
        while self._points and self._points[0][0] <= revision:
            _, at = self._points.popleft()
            self.caught_up_at = at if self.caught_up_at is None else max(self.caught_up_at, at)

    def lag(self, now: float) -> float:
        return max(0.0, now - (self.caught_up_at if self.caught_up_at is not None else self.started))

    def reset(self) -> None:
        """Another cluster (a restore made a new one): its revisions say nothing of the old sync points."""
        self._points.clear()
