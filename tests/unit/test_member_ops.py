"""The pure parts of replacing a member and defragmenting: flags edited for a join, the member list's
arithmetic, the steps' judgements and the plans' refusals."""

from __future__ import annotations

import json
from typing import Any

import pytest
from etcdguard.agent.discovery.goflags import FlagError, etcd_flags, replace_etcd_flags
from etcdguard.agent.runtime.base import RuntimeError_
from etcdguard.agent.runtime.joining import joining_argv, joining_environment, joining_manifest
from etcdguard.common.etcd import pbwire
from etcdguard.common.ops.flows import DEFRAG, REPLACE
from etcdguard.common.ops.membership import (
    catch_up_gap,
    find,
    initial_cluster_of,
    others_problem,
    quorum_after_removal,
)
from etcdguard.common.ops.steps.catch_up import caught_up
from etcdguard.common.ops.steps.confirm import confirm_problems
from etcdguard.common.ops.steps.defrag_check import defrag_order, serving_problem
from etcdguard.common.ops.steps.disarm import space_back
from etcdguard.common.wire.report import ClusterMember, EtcdHealth
from etcdguard.coordinator.members.drift import drift
from etcdguard.coordinator.members.plan import MemberFacts, build_defrag_plan, build_replace_plan, render_member_plan

from tests.unit.test_cluster_plan import CONFIGURED, NAMES, views

CLUSTER = "m1=https://10.0.0.1:2380,m2=https://10.0.0.2:2380,m3=https://10.0.0.3:2380"
MEMBERS = tuple(ClusterMember(f"a{i}", n, (f"https://10.0.0.{i + 1}:2380",)) for i, n in enumerate(NAMES))


# -- joining ------------------------------------------------------------------------------------------


def test_a_joining_command_has_the_two_flags_replaced_once_and_the_rest_untouched() -> None:
    argv = ["/usr/bin/etcd", "--name", "m3", "--initial-cluster-state=new", "--initial-cluster", "m3=x",
            "--initial-cluster-token=t", "--client-cert-auth", "--data-dir=/var/lib/etcd"]
    out = joining_argv(argv, CLUSTER)
    assert out == ["/usr/bin/etcd", "--name", "m3", "--initial-cluster-token=t", "--client-cert-auth",
                   "--data-dir=/var/lib/etcd", "--initial-cluster-state=existing", f"--initial-cluster={CLUSTER}"]
    flags = etcd_flags(out).values
    assert flags["initial-cluster-state"] == "existing" and flags["initial-cluster-token"] == "t"
    with pytest.raises(RuntimeError_, match="not etcd itself"):
        joining_argv(["/bin/sh", "-c", "etcd --name m3"], CLUSTER)
    with pytest.raises(FlagError):
        replace_etcd_flags(["etcd", "---bad"], {"initial-cluster-state": "existing"})


def test_a_joining_manifest_edits_only_the_etcd_container_command() -> None:
    text = ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: etcd\nspec:\n  containers:\n  - name: etcd\n"
            "    image: registry.k8s.io/etcd:3.5.30-0\n    command:\n    - etcd\n    - --name=m3\n"
            "    - --initial-cluster=m3=https://10.0.0.3:2380\n    - --data-dir=/var/lib/etcd\n")
    pod = json.loads(joining_manifest(text, CLUSTER))
    c = pod["spec"]["containers"][0]
    assert c["image"] == "registry.k8s.io/etcd:3.5.30-0" and pod["metadata"]["name"] == "etcd"
    assert c["command"] == ["etcd", "--name=m3", "--data-dir=/var/lib/etcd", "--initial-cluster-state=existing",
                            f"--initial-cluster={CLUSTER}"]
    assert joining_environment(CLUSTER) == f"ETCD_INITIAL_CLUSTER_STATE=existing\nETCD_INITIAL_CLUSTER={CLUSTER}\n"


# -- membership arithmetic -------------------------------------------------------------------------------


def test_the_initial_cluster_a_learner_joins_names_it_though_etcd_lists_it_unnamed() -> None:
    listed = (*MEMBERS[:2], ClusterMember("b9", "", ("https://10.0.0.3:2380",), is_learner=True))
    assert initial_cluster_of(listed, "m3", "https://10.0.0.3:2380") == CLUSTER
    stray = (*listed, ClusterMember("c1", "", ("https://10.0.0.9:2380",), is_learner=True))
    with pytest.raises(ValueError, match="never started"):
        initial_cluster_of(stray, "m3", "https://10.0.0.3:2380")
    assert find(MEMBERS, name="m2") is MEMBERS[1]
    assert find(MEMBERS, peer_url="https://10.0.0.3:2380") is MEMBERS[2]
    assert find(MEMBERS, member_id="a0", name="m2") is MEMBERS[0]


def test_removing_a_member_must_leave_a_healthy_majority() -> None:
    assert quorum_after_removal(MEMBERS, MEMBERS[2], ["m1", "m2"]) is None
    assert "only 1 of them (m1)" in (quorum_after_removal(MEMBERS, MEMBERS[2], ["m1"]) or "")
    five = tuple(ClusterMember(f"a{i}", f"m{i}", (f"https://10.0.0.{i}:2380",)) for i in range(1, 6))
    assert quorum_after_removal(five, five[4], ["m1", "m2", "m3"]) is None
    assert quorum_after_removal(five, five[4], ["m1", "m2"]) is not None


def health(**kw: Any) -> EtcdHealth:
    base = {"healthy": True, "version": "3.5.30", "revision": 100, "leader": "a0", "member_id": "a0",
            "cluster_id": "c1", "raft_index": 5000, "raft_applied_index": 5000, "members": MEMBERS}
    return EtcdHealth(**{**base, **kw})


def test_the_others_must_be_healthy_under_one_leader() -> None:
    assert others_problem({"m1": health(), "m2": health(), "m3": EtcdHealth(error="down")}, "m3") is None
    assert "m2: down" in (others_problem({"m1": health(), "m2": EtcdHealth(error="down")}, "m3") or "")
    assert "different leaders" in (others_problem({"m1": health(), "m2": health(leader="a1")}, "m3") or "")


def test_caught_up_is_a_small_raft_gap_and_the_revision_the_cluster_had() -> None:
    leader = health(raft_index=100_000, is_leader=True)
    assert caught_up(health(raft_applied_index=99_500, revision=900), leader, 800) is None
    assert "9,000 raft entries behind" in (caught_up(health(raft_applied_index=91_000), leader, None) or "")
    assert "below the 1,000" in (caught_up(health(raft_applied_index=100_000, revision=10), leader, 1000) or "")
    assert "does not answer" in (caught_up(EtcdHealth(error="refused"), leader, None) or "")
    assert "no leader" in (caught_up(health(leader=None), leader, None) or "")
    assert catch_up_gap(health(raft_applied_index=None, raft_index=40), leader) == 99_960


def test_confirm_finds_every_way_the_cluster_is_not_whole() -> None:
    plan = build_replace_plan(MemberFacts(views(), CONFIGURED, "m3"), op="r1")
    good = {n: health(member_id=f"a{i}") for i, n in enumerate(NAMES)}
    assert confirm_problems(plan, good, {n: 7 for n in NAMES}, "c1") == []
    learner = (*MEMBERS[:2], ClusterMember("a2", "m3", ("https://10.0.0.3:2380",), is_learner=True))
    bad = {**good, "m1": health(members=learner, alarms=("a0:NOSPACE",)), "m2": health(cluster_id="c9")}
    problems = "; ".join(confirm_problems(plan, bad, {"m1": 7, "m2": 8, "m3": None}, "c1"))
    for word in ("learners in the member list: m3", "alarms raised", "cluster id", "no hashkv from m3"):
        assert word in problems, problems


def test_defrag_goes_followers_first_the_leader_last_and_disarms_only_with_room() -> None:
    seen = {"m1": health(is_leader=True), "m2": health(), "m3": health()}
    assert defrag_order(seen) == ["m2", "m3", "m1"] and defrag_order(seen, "m1") == ["m1"]
    assert serving_problem("m1", health(alarms=("a0:NOSPACE",), error="a0:NOSPACE", quorum=True)) is None
    assert "no quorum" in (serving_problem("m1", health(quorum=False)) or "")
    assert space_back(health(db_size=100 << 20), 1 << 30) is None
    assert "delete or compact" in (space_back(health(db_size=900 << 20), 1 << 30) or "")


def test_the_new_wire_messages_encode_as_etcd_reads_them() -> None:
    assert pbwire.member_add_request(("http://a:1",), True) == b"\n\nhttp://a:1\x10\x01"
    assert pbwire.member_id_request(5) == b"\x08\x05"
    assert pbwire.alarm_request(pbwire.ALARM_DEACTIVATE, 7, 1) == b"\x08\x02\x10\x07\x18\x01"
    member = pbwire.encode_varint_field(1, 9) + pbwire.encode_bytes_field(3, b"http://a:1")
    reply = pbwire.encode_bytes_field(2, member) + pbwire.encode_bytes_field(3, member)
    added, members = pbwire.parse_member_add(reply)
    assert added.id == 9 and added.name == "" and members[0].peer_urls == ("http://a:1",)


# -- the plans --------------------------------------------------------------------------------------------


def refusals(plan: Any) -> set[tuple[str, Any]]:
    return {(r.check, r.member) for r in plan.blocking}


def test_a_replacement_plan_with_the_others_healthy_is_the_replace_flow() -> None:
    down = {"etcd": {"healthy": False, "version": None, "error": "connection refused", "members": []}}
    plan = build_replace_plan(MemberFacts(views(m3=down), CONFIGURED, "m3"), op="r1")
    assert plan.blocking == () and plan.flow == "replace" and plan.snapshot is None
    assert [p.phase for p in plan.phases] == list(REPLACE.names) and plan.downtime_phases == ()
    assert plan.target == "m3" and plan.target_peer_url == "https://10.0.0.3:2380"
    assert "replace m3 --peer-url https://10.0.0.3:2380 --yes" in render_member_plan(plan)


def test_a_replacement_with_another_member_down_or_its_agent_away_is_refused() -> None:
    down = {"etcd": {"healthy": False, "version": None, "error": "connection refused", "members": []}}
    plan = build_replace_plan(MemberFacts(views(m2=down), CONFIGURED, "m3"), op="r1")
    assert ("quorum", "m2") in refusals(plan) and ("quorum", None) in refusals(plan)
    away = build_replace_plan(MemberFacts(views(m3={"unreachable": True}), CONFIGURED, "m3"), op="r1")
    assert ("agent", "m3") in refusals(away)
    assert "--peer-url https://NEW-HOST:2380" in away.blocking[0].message
    busy = build_replace_plan(MemberFacts(views(), CONFIGURED, "m3", open_operations=("r0",)), op="r1")
    assert ("operation", None) in refusals(busy)


def test_a_new_host_needs_its_peer_url_confirmed() -> None:
    moved = {"member": {"peer_url": "https://10.0.0.33:2380"}}
    unconfirmed = build_replace_plan(MemberFacts(views(m3=moved), CONFIGURED, "m3"), op="r1")
    assert any("confirm it with --peer-url https://10.0.0.33:2380" in r.message for r in unconfirmed.blocking)
    confirmed = build_replace_plan(MemberFacts(views(m3=moved), CONFIGURED, "m3", "https://10.0.0.33:2380"),
                                   op="r1")
    assert confirmed.blocking == () and any("a new host" in n for n in confirmed.notes)
    assert confirmed.member("m3").peer_url == "https://10.0.0.33:2380"
    wrong = build_replace_plan(MemberFacts(views(m3=moved), CONFIGURED, "m3", "https://10.0.0.44:2380"), op="r1")
    assert any("set etcd.peer_url" in r.message for r in wrong.blocking)


def test_a_defrag_plan_notes_the_free_space_and_refuses_a_member_without_quorum() -> None:
    big = {"etcd": {"db_size": 300 << 20, "db_size_in_use": 30 << 20}}
    plan = build_defrag_plan(MemberFacts(views(m2=big), CONFIGURED, None), op="d1")
    assert plan.blocking == () and [p.phase for p in plan.phases] == list(DEFRAG.names)
    assert any(n.startswith("m2: db 300.0 MiB, in use 30.0 MiB") and "90%" in n for n in plan.notes), plan.notes
    noq = build_defrag_plan(MemberFacts(views(m3={"etcd": {"leader": None}}), CONFIGURED, None), op="d1")
    assert ("quorum", "m3") in refusals(noq)


def test_drift_is_accepted_only_for_the_member_being_replaced() -> None:
    peers = {n: f"https://10.0.0.{i + 1}:2380" for i, n in enumerate(NAMES)}
    assert drift(list(NAMES), MEMBERS, peers) == []
    (missing,) = drift(list(NAMES), MEMBERS[:2], peers)
    assert missing.member == "m3" and "replace m3" in missing.fix and not missing.accepted
    assert drift(list(NAMES), MEMBERS[:2], peers, replacing="m3")[0].accepted
    extra = drift(["m1", "m2"], MEMBERS, peers)
    assert [d.member for d in extra] == ["m3"] and '[[members]] name = "m3"' in extra[0].fix
