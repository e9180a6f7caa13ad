"""defrag-check: before defragmenting, prove the cluster healthy and decide the order.

Every member answers with a leader and a raft request (quorum) now; an alarm
(NOSPACE, the reason to defragment) is allowed, any other trouble refuses
(exit 3). The order: followers first by name, the leader last, so leadership
moves at most once; only the named member with ``--member``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

from etcdguard.common.ops.cluster_plan import RestorePlan
from etcdguard.common.ops.ports import ClusterRun
from etcdguard.common.ops.step import Step, StepFailed
from etcdguard.common.wire.report import EtcdHealth

REFUSED = 3


def serving_problem(name: str, h: EtcdHealth) -> Optional[str]:
    """Why a member cannot be defragmented safely now (pure); raised alarms are not a reason."""
    if h.version is None:
        return f"{name}: etcd does not answer ({h.error or 'no answer'})"
    if not h.leader:
        return f"{name}: no leader"
    if not h.quorum:
        return f"{name}: no quorum ({h.error or 'a raft request got no answer'})"
    others = [e for e in (h.error or "").split("; ") if e and not any(e.endswith(a) for a in h.alarms)
              and "alarm" not in e.lower()]
    return f"{name}: {'; '.join(others)}" if others else None


def defrag_order(health: Mapping[str, EtcdHealth], only: Optional[str] = None) -> list[str]:
    """Followers by name, then the leader (pure); just ``only`` when given."""
    names = [only] if only else sorted(health)
    return sorted(names, key=lambda n: (health[n].is_leader, n))


class DefragCheck(Step):
    name = "defrag-check"
    on_agent = False
    on_failure = "refuse: nothing changed"

    def what(self, plan: RestorePlan) -> str:
        which = plan.target or "every member"
        return (f"every member serving under one leader, measured now (alarms allowed); {which} in order: "
                "followers first, the leader last")

    def phase(self, run: ClusterRun) -> None:
        health = {n: h for n, (h, _) in run.inspect_all(run.names).items()}
        problems = [p for p in (serving_problem(n, h) for n, h in sorted(health.items())) if p]
        if problems:
            raise StepFailed(self.name, "refused, nothing changed: " + "; ".join(problems), REFUSED)
        order = defrag_order(health, run.plan.target)
        run.fact("order", order)
        run.fact("before", {n: {"db_size": h.db_size, "db_size_in_use": h.db_size_in_use} for n, h in health.items()})
        run.say(self.name, f"order: {', '.join(order)}")


STEP = DefragCheck()
