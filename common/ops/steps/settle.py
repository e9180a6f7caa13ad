"""settle: put the replaced member's runtime configuration back exactly as it was before the join.

The static pod's manifest, byte for byte (the kubelet restarts etcd on it:
``--initial-cluster-state new`` is ignored by a member that has data); a
systemd drop-in removed; the process runtime's command was never changed.
Then etcd is healthy there on its steady configuration.
"""

from __future__ import annotations

from typing import Any

from etcdguard.common.ops.cluster_plan import RestorePlan
from etcdguard.common.ops.ports import ClusterRun, NodeServices
from etcdguard.common.ops.step import Step


class Settle(Step):
    name = "settle"
    destructive = True
    clients_see = True
    on_failure = "report: the member is in the cluster; put its configuration back by hand"

    def what(self, plan: RestorePlan) -> str:
        return (f"on {plan.target}: its runtime configuration back exactly as before (manifest, unit or command); "
                "etcd healthy on it")

    def execute(self, node: NodeServices, **options: Any) -> dict[str, Any]:
        return node.settle()

    def phase(self, run: ClusterRun) -> None:
        target = run.plan.target or ""

        def act(member: str) -> dict[str, Any]:
            return run.send_step(member, self.name, None, self.bound(run))

        run.each(self.name, act, members=[target])


STEP = Settle()
