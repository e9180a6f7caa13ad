"""Retention decisions: pure, one verdict per snapshot (keep or obsolete, and why).

Deleting is a separate step. The newest snapshot is never obsolete, whatever
the policy says: a backup tool must not delete its only good backup. A pinned
snapshot (Barman's keep annotation) is never obsolete either, and does not
count against ``keep``: pinning a safety copy must not push out a regular one.

"Newest" is decided by etcd's revision, not by the wall clock: a clock
stepped back makes the snapshots taken before it look younger than the one
just taken, and ordering by time would delete that one. Revisions only
compare within one cluster, and a restore makes a new cluster (whose
revisions may start lower on etcd 3.4, which cannot bump them), so the
clusters are ranked first, by when their latest snapshot was taken, and the
snapshots of each by revision, then time, then name. ``newest_first`` is that
one order; the agent's store, the vault and retention all use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Callable, Optional, TypeVar

from etcdguard.common.base.durations import format_duration

T = TypeVar("T")


@dataclass(frozen=True)
class Facts:
    """What ordering needs to know of a snapshot."""

    cluster: str      # cluster id ("" when unknown)
    revision: int
    created: float    # unix seconds, as stamped when it was taken
    name: str         # a tie-breaker that keeps the order total


def newest_first(items: Iterable[T], facts: Callable[[T], Facts]) -> list[T]:
    """Pure: ``items`` newest first, clusters by their latest snapshot's time, then revision, time, name."""
    rows = [(facts(item), item) for item in items]
    latest: dict[str, float] = {}
    for f, _ in rows:
        latest[f.cluster] = max(latest.get(f.cluster, f.created), f.created)
    rows.sort(key=lambda r: (latest[r[0].cluster], r[0].cluster, r[0].revision, r[0].created, r[0].name),
              reverse=True)
    return [item for _, item in rows]


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
    revision: int = 0
    cluster: str = ""

    def facts(self) -> Facts:
        return Facts(self.cluster, self.revision, self.created_at, self.name)


def decide(snapshots: Sequence[Aged], keep: int, max_age: Optional[float], now: float) -> list[Verdict]:
    """Verdicts, newest first (``newest_first``). ``keep`` >= 1; ``max_age`` in seconds or None.

    A snapshot stamped in the future (the clock was stepped back since) has no
    known age: it is never "older than max_age".
    """
    ordered = newest_first(snapshots, Aged.facts)
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
