"""The cluster as the agents report it: one typed view per member, and what they agree on.

Plain values over the agents' typed status reports (agent/wire/report.py);
the vault's decisions, `etcdguardctl status` and the restore plan read them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from etcdguard.common.wire.report import AgentReport, EtcdHealth, SnapshotSummary

_NO_ETCD = EtcdHealth()


@dataclass(frozen=True)
class MemberView:
    """One member at one moment: its agent's status report, or why there is none.

    ``healthy`` and ``is_leader`` hold only for a measurement the agent made
    within FRESH_FOR seconds (``EtcdHealth.current``): an older one, even from
    an agent that still sends it as it was, is no fact of now.
    """

    name: str
    agent: str
    reachable: bool
    error: Optional[str] = None
    report: Optional[AgentReport] = None

    @property
    def etcd(self) -> EtcdHealth:
        return self.report.etcd if self.report is not None else _NO_ETCD

    @property
    def current(self) -> bool:
        """The agent answered, and its etcd measurement is recent enough to be the member's state now."""
        return self.reachable and self.report is not None and self.etcd.current()

    @property
    def healthy(self) -> bool:
        return self.current and self.etcd.healthy

    @property
    def is_leader(self) -> bool:
        return self.current and self.etcd.is_leader

    @property
    def busy(self) -> Optional[str]:
        return self.report.agent.busy if self.report is not None else None

    @property
    def snapshots(self) -> tuple[SnapshotSummary, ...]:
        return self.report.snapshots if self.report is not None else ()

    @property
    def newest(self) -> Optional[SnapshotSummary]:
        return self.report.newest if self.report is not None else None


def member_row(v: MemberView, now: float) -> dict[str, Any]:
    """One member's line of `etcdguardctl status` (plain data)."""
    report = v.report
    newest = v.newest
    etcd = v.etcd
    return {
        "member": v.name,
        "agent": v.agent,
        "reachable": v.reachable,
        "error": v.error,
        "agent_version": report.agent.version if report else None,
        "busy": v.busy,
        "healthy": v.healthy,
        "is_leader": v.is_leader,
        "etcd": {"healthy": v.healthy, "error": etcd.error, "version": etcd.version,
                 "revision": etcd.revision if v.current else None, "member_id": etcd.member_id,
                 "cluster_id": etcd.cluster_id, "leader": etcd.leader if v.current else None,
                 "is_leader": v.is_leader, "is_learner": etcd.is_learner, "db_size": etcd.db_size,
                 "db_size_in_use": etcd.db_size_in_use, "raft_applied_index": etcd.raft_applied_index,
                 "alarms": list(etcd.alarms), "quorum": etcd.quorum, "age": etcd.age,
                 "measured_at": etcd.measured_at, "current": v.current} if v.reachable else None,
        "revision": etcd.revision if v.current else None,
        "cluster_id": etcd.cluster_id,
        "member_id": etcd.member_id,
        "restore_tool": report.restore_tool.__dict__ if report and report.restore_tool else None,
        "disk": report.disk.__dict__ if report else None,
        "restore": {"locked": report.restore.locked, "last_op": report.restore.last_op,
                    "last_state": report.restore.last_state, "open_ops": list(report.restore.open_ops)}
        if report else None,
        "newest_backup": None if newest is None else {
            "name": newest.name, "sha256": newest.sha256, "size": newest.size,
            "revision": newest.revision, "created_at": newest.created_at,
            "age_seconds": max(0.0, now - newest.created_unix),
        },
    }


def cluster_summary(views: Sequence[MemberView]) -> dict[str, Any]:
    """Leader and cluster id as the reachable members report them, and whether they agree.

    The leader is named by the member id each member reports; it is mapped to
    a name through the members' own ids, so a leader whose agent is down still
    shows (by id) instead of looking like a cluster without a leader. Only
    measurements of now name a leader.
    """
    up = [v for v in views if v.reachable]
    ids = sorted({v.etcd.cluster_id for v in up if v.etcd.cluster_id})
    leader_ids = sorted({v.etcd.leader for v in up if v.current and v.etcd.leader})
    names = {v.etcd.member_id: v.name for v in up if v.etcd.member_id}
    claimed = sorted(v.name for v in up if v.is_leader)
    leader_id = leader_ids[0] if len(leader_ids) == 1 else None
    leader = names.get(leader_id) if leader_id is not None else None
    if leader is None and leader_id is None and len(claimed) == 1:
        leader = claimed[0]
    return {
        "leader": leader,
        "leader_id": leader_id,
        "leaders": claimed,              # members that say they lead (more than one: split brain)
        "leader_ids": leader_ids,        # the leaders the members point at (more than one: disagreement)
        "cluster_id": ids[0] if len(ids) == 1 else None,
        "cluster_ids": ids,
        "consistent": len(ids) <= 1 and len(leader_ids) <= 1 and len(claimed) <= 1,
        "reachable": len(up),
        "healthy": sum(1 for v in views if v.healthy),
        "members": len(views),
    }
