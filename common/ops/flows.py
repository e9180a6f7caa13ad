"""The step registry: every operation is a flow, an ordered tuple of steps, each declared once.

The cluster restore runs its steps on every member with a barrier between
them (design.md section 3); the node-local restore of a single-member cluster
runs the same steps on one node, without staging. A member replacement runs
its node steps on the replaced member and changes etcd's membership through
a healthy one; a defragmentation asks each member in turn. The wire protocol's
``restore.step`` accepts exactly the steps the agents run, their undo steps
and the whole-operation actions, all derived from here; so do the plans, the
journals' readers and the CLI's ``--until`` choices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Union

from etcdguard.common.ops.params import MemberParams, RestoreParams
from etcdguard.common.ops.step import Step
from etcdguard.common.ops.steps import (
    catch_up,
    confirm,
    defrag_check,
    defragment,
    disarm,
    fence,
    health_check,
    join,
    learner_add,
    member_remove,
    preflight,
    prepare,
    promote,
    restart,
    retire,
    set_aside,
    settle,
    stage,
    start,
    stop,
    swap,
    unfence,
    verify,
)
from etcdguard.common.wire.schema import Schema, Str

# Whole-operation actions on an agent: a node-local rollback, deleting kept data, closing an operation.
ACTIONS = ("rollback", "cleanup", "finish")
# How an operation a coordinator ran ends on an agent (the `finish` action's outcome).
OUTCOMES = ("done", "failed", "rolled-back")


@dataclass(frozen=True)
class Flow:
    """One kind of operation: its steps in order.

    ``command``: the etcdguardctl command that runs, resumes and rolls it back;
    ``params``: the type of its parameters on a node (the opening step fills them in);
    ``serves``: the cluster keeps serving throughout (no step of it is downtime).
    """

    name: str
    steps: tuple[Step, ...]
    command: str = "restore"
    params: type[Union[RestoreParams, MemberParams]] = RestoreParams
    serves: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.steps)

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(f"{self.name} has no step {name!r} (its steps: {', '.join(self.names)})")

    def has(self, name: str) -> bool:
        return name in self.names

    def before(self, name: str) -> tuple[Step, ...]:
        """The steps that run before ``name`` in this flow."""
        return self.steps[: self.names.index(name)]

    @property
    def agent_steps(self) -> tuple[Step, ...]:
        """The steps the agents run (``restore.step``), in order."""
        return tuple(s for s in self.steps if s.on_agent)

    @property
    def downtime(self) -> tuple[str, ...]:
        """From the first destructive step through the first one whose effect clients see (fence..unfence);
        none for a flow the cluster keeps serving through."""
        if self.serves:
            return ()
        first = next((i for i, s in enumerate(self.steps) if s.destructive), None)
        if first is None:
            return ()
        end = next((i for i, s in enumerate(self.steps) if s.clients_see), len(self.steps) - 1)
        return self.names[first:end + 1]

    def rollback_possible(self, reached: tuple[str, ...] | list[str]) -> bool:
        """Can an operation that reached these steps still be put back (no client has seen its effect)?"""
        return not any(self.step(name).clients_see for name in reached if self.has(name))


CLUSTER_RESTORE = Flow("restore", (preflight.STEP, stage.STEP, prepare.STEP, fence.STEP, stop.STEP, swap.STEP,
                                   start.STEP, verify.STEP, unfence.STEP, restart.STEP))
NODE_RESTORE = Flow("local-restore", (preflight.STEP, prepare.STEP, fence.STEP, stop.STEP, swap.STEP, start.STEP,
                                      verify.STEP, unfence.STEP))
REPLACE = Flow("replace", (health_check.STEP, retire.STEP, set_aside.STEP, member_remove.STEP, learner_add.STEP,
                           join.STEP, catch_up.STEP, promote.STEP, settle.STEP, confirm.STEP),
               command="replace", params=MemberParams, serves=True)
DEFRAG = Flow("defrag", (defrag_check.STEP, defragment.STEP, disarm.STEP), command="defrag", params=MemberParams,
              serves=True)
FLOWS: Mapping[str, Flow] = MappingProxyType({f.name: f for f in (CLUSTER_RESTORE, NODE_RESTORE, REPLACE, DEFRAG)})
# The flows the coordinator runs across the cluster (the agents open their part by the flow's name).
CLUSTER_FLOWS = (CLUSTER_RESTORE.name, REPLACE.name, DEFRAG.name)

STEPS: Mapping[str, Step] = MappingProxyType({s.name: s for f in FLOWS.values() for s in f.steps})
for _step in (s for f in FLOWS.values() for s in f.steps):
    if STEPS[_step.name] is not _step:
        raise ValueError(f"two different steps are named {_step.name!r}")
AGENT_STEPS = tuple(dict.fromkeys(s.name for f in FLOWS.values() for s in f.agent_steps))
UNDO_STEPS = tuple(dict.fromkeys(s.undo_name for f in FLOWS.values() for s in f.steps if s.undoable))
WIRE_STEPS = (*AGENT_STEPS, *UNDO_STEPS, *ACTIONS)

FINISH_PARAMS: Schema = MappingProxyType({
    "outcome": Str("|".join(OUTCOMES), "how the operation ended (" + ", ".join(OUTCOMES) + ")"),
})
# restore.step params by step: each step's own schema, and the actions'.
STEP_PARAMS: Mapping[str, Schema] = MappingProxyType({
    **{name: STEPS[name].params for name in AGENT_STEPS},
    **{name: MappingProxyType({}) for name in UNDO_STEPS},
    "rollback": MappingProxyType({}), "cleanup": MappingProxyType({}), "finish": FINISH_PARAMS,
})


def undone_step(name: str) -> Step:
    """The step an ``undo-<step>`` name undoes; KeyError if it is not one."""
    for step in STEPS.values():
        if step.undoable and step.undo_name == name:
            return step
    raise KeyError(name)
