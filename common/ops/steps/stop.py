"""stop: stop etcd on every member, proven (client port closed, bbolt lock free).

In a cluster operation every member stops at once and with SIGKILL where the
agent signals etcd itself: a leader's graceful hand-over has nowhere to go
and only lengthens the downtime, and etcd is crash-safe (its old data is set
aside anyway). The undo starts etcd again; across the cluster the revert
then waits for the old cluster's quorum.
"""

from __future__ import annotations

import time
from typing import Any, Optional

from etcdguard.common.ops.cluster_checks import wait_quorum
from etcdguard.common.ops.cluster_plan import RestorePlan
from etcdguard.common.ops.params import RestoreParams
from etcdguard.common.ops.ports import ClusterRun, NodeServices
from etcdguard.common.ops.step import Step


class Stop(Step):
    name = "stop"
    destructive = True
    undoable = True
    on_failure = "start etcd and kube-apiserver again"

    def what(self, plan: RestorePlan) -> str:
        return "stop etcd on every member, proven (client port closed, bbolt lock free)"

    def describe_node(self, p: RestoreParams, etcd: str, apiserver: Optional[str]) -> str:
        return f"stop etcd; prove: client port refuses and {p.data_dir}/member/snap/db is lockable"

    def execute(self, node: NodeServices, **options: Any) -> dict[str, Any]:
        started = time.monotonic()
        node.etcd.stop(node.stop_timeout, grace=0.0 if node.in_cluster else None)
        return {"etcd": "stopped", "seconds": round(time.monotonic() - started, 3)}

    def undo(self, node: NodeServices) -> dict[str, Any]:
        node.etcd.start(node.start_timeout)
        if node.in_cluster:
            return {"etcd": "started"}   # one member alone never gets healthy: the coordinator waits for quorum
        node.wait_healthy()
        return {"etcd": "healthy"}

    def after_revert(self, run: ClusterRun) -> None:
        back = [m for m in run.names if m not in run.left_out]
        run.say(self.name, "waiting for the old cluster to have quorum again"
                + (f" (without {', '.join(sorted(run.left_out))})" if run.left_out else ""))
        wait_quorum(run, self.name, run.plan.start_timeout, back)


STEP = Stop()
