"""start: start etcd on every member at once; across the cluster, wait for quorum under one leader.

A member of a cluster becomes healthy only once a quorum runs, so on a node
the step only starts etcd (a node-local restore also waits for its health);
the coordinator waits for the whole cluster and gives up at once when a
member's etcd exits.
"""

from __future__ import annotations

from typing import Any, Optional

from etcdguard.common.ops.cluster_checks import wait_quorum
from etcdguard.common.ops.cluster_plan import RestorePlan
from etcdguard.common.ops.params import RestoreParams
from etcdguard.common.ops.ports import ClusterRun, NodeServices
from etcdguard.common.ops.step import Step


class Start(Step):
    name = "start"
    destructive = True
    undoable = True
    on_failure = "stop all, swap back all, start all, wait for quorum, unfence"

    def what(self, plan: RestorePlan) -> str:
        return (f"start etcd on every member in parallel; wait up to {plan.start_timeout:g}s for quorum, one "
                "leader, every member healthy")

    def describe_node(self, p: RestoreParams, etcd: str, apiserver: Optional[str]) -> str:
        return "start etcd; wait until healthy"

    def execute(self, node: NodeServices, **options: Any) -> dict[str, Any]:
        node.etcd.start(node.start_timeout)
        if node.in_cluster:
            return {"etcd": "started"}   # quorum is the coordinator's to wait for
        health = node.wait_healthy()
        return {"etcd": "healthy", "revision": health.get("revision")}

    def undo(self, node: NodeServices) -> dict[str, Any]:
        node.etcd.stop(node.stop_timeout, grace=0.0 if node.in_cluster else None)
        return {"etcd": "stopped"}

    def check(self, run: ClusterRun) -> None:
        health = wait_quorum(run, self.name, run.plan.start_timeout)
        ids = sorted({h.cluster_id for h in health.values() if h.cluster_id})
        run.fact("new_cluster_id", ids[0] if len(ids) == 1 else None)


STEP = Start()
