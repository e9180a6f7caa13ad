"""join: start the replaced member's etcd as a member joining the existing cluster.

On its node: ``--initial-cluster-state existing`` and the current initial
cluster, through a temporary form of how etcd runs there (the static pod's
manifest, a systemd drop-in, the process runtime's command); ``settle`` puts
the steady form back once the member is promoted.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Optional

from etcdguard.common.ops.cluster_plan import RestorePlan
from etcdguard.common.ops.ports import ClusterRun, NodeServices
from etcdguard.common.ops.step import Step, StepFailed
from etcdguard.common.wire.schema import INITIAL_CLUSTER_PATTERN, Schema, Str

PARAMS: Schema = MappingProxyType({
    "initial_cluster": Str(INITIAL_CLUSTER_PATTERN, "an initial cluster ('name=url,name=url')", max_len=8192),
})


class Join(Step):
    name = "join"
    destructive = True
    clients_see = True
    params = PARAMS
    on_failure = "stop: resume forward"

    def what(self, plan: RestorePlan) -> str:
        return (f"on {plan.target}: start etcd with --initial-cluster-state existing and the current initial "
                "cluster (a temporary form of its runtime configuration); it syncs from the leader")

    def execute(self, node: NodeServices, **options: Any) -> dict[str, Any]:
        return node.start_joining(str(options["initial_cluster"]))

    def member_params(self, run: ClusterRun, member: str) -> Optional[Mapping[str, Any]]:
        cluster = run.record.facts.get("initial_cluster")
        if not isinstance(cluster, str) or not cluster:
            raise StepFailed(self.name, "no initial cluster recorded by add-learner")
        return {"initial_cluster": cluster}

    def phase(self, run: ClusterRun) -> None:
        target = run.plan.target or ""

        def act(member: str) -> dict[str, Any]:
            run.say(self.name, "starting etcd to join the cluster", member)
            return run.send_step(member, self.name, self.member_params(run, member), self.bound(run))

        run.each(self.name, act, members=[target])


STEP = Join()
