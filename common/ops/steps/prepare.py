"""prepare: restore the snapshot into a new directory beside the live data, while etcd still serves.

Every member gets the same snapshot, the full initial cluster, one fresh
token and one revision bump (the plan's), each with its own name and peer
URL. The restored data lands on the data dir's filesystem (and the WAL dir's),
so the later swap is a rename. Its parameters open the operation on the
agent, which first runs the steps before it (preflight) there.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Optional

from etcdguard.common.ops.cluster_plan import RestorePlan
from etcdguard.common.ops.params import RestoreParams
from etcdguard.common.ops.ports import ClusterRun, NodeServices
from etcdguard.common.ops.step import Step, StepFailed
from etcdguard.common.wire.schema import (
    INITIAL_CLUSTER_PATTERN,
    MAX_BUMP_REVISION,
    MAX_OFFSET,
    NAME_PATTERN,
    PEER_URL_PATTERN,
    SHA256_PATTERN,
    Int,
    Schema,
    Str,
)

PARAMS: Schema = MappingProxyType({
    "snapshot": Str(NAME_PATTERN, "a snapshot name"),
    "name": Str(NAME_PATTERN, "an etcd member name"),
    "initial_cluster": Str(INITIAL_CLUSTER_PATTERN, "an initial cluster ('name=url,name=url')", max_len=8192),
    "token": Str(NAME_PATTERN, "an initial cluster token"),
    "peer_url": Str(PEER_URL_PATTERN, "a peer URL ('https://host:port')"),
    "bump_revision": Int(0, MAX_BUMP_REVISION),   # 0: no bump (etcd < 3.5.10)
    # the vault's sha256 of the snapshot: the agent compares it with the file it verified
    "sha256": Str(SHA256_PATTERN, "a sha256 hex digest", required=False),
    # "normal" when the cluster is down already (every second is downtime); default "low"
    "priority": Str("low|normal", "a priority (low, normal)", max_len=8, required=False),
    # the snapshot's revision as the vault recorded it (read by `snapshot status` when it was taken): a
    # staged copy verified on arrival is then not read again
    "revision": Int(0, MAX_OFFSET, required=False),
})


class Prepare(Step):
    name = "prepare"
    undoable = True
    opens = True
    long = True
    params = PARAMS
    on_failure = "abort: prepared dirs removed everywhere"

    def what(self, plan: RestorePlan) -> str:
        priority = ("at full priority (the cluster is down: nothing else needs the CPU or the disk)"
                    if plan.cluster_down else "at low CPU and I/O priority")
        ahead = ""
        if plan.warm:
            ahead = (f"; {', '.join(plan.warm)} hold it restored ahead with these parameters (warm standby): "
                     "there it is a rename")
        return (f"while etcd still serves (where it does), {priority}: restore into a new dir on the data dir's "
                f"filesystem with token {plan.token} and {_bump(plan)}{ahead}")

    def per_member(self, plan: RestorePlan) -> tuple[tuple[str, str], ...]:
        return tuple((m.member, f"{m.tool or 'restore tool'}: --name {m.member} --initial-advertise-peer-urls "
                                f"{m.peer_url} into {m.data_dir}/.etcdguard-{plan.op}/data"
                      + (f" (WAL into {m.wal_dir})" if m.wal_dir else "")) for m in plan.members)

    def describe_node(self, p: RestoreParams, etcd: str, apiserver: Optional[str]) -> str:
        bump = (f"revision bumped by {p.bump_revision:,} (restored revision >= {p.expected_min_revision:,})"
                if p.bump_revision else "no revision bump (the restore tool does not support --bump-revision)")
        return f"while etcd runs: {shlex.join(p.restore_argv)}; copy owner/mode of {p.data_dir}/member; {bump}"

    def execute(self, node: NodeServices, **options: Any) -> dict[str, Any]:
        return node.prepare_data()

    def undo(self, node: NodeServices) -> dict[str, Any]:
        return node.remove_prepared()

    def member_params(self, run: ClusterRun, member: str) -> Optional[Mapping[str, Any]]:
        staged = run.record.step_done("stage", member)
        name = staged.result.get("staged") if staged is not None and isinstance(staged.result, dict) else None
        if not name:
            raise StepFailed(self.name, f"{member}: no staged snapshot recorded for this member")
        plan = run.plan
        m = plan.member(member)
        return {"snapshot": name, "name": member, "initial_cluster": plan.initial_cluster, "token": plan.token,
                "peer_url": m.peer_url, "bump_revision": plan.bump_revision, "sha256": plan.restored.id,
                "priority": "normal" if plan.cluster_down else "low",
                **({"revision": plan.restored.revision} if plan.restored.revision_exact else {})}


def _bump(plan: RestorePlan) -> str:
    if not plan.bump_revision:
        return "no revision bump"
    return (f"--bump-revision {plan.bump_revision:,} --mark-compacted (restored revision >= "
            f"{plan.expected_min_revision:,})")


STEP = Prepare()
