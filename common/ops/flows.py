"""The step registry: every operation is a flow, an ordered tuple of steps, each declared once.

The cluster restore runs its steps on every member with a barrier between
them (design.md section 3); the node-local restore of a single-member cluster
runs the same steps on one node, without staging. The wire protocol's
``restore.step`` accepts exactly the steps the agents run, their undo steps
and the whole-operation actions, all derived from here; so do the plans, the
journals' readers and the CLI's ``--until`` choices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from etcdguard.common.ops.step import Step
from etcdguard.common.ops.steps import fence, preflight, prepare, restart, stage, start, stop, swap, unfence, verify
from etcdguard.common.wire.schema import Schema, Str

# Whole-operation actions on an agent: a node-local rollback, deleting kept data, closing an operation.
ACTIONS = ("rollback", "cleanup", "finish")
# How an operation a coordinator ran ends on an agent (the `finish` action's outcome).
OUTCOMES = ("done", "failed", "rolled-back")


@dataclass(frozen=True)
class Flow:
    """One kind of operation: its steps in order."""

    name: str
    steps: tuple[Step, ...]

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
        """From the first destructive step through the first one whose effect clients see (fence..unfence)."""
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
FLOWS: Mapping[str, Flow] = MappingProxyType({f.name: f for f in (CLUSTER_RESTORE, NODE_RESTORE)})

STEPS: Mapping[str, Step] = MappingProxyType({s.name: s for f in FLOWS.values() for s in f.steps})
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
