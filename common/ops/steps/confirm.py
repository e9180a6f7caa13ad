"""confirm: prove the cluster whole again after a replacement, before the operation is done.

Every member healthy under one leader, the member list exactly the plan's
members with their peer URLs and no learner, the cluster id the one it had
(no new cluster was made), no alarms, and the same hashkv on every member at
one revision.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

from etcdguard.common.ops.cluster_checks import quorum_problem, wait_quorum
from etcdguard.common.ops.cluster_plan import RestorePlan
from etcdguard.common.ops.ports import ClusterRun
from etcdguard.common.ops.step import Step, StepFailed
from etcdguard.common.wire.report import EtcdHealth

SETTLE = 30.0


def confirm_problems(plan: RestorePlan, health: Mapping[str, EtcdHealth], hashes: Mapping[str, Optional[int]],
                     cluster_id: Optional[str]) -> list[str]:
    """Every way the cluster differs from a whole one after replacing ``plan.target`` (pure)."""
    problems = []
    problem = quorum_problem(health)
    if problem:
        problems.append(problem)
    ids = {h.cluster_id for h in health.values()}
    if cluster_id and ids != {cluster_id}:
        problems.append(f"cluster id {', '.join(sorted(str(i) for i in ids))}, not the cluster's {cluster_id}")
    want = sorted((m.member, m.peer_url) for m in plan.members)
    for name, h in sorted(health.items()):
        have = sorted((m.name, m.peer_urls[0] if m.peer_urls else "") for m in h.members)
        if have != want:
            problems.append(f"{name}: member list {have} differs from {want}")
        learners = [m.name or m.id for m in h.members if m.is_learner]
        if learners:
            problems.append(f"{name}: learners in the member list: {', '.join(learners)}")
        if h.alarms:
            problems.append(f"{name}: alarms raised: {', '.join(h.alarms)}")
    missing = [n for n, v in sorted(hashes.items()) if v is None]
    if missing:
        problems.append(f"no hashkv from {', '.join(missing)}")
    elif len(set(hashes.values())) != 1:
        problems.append("hashkv differs between members: " + ", ".join(f"{n}={v}" for n, v in sorted(hashes.items())))
    return problems


class Confirm(Step):
    name = "confirm"
    on_agent = False
    on_failure = "report: the member is in the cluster; look at what differs"

    def what(self, plan: RestorePlan) -> str:
        return (f"every member healthy, one leader, the member list these {len(plan.members)} voters, the same "
                "cluster id as before, no alarms, the same hashkv on every member at one revision")

    def phase(self, run: ClusterRun) -> None:
        health = wait_quorum(run, self.name, SETTLE)
        revisions = [h.revision for h in health.values() if h.revision is not None]
        at = min(revisions) if revisions else 0
        hashes: dict[str, Optional[int]] = {n: None for n in run.names}
        if at:
            for n, (_, hk) in run.inspect_all(run.names, hashkv_revision=at).items():
                hashes[n] = int(hk["hash"]) if hk and isinstance(hk.get("hash"), int) else None
        cluster_id = run.record.facts.get("cluster_id")
        problems = confirm_problems(run.plan, health, hashes, cluster_id if isinstance(cluster_id, str) else None)
        if problems:
            raise StepFailed(self.name, "the cluster does not confirm: " + "; ".join(problems))
        hashkv = next(iter(hashes.values()), None)
        run.fact("verified", {"revision": at, "hashkv": hashkv, "cluster_id": cluster_id})
        run.say(self.name, f"all {len(health)} members healthy, one leader, hashkv {hashkv} at revision {at:,} "
                           "everywhere")


STEP = Confirm()
