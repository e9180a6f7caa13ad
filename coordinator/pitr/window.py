"""The restorable window and the choice of a point in it (pure, from the vault's listing alone).

A point (a revision of one cluster) is restorable when a full snapshot of
that cluster at or below it is in the vault and the segments after that
snapshot reach it with no gap and no hole (common/capture/segment.py's
``window``). The window is the union of those stretches: for each cluster,
from its oldest usable full snapshot to as far as its segments reach; a gap
ends a stretch, and the next full snapshot after the gap starts a new one.

``choose`` picks, for revision N, the newest full snapshot at or below N
whose segments reach N (the shortest replay) and the segments to replay;
anything else is a PointError naming the window, so the operator sees what
can be restored instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable, Optional

from etcdguard.common.base.durations import iso_utc
from etcdguard.common.base.errors import UsageError
from etcdguard.common.capture.segment import Segment, window
from etcdguard.coordinator.pitr.scan import revision_at
from etcdguard.coordinator.vault.entry import VaultEntry
from etcdguard.coordinator.vault.segments import StoredSegment, is_base


class PointError(UsageError):
    """The point asked for is outside the restorable window (or in a gap): usage, exit 2, nothing changed."""


@dataclass(frozen=True)
class Span:
    """One stretch of restorable points of one cluster: every revision from ``first`` to ``last``."""

    cluster_id: str
    first: int
    last: int
    first_unix: float           # when the stretch's oldest full snapshot was taken
    last_unix: float            # when the capture saw its last revision (the snapshot's time without segments)

    def to_json(self) -> dict[str, object]:
        return {"cluster_id": self.cluster_id, "first_revision": self.first, "last_revision": self.last,
                "first_at": iso_utc(self.first_unix), "first_unix": self.first_unix,
                "last_at": iso_utc(self.last_unix), "last_unix": self.last_unix}


@dataclass(frozen=True)
class Gap:
    cluster_id: str
    first: int
    last: int
    found_unix: float

    def to_json(self) -> dict[str, object]:
        return {"cluster_id": self.cluster_id, "first_revision": self.first, "last_revision": self.last,
                "found_at": iso_utc(self.found_unix)}


@dataclass(frozen=True)
class Choice:
    """How to build revision ``revision``: ``base`` plus ``segments`` (in order), inside ``span``."""

    revision: int
    base: VaultEntry
    segments: tuple[StoredSegment, ...]
    span: Span


def _bases(entries: Sequence[VaultEntry], cluster_id: str) -> list[VaultEntry]:
    return sorted((e for e in entries if is_base(e) and e.cluster_id == cluster_id), key=lambda e: e.revision)


def _of(segments: Sequence[StoredSegment], cluster_id: str) -> list[StoredSegment]:
    return sorted((s for s in segments if s.cluster_id == cluster_id), key=lambda s: (s.info.first, s.info.last))


def spans(entries: Sequence[VaultEntry], segments: Sequence[StoredSegment]) -> list[Span]:
    """Every restorable stretch, oldest first (by time)."""
    out: list[Span] = []
    clusters = sorted({e.cluster_id for e in entries if is_base(e)})
    for cluster in clusters:
        infos = [s.info for s in _of(segments, cluster)]
        current: Optional[Span] = None
        for base in _bases(entries, cluster):
            w = window(infos, base.revision)
            reach = w.last if w.last is not None else base.revision
            last_unix = w.last_ms / 1000 if w.last_ms is not None else base.created_unix
            if current is not None and base.revision <= current.last:
                if reach > current.last:
                    current = Span(cluster, current.first, reach, current.first_unix, last_unix)
                continue
            if current is not None:
                out.append(current)
            current = Span(cluster, base.revision, reach, base.created_unix, max(last_unix, base.created_unix))
        if current is not None:
            out.append(current)
    return sorted(out, key=lambda s: (s.first_unix, s.first))


def gaps(segments: Sequence[StoredSegment]) -> list[Gap]:
    return [Gap(s.cluster_id, s.info.first, s.info.last, s.info.first_ms / 1000)
            for s in sorted(segments, key=lambda s: (s.info.first_ms, s.info.first)) if s.info.gap]


def describe(found: Sequence[Span]) -> str:
    """The window in a sentence, for errors: every stretch with its revisions and times."""
    if not found:
        return "no point can be restored from captured changes (no full snapshot with segments after it yet)"
    parts = [f"revisions {s.first}..{s.last} ({iso_utc(s.first_unix)} to {iso_utc(s.last_unix)}) of cluster "
             f"{s.cluster_id}" for s in found]
    return "the restorable window is " + "; ".join(parts)


def choose(entries: Sequence[VaultEntry], segments: Sequence[StoredSegment], revision: int,
           cluster_id: Optional[str] = None) -> Choice:
    """The base and segments that rebuild ``revision`` (of ``cluster_id``, else of whichever cluster's window
    holds it, the live one first); PointError naming the window otherwise."""
    found = spans(entries, segments)
    inside = [s for s in found if s.first <= revision <= s.last and (cluster_id is None or s.cluster_id == cluster_id)]
    if not inside:
        in_gap = [g for g in gaps(segments) if g.first <= revision <= g.last]
        where = (f"revision {revision} is in a gap (revisions {in_gap[0].first}..{in_gap[0].last} were compacted "
                 "by etcd before the capture read them)" if in_gap else f"revision {revision} is outside it")
        raise PointError(f"{where}; {describe(found)}")
    span = inside[-1]
    bases = [b for b in _bases(entries, span.cluster_id) if b.revision <= revision]
    infos = _of(segments, span.cluster_id)
    for base in reversed(bases):
        w = window([s.info for s in infos], base.revision)
        if w.last is not None and w.last >= revision:
            needed = tuple(s for s in infos if not s.info.gap and s.info.last > base.revision
                           and s.info.first <= revision)
            return Choice(revision, base, _contiguous(needed, base.revision, revision), span)
    raise PointError(f"no full snapshot at or below revision {revision} has segments reaching it; "
                     f"{describe(found)}")


def _contiguous(segments: Sequence[StoredSegment], base: int, upto: int) -> tuple[StoredSegment, ...]:
    """The segments a replay from ``base`` to ``upto`` reads, in order, skipping any that another covers."""
    out: list[StoredSegment] = []
    reach = base
    for s in segments:
        if s.info.last <= reach or s.info.first > reach + 1:
            continue
        out.append(s)
        reach = s.info.last
        if reach >= upto:
            break
    return tuple(out)


def revision_at_time(entries: Sequence[VaultEntry], segments: Sequence[StoredSegment], t_unix: float,
                     read: Callable[[StoredSegment], Segment], *, caught_up_unix: Optional[float] = None,
                     live_cluster: Optional[str] = None) -> tuple[str, int]:
    """(cluster, revision) of the state at ``t_unix``: the newest revision the capture saw by then, inside a
    stretch of the window. After a stretch's last change it is that last revision, for the live cluster as
    long as the capture has caught up past ``t_unix`` (``caught_up_unix``). PointError naming the window."""
    found = spans(entries, segments)
    for span in reversed(found):
        end = span.last_unix
        if span.cluster_id == live_cluster and caught_up_unix is not None and span is _last_of(found, live_cluster):
            end = max(end, caught_up_unix)
        if span.first_unix <= t_unix <= end:
            candidates = [s for s in _of(segments, span.cluster_id) if not s.info.gap and span.first < s.info.last
                          and s.info.first <= span.last and s.info.first_ms <= t_unix * 1000]
            if not candidates:
                return span.cluster_id, span.first
            last = candidates[-1]
            revision = revision_at([read(last)], int(t_unix * 1000), last.info.first - 1)
            return span.cluster_id, min(max(revision, span.first), span.last)
    raise PointError(f"{iso_utc(t_unix)} is outside the restorable window; {describe(found)}")


def _last_of(found: Sequence[Span], cluster: str) -> Optional[Span]:
    mine = [s for s in found if s.cluster_id == cluster]
    return mine[-1] if mine else None
