"""The restore's steps, named once: the node-local restore, the agent's part of a cluster
restore, their undo steps, and the coordinator's phases all come from here.

A cluster restore runs the phases below on every member, each with a barrier
before the next (design.md section 3). ``stage`` and the cluster-level checks
are the coordinator's own work; every other phase is a ``restore.step`` of
the same name on each agent. Each step that changes a node has an undo step
(``undo-<step>``) that puts the node back as it was before the step; the
coordinator runs them newest first, on all members at once, to roll back.
"""

from __future__ import annotations

PREFLIGHT = "preflight"
STAGE = "stage"
PREPARE = "prepare"
FENCE = "fence"
STOP = "stop"
SWAP = "swap"
START = "start"
VERIFY = "verify"
UNFENCE = "unfence"
RESTART = "restart-controllers"

# The cluster restore, in order (design.md section 3).
CLUSTER_PHASES = (PREFLIGHT, STAGE, PREPARE, FENCE, STOP, SWAP, START, VERIFY, UNFENCE, RESTART)
# The node-local restore of a single-member cluster (etcdguard-agent restore).
NODE_STEPS = (PREFLIGHT, PREPARE, FENCE, STOP, SWAP, START, VERIFY, UNFENCE)
# Steps an agent runs for a cluster restore (restore.step); stage is a snapshot.put upload.
AGENT_STEPS = (PREFLIGHT, PREPARE, FENCE, STOP, SWAP, START, VERIFY, UNFENCE, RESTART)
# Steps that change what runs on a node or its live data (downtime from fence to unfence).
DESTRUCTIVE = frozenset({FENCE, STOP, SWAP, START, UNFENCE, RESTART})
# Up to and including verify no client has seen the restored data: a rollback swaps the old data back.
BEFORE_CLIENTS = (PREFLIGHT, STAGE, PREPARE, FENCE, STOP, SWAP, START, VERIFY)

UNDO_PREFIX = "undo-"
UNDOABLE = (PREPARE, FENCE, STOP, SWAP, START)


def undo(step: str) -> str:
    """The name of the step that undoes ``step`` on an agent."""
    if step not in UNDOABLE:
        raise ValueError(f"restore step {step!r} has no undo step")
    return UNDO_PREFIX + step


UNDO_STEPS = tuple(undo(s) for s in UNDOABLE)
# Whole-operation actions: a node-local rollback, deleting kept data, closing an operation.
ACTIONS = ("rollback", "cleanup", "finish")
# Everything restore.step accepts.
WIRE_STEPS = (*AGENT_STEPS, *UNDO_STEPS, *ACTIONS)
# How a finished cluster operation ends on an agent (the `finish` step's outcome).
OUTCOMES = ("done", "failed", "rolled-back")
