"""The diagnosis's facts, gathered once from what the coordinator can see now: every agent's fresh report,
the vault's newest snapshot and its pulls, the operations not finished. The judgement is verdict.py's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

from etcdguard.common.ops.states import OPEN
from etcdguard.coordinator.agents.quorum import cluster_quorum, member_state
from etcdguard.coordinator.agents.view import MemberView
from etcdguard.coordinator.diagnose.facts import ClusterFacts, MemberSeen, OperationSeen, VaultSeen
from etcdguard.coordinator.restore.journal import ClusterOperation
from etcdguard.coordinator.restore.refusals import peer_url
from etcdguard.coordinator.vault.entry import VaultEntry


def member_seen(v: MemberView) -> MemberSeen:
    r = v.report
    return MemberSeen(
        name=v.name, agent=v.agent, state=member_state(v), etcd=v.etcd, agent_error=v.error,
        peer_url=peer_url(v), db_on_disk=r.disk.db_file if r is not None else None,
        quota_backend_bytes=r.member.quota_backend_bytes if r is not None else None,
        certificates=r.certificates if r is not None else ())


def gather(views: Sequence[MemberView], *, newest: Optional[VaultEntry], interval: float, failures: int,
           last_pull: Optional[dict[str, Any]], operations: Sequence[ClusterOperation], running: Optional[str],
           now: float) -> ClusterFacts:
    """The facts of now, from the parts' own values (pure over them)."""
    error = None
    if last_pull is not None and not last_pull.get("ok"):
        error = str(last_pull.get("message") or "")
    vault = VaultSeen(newest_sha256=newest.sha256 if newest else None,
                      newest_revision=newest.revision if newest else None,
                      newest_age=max(0.0, now - newest.created_unix) if newest else None,
                      interval=interval, failures=failures, last_error=error)
    ops = tuple(OperationSeen(o.op, o.plan.flow, o.state.value, o.plan.target,
                              running=o.op == running)
                for o in operations if o.state in OPEN)
    return ClusterFacts(members=tuple(member_seen(v) for v in views), quorum=cluster_quorum(views), vault=vault,
                        operations=ops, now=now)
