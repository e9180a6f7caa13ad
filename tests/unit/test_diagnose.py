"""The diagnosis is a pure function of typed facts: one test per verdict class, and their order."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import pytest
from etcdguard.common.wire.report import CertificateInfo, ClusterMember, EtcdHealth
from etcdguard.coordinator.agents.quorum import MemberState, Quorum, QuorumState
from etcdguard.coordinator.diagnose.facts import ClusterFacts, MemberSeen, OperationSeen, VaultSeen
from etcdguard.coordinator.diagnose.verdict import Kind, diagnose, renew_command, to_json

NOW = 2_000_000_000.0
MB = 1024 * 1024
IDS = {"m1": "a1", "m2": "a2", "m3": "a3"}
LIST = tuple(ClusterMember(IDS[n], n, (f"https://10.0.0.{i}:2380",)) for i, n in enumerate(IDS, 1))


def health(name: str, *, leader: str = "m1", revision: int = 1000, raft: int = 5000, db: int = 20 * MB,
           in_use: int = 18 * MB, alarms: tuple[str, ...] = (), members: tuple[ClusterMember, ...] = LIST,
           learner: bool = False) -> EtcdHealth:
    return EtcdHealth(healthy=not alarms, version="3.5.30", revision=revision, member_id=IDS.get(name, "a9"),
                      cluster_id="c1", leader=IDS[leader], is_leader=name == leader, is_learner=learner,
                      db_size=db, db_size_in_use=in_use, members=members, alarms=alarms, age=0.1, quorum=True,
                      raft_index=raft, raft_applied_index=raft, error="; ".join(alarms) or None)


def seen(name: str, etcd: Optional[EtcdHealth] = None, state: MemberState = MemberState.HEALTHY,
         **kw: Any) -> MemberSeen:
    i = list(IDS).index(name) + 1 if name in IDS else 9
    return MemberSeen(name, f"tcp://10.0.0.{i}:7479", state, etcd or health(name),
                      peer_url=f"https://10.0.0.{i}:2380", db_on_disk=20 * MB, **kw)


def quorum(state: QuorumState, healthy: tuple[str, ...], voters: int = 3) -> Quorum:
    return Quorum(state, f"quorum {state.value}", voters, voters // 2 + 1, healthy, healthy, (), "m1", ())


def facts(*members: MemberSeen, q: Optional[Quorum] = None, vault: Optional[VaultSeen] = None,
          operations: tuple[OperationSeen, ...] = ()) -> ClusterFacts:
    healthy = tuple(m.name for m in members if m.state is MemberState.HEALTHY)
    return ClusterFacts(members=members, quorum=q or quorum(QuorumState.HELD, healthy),
                        vault=vault or VaultSeen("f" * 64, 990, 600.0, 3600.0), operations=operations, now=NOW)


HEALTHY = (seen("m1"), seen("m2"), seen("m3"))


def test_a_healthy_cluster_is_healthy_and_exits_0() -> None:
    v = diagnose(facts(*HEALTHY))
    assert v.kind is Kind.HEALTHY and v.exit_code == 0 and v.command is None and v.problems == ()
    assert "3 of 3" in v.summary and "leader m1" in v.summary
    assert any(e.startswith("m1: healthy leader, revision 1,000") for e in v.evidence)


def test_a_lost_member_with_quorum_held_is_replaced() -> None:
    down = seen("m3", EtcdHealth(error="etcd did not answer: connection refused"), MemberState.DOWN, )
    down = dataclasses.replace(down, db_on_disk=None)
    v = diagnose(facts(seen("m1"), seen("m2"), down, q=quorum(QuorumState.HELD, ("m1", "m2"))))
    assert v.kind is Kind.MEMBER_LOST and v.exit_code == 12
    assert v.command == "etcdguardctl replace m3 --plan"
    assert "m3 is lost (its data is lost) while m1, m2 keep quorum" in v.summary
    assert "no database on its disk" in v.problems[0].evidence[0]


def test_a_member_being_replaced_points_at_its_operation() -> None:
    down = seen("m3", EtcdHealth(error="down"), MemberState.DOWN)
    op = OperationSeen("op1", "replace", "interrupted", "m3")
    v = diagnose(facts(seen("m1"), seen("m2"), down, q=quorum(QuorumState.HELD, ("m1", "m2")), operations=(op,)))
    assert v.kind is Kind.MEMBER_LOST and v.command == "etcdguardctl replace --resume op1"
    running = dataclasses.replace(op, state="running", running=True)
    v = diagnose(facts(seen("m1"), seen("m2"), down, q=quorum(QuorumState.HELD, ("m1", "m2")),
                       operations=(running,)))
    assert v.command == "etcdguardctl replace --attach op1"


def test_quorum_lost_names_who_holds_data_and_the_newest_snapshot() -> None:
    alone = seen("m1", dataclasses.replace(health("m1"), leader=None, is_leader=False, healthy=False, revision=1234),
                 MemberState.NO_LEADER)
    gone = dataclasses.replace(seen("m2", EtcdHealth(error="down"), MemberState.DOWN), db_on_disk=None)
    on_disk = seen("m3", EtcdHealth(error="down"), MemberState.DOWN)
    v = diagnose(facts(alone, gone, on_disk, q=quorum(QuorumState.LOST, ())))
    assert v.kind is Kind.QUORUM_LOST and v.exit_code == 10
    assert v.command == f"etcdguardctl restore {'f' * 12} --plan"
    text = "\n".join(v.problems[0].evidence)
    assert "m1 holds data at revision 1,234" in text
    assert "m3: etcd down, its database (20.0 MiB) is on disk" in text or "m3: etcd down, its database" in text
    assert "no data left on m2" in text and "newest vault snapshot ffffffffffff: revision 990" in text


@pytest.mark.parametrize(("alarm", "command"), [("NOSPACE", "etcdguardctl defrag --plan"),
                                                ("CORRUPT", "etcdguardctl replace m2 --plan")])
def test_an_alarm(alarm: str, command: str) -> None:
    m2 = seen("m2", health("m2", alarms=(f"a2:{alarm}",)), MemberState.UNHEALTHY)
    v = diagnose(facts(seen("m1"), m2, seen("m3")))
    assert v.kind is Kind.ALARM and v.exit_code == 11 and v.command.startswith(command)
    assert alarm in v.summary and "m2" in v.summary


def test_a_learner_not_catching_up() -> None:
    members = (*LIST[:2], ClusterMember("a3", "m3", ("https://10.0.0.3:2380",), is_learner=True))
    m1 = seen("m1", health("m1", raft=90_000, members=members))
    m3 = seen("m3", health("m3", raft=10, learner=True, members=()), MemberState.UNHEALTHY)
    v = diagnose(facts(m1, seen("m2", health("m2", raft=90_000)), m3))
    assert v.kind is Kind.LEARNER_STUCK and v.exit_code == 13
    assert "89,990 raft entries behind" in v.summary and v.command == "etcdguardctl replace m3 --plan"
    never = (*LIST[:2], ClusterMember("a9", "", ("https://10.0.0.9:2380",), is_learner=True))
    v = diagnose(facts(seen("m1", health("m1", members=never)), seen("m2"), seen("m3")))
    assert v.kind is Kind.LEARNER_STUCK and "added but never started" in v.summary


def test_a_member_far_behind_in_raft_index() -> None:
    v = diagnose(facts(seen("m1", health("m1", raft=100_000)), seen("m2", health("m2", raft=99_990)),
                       seen("m3", health("m3", raft=20_000))))
    assert v.kind is Kind.MEMBER_BEHIND and v.exit_code == 14 and v.problems[0].member == "m3"
    assert "80,000 raft entries behind the leader m1" in v.summary


def test_certificates_expiring_within_30_days_name_each_path() -> None:
    certs = (CertificateInfo("/etc/kubernetes/pki/etcd/server.crt", ("server",), "2033-05-28T00:00:00Z",
                             NOW + 10 * 86400),
             CertificateInfo("/etc/kubernetes/pki/etcd/peer.crt", ("peer",), "x", NOW + 400 * 86400),
             CertificateInfo("/etc/kubernetes/pki/etcd/healthcheck-client.crt", ("client",), "y", NOW - 86400))
    v = diagnose(facts(seen("m1", certificates=certs), seen("m2"), seen("m3")))
    assert v.kind is Kind.CERTIFICATE_EXPIRING and v.exit_code == 15
    text = "\n".join(v.problems[0].evidence)
    assert "/etc/kubernetes/pki/etcd/server.crt (server): expires in 10.0 days" in text
    assert "healthcheck-client.crt (client): expired 1.0 days ago" in text and "peer.crt" not in text
    assert v.command.startswith("kubeadm certs renew etcd-healthcheck-client etcd-server")
    assert renew_command(["/srv/etcd/a.pem"]).startswith("renew /srv/etcd/a.pem with the CA")


def test_backups_stale_or_failing() -> None:
    v = diagnose(facts(*HEALTHY, vault=VaultSeen("f" * 64, 1, 3 * 3600.0, 3600.0)))
    assert v.kind is Kind.BACKUPS_STALE and v.exit_code == 16 and v.command == "etcdguardctl backup"
    v = diagnose(facts(*HEALTHY, vault=VaultSeen("f" * 64, 1, 60.0, 3600.0, failures=3, last_error="m1: busy")))
    assert v.kind is Kind.BACKUPS_STALE and "failing" in v.summary
    assert diagnose(facts(*HEALTHY, vault=VaultSeen())).kind is Kind.BACKUPS_STALE


def test_fragmentation_or_a_database_far_larger_than_the_others() -> None:
    v = diagnose(facts(seen("m1", health("m1", db=300 * MB, in_use=40 * MB)), seen("m2"), seen("m3")))
    assert v.kind is Kind.FRAGMENTED and v.exit_code == 17 and v.command == "etcdguardctl defrag --plan"
    assert "87% free" in v.summary
    v = diagnose(facts(seen("m1", health("m1", db=300 * MB, in_use=290 * MB)), seen("m2"), seen("m3")))
    assert v.kind is Kind.FRAGMENTED and "more than 2x the others'" in v.summary
    small = diagnose(facts(seen("m1", health("m1", db=30 * MB, in_use=1 * MB)), seen("m2"), seen("m3")))
    assert small.kind is Kind.HEALTHY


def test_config_drift_says_what_to_change_unless_a_replacement_explains_it() -> None:
    two = LIST[:2]
    m1 = seen("m1", health("m1", members=two))
    v = diagnose(facts(m1, seen("m2"), seen("m3")))
    assert v.kind is Kind.CONFIG_DRIFT and v.exit_code == 18
    assert "not in etcd's member list" in v.summary and "replace m3" in v.command
    op = OperationSeen("op1", "replace", "running", "m3", running=True)
    assert diagnose(facts(m1, seen("m2"), seen("m3"), operations=(op,))).kind is Kind.HEALTHY
    extra = (*LIST, ClusterMember("a4", "m4", ("https://10.0.0.4:2380",)))
    v = diagnose(facts(seen("m1", health("m1", members=extra)), seen("m2"), seen("m3")))
    assert v.kind is Kind.CONFIG_DRIFT and '[[members]] name = "m4"' in v.command


def test_an_agent_that_does_not_answer_is_unknown() -> None:
    away = MemberSeen("m3", "tcp://10.0.0.3:7479", MemberState.UNREACHABLE, agent_error="timed out")
    v = diagnose(facts(seen("m1"), seen("m2"), away))
    assert v.kind is Kind.UNKNOWN and v.exit_code == 19 and "--peer-url" in v.command


def test_the_most_severe_problem_is_the_verdict_and_the_others_follow() -> None:
    m1 = seen("m1", health("m1", db=300 * MB, in_use=40 * MB),
              certificates=(CertificateInfo("/p/server.crt", ("server",), "z", NOW + 86400),))
    down = seen("m3", EtcdHealth(error="down"), MemberState.DOWN)
    v = diagnose(facts(m1, seen("m2"), down, q=quorum(QuorumState.HELD, ("m1", "m2")),
                       vault=VaultSeen("f" * 64, 1, 9 * 3600.0, 3600.0)))
    assert [p.kind for p in v.problems] == [Kind.MEMBER_LOST, Kind.CERTIFICATE_EXPIRING, Kind.BACKUPS_STALE,
                                            Kind.FRAGMENTED]
    assert v.kind is Kind.MEMBER_LOST
    data = to_json(v, facts(m1, seen("m2"), down))
    assert data["verdict"] == "member-lost" and data["exit"] == 12 and len(data["problems"]) == 4
    assert {m["state"] for m in data["members"]} == {"healthy", "down"}
    assert [m["member"] for m in data["members"]] == ["m1", "m2", "m3"] and "name" not in data["members"][0]
