"""remove: take the replaced member out of etcd's member list (MemberRemove), through a healthy member.

From here there is no way back: a removed member's id cannot rejoin, so a
failure from this step on is resumed forward (the step flags
``clients_see``). It acts only while the list still holds the member.
"""

from __future__ import annotations

from typing import Any, Optional

from etcdguard.common.ops.cluster_plan import RestorePlan
from etcdguard.common.ops.membership import Members, converge
from etcdguard.common.ops.ports import ClusterRun
from etcdguard.common.ops.step import Step


class MemberRemove(Step):
    name = "remove"
    on_agent = False
    destructive = True
    clients_see = True
    on_failure = "stop: resume forward (a removed member cannot rejoin under its old id)"

    def what(self, plan: RestorePlan) -> str:
        return f"etcd MemberRemove of {plan.target}'s old member id, through a healthy member (the leader first)"

    def phase(self, run: ClusterRun) -> None:
        target = run.plan.target or ""
        old = run.record.facts.get("old_member_id")

        def act(member: str) -> dict[str, Any]:
            if not isinstance(old, str) or not old:
                run.say(self.name, "not in the member list: nothing to remove", member)
                return {"removed": None}

            def done(members: Members) -> Optional[dict[str, Any]]:
                return None if any(m.id == old for m in members) else {"removed": old,
                                                                        "members": [m.name for m in members]}

            def remove(via: str, members: Members) -> dict[str, Any]:
                run.say(self.name, f"removing member {old} through {via}", member)
                return run.etcd_admin(via, "member-remove", {"member_id": old}, self.bound(run))

            return converge(run, self.name, exclude=target, bound=self.bound(run), done=done, act=remove)

        run.each(self.name, act, members=[target])


STEP = MemberRemove()
