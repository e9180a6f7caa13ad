"""The states of an operation and the only transitions allowed between them.

Every state change of an operation, live or replayed from its journal, goes
through ``transition`` and is checked against its table (TaskFlow's
states.py style), so a bug cannot quietly move a finished restore back to
running, and a journal whose history breaks the table is damaged rather
than believed.

An operation the coordinator runs across the cluster (``CLUSTER``)::

    running ──> done
       │  └──> paused ──> running (resume)            (--until PHASE stopped it)
       │            └───> rolling-back (rollback, cancel)
       ├──> rolling-back ──> failed        (a phase failed, every member was put back)
       │         │      └──> rolled-back   (the operator asked, every member was put back)
       │         └────────> needs-attention (putting a member back failed too)
       ├──> needs-attention (a phase after clients saw the data failed; or an undo failed)
       └──> interrupted (the coordinator stopped while it ran; found at the next start)
    interrupted, needs-attention ──> running (resume) | rolling-back (rollback)

An operation on one node (``NODE``: a node-local restore, or this node's part
of a cluster operation) runs, is undone newest step first when it fails
(``rolling-back``), and ends done, failed (every step undone), rolled back
(on request) or needing attention (an undo failed, or a step after clients
saw the data failed). A node-local rollback of a finished restore goes from
``done`` through ``rolling-back`` to ``rolled-back``.
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
    DAMAGED = "damaged"          # not a state anything moves to: what a reader says of an unreadable journal

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: object) -> OpState:
        """A state from a journal; older records said ``failed-needs-attention``. ValueError otherwise."""
        if value == "failed-needs-attention":
            return cls.NEEDS_ATTENTION
        return cls(value)


S = OpState
Table = Mapping[OpState, frozenset[OpState]]

CLUSTER: Table = {
    S.RUNNING: frozenset({S.DONE, S.PAUSED, S.ROLLING_BACK, S.NEEDS_ATTENTION, S.INTERRUPTED}),
    S.PAUSED: frozenset({S.RUNNING, S.ROLLING_BACK, S.INTERRUPTED}),
    S.ROLLING_BACK: frozenset({S.FAILED, S.ROLLED_BACK, S.NEEDS_ATTENTION, S.INTERRUPTED}),
    S.INTERRUPTED: frozenset({S.RUNNING, S.ROLLING_BACK}),
    S.NEEDS_ATTENTION: frozenset({S.RUNNING, S.ROLLING_BACK}),
    S.DONE: frozenset(),
    S.FAILED: frozenset(),
    S.ROLLED_BACK: frozenset(),
    S.DAMAGED: frozenset(),
}

NODE: Table = {
    S.RUNNING: frozenset({S.DONE, S.FAILED, S.ROLLED_BACK, S.ROLLING_BACK, S.NEEDS_ATTENTION}),
    S.ROLLING_BACK: frozenset({S.FAILED, S.ROLLED_BACK, S.NEEDS_ATTENTION}),
    S.NEEDS_ATTENTION: frozenset({S.RUNNING, S.ROLLING_BACK, S.DONE, S.FAILED, S.ROLLED_BACK}),
    S.DONE: frozenset({S.ROLLING_BACK}),
    S.FAILED: frozenset({S.ROLLING_BACK}),
    S.ROLLED_BACK: frozenset(),
    S.PAUSED: frozenset(),
    S.INTERRUPTED: frozenset(),
    S.DAMAGED: frozenset(),
}

# Operations that block another one until they are resumed, rolled back or finished.
OPEN = frozenset({S.RUNNING, S.PAUSED, S.ROLLING_BACK, S.INTERRUPTED, S.NEEDS_ATTENTION, S.DAMAGED})
# States in which some process is working on the operation right now.
ACTIVE = frozenset({S.RUNNING, S.ROLLING_BACK})
# The operator has to act (resume, roll back, or look at a damaged journal).
WAITING = frozenset({S.PAUSED, S.INTERRUPTED, S.NEEDS_ATTENTION, S.DAMAGED})
FINAL = frozenset({S.DONE, S.FAILED, S.ROLLED_BACK})


class IllegalTransition(ValueError):
    """A state change the table does not allow (a bug, or a request that makes no sense now)."""


def transition(current: OpState, new: OpState, table: Table = CLUSTER) -> OpState:
    """``new`` if ``table`` allows ``current -> new``; IllegalTransition otherwise."""
    if new not in table[current]:
        allowed = ", ".join(sorted(s.value for s in table[current])) or "none (it is final)"
        raise IllegalTransition(f"an operation cannot go from {current.value} to {new.value} "
                                f"(from {current.value}: {allowed})")
    return new
