"""Retention decisions: pure, one verdict per snapshot (keep or obsolete, and why).

Deleting is a separate step. The newest snapshot is never obsolete, whatever
the policy says: a backup tool must not delete its only good backup. A pinned
snapshot (Barman's keep annotation) is never obsolete either, and does not
count against ``keep``: pinning a safety copy must not push out a regular one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from etcdguard.agent.base.durations import format_duration


@dataclass(frozen=True)
class Verdict:
    name: str
    keep: bool
    reason: str


@dataclass(frozen=True)
class Aged:
    """What retention needs to know of a snapshot."""

    name: str
    created_at: float  # unix seconds
    pinned: Optional[str] = None   # the pin's reason; None: not pinned


def decide(snapshots: Sequence[Aged], keep: int, max_age: Optional[float], now: float) -> list[Verdict]:
    """Verdicts, newest first. ``keep`` >= 1; ``max_age`` in seconds or None."""
    ordered = sorted(snapshots, key=lambda s: (s.created_at, s.name), reverse=True)
    verdicts: list[Verdict] = []
    index = 0   # position among the unpinned ones
    for position, snap in enumerate(ordered):
        age = now - snap.created_at
        if snap.pinned is not None:
            verdicts.append(Verdict(snap.name, True, f"keep: pinned ({snap.pinned})"))
            continue
        index += 1
        if position == 0:
            verdicts.append(Verdict(snap.name, True, "newest"))
        elif index > keep:
            verdicts.append(Verdict(snap.name, False, f"beyond keep={keep}"))
        elif max_age is not None and age > max_age:
            verdicts.append(
                Verdict(snap.name, False, f"older than max_age={format_duration(max_age)}")
            )
        else:
            verdicts.append(Verdict(snap.name, True, f"within keep={keep}"))
    return verdicts
