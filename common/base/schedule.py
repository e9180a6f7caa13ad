"""When the next snapshot is due: pure arithmetic over times, easy to test.

The daemons keep their schedule on the monotonic clock, which a stepped wall
clock does not move; only the newest snapshot's age comes from its wall-clock
stamp (``age_of``), once, when the daemon starts or reloads.
"""

from __future__ import annotations

import random
from typing import Optional

JITTER_FRACTION = 0.05
MAX_JITTER = 300.0
FIRST_RETRY = 30.0


def jitter(interval: float, rng: random.Random) -> float:
    """Up to +-5% of the interval (at most 5 min), so agents don't all snapshot at once."""
    span = min(interval * JITTER_FRACTION, MAX_JITTER)
    return rng.uniform(-span, span)


CLOCK_TOLERANCE = 60.0   # a stamp this far ahead is clock noise; beyond it, the clock was stepped back


def age_of(created: Optional[float], wall_now: float) -> Optional[float]:
    """How old a snapshot stamped ``created`` is (never negative), or None when that is unknown: no
    snapshot, or one stamped more than CLOCK_TOLERANCE in the future (the clock was stepped back since)."""
    if created is None or created > wall_now + CLOCK_TOLERANCE:
        return None
    return max(0.0, wall_now - created)


def first_due(newest_created: Optional[float], interval: float, now: float) -> float:
    """At start: now if the newest snapshot is missing, older than the interval, or stamped after ``now``
    (its age is unknown: a snapshot now proves backups work, and is cheap)."""
    if newest_created is None or newest_created > now or now - newest_created >= interval:
        return now
    return newest_created + interval


def first_due_monotonic(age: Optional[float], interval: float, mono_now: float) -> float:
    """``first_due`` on the monotonic clock, from the newest snapshot's age (``age_of``; None: due now)."""
    return first_due(None if age is None else mono_now - age, interval, mono_now)


def after_success(now: float, interval: float, rng: random.Random) -> float:
    return now + interval + jitter(interval, rng)


def after_failure(now: float, interval: float, consecutive_failures: int) -> float:
    """Retry sooner than the interval: 30s, 60s, 120s, ... capped at the interval."""
    delay = FIRST_RETRY * float(2 ** min(20, max(0, consecutive_failures - 1)))
    return now + min(delay, interval)
