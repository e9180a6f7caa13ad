"""What captured changes say, read segment by segment (pure): what a replay to a revision will apply,
which revision a moment names, and the changes under a key prefix (``etcdguardctl history``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Optional

from etcdguard.common.base.durations import iso_utc
from etcdguard.common.capture.segment import DELETE, LEASE, PUT, Segment


@dataclass(frozen=True)
class ReplayCount:
    revisions: int
    events: int
    unleased_keys: int      # keys at the point whose lease the capture could not describe (the base may hold it)


def count_replay(segments: Iterable[Segment], base: int, upto: int) -> ReplayCount:
    """The revisions and events a replay from ``base`` to ``upto`` applies, and the keys it may restore
    without their lease."""
    revisions: set[int] = set()
    events = 0
    described: set[int] = set()
    leased: dict[bytes, int] = {}
    for segment in segments:
        for e in segment.events:
            if e.revision <= base or e.revision > upto:
                continue
            if e.kind == LEASE:
                described.add(e.lease)
                continue
            revisions.add(e.revision)
            events += 1
            if e.kind == PUT and e.lease:
                leased[e.key] = e.lease
            else:
                leased.pop(e.key, None)
    return ReplayCount(len(revisions), events, sum(1 for lease in leased.values() if lease not in described))


def revision_at(segments: Iterable[Segment], t_ms: int, floor: int) -> int:
    """The newest revision the capture saw at or before ``t_ms`` (``floor`` when none after it was)."""
    found = floor
    for segment in segments:
        for e in segment.events:
            if e.time_ms <= t_ms and e.revision > found:
                found = e.revision
    return found


@dataclass(frozen=True)
class Change:
    cluster_id: str
    revision: int
    time_ms: int
    kind: str                 # put | delete
    key: bytes
    value_size: int
    lease: int

    def to_json(self) -> dict[str, Any]:
        return {"cluster_id": self.cluster_id, "revision": self.revision, "at": iso_utc(self.time_ms / 1000),
                "at_ms": self.time_ms, "kind": "delete" if self.kind == DELETE else "put",
                "key": self.key.decode("utf-8", "backslashreplace"), "value_size": self.value_size,
                "lease": f"{self.lease:x}" if self.lease else None}


def changes(segments: Iterable[Segment], prefix: bytes, since_ms: Optional[int], until_ms: Optional[int],
            limit: int) -> tuple[list[Change], bool]:
    """The puts and deletes under ``prefix`` the capture saw between the two times, in revision order; at most
    ``limit`` of them (the newest), and whether older ones were left out."""
    out: list[Change] = []
    for segment in segments:
        for e in segment.events:
            if e.kind == LEASE or not e.key.startswith(prefix):
                continue
            if (since_ms is not None and e.time_ms < since_ms) or (until_ms is not None and e.time_ms > until_ms):
                continue
            out.append(Change(segment.cluster_id, e.revision, e.time_ms, e.kind, e.key, len(e.value), e.lease))
    began: dict[str, int] = {}
    for c in out:
        began[c.cluster_id] = min(began.get(c.cluster_id, c.time_ms), c.time_ms)
    out.sort(key=lambda c: (began[c.cluster_id], c.cluster_id, c.revision))   # each cluster's history in order
    cut = len(out) > limit
    return (out[-limit:] if cut else out), cut
