"""defragment: Maintenance.Defragment on one member at a time, each healthy again before the next.

A member being defragmented stops serving while it rewrites its database
file, so never two at once; followers first, the leader last (the order
defrag-check recorded). Between members the whole cluster must be back
under one leader with every member answering.
"""

from __future__ import annotations

import time
from typing import Any

from etcdguard.common.base.durations import format_bytes
from etcdguard.common.ops.cluster_plan import RestorePlan
from etcdguard.common.ops.ports import ClusterRun
from etcdguard.common.ops.step import Step, StepFailed
from etcdguard.common.ops.steps.defrag_check import serving_problem

HEALTHY_AGAIN = 60.0
POLL = 0.1


class Defragment(Step):
    name = "defragment"
    on_agent = False
    long = True
    on_failure = "stop: the members done are defragmented; run it again for the rest"

    def what(self, plan: RestorePlan) -> str:
        return ("Maintenance.Defragment on each member in turn (its own agent asks it); the cluster healthy again "
                "before the next")

    def phase(self, run: ClusterRun) -> None:
        order = run.record.facts.get("order") or []
        for member in order:
            self._healthy(run, member)

            def act(name: str) -> dict[str, Any]:
                run.say(self.name, "defragmenting", name)
                result = run.etcd_admin(name, "defragment", {}, self.bound(run))
                before, after = result.get("before") or {}, result.get("after") or {}
                run.say(self.name, f"db {format_bytes(int(before.get('db_size') or 0))} -> "
                                   f"{format_bytes(int(after.get('db_size') or 0))} (in use "
                                   f"{format_bytes(int(after.get('db_size_in_use') or 0))}) in "
                                   f"{float(result.get('seconds') or 0):.1f}s", name)
                return result

            run.each(self.name, act, members=[member])
        self._healthy(run, None)

    def _healthy(self, run: ClusterRun, before: object) -> None:
        """Every member serving under one leader (the check between two members)."""
        deadline = time.monotonic() + HEALTHY_AGAIN
        while True:
            health = {n: h for n, (h, _) in run.inspect_all(run.names).items()}
            problems = [p for p in (serving_problem(n, h) for n, h in sorted(health.items())) if p]
            leaders = {h.leader for h in health.values()}
            if not problems and len(leaders) == 1:
                return
            if time.monotonic() >= deadline:
                raise StepFailed(self.name, f"the cluster is not healthy within {HEALTHY_AGAIN:.0f}s"
                                            + (f" before {before}" if before else "") + ": "
                                            + ("; ".join(problems) or "the members name different leaders"))
            run.pause(POLL)


STEP = Defragment()
