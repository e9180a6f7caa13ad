"""Quorum as one fact (coordinator/agents/quorum.py) and freshness on both sides of the wire.

The cluster's quorum is decided from the members' views, and a member counts
only by what its agent measured within FRESH_FOR seconds: the defect this
guards against is a survivor of a cluster without quorum shown "healthy
follower" from a 58 s old answer.
"""

from __future__ import annotations

import pytest
from etcdguard.common.wire.report import FRESH_FOR, AgentInfo, AgentReport, ClusterMember, EtcdHealth, MemberConfig
from etcdguard.coordinator.agents.quorum import MemberState, QuorumState, cluster_quorum, member_state
from etcdguard.coordinator.agents.view import MemberView, cluster_summary, member_row

IDS = {"m1": "a1", "m2": "b2", "m3": "c3"}
LIST = tuple(ClusterMember(i, n, (f"http://{n}:2380",)) for n, i in IDS.items())


def etcd(name: str, state: str, leader: str = "m1", **extra: object) -> EtcdHealth:
    """What an agent of today sends for a member in ``state``."""
    base: dict[str, object] = {"version": "3.5.30", "member_id": IDS[name], "cluster_id": "cc", "members": LIST,
                               "age": 0.01, "measured_at": "2026-12-07T01:00:00Z"}
    if state == "healthy":
        base.update(healthy=True, leader=IDS[leader], is_leader=name == leader, revision=41, quorum=True)
    elif state == "alarm":
        base.update(leader=IDS[leader], revision=41, quorum=True, alarms=(f"{IDS[name]}:NOSPACE",),
                    error=f"{IDS[name]}:NOSPACE")
    elif state == "no-leader":
        base.update(revision=41, quorum=False, error="etcdserver: no leader")
    elif state == "no-quorum":
        base.update(leader=IDS[leader], revision=41, quorum=False, error="no quorum: a raft request ...")
    elif state == "down":
        base = {"error": "etcd at http://x did not answer: UNAVAILABLE", "age": 0.01,
                "measured_at": "2026-12-07T01:00:00Z"}
    base.update(extra)
    return EtcdHealth(**base)  # type: ignore[arg-type]


def view(name: str, health: EtcdHealth | None) -> MemberView:
    if health is None:
        return MemberView(name, f"tcp://{name}:7479", False, error="agent did not answer status within 1.5s")
    report = AgentReport(agent=AgentInfo(version="test"), member=MemberConfig(name=name, data_dir="/d"), etcd=health)
    return MemberView(name, f"tcp://{name}:7479", True, report=report)


def cluster(**states: str) -> list[MemberView]:
    return [view(n, None if s == "unreachable" else etcd(n, s)) for n, s in sorted(states.items())]


@pytest.mark.parametrize(("states", "verdict", "sentence"), [
    ({"m1": "healthy", "m2": "healthy", "m3": "healthy"}, QuorumState.HELD,
     "quorum held: 3 of 3 healthy under leader m1"),
    ({"m1": "healthy", "m2": "healthy", "m3": "down"}, QuorumState.HELD,
     "quorum held: 2 of 3 healthy under leader m1; m3 down"),
    ({"m1": "no-leader", "m2": "down", "m3": "down"}, QuorumState.LOST,
     "quorum lost: m2, m3 down; m1 up without a leader"),
    ({"m1": "no-quorum", "m2": "down", "m3": "unreachable"}, QuorumState.LOST,
     "quorum lost: m2 down; m1 up without quorum (no answer to a raft request); m3 unknown (its agent did not "
     "answer)"),
    # one agent answered and its raft request went through: a majority is there, though unseen
    ({"m1": "healthy", "m2": "unreachable", "m3": "unreachable"}, QuorumState.HELD,
     "quorum held: 1 of 3 healthy under leader m1; m2, m3 unknown (their agents did not answer)"),
    ({"m1": "no-leader", "m2": "unreachable", "m3": "unreachable"}, QuorumState.UNKNOWN,
     "quorum unknown: m1 up without a leader; m2, m3 unknown (their agents did not answer)"),
    ({"m1": "alarm", "m2": "healthy", "m3": "healthy"}, QuorumState.HELD,
     "quorum held: 2 of 3 healthy under leader m1; m1 in quorum but unhealthy"),
    ({"m1": "down", "m2": "down", "m3": "down"}, QuorumState.LOST, "quorum lost: m1, m2, m3 down"),
])
def test_the_verdict_and_its_sentence(states: dict[str, str], verdict: QuorumState, sentence: str) -> None:
    q = cluster_quorum(cluster(**states))
    assert (q.state, q.sentence) == (verdict, sentence)
    assert q.voters == 3 and q.needed == 2
    assert list(q.healthy) == sorted(n for n, s in states.items() if s == "healthy")
    assert dict(q.members) == {n: MemberState(s if s != "alarm" else "unhealthy") for n, s in states.items()}


def test_the_leader_is_named_from_a_member_list_when_its_agent_is_down() -> None:
    views = [view("m1", etcd("m1", "healthy", leader="m3")), view("m2", etcd("m2", "healthy", leader="m3")),
             view("m3", None)]
    q = cluster_quorum(views)
    assert q.leader == "m3"
    assert q.sentence == "quorum held: 2 of 3 healthy under leader m3; m3 unknown (its agent did not answer)"


def test_an_old_answer_is_not_measured_now_and_never_healthy() -> None:
    # an agent from before `stale`: it sends its last (healthy) answer as it was, 58.2 s old
    old = etcd("m1", "healthy", age=58.2, quorum=None, measured_at=None)
    views = [view("m1", old), view("m2", etcd("m2", "down")), view("m3", etcd("m3", "down"))]
    assert member_state(views[0]) is MemberState.NOT_MEASURED
    assert not views[0].healthy and not views[0].is_leader and not views[0].current
    q = cluster_quorum(views)
    assert q.state is QuorumState.LOST and q.healthy == ()
    assert q.sentence == "quorum lost: m2, m3 down; m1 not measured now"
    row = member_row(views[0], 0.0)
    assert row["healthy"] is False and row["is_leader"] is False and row["revision"] is None
    assert row["etcd"]["healthy"] is False and row["etcd"]["leader"] is None and row["etcd"]["age"] == 58.2
    summary = cluster_summary(views)
    assert summary["healthy"] == 0 and summary["leader"] is None and summary["leaders"] == []
    # the bound is a parameter: the same answer counts when the caller allows that age
    assert member_state(views[0], fresh_for=60.0) is MemberState.HEALTHY


def test_an_answer_within_the_bound_counts() -> None:
    v = view("m1", etcd("m1", "healthy", age=FRESH_FOR - 0.1))
    assert v.healthy and v.is_leader and member_state(v) is MemberState.HEALTHY


def test_an_older_agent_without_the_quorum_field_is_read_by_its_other_facts() -> None:
    # before `quorum`, an answer with a version meant the alarm list had been answered too
    assert member_state(view("m1", etcd("m1", "healthy", quorum=None))) is MemberState.HEALTHY
    assert member_state(view("m1", etcd("m1", "no-leader", quorum=None))) is MemberState.NO_LEADER


def test_learners_do_not_vote() -> None:
    views = cluster(m1="healthy", m2="healthy", m3="healthy")
    learner = etcd("m3", "healthy", is_learner=True)
    views[2] = view("m3", learner)
    q = cluster_quorum(views)
    assert (q.voters, q.needed) == (2, 2)
    assert q.sentence == "quorum held: 2 of 2 healthy under leader m1; m3 learner (not voting)"


def test_the_verdict_as_json() -> None:
    q = cluster_quorum(cluster(m1="no-leader", m2="down", m3="unreachable"))
    assert q.to_json() == {
        "state": "lost", "sentence": "quorum lost: m2 down; m1 up without a leader; m3 unknown (its agent did not "
                                     "answer)",
        "voters": 3, "needed": 2, "healthy": [], "in_quorum": [], "out": ["m1", "m2"], "leader": None,
        "members": {"m1": "no-leader", "m2": "down", "m3": "unreachable"}}


def test_a_report_from_an_older_agent_reads_with_the_new_fields_unset() -> None:
    data = {"agent": {"version": "0.0.9"}, "member": {"name": "m1", "data_dir": "/d"},
            "etcd": {"healthy": True, "version": "3.5.30", "leader": "a1", "is_leader": True, "age": 58.2,
                     "members": [], "alarms": []}}
    h = AgentReport.from_json(data).etcd
    assert (h.measured_at, h.stale, h.quorum, h.raft_applied_index, h.db_size_in_use) == (None, False, None, None,
                                                                                             None)
    assert h.healthy and not h.current()
