"""fence: stop kube-apiserver everywhere, proven, so nothing writes; then the revision must stand still.

With every kube-apiserver down the revision must not move: if it does,
another client writes to etcd, and a restore would lose its writes silently.
The check reads every member twice, ``fence_settle`` apart; when no member
answers (the cluster is down) there is no writer to check for and it is
skipped at once.
"""

from __future__ import annotations

from typing import Any, Optional

from etcdguard.common.ops.cluster_plan import RestorePlan
from etcdguard.common.ops.params import RestoreParams
from etcdguard.common.ops.ports import ClusterRun, NodeServices
from etcdguard.common.ops.step import Step, StepFailed


class Fence(Step):
    name = "fence"
    destructive = True
    undoable = True
    on_failure = "start the kube-apiservers again"

    def what(self, plan: RestorePlan) -> str:
        with_api = [m for m in plan.members if m.apiserver]
        if plan.cluster_down:
            return (f"stop kube-apiserver on {len(with_api)} node(s), proven; etcd has no quorum, so nothing can "
                    "write and the revision check is skipped")
        return (f"stop kube-apiserver on {len(with_api)} node(s), proven; then the revision must stay still for "
                f"{plan.fence_settle:g}s (no other writer)")

    def per_member(self, plan: RestorePlan) -> tuple[tuple[str, str], ...]:
        return tuple((m.member, f"stop {m.apiserver}" if m.apiserver else "no kube-apiserver here")
                     for m in plan.members)

    def describe_node(self, p: RestoreParams, etcd: str, apiserver: Optional[str]) -> str:
        return ("stop kube-apiserver and prove it stopped" if apiserver
                else "no kube-apiserver configured on this node: nothing to fence")

    def execute(self, node: NodeServices, **options: Any) -> dict[str, Any]:
        if node.apiserver is None:
            return {"apiserver": "none"}
        node.apiserver.stop(node.stop_timeout)
        return {"apiserver": "stopped"}

    def undo(self, node: NodeServices) -> dict[str, Any]:
        if node.apiserver is None:
            return {"apiserver": "none"}
        if not node.apiserver.is_running():
            node.apiserver.start(node.start_timeout)
        return {"apiserver": node.wait_apiserver()}

    def check(self, run: ClusterRun) -> None:
        """With every kube-apiserver down the revision must stand still: else something else writes."""
        first = run.inspect_all(run.names)
        alive = {n: h for n, (h, _) in first.items() if h.healthy and h.revision is not None}
        if not alive:
            run.say(self.name, "no member has quorum: nothing can write, so there is no writer to check for")
            return
        run.pause(run.plan.fence_settle)
        second = run.inspect_all(list(alive))
        moved = [f"{n}: {alive[n].revision} -> {h.revision}" for n, (h, _) in second.items()
                 if h.revision is not None and h.revision != alive[n].revision]
        if moved:
            raise StepFailed(self.name, "the revision still moves with every kube-apiserver stopped ("
                                        + "; ".join(moved) + "): another client writes to etcd. Stop it, "
                                        "then restore again")
        revision = max(h.revision for h in alive.values() if h.revision is not None)
        run.fact("fenced_revision", revision)
        if run.plan.bump_revision and revision >= run.plan.expected_min_revision:
            raise StepFailed(self.name, f"the live revision {revision:,} has reached the restored revision "
                                        f"{run.plan.expected_min_revision:,}; plan again with a larger bump")


STEP = Fence()
