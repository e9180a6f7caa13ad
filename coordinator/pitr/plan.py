"""A point-in-time restore's own plan (pure): the point, the window, what is replayed and what is lost.

What ``etcdguardctl restore --to-revision N --plan`` shows above the
ordinary cluster restore plan (which follows, for the snapshot the build
will make): the window the point lies in, the full snapshot the build
starts from, the segments and events it replays, the revisions after the
point that the restore discards, and how many keys may come back without
their lease.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from etcdguard.common.base.durations import format_bytes, iso_utc
from etcdguard.common.ops.cluster_plan import SnapshotRef
from etcdguard.coordinator.pitr.scan import ReplayCount
from etcdguard.coordinator.pitr.window import Choice, Gap, Span

PLACEHOLDER_ID = "(to build)"   # the plan's snapshot id until the build made the file


@dataclass(frozen=True)
class PointPlan:
    choice: Choice
    count: ReplayCount
    at_unix: Optional[float]           # when the capture saw the point's revision (None: the base's time)
    asked_unix: Optional[float]        # --to-time's moment
    window: tuple[Span, ...]
    gaps: tuple[Gap, ...]
    reuse: Optional[str] = None        # a vault entry that already holds this point: no build

    @property
    def revision(self) -> int:
        return self.choice.revision

    def snapshot_ref(self) -> SnapshotRef:
        """The snapshot the build will make, as the cluster restore's plan sees it before it exists."""
        base = self.choice.base
        at = self.at_unix if self.at_unix is not None else base.created_unix
        return SnapshotRef(id=self.reuse or PLACEHOLDER_ID, size=base.size, revision=self.revision,
                           member=base.source_member, created_at=iso_utc(at), created_unix=at,
                           etcd_version=base.etcd_version, cluster_id=base.cluster_id, revision_exact=True)

    def to_json(self) -> dict[str, Any]:
        c = self.choice
        return {
            "cluster_id": c.span.cluster_id, "revision": c.revision,
            "at": iso_utc(self.at_unix) if self.at_unix is not None else None,
            "asked_at": iso_utc(self.asked_unix) if self.asked_unix is not None else None,
            "base": {"id": c.base.sha256, "revision": c.base.revision, "created_at": c.base.created_at,
                     "kind": c.base.kind, "size": c.base.size},
            "segments": {"count": len(c.segments), "bytes": sum(s.size for s in c.segments),
                         "first_revision": c.segments[0].info.first if c.segments else None,
                         "last_revision": c.segments[-1].info.last if c.segments else None},
            "replay": {"revisions": self.count.revisions, "events": self.count.events},
            "unleased_keys": self.count.unleased_keys,
            "window": [s.to_json() for s in self.window],
            "gaps": [g.to_json() for g in self.gaps],
            "reuses": self.reuse,
        }


def render_point(p: dict[str, Any], discarded: Optional[int], live_revision: Optional[int]) -> str:
    """The point-in-time part of the plan, for people."""
    lines = [f"point-in-time restore of cluster {p['cluster_id']} to revision {p['revision']}"
             + (f" (the state at {p['asked_at']})" if p.get("asked_at") else "")
             + (f", captured at {p['at']}" if p.get("at") else "")]
    lines.append(f"  window: {window_sentence(p['window'], p['gaps'])}")
    base = p["base"]
    lines.append(f"  base: full snapshot {base['id'][:12]} ({base['kind']}) at revision {base['revision']}, taken "
                 f"{base['created_at']}")
    seg = p["segments"]
    if p.get("reuses"):
        lines.append(f"  the vault already holds revision {p['revision']} ({p['reuses'][:12]}): nothing to replay")
    else:
        lines.append(f"  replay: {p['replay']['events']} events in {p['replay']['revisions']} revisions, from "
                     f"{seg['count']} segment(s) ({format_bytes(seg['bytes'])}), into a scratch etcd on this host")
    if discarded is not None:
        lines.append(f"  discarded: {discarded} revision(s) after {p['revision']} (the cluster is at revision "
                     f"{live_revision})")
    if p.get("unleased_keys"):
        lines.append(f"  leases: {p['unleased_keys']} key(s) carry a lease whose TTL the capture could not read; "
                     "they come back without it unless the base snapshot holds the lease (Kubernetes recreates "
                     "node leases and events within seconds)")
    lines.append("  then: the snapshot is stored in the vault (kind point-in-time, pinned) and the cluster "
                 "restore below runs on it")
    return "\n".join(lines)


def window_sentence(window: Sequence[dict[str, Any]], gaps: Sequence[dict[str, Any]]) -> str:
    """"any point from 2026-12-05T14:00:00Z to 12 s ago; gaps: none" (from the JSON of spans and gaps)."""
    if not window:
        return "no point-in-time window yet (a full snapshot with captured changes after it is needed)"
    parts = [f"any point from {s['first_at']} (revision {s['first_revision']}) to {s['last_at']} (revision "
             f"{s['last_revision']})" for s in window]
    gap_text = ", ".join(f"{g['first_revision']}..{g['last_revision']} (found {g['found_at']})" for g in gaps)
    return "; ".join(parts) + f"; gaps: {gap_text or 'none'}"
