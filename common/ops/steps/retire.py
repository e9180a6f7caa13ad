"""retire: stop the replaced member's etcd, proven, before its data is set aside.

On the member's node; its parameters open the operation there. An etcd that
is not running (it crashed, its disk is gone) needs no stop, only the proof.
The undo starts etcd again where it ran before.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Optional

from etcdguard.common.ops.cluster_plan import RestorePlan
from etcdguard.common.ops.params import MemberParams
from etcdguard.common.ops.ports import ClusterRun, NodeServices
from etcdguard.common.ops.step import Step
from etcdguard.common.wire.schema import NAME_PATTERN, PEER_URL_PATTERN, Schema, Str

PARAMS: Schema = MappingProxyType({
    "name": Str(NAME_PATTERN, "an etcd member name"),
    "peer_url": Str(PEER_URL_PATTERN, "a peer URL ('https://host:port')"),
})


class Retire(Step):
    name = "retire"
    destructive = True
    undoable = True
    opens = True
    params = PARAMS
    on_failure = "start its etcd again if it ran"

    def what(self, plan: RestorePlan) -> str:
        return f"stop etcd on {plan.target}, proven (client port closed, bbolt lock free); nothing if it is down"

    def execute(self, node: NodeServices, **options: Any) -> dict[str, Any]:
        node.params_as(MemberParams)
        was_running = node.etcd.is_running()
        node.etcd.stop(node.stop_timeout)
        return {"etcd": "stopped", "was_running": was_running}

    def undo(self, node: NodeServices) -> dict[str, Any]:
        """etcd started again where it ran before (when the stop failed half-way, so nothing recorded whether
        it ran: wherever its data is in place); never on a data dir without data (a lost member)."""
        done = node.result_of(self.name)
        if done is not None and not done.get("was_running"):
            return {"etcd": "left stopped (it was not running before)"}
        if not node.live_member_present():
            return {"etcd": "left stopped (no data in its data dir)"}
        if not node.etcd.is_running():
            node.etcd.start(node.start_timeout)
        return {"etcd": "started"}

    def member_params(self, run: ClusterRun, member: str) -> Optional[Mapping[str, Any]]:
        return {"name": member, "peer_url": run.plan.target_peer_url}

    def phase(self, run: ClusterRun) -> None:
        self.on_members_of(run)

    def on_members_of(self, run: ClusterRun) -> None:
        target = run.plan.target or ""

        def act(member: str) -> dict[str, Any]:
            run.say(self.name, "stopping etcd", member)
            return run.send_step(member, self.name, self.member_params(run, member), self.bound(run))

        run.each(self.name, act, members=[target])

    def revert(self, run: ClusterRun) -> None:
        target_only(self, run)


def target_only(step: Step, run: ClusterRun) -> None:
    """The undo of ``step`` on the operation's target, where it started."""
    started = [m for m in run.started(step.name) if m == run.plan.target]

    def undo(member: str) -> dict[str, Any]:
        run.say(step.name, "undoing", member)
        return run.send_undo(member, step.name, step.bound(run)) or {"none": True}

    run.each(step.name, undo, revert=True, members=started)


STEP = Retire()
