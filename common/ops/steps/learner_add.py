"""add-learner: add the replaced member back as a learner with its peer URL (MemberAdd isLearner).

A learner receives the log and votes in nothing, so the cluster's quorum
does not change while it syncs. Acts only while no member has that peer URL;
records the new member id and the initial cluster the member joins with.
"""

from __future__ import annotations

from typing import Any, Optional

from etcdguard.common.ops.cluster_plan import RestorePlan
from etcdguard.common.ops.membership import Members, converge, find, initial_cluster_of
from etcdguard.common.ops.ports import ClusterRun
from etcdguard.common.ops.step import Step


class LearnerAdd(Step):
    name = "add-learner"
    on_agent = False
    destructive = True
    clients_see = True
    on_failure = "stop: resume forward"

    def what(self, plan: RestorePlan) -> str:
        return f"etcd MemberAdd of {plan.target_peer_url} as a learner (non-voting: the quorum does not change)"

    def phase(self, run: ClusterRun) -> None:
        target, peer = run.plan.target or "", run.plan.target_peer_url

        def act(member: str) -> dict[str, Any]:
            def done(members: Members) -> Optional[dict[str, Any]]:
                m = find(members, peer_url=peer)
                if m is None:
                    return None
                return {"member_id": m.id, "learner": m.is_learner,
                        "initial_cluster": initial_cluster_of(members, target, peer)}

            def add(via: str, members: Members) -> dict[str, Any]:
                run.say(self.name, f"adding {peer} as a learner through {via}", member)
                return run.etcd_admin(via, "member-add", {"peer_url": peer, "learner": True}, self.bound(run))

            return converge(run, self.name, exclude=target, bound=self.bound(run), done=done, act=add)

        result = run.each(self.name, act, members=[target])[target]
        run.fact("new_member_id", result["member_id"])
        run.fact("initial_cluster", result["initial_cluster"])


STEP = LearnerAdd()
