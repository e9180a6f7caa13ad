"""swap: set the live data aside and rename the prepared data into place, etcd proven stopped.

``member`` becomes ``member.etcdguard-<op>`` (kept for rollback) and the
prepared data takes its place, all by rename on one filesystem: atomic, and
no manifest or unit is edited. The undo swaps back; the restored data is
kept in the operation's workspace.
"""

from __future__ import annotations

from typing import Any, Optional

from etcdguard.common.ops.cluster_plan import RestorePlan
from etcdguard.common.ops.params import RestoreParams
from etcdguard.common.ops.ports import ClusterRun, NodeServices
from etcdguard.common.ops.step import Step


class Swap(Step):
    name = "swap"
    destructive = True
    undoable = True
    on_failure = "swap back, restart"

    def what(self, plan: RestorePlan) -> str:
        return (f"rename member -> member.etcdguard-{plan.op} (kept for rollback) and the prepared data into "
                "place")

    def per_member(self, plan: RestorePlan) -> tuple[tuple[str, str], ...]:
        return tuple((m.member, f"in {m.data_dir}" + (f" and {m.wal_dir}" if m.wal_dir else ""))
                     for m in plan.members)

    def describe_node(self, p: RestoreParams, etcd: str, apiserver: Optional[str]) -> str:
        return (f"rename {p.data_dir}/member -> {p.data_dir}/member.etcdguard-{p.op} (kept for rollback); rename "
                f"{p.data_dir}/.etcdguard-{p.op}/data/member -> {p.data_dir}/member"
                + (f"; the WAL files in {p.wal_dir} likewise" if p.wal_dir else ""))

    def execute(self, node: NodeServices, **options: Any) -> dict[str, Any]:
        return node.swap_in()

    def undo(self, node: NodeServices) -> dict[str, Any]:
        return {"notes": node.swap_out()}

    def phase(self, run: ClusterRun) -> None:
        results = self.on_members(run)
        run.fact("kept", {m: (results.get(m) or {}).get("kept") for m in run.names})


STEP = Swap()
