"""When the next snapshot is due: pure arithmetic over times, easy to test."""

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


def first_due(newest_created: Optional[float], interval: float, now: float) -> float:
    """At start: now if the newest snapshot is missing or older than the interval."""
    if newest_created is None or now - newest_created >= interval:
        return now
    return newest_created + interval


def after_success(now: float, interval: float, rng: random.Random) -> float:
    return now + interval + jitter(interval, rng)


def after_failure(now: float, interval: float, consecutive_failures: int) -> float:
    """Retry sooner than the interval: 30s, 60s, 120s, ... capped at the interval."""
    delay = FIRST_RETRY * float(2 ** min(20, max(0, consecutive_failures - 1)))
    return now + min(delay, interval)
