"""The states of a cluster restore operation and the only transitions allowed between them.

Every state change goes through ``transition``, which checks it against the
table (TaskFlow's states.py style), so a bug cannot quietly move a finished
restore back to running or resume one that was rolled back.

    running ──> done
       │  └──> paused ──> running (resume)            (--until PHASE stopped it)
       │            └───> rolling-back (rollback)
       ├──> rolling-back ──> failed        (a phase failed, every member was put back)
       │         │      └──> rolled-back   (the operator asked, every member was put back)
       │         └────────> needs-attention (putting a member back failed too)
       ├──> needs-attention (a phase after clients saw the data failed; or an undo failed)
       └──> interrupted (the coordinator stopped while it ran; found at the next start)
    interrupted, needs-attention ──> running (resume) | rolling-back (rollback)
"""

from __future__ import annotations

import enum
from collections.abc import Mapping


class OpState(str, enum.Enum):
    RUNNING = "running"
    PAUSED = "paused"
    ROLLING_BACK = "rolling-back"
    INTERRUPTED = "interrupted"
    NEEDS_ATTENTION = "needs-attention"
    DONE = "done"
    FAILED = "failed"
    ROLLED_BACK = "rolled-back"

    def __str__(self) -> str:
        return self.value


S = OpState

TRANSITIONS: Mapping[OpState, frozenset[OpState]] = {
    S.RUNNING: frozenset({S.DONE, S.PAUSED, S.ROLLING_BACK, S.NEEDS_ATTENTION, S.INTERRUPTED}),
    S.PAUSED: frozenset({S.RUNNING, S.ROLLING_BACK, S.INTERRUPTED}),
    S.ROLLING_BACK: frozenset({S.FAILED, S.ROLLED_BACK, S.NEEDS_ATTENTION, S.INTERRUPTED}),
    S.INTERRUPTED: frozenset({S.RUNNING, S.ROLLING_BACK}),
    S.NEEDS_ATTENTION: frozenset({S.RUNNING, S.ROLLING_BACK}),
    S.DONE: frozenset(),
    S.FAILED: frozenset(),
    S.ROLLED_BACK: frozenset(),
}

# Operations that block another restore until they are resumed, rolled back or finished.
OPEN = frozenset({S.RUNNING, S.PAUSED, S.ROLLING_BACK, S.INTERRUPTED, S.NEEDS_ATTENTION})
# States in which some process is working on the operation right now.
ACTIVE = frozenset({S.RUNNING, S.ROLLING_BACK})
FINAL = frozenset({S.DONE, S.FAILED, S.ROLLED_BACK})


class IllegalTransition(ValueError):
    """A state change the table does not allow (a bug, or a request that makes no sense now)."""


def transition(current: OpState, new: OpState) -> OpState:
    """``new`` if the table allows ``current -> new``; IllegalTransition otherwise."""
    if new not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[current])) or "none (it is final)"
        raise IllegalTransition(f"a restore operation cannot go from {current.value} to {new.value} "
                                f"(from {current.value}: {allowed})")
    return new
