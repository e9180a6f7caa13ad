"""unfence: start kube-apiserver everywhere and wait for its health. From here clients see the restored data.

Clients may see the restored revisions as soon as any kube-apiserver serves,
so this step and every one after it cannot be rolled back by swapping the
old data in (revisions would go backwards): a failure here is reported with
the data restored, and a "rollback" is a new, forward restore.
"""

from __future__ import annotations

from typing import Any, Optional

from etcdguard.common.ops.cluster_plan import RestorePlan
from etcdguard.common.ops.params import RestoreParams
from etcdguard.common.ops.ports import NodeServices
from etcdguard.common.ops.step import Step


class Unfence(Step):
    name = "unfence"
    destructive = True
    clients_see = True
    undoable = True      # a node-local rollback fences again first; a cluster operation never reverts past here
    on_failure = "report: the data is restored; start them by hand"

    def what(self, plan: RestorePlan) -> str:
        return "start kube-apiserver on every node; wait for its health where health_url is set"

    def per_member(self, plan: RestorePlan) -> tuple[tuple[str, str], ...]:
        return tuple((m.member, f"start {m.apiserver}" if m.apiserver else "no kube-apiserver here")
                     for m in plan.members)

    def describe_node(self, p: RestoreParams, etcd: str, apiserver: Optional[str]) -> str:
        return "start kube-apiserver" if apiserver else "no kube-apiserver configured: nothing to start"

    def execute(self, node: NodeServices, **options: Any) -> dict[str, Any]:
        if node.apiserver is None:
            return {"apiserver": "none"}
        node.apiserver.start(node.start_timeout)
        return {"apiserver": node.wait_apiserver()}

    def undo(self, node: NodeServices) -> dict[str, Any]:
        if node.apiserver is None:
            return {"apiserver": "none"}
        node.apiserver.stop(node.stop_timeout)
        return {"apiserver": "stopped"}


STEP = Unfence()
