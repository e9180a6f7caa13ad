"""catch-up: wait until the joining member has applied what the leader has (its raft index close to the
leader's) and holds at least the revision the cluster had when the replacement began.

Writes go on meanwhile, so "caught up" is a small gap in the same
measurement (CATCH_UP_SLACK raft entries), not equality. A joining etcd that
exits and stays down fails the step at once (see its log on its node).
"""

from __future__ import annotations

import time
from typing import Optional

from etcdguard.common.ops.cluster_checks import GONE_FOR, NOT_RUNNING
from etcdguard.common.ops.cluster_plan import RestorePlan
from etcdguard.common.ops.membership import CATCH_UP_SLACK, catch_up_gap
from etcdguard.common.ops.ports import ClusterRun
from etcdguard.common.ops.step import Step, StepFailed
from etcdguard.common.wire.report import EtcdHealth

POLL = 0.05
SAY_EVERY = 2.0


def caught_up(joining: EtcdHealth, leader: EtcdHealth, revision_before: Optional[int]) -> Optional[str]:
    """None when ``joining`` has caught up with ``leader`` (pure); else what it still lacks."""
    if joining.version is None:
        return f"its etcd does not answer yet ({joining.error or 'no answer'})"
    if not joining.leader:
        return "it has no leader yet"
    gap = catch_up_gap(joining, leader)
    if gap is None:
        return "no raft index reported"
    if gap > CATCH_UP_SLACK:
        return f"{gap:,} raft entries behind the leader"
    if revision_before is not None and (joining.revision or 0) < revision_before:
        return f"at revision {joining.revision}, below the {revision_before:,} the cluster had when it began"
    return None


class CatchUp(Step):
    name = "catch-up"
    on_agent = False
    long = True
    on_failure = "stop: resume forward (the learner keeps syncing meanwhile)"

    def what(self, plan: RestorePlan) -> str:
        return (f"wait until {plan.target} has applied the leader's raft log (within {CATCH_UP_SLACK:,} entries) "
                "and the revision the cluster had when the replacement began")

    def phase(self, run: ClusterRun) -> None:
        target = run.plan.target or ""
        before = run.record.facts.get("revision_before")
        deadline = time.monotonic() + self.bound(run)
        said, gone_since = 0.0, None
        while True:
            seen = {n: h for n, (h, _) in run.inspect_all(run.names).items()}
            joining = seen.pop(target)
            leader = next((h for h in seen.values() if h.is_leader), None)
            lacks = "no leader among the other members" if leader is None else caught_up(
                joining, leader, before if isinstance(before, int) else None)
            if lacks is None:
                assert leader is not None
                run.say(self.name, f"caught up: raft index {joining.raft_applied_index or joining.raft_index:,} "
                                   f"(leader {leader.raft_index:,}), revision {joining.revision:,}", target)
                run.fact("caught_up", {"revision": joining.revision, "raft_index": joining.raft_index})
                return
            now = time.monotonic()
            gone_since = (gone_since or now) if (joining.error or "").startswith(NOT_RUNNING) else None
            if gone_since is not None and now - gone_since >= GONE_FOR:
                raise StepFailed(self.name, f"etcd on {target} exited and stayed down for {GONE_FOR:g}s (see its log "
                                            f"there): {joining.error}")
            if now >= deadline:
                raise StepFailed(self.name, f"{target} did not catch up within {self.bound(run):.0f}s: {lacks}")
            if now - said >= SAY_EVERY:
                said = now
                run.say(self.name, f"syncing: {lacks}", target)
            run.pause(POLL)


STEP = CatchUp()
