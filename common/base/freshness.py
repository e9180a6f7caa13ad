"""How old the newest backup is, measured so that a stepped wall clock cannot hide staleness.

A snapshot's stamp comes from the wall clock of the host that took it. Read
against the wall clock later, a clock stepped back makes it look younger (or
from the future: an age of 0 forever, so the stale alert never fires), one
stepped forward makes it look older. So the wall clock is read once, when a
snapshot becomes the newest, and the age grows on the monotonic clock from
there: never negative, never frozen. A stamp from the future counts as age 0
at that moment and is counted apart (``future_dated``) so it can be alerted on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Callable, Optional

from etcdguard.common.base.schedule import CLOCK_TOLERANCE


def future_dated(stamps: Iterable[float], wall_now: float) -> int:
    """Pure: how many stamps lie more than CLOCK_TOLERANCE after ``wall_now``."""
    return sum(1 for t in stamps if t > wall_now + CLOCK_TOLERANCE)


class Freshness:
    """The newest backup's age: its wall-clock age when it became the newest, plus monotonic time since."""

    def __init__(self, wall: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic) -> None:
        self._wall = wall
        self._mono = mono
        self._key: Optional[object] = None
        self._base = 0.0
        self._at = 0.0

    def record(self, key: object, stamped: float) -> bool:
        """``key`` (its name, say) stamped ``stamped`` is now the newest; True when that changed."""
        if key == self._key:
            return False
        self._key = key
        self._base = max(0.0, self._wall() - stamped)
        self._at = self._mono()
        return True

    def clear(self) -> None:
        self._key = None

    def age(self) -> float:
        """Seconds; +Inf while there is no backup."""
        if self._key is None:
            return math.inf
        return self._base + max(0.0, self._mono() - self._at)
