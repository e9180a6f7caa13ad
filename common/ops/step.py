"""A step of an operation, declared once (TaskFlow's task: execute paired with revert).

One ``Step`` object holds everything about one step: its name; its flags,
which are all the engines read (never the name); the parameters the
coordinator sends with it; the words an operator reads in a plan; what it
does on a node (``execute``) and how that is undone (``undo``); and what it
does across the cluster (``phase``: by default the same step sent to every
member's agent in parallel, then a cluster-level ``check``) and how that is
reverted (``revert``: the undo on every member where it started, at once).

Flags:

- ``destructive``: it changes what runs on a node or the live data (downtime);
- ``clients_see``: once it started, clients may have seen the operation's
  effect, so the operation can no longer be rolled back by swapping old data
  in: a failure from here on is left for the operator, and a "rollback" is a
  new, forward operation;
- ``on_agent``: the agents run it (``restore.step``); otherwise it is the
  coordinator's own work (staging a snapshot);
- ``undoable``: it has an undo on the agent (``undo-<name>``);
- ``opens``: its parameters open the operation on the agent, and the steps
  before it in the flow run there first;
- ``long``: its bound is the long one (the restore tool on a large snapshot);
- ``healthy_after``: once it is done the cluster is healthy again, with the
  operation's effect (a summary's time to healthy ends there; a flow that
  marks no step counts to the last destructive step before clients see it).

Adding a step is one module under common/ops/steps/ and its place in a flow
(common/ops/flows.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Optional

from etcdguard.common.base.errors import EtcdguardError
from etcdguard.common.ops.cluster_plan import PlannedPhase, RestorePlan
from etcdguard.common.ops.params import RestoreParams
from etcdguard.common.ops.ports import ClusterRun, NodeServices
from etcdguard.common.wire.schema import Schema

UNDO_PREFIX = "undo-"
NO_PARAMS: Schema = MappingProxyType({})


class StepFailed(EtcdguardError):
    """A step failed (on one or more members, or its cluster check); the message says where and why."""

    def __init__(self, step: str, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.step = step
        self.exit_code = exit_code


class Interrupted(EtcdguardError):
    """The engine is stopping (its daemon stops, or the operator cancelled): the operation is left resumable."""


class Step:
    name: ClassVar[str] = ""
    destructive: ClassVar[bool] = False
    clients_see: ClassVar[bool] = False
    on_agent: ClassVar[bool] = True
    undoable: ClassVar[bool] = False
    opens: ClassVar[bool] = False
    long: ClassVar[bool] = False
    healthy_after: ClassVar[bool] = False
    params: ClassVar[Schema] = NO_PARAMS
    on_failure: ClassVar[str] = "abort: nothing changed"

    @property
    def undo_name(self) -> str:
        return UNDO_PREFIX + self.name

    # -- what an operator reads --------------------------------------------------
    def what(self, plan: RestorePlan) -> str:
        """What the step does across the cluster, in words checked before saying yes."""
        return self.name

    def per_member(self, plan: RestorePlan) -> tuple[tuple[str, str], ...]:
        """(member, what happens there) where it differs per node."""
        return ()

    def describe(self, plan: RestorePlan) -> PlannedPhase:
        return PlannedPhase(self.name, self.destructive, self.what(plan), self.on_failure, self.per_member(plan))

    def describe_node(self, p: RestoreParams, etcd: str, apiserver: Optional[str]) -> str:
        """What the step does in a node-local restore (``etcd``/``apiserver``: how they are run here)."""
        return self.name

    # -- on a node (the agent) -------------------------------------------------------
    def execute(self, node: NodeServices, **options: Any) -> dict[str, Any]:
        raise StepFailed(self.name, f"step {self.name} does not run on a node")

    def undo(self, node: NodeServices) -> dict[str, Any]:
        raise StepFailed(self.name, f"step {self.name} has no undo")

    # -- across the cluster (the coordinator) -------------------------------------------
    def member_params(self, run: ClusterRun, member: str) -> Optional[Mapping[str, Any]]:
        return None

    def bound(self, run: ClusterRun) -> float:
        return run.timeouts.prepare if self.long else run.timeouts.step

    def phase(self, run: ClusterRun) -> None:
        """Run the step on every member's agent in parallel, then check the cluster."""
        self.on_members(run)
        self.check(run)

    def on_members(self, run: ClusterRun) -> dict[str, dict[str, Any]]:
        def act(member: str) -> dict[str, Any]:
            run.say(self.name, "running", member)
            result = run.send_step(member, self.name, self.member_params(run, member), self.bound(run))
            run.say(self.name, "done", member)
            return result

        return run.each(self.name, act)

    def check(self, run: ClusterRun) -> None:
        """A cluster-level condition once every member did its part."""

    def revert(self, run: ClusterRun) -> None:
        """Undo the step on every member where it started (all at once), then ``after_revert``."""
        if not self.undoable:
            return
        started = run.started(self.name)

        def undo(member: str) -> dict[str, Any]:
            run.say(self.name, "undoing", member)
            return run.send_undo(member, self.name, self.bound(run)) or {"none": True}

        run.each(self.name, undo, revert=True, members=started)
        self.after_revert(run)

    def after_revert(self, run: ClusterRun) -> None:
        """A cluster-level condition once every member is undone."""

    def after_done(self, run: ClusterRun) -> None:
        """Tidy up once the whole operation is done (staged copies, say)."""
