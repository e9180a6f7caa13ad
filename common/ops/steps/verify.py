"""verify: prove the restored cluster is the one the plan promised, before any client sees it.

Across the cluster: every member healthy under one leader, one new cluster id,
the member list the plan's voters, no alarms, the revision at least the
snapshot's plus the bump, and the same hashkv on every member at one
revision. Then each agent records its own view (so its lineage knows the new
cluster id). On a node-local restore the member checks itself the same way.
"""

from __future__ import annotations

from typing import Any, Optional

from etcdguard.common.base.addresses import parse_initial_cluster
from etcdguard.common.base.errors import UnsafeRefusal
from etcdguard.common.ops.cluster_checks import verify_problems, wait_quorum
from etcdguard.common.ops.cluster_plan import RestorePlan
from etcdguard.common.ops.params import RestoreParams
from etcdguard.common.ops.ports import ClusterRun, NodeServices
from etcdguard.common.ops.step import Step, StepFailed

VERIFY_SETTLE = 30.0   # seconds verify waits for every member healthy under one leader before it judges


class Verify(Step):
    name = "verify"
    on_failure = "cluster rollback (all members at once)"

    def what(self, plan: RestorePlan) -> str:
        return ("every member healthy, one leader, one new cluster id"
                + (f" (not {plan.live_cluster_id})" if plan.live_cluster_id else "")
                + f", member list = these {len(plan.members)} voters, no alarms, revision >= "
                f"{plan.expected_min_revision:,}, the same hashkv on every member at one revision")

    def describe_node(self, p: RestoreParams, etcd: str, apiserver: Optional[str]) -> str:
        return f"revision >= {p.expected_min_revision}; member {p.name} healthy"

    def execute(self, node: NodeServices, **options: Any) -> dict[str, Any]:
        p = node.params
        seen = node.wait_healthy(full=True)
        revision = int(seen.get("revision") or 0)
        if revision < p.expected_min_revision:
            raise UnsafeRefusal(f"restored revision {revision} is below the expected {p.expected_min_revision}")
        names = sorted(str(n) for n in seen.get("members") or [])
        planned = sorted({name for name, _ in parse_initial_cluster(p.initial_cluster)})
        if names != planned:
            raise UnsafeRefusal(f"member list {names} differs from the planned {planned}")
        return {"revision": revision, "members": names, "hashkv": seen.get("hashkv"),
                "cluster_id": seen.get("cluster_id")}

    def phase(self, run: ClusterRun) -> None:
        # A restored cluster answers its first raft requests slower than later ones (a cold disk): poll for
        # quorum a while before judging, as the start step did, instead of reading one answer.
        health = wait_quorum(run, self.name, min(run.plan.start_timeout, VERIFY_SETTLE))
        revisions = [h.revision for h in health.values() if h.revision is not None]
        at = min(revisions) if revisions else 0
        hashes: dict[str, Optional[int]] = {n: None for n in run.names}
        if at:
            for n, (_, hk) in run.inspect_all(run.names, hashkv_revision=at).items():
                hashes[n] = int(hk["hash"]) if hk and isinstance(hk.get("hash"), int) else None
        problems = verify_problems(run.plan, health, hashes, run.record.facts.get("old_cluster_id"))
        if problems:
            raise StepFailed(self.name, "the restored cluster does not verify: " + "; ".join(problems))
        hashkv = next(iter(hashes.values()), None)
        run.fact("verified", {"revision": at, "hashkv": hashkv,
                              "cluster_id": next(iter(health.values())).cluster_id})
        run.say(self.name, f"all {len(health)} members healthy, one leader, hashkv {hashkv} at revision {at:,} "
                           "everywhere")
        self.on_members(run)   # each agent records it, so unfence may follow there


STEP = Verify()
