"""Quorum as one fact: from the members' views, whether the cluster has quorum now, and one sentence of why.

Pure, over the typed views the survey returns. Each member is first put in
one state (``member_state``), from what its agent measured within the last
FRESH_FOR seconds only: a member whose agent did not answer, or whose last
measurement is older, is never counted healthy nor counted out. Then:

- quorum is **lost** when the members known to be out of it (etcd down, up
  without a leader, or up with a leader but no answer to a raft request) leave
  too few to make a majority of the voting members, whatever the others are;
- else it is **held** when at least one member's raft request (the agent's
  alarm list) was answered now: raft answers only with a majority behind it;
- else it is **unknown**: too many members not measured now to tell.

``etcdguardctl status`` shows the verdict's sentence; the restore plan reads
the typed verdict.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from etcdguard.common.wire.report import FRESH_FOR
from etcdguard.coordinator.agents.view import MemberView


class MemberState(enum.Enum):
    """One member's etcd as its agent measured it now."""

    HEALTHY = "healthy"             # a leader, a raft request answered, no alarm or error
    UNHEALTHY = "unhealthy"         # in quorum (a raft request answered), but an alarm or another error
    NO_QUORUM = "no-quorum"         # names a leader, but a raft request got no answer in time
    NO_LEADER = "no-leader"         # etcd answers, and has no leader
    DOWN = "down"                   # etcd did not answer the agent
    NOT_MEASURED = "not-measured"   # the agent's last measurement is older than FRESH_FOR
    UNREACHABLE = "unreachable"     # the agent did not answer

    @property
    def in_quorum(self) -> bool:
        return self in (MemberState.HEALTHY, MemberState.UNHEALTHY)

    @property
    def out_of_quorum(self) -> bool:
        return self in (MemberState.NO_QUORUM, MemberState.NO_LEADER, MemberState.DOWN)


class QuorumState(enum.Enum):
    HELD = "held"
    LOST = "lost"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Quorum:
    """The cluster's quorum now, and the one sentence that says it."""

    state: QuorumState
    sentence: str
    voters: int                                   # voting members (the configured ones, learners aside)
    needed: int                                   # a majority of them
    healthy: tuple[str, ...]                      # measured healthy now
    in_quorum: tuple[str, ...]                    # a raft request answered now (healthy or not)
    out: tuple[str, ...]                          # known out of quorum now: down, no leader, no quorum
    leader: Optional[str]                         # by name where a member's list names it, else by id
    members: tuple[tuple[str, MemberState], ...]  # every member's state, in the views' order

    def to_json(self) -> dict[str, object]:
        return {"state": self.state.value, "sentence": self.sentence, "voters": self.voters, "needed": self.needed,
                "healthy": list(self.healthy), "in_quorum": list(self.in_quorum), "out": list(self.out),
                "leader": self.leader, "members": {name: state.value for name, state in self.members}}


def member_state(view: MemberView, fresh_for: float = FRESH_FOR) -> MemberState:
    """One member's state from its view (pure): only what was measured within ``fresh_for`` counts."""
    if not view.reachable or view.report is None:
        return MemberState.UNREACHABLE
    h = view.etcd
    if not h.current(fresh_for):
        return MemberState.NOT_MEASURED
    if h.version is None:               # etcd did not answer even its status
        return MemberState.DOWN
    if not h.leader:
        return MemberState.NO_LEADER
    if h.quorum is False:
        return MemberState.NO_QUORUM
    # quorum True, or an agent older than the field: it asked the alarm list on every probe, and its
    # answer (a version) means that raft request was answered
    return MemberState.HEALTHY if h.healthy else MemberState.UNHEALTHY


# How each state reads in the sentence, in the order the sentence lists them (the most telling first).
_PHRASES: tuple[tuple[MemberState, str, str], ...] = (
    (MemberState.DOWN, "down", "down"),
    (MemberState.NO_LEADER, "up without a leader", "up without a leader"),
    (MemberState.NO_QUORUM, "up without quorum (no answer to a raft request)",
     "up without quorum (no answer to a raft request)"),
    (MemberState.UNHEALTHY, "in quorum but unhealthy", "in quorum but unhealthy"),
    (MemberState.NOT_MEASURED, "not measured now", "not measured now"),
    (MemberState.UNREACHABLE, "unknown (its agent did not answer)", "unknown (their agents did not answer)"),
)


def _others(states: Sequence[tuple[str, MemberState]]) -> list[str]:
    """The clauses for every member that is not healthy, grouped by state."""
    clauses = []
    for state, one, many in _PHRASES:
        names = sorted(n for n, s in states if s is state)
        if names:
            clauses.append(f"{', '.join(names)} {one if len(names) == 1 else many}")
    return clauses


def _leader(views: Sequence[MemberView], in_quorum: Sequence[str]) -> Optional[str]:
    """The leader the members in quorum name (one), by its name where any member's list has it."""
    ids = {v.etcd.leader for v in views if v.name in in_quorum and v.etcd.leader}
    if len(ids) != 1:
        return None
    leader_id = next(iter(ids))
    names = {v.etcd.member_id: v.name for v in views if v.etcd.member_id}
    for v in views:
        names.update({m.id: m.name for m in v.etcd.members if m.name and m.id not in names})
    return names.get(leader_id, leader_id)


def cluster_quorum(views: Sequence[MemberView], fresh_for: float = FRESH_FOR) -> Quorum:
    """The cluster's quorum from every configured member's view (pure); see the module's rules."""
    states = [(v.name, member_state(v, fresh_for)) for v in views]
    learners = {v.name for v, (_, s) in zip(views, states) if s is not MemberState.NOT_MEASURED
                and s is not MemberState.UNREACHABLE and v.etcd.is_learner}
    voting = [(n, s) for n, s in states if n not in learners]
    voters, needed = len(voting), len(voting) // 2 + 1
    healthy = tuple(n for n, s in voting if s is MemberState.HEALTHY)
    in_quorum = tuple(n for n, s in voting if s.in_quorum)
    out = tuple(n for n, s in voting if s.out_of_quorum)
    leader = _leader(views, in_quorum)
    others = _others(voting)
    if not voting:
        state, sentence = QuorumState.UNKNOWN, "quorum unknown: no voting member"
    elif voters - len(out) < needed:
        state, sentence = QuorumState.LOST, "quorum lost: " + "; ".join(others)
    elif in_quorum:
        state = QuorumState.HELD
        head = f"quorum held: {len(healthy)} of {voters} healthy" + (f" under leader {leader}" if leader else "")
        sentence = "; ".join([head, *others])
    else:
        state, sentence = QuorumState.UNKNOWN, "quorum unknown: " + "; ".join(others)
    if learners:
        sentence += f"; {', '.join(sorted(learners))} learner{'s' if len(learners) > 1 else ''} (not voting)"
    return Quorum(state=state, sentence=sentence, voters=voters, needed=needed, healthy=healthy,
                  in_quorum=in_quorum, out=out, leader=leader, members=tuple(states))
