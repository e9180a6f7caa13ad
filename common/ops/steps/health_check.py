"""health-check: before a member is replaced, prove the others can carry the cluster without it.

Across the cluster, measured now: every member other than the one replaced is
healthy under one leader, no other learner is waiting, and removing the
member leaves a healthy majority of the voters. Anything else is refused
(exit 3) before anything is touched. What it saw is recorded: the cluster id,
the revision, the member's id and peer URL in etcd's member list (none when
it was removed earlier), which the later steps act on.
"""

from __future__ import annotations

from etcdguard.common.ops.cluster_plan import RestorePlan
from etcdguard.common.ops.membership import find, others_problem, quorum_after_removal
from etcdguard.common.ops.ports import ClusterRun
from etcdguard.common.ops.step import Step, StepFailed
from etcdguard.common.wire.report import ClusterMember

REFUSED = 3


class HealthCheck(Step):
    name = "health-check"
    on_agent = False
    on_failure = "refuse: nothing changed"

    def what(self, plan: RestorePlan) -> str:
        return (f"every member but {plan.target} healthy under one leader, measured now; removing {plan.target} "
                "leaves a healthy majority of the voters; no other learner in the member list")

    def phase(self, run: ClusterRun) -> None:
        target = run.plan.target or ""
        health = {n: h for n, (h, _) in run.inspect_all(run.names).items()}
        problem = others_problem(health, target)
        if problem is not None:
            raise StepFailed(self.name, f"refused, nothing changed: the other members are not all healthy ({problem})"
                                        f"; replacing {target} now could lose quorum", REFUSED)
        lists = [h.members for n, h in sorted(health.items()) if n != target and h.members]
        if not lists:
            raise StepFailed(self.name, "refused, nothing changed: no member reported etcd's member list", REFUSED)
        members = lists[0]
        member = find(members, name=target) or find(members, peer_url=run.plan.target_peer_url)
        self._refuse_learners(members, member)
        healthy = sorted(n for n, h in health.items() if h.healthy and n != target)
        unsafe = quorum_after_removal(members, member, healthy)
        if unsafe is not None:
            raise StepFailed(self.name, f"refused, nothing changed: removing {target} is not safe: {unsafe}", REFUSED)
        revisions = [h.revision for h in health.values() if h.revision is not None]
        ids = sorted({h.cluster_id for n, h in health.items() if n != target and h.cluster_id})
        run.fact("cluster_id", ids[0] if len(ids) == 1 else None)
        run.fact("revision_before", max(revisions) if revisions else None)
        run.fact("old_member_id", member.id if member is not None else None)
        run.fact("old_peer_urls", list(member.peer_urls) if member is not None else [])
        run.say(self.name, f"{', '.join(healthy)} healthy; {target} "
                + (f"is member {member.id} ({', '.join(member.peer_urls)})" if member is not None
                   else "is not in etcd's member list (removed earlier)"))

    def _refuse_learners(self, members: tuple[ClusterMember, ...], member: object) -> None:
        others = [m for m in members if (m.is_learner or not m.name) and m is not member]
        if others:
            raise StepFailed(self.name, "refused, nothing changed: the member list holds a learner or an unstarted "
                                        f"member ({', '.join(m.id for m in others)}); promote or remove it first",
                             REFUSED)


STEP = HealthCheck()
