"""promote: make the caught-up learner a voting member (MemberPromote), through a healthy member.

etcd itself refuses while the learner is not in sync with the leader; the
step retries that within its bound. It acts only while the member list shows
the member as a learner.
"""

from __future__ import annotations

from typing import Any, Optional

from etcdguard.common.ops.cluster_plan import RestorePlan
from etcdguard.common.ops.membership import Members, converge
from etcdguard.common.ops.ports import ClusterRun
from etcdguard.common.ops.step import Step, StepFailed


class Promote(Step):
    name = "promote"
    on_agent = False
    destructive = True
    clients_see = True
    healthy_after = True
    on_failure = "stop: resume forward (the learner stays a learner meanwhile)"

    def what(self, plan: RestorePlan) -> str:
        return f"etcd MemberPromote of {plan.target}: a voting member again"

    def phase(self, run: ClusterRun) -> None:
        target = run.plan.target or ""
        new = run.record.facts.get("new_member_id")
        if not isinstance(new, str) or not new:
            raise StepFailed(self.name, "no new member id recorded by add-learner")

        def act(member: str) -> dict[str, Any]:
            def done(members: Members) -> Optional[dict[str, Any]]:
                m = next((m for m in members if m.id == new), None)
                if m is None:
                    raise StepFailed(self.name, f"member {new} is no longer in the member list")
                return None if m.is_learner else {"promoted": new, "members": sorted(x.name for x in members)}

            def promote(via: str, members: Members) -> dict[str, Any]:
                return run.etcd_admin(via, "member-promote", {"member_id": new}, self.bound(run))

            return converge(run, self.name, exclude=target, bound=self.bound(run), done=done, act=promote)

        run.each(self.name, act, members=[target])


STEP = Promote()
