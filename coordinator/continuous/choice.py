"""Which member's agent captures the changes (pure): one at a time, a healthy follower when there is one.

Like a backup, the capture spares the leader: its watch reads every change,
which costs the member it runs on some CPU and network. The member that
captures keeps capturing while it is healthy (a watch restarted elsewhere
costs a new stream, not data), members that just failed are avoided for a
while (unless every one did: then any is tried again), and only members
of the cluster most members report are candidates (mid-restore, or with a
member split off, another cluster's revisions are another history).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Optional

from etcdguard.coordinator.agents.view import MemberView


@dataclass(frozen=True)
class CaptureChoice:
    sentence: str
    member: Optional[str] = None
    cluster_id: str = ""
    revision: int = 0          # the member's revision as its agent measured it (a fresh capture starts there)


def choose_capturer(views: Sequence[MemberView], current: Optional[str] = None,
                    avoid: Collection[str] = ()) -> CaptureChoice:
    healthy = [v for v in views if v.healthy and v.etcd.cluster_id]
    if not healthy:
        reachable = sum(1 for v in views if v.reachable)
        return CaptureChoice(f"no member has a healthy etcd to capture from ({reachable} of {len(views)} agents "
                             "answered)")
    cluster = Counter(v.etcd.cluster_id or "" for v in healthy).most_common(1)[0][0]
    same = [v for v in healthy if v.etcd.cluster_id == cluster]
    candidates = [v for v in same if v.name not in avoid] or same   # every one failed just now: try again
    for v in candidates:
        if v.name == current:
            return CaptureChoice(f"member {v.name} keeps capturing", v.name, cluster, v.etcd.revision or 0)
    ranked = sorted(candidates, key=lambda v: (v.is_leader, v.busy is not None, v.name))
    pick = ranked[0]
    role = "leader (no healthy follower)" if pick.is_leader else "follower"
    return CaptureChoice(f"capturing on {role} {pick.name}", pick.name, cluster, pick.etcd.revision or 0)
