"""set-aside: rename the replaced member's data (and WAL) aside, kept as a restore keeps it.

``member`` becomes ``member.etcdguard-<op>`` by rename, never deleted; a
member whose data is gone has nothing to set aside. The undo renames it back.
"""

from __future__ import annotations

from typing import Any

from etcdguard.common.ops.cluster_plan import RestorePlan
from etcdguard.common.ops.ports import ClusterRun, NodeServices
from etcdguard.common.ops.step import Step
from etcdguard.common.ops.steps.retire import target_only


class SetAside(Step):
    name = "set-aside"
    destructive = True
    undoable = True
    on_failure = "rename it back"

    def what(self, plan: RestorePlan) -> str:
        return (f"on {plan.target}: rename member -> member.etcdguard-{plan.op} (kept, never deleted), so etcd "
                "starts empty and syncs from the others")

    def execute(self, node: NodeServices, **options: Any) -> dict[str, Any]:
        return node.set_aside()

    def undo(self, node: NodeServices) -> dict[str, Any]:
        return {"notes": node.put_back()}

    def phase(self, run: ClusterRun) -> None:
        target = run.plan.target or ""

        def act(member: str) -> dict[str, Any]:
            return run.send_step(member, self.name, None, self.bound(run))

        results = run.each(self.name, act, members=[target])
        run.fact("kept", {target: (results.get(target) or {}).get("kept")})

    def revert(self, run: ClusterRun) -> None:
        target_only(self, run)


STEP = SetAside()
