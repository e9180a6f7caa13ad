"""The cluster restore's pure parts: the plan, the transitions table, the journal replay, the checks."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from etcdguard.common.journal import JournalDamaged, JournalFile
from etcdguard.common.ops import states
from etcdguard.common.ops.cluster_checks import quorum_problem, verify_problems
from etcdguard.common.ops.cluster_plan import RestorePlan, SnapshotRef
from etcdguard.common.ops.flows import CLUSTER_RESTORE
from etcdguard.common.ops.record import replay
from etcdguard.common.ops.states import IllegalTransition, OpState, transition
from etcdguard.common.wire.report import AgentReport, ClusterMember, EtcdHealth
from etcdguard.coordinator.agents.view import MemberView
from etcdguard.coordinator.config import MemberSettings
from etcdguard.coordinator.restore.journal import JournalStore
from etcdguard.coordinator.restore.lineage import component
from etcdguard.coordinator.restore.plan import PlanOptions, build_plan, render_plan

DESIGN_PHASES = ("preflight", "stage", "prepare", "fence", "stop", "swap", "start", "verify", "unfence",
                 "restart-controllers")

SHA = "ab" * 32
SNAP = SnapshotRef(id=SHA, size=300 << 20, revision=5_000, member="m2", created_at="2026-12-01T00:00:00Z",
                   created_unix=1_800_000_000.0, etcd_version="3.5.16", cluster_id="c1")
NAMES = ("m1", "m2", "m3")
CONFIGURED = tuple(MemberSettings(n, f"tcp://127.0.0.1:{7000 + i}", None) for i, n in enumerate(NAMES))


def report(name: str, **over: Any) -> dict[str, Any]:
    """An agent's status report as JSON, healthy by default; ``over`` replaces top-level parts."""
    i = NAMES.index(name) if name in NAMES else 9
    base: dict[str, Any] = {
        "agent": {"version": "0.1.0"},
        "member": {"name": name, "data_dir": f"/var/lib/etcd-{name}", "peer_url": f"https://10.0.0.{i + 1}:2380",
                   "runtime": "static-pod", "apiserver": "/etc/kubernetes/manifests/kube-apiserver.yaml"},
        "etcd": {"healthy": True, "version": "3.5.16", "revision": 7_000, "member_id": f"a{i}", "cluster_id": "c1",
                 "leader": "a0", "is_leader": i == 0,
                 "members": [{"id": f"a{j}", "name": n, "peer_urls": [f"https://10.0.0.{j + 1}:2380"]}
                             for j, n in enumerate(NAMES)]},
        "restore_tool": {"path": "/usr/bin/etcdutl", "kind": "etcdutl", "version": "3.5.16", "supports_bump": True},
        "disk": {"data_dir_free": 10 << 30, "staging_free": 10 << 30, "store_free": 10 << 30},
    }
    for key, value in over.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and key in base else value
    return base


def views(**per_member: dict[str, Any]) -> list[MemberView]:
    out = []
    for i, n in enumerate(NAMES):
        over = per_member.get(n)
        if over == {"unreachable": True}:
            out.append(MemberView(n, f"tcp://127.0.0.1:{7000 + i}", False, error="timed out"))
            continue
        out.append(MemberView(n, f"tcp://127.0.0.1:{7000 + i}", True,
                              report=AgentReport.from_json(report(n, **(over or {})))))
    return out


def plan(vs: list[MemberView], **kw: Any) -> RestorePlan:
    options = kw.pop("options", PlanOptions())
    return build_plan(vs, CONFIGURED, kw.pop("snapshot", SNAP), options, op="r1-test", **kw)


def checks(p: RestorePlan) -> set[tuple[str, Any]]:
    return {(r.check, r.member) for r in p.blocking}


# -- the plan --------------------------------------------------------------------------------


def test_a_healthy_cluster_gets_one_token_one_bump_the_full_initial_cluster_and_phases_in_order():
    p = plan(views())
    assert p.blocking == ()
    assert [x.phase for x in p.phases] == list(DESIGN_PHASES)
    assert [x.phase for x in p.phases if x.destructive] == ["fence", "stop", "swap", "start", "unfence",
                                                            "restart-controllers"]
    assert p.initial_cluster == ",".join(f"{n}=https://10.0.0.{i + 1}:2380" for i, n in enumerate(NAMES))
    assert p.token == "etcdguard-r1-test"
    assert p.bump_revision == 1_000_000_000 and p.expected_min_revision == SNAP.revision + 1_000_000_000
    assert (p.live_revision, p.live_cluster_id, p.discarded_revisions) == (7_000, "c1", 2_000)
    assert [m.member for m in p.members] == list(NAMES)
    assert {m.data_dir for m in p.members} == {f"/var/lib/etcd-{n}" for n in NAMES}
    assert p.safety_snapshot is True
    # the same snapshot everywhere: every prepare line restores into that member's own workspace
    prepare = next(x for x in p.phases if x.phase == "prepare")
    assert [m for m, _ in prepare.members] == list(NAMES)
    assert all(f"--name {m}" in what and f".etcdguard-{p.op}" in what for m, what in prepare.members)
    text = render_plan(p)
    assert "discards 2,000 revision(s)" in text and p.plan_id in text and "no reason to refuse" in text


def test_the_bump_exceeds_the_live_revision_and_is_zero_when_a_tool_cannot_bump():
    far = views(m1={"etcd": {"revision": SNAP.revision + 5_000}})
    assert plan(far, options=PlanOptions(bump_revision=1_000)).bump_revision == 5_000 + 1_000
    old_tool = {"restore_tool": {"path": "/usr/bin/etcdctl", "kind": "etcdctl", "version": "3.5.16",
                                 "supports_bump": False}}
    p = plan(views(m3=old_tool))
    assert p.bump_revision == 0 and p.expected_min_revision == SNAP.revision
    assert any("no revision bump" in w for w in p.warnings)


def test_the_plan_id_names_the_decisions_not_the_moment():
    a = plan(views())
    later = plan(views(m2={"etcd": {"revision": 7_500}}))        # writes went on: same decisions
    assert a.plan_id == later.plan_id and a.token != "" and a.op == later.op
    moved = plan(views(m3={"member": {"data_dir": "/srv/etcd"}}))
    other_snapshot = plan(views(), snapshot=replace(SNAP, id="cd" * 32))
    assert len({a.plan_id, moved.plan_id, other_snapshot.plan_id}) == 3


@pytest.mark.parametrize(("over", "expected"), [
    ({"m2": {"unreachable": True}}, ("agent", "m2")),
    ({"m1": {"member": {"name": "other"}}}, ("member", "m1")),
    ({"m3": {"member": {"peer_url": None}, "etcd": {"members": []}}}, ("member", "m3")),
    ({"m2": {"restore_tool": None}}, ("tool", "m2")),
    ({"m1": {"disk": {"data_dir_free": 100 << 20}}}, ("disk", "m1")),
    ({"m1": {"disk": {"staging_free": 100 << 20}}}, ("disk", "m1")),
    ({"m3": {"member": {"quota_backend_bytes": 300 << 20}}}, ("quota", "m3")),
    ({"m2": {"restore": {"open_ops": ["r0-old"]}}}, ("operation", "m2")),
    ({"m2": {"restore": {"locked": True}}}, ("operation", "m2")),
    ({"m1": {"etcd": {"members": [{"id": "a0", "name": "m1", "peer_urls": ["https://10.0.0.1:2380"]},
                                  {"id": "a1", "name": "m2", "peer_urls": ["https://10.0.0.2:2380"]}]}}},
     ("members", "m1")),
    ({"m1": {"etcd": {"members": [{"id": f"a{j}", "name": n, "peer_urls": [f"https://10.0.0.{j + 1}:2380"]}
                                  for j, n in enumerate(NAMES)] + [{"id": "b9", "name": "m4", "peer_urls": ["x"],
                                                                    "is_learner": True}]}}},
     ("members", "m1")),
])
def test_each_refusal_is_listed_with_its_member(over, expected):
    p = plan(views(**over))
    assert expected in checks(p), p.refusals
    assert "REFUSED" in render_plan(p)


def test_every_reason_is_listed_at_once_and_other_checks_too():
    p = plan(views(m1={"restore_tool": None}, m2={"unreachable": True}), vault_problem="sha256 differs",
             open_operations=["r0-old"])
    assert {("tool", "m1"), ("agent", "m2"), ("snapshot", None), ("operation", None)} <= checks(p)


def test_another_version_or_cluster_is_refused_unless_forced():
    older = replace(SNAP, etcd_version="3.6.4")   # newer than the members: refused
    p = plan(views(), snapshot=older)
    assert {(r.check, r.forcible) for r in p.blocking} == {("version", True)}
    assert plan(views(), snapshot=older, options=PlanOptions(force=True)).blocking == ()
    foreign = replace(SNAP, cluster_id="c9")
    assert {r.check for r in plan(views(), snapshot=foreign).blocking} == {"cluster"}
    assert plan(views(), snapshot=foreign, options=PlanOptions(force=True)).blocking == ()


def test_each_override_accepts_only_its_refusal_and_force_lists_what_it_gave():
    foreign = replace(SNAP, cluster_id="c9", etcd_version="3.6.4")
    p = plan(views(), snapshot=foreign, options=PlanOptions(overrides=("allow-version-mismatch",)))
    assert {r.check for r in p.blocking} == {"cluster"} and p.overrides == ("allow-version-mismatch",)
    both = plan(views(), snapshot=foreign,
                options=PlanOptions(overrides=("allow-version-mismatch", "allow-other-cluster")))
    assert both.blocking == ()
    forced = plan(views(), snapshot=foreign, options=PlanOptions(force=True))
    assert forced.blocking == () and set(forced.overrides) == {"allow-version-mismatch", "allow-other-cluster"}
    text = render_plan(forced)
    assert "--allow-other-cluster --allow-version-mismatch" in text and "what --force stands for" in text
    assert "(accepted: --allow-other-cluster)" in text
    assert forced.plan_id != both.plan_id or forced.overrides == both.overrides
    assert plan(views(), snapshot=SNAP, options=PlanOptions(force=True)).overrides == ()   # nothing to accept


def test_an_older_backup_of_this_clusters_lineage_needs_no_override():
    before_restore = replace(SNAP, cluster_id="c0")          # taken before two restores: c0 -> cA -> c1
    assert {r.check for r in plan(views(), snapshot=before_restore).blocking} == {"cluster"}
    p = plan(views(), snapshot=before_restore, lineage=[("c0", "cA"), ("cA", "c1")])
    assert p.blocking == ()
    other = plan(views(), snapshot=replace(SNAP, cluster_id="cX"), lineage=[("c0", "cA"), ("cA", "c1")])
    assert {r.check for r in other.blocking} == {"cluster"}


def test_lineage_components_follow_every_recorded_link():
    links = [("a", "b"), ("c", "b"), ("b", "d"), ("x", "y")]
    assert component(links, "d") == {"a", "b", "c", "d"}
    assert component(links, "y") == {"x", "y"}
    assert component([], "z") == {"z"}


def test_a_dead_cluster_plans_without_a_safety_snapshot():
    dead = {"etcd": {"healthy": False, "error": "connection refused", "revision": None, "cluster_id": None,
                     "leader": None, "members": []}}
    p = plan(views(m1=dead, m2=dead, m3=dead))
    assert p.blocking == ()
    assert p.safety_snapshot is False and p.live_revision is None and p.live_cluster_id is None
    assert any("no pre-restore safety snapshot" in w for w in p.warnings)


def test_the_plan_round_trips_through_json():
    p = plan(views(m2={"unreachable": True}))
    again = RestorePlan.from_json(json.loads(json.dumps(p.to_json())))
    assert again == p


# -- states ----------------------------------------------------------------------------------


def test_the_transition_table_rejects_what_it_does_not_allow():
    assert transition(OpState.RUNNING, OpState.DONE) is OpState.DONE
    assert transition(OpState.INTERRUPTED, OpState.RUNNING) is OpState.RUNNING
    for final in (OpState.DONE, OpState.FAILED, OpState.ROLLED_BACK):
        assert states.CLUSTER[final] == frozenset()
        with pytest.raises(IllegalTransition, match=f"from {final.value}"):
            transition(final, OpState.RUNNING)
    with pytest.raises(IllegalTransition):
        transition(OpState.RUNNING, OpState.ROLLED_BACK)   # only through rolling-back
    assert set(states.CLUSTER) == set(OpState) == set(states.NODE)


# -- journal ---------------------------------------------------------------------------------


def test_the_journal_replays_steps_facts_and_state_and_tolerates_a_torn_line(tmp_path):
    store = JournalStore(tmp_path)
    p = plan(views())
    j = store.create(p, until="prepare")
    j.log.emit("phase", phase="preflight", status="started")
    j.log.emit("fact", key="live_revision", value=7_000)
    j.log.emit("phase", phase="preflight", status="done")
    j.log.emit("step", phase="stage", member="m1", status="started")
    j.log.emit("step", phase="stage", member="m1", status="done", result={"staged": "r1-test.db"})
    j.log.emit("step", phase="stage", member="m2", status="started")
    with open(j.log.path, "ab") as fh:
        fh.write(b'{"event": "step", "phase": "stage", "member": "m2", "sta')   # torn by a crash
    again = store.open(p.op)
    rec = again.record
    assert rec.state is OpState.RUNNING and rec.until == "prepare"
    assert rec.phase_done("preflight") and not rec.phase_done("stage")
    assert rec.step_done("stage", "m1") is not None and rec.step_done("stage", "m2") is None
    assert rec.steps[("stage", "m2")].status == "started"
    assert rec.facts == {"live_revision": 7_000}
    assert again.plan == p
    assert [r.op for r in store.all()] == [p.op]
    with pytest.raises(Exception, match="already exists"):
        store.create(p)


def test_a_journal_without_its_plan_is_damaged(tmp_path):
    JournalFile(tmp_path / "restores" / "r2" / "journal.jsonl").append("state", state="running")
    with pytest.raises(JournalDamaged, match="does not start with the operation's header"):
        JournalStore(tmp_path).open("r2")
    first = {"event": "planned", "t": 1, "plan": plan(views()).to_json()}
    assert replay("r3", [first], states.CLUSTER).state is OpState.RUNNING


def test_a_history_the_table_forbids_is_damage_not_a_state(tmp_path):
    first = {"event": "planned", "t": 1, "plan": plan(views()).to_json()}
    done = {"event": "state", "state": "done", "t": 2}
    again = {"event": "state", "state": "running", "t": 3}
    with pytest.raises(JournalDamaged, match=r"record 3 .* cannot go from done to running"):
        replay("r4", [first, done, again], states.CLUSTER)


# -- cluster checks ------------------------------------------------------------------------


def health(name: str, **over: Any) -> EtcdHealth:
    i = NAMES.index(name)
    base = EtcdHealth(healthy=True, revision=SNAP.revision + 1_000_000_000, member_id=f"n{i}", cluster_id="new",
                      leader="n0", members=tuple(ClusterMember(f"n{j}", n, (f"https://10.0.0.{j + 1}:2380",))
                                                 for j, n in enumerate(NAMES)))
    return replace(base, **over)


def test_quorum_needs_every_member_healthy_under_one_leader():
    assert quorum_problem({n: health(n) for n in NAMES}) is None
    sick = {**{n: health(n) for n in NAMES}, "m3": health("m3", healthy=False, error="no leader")}
    assert "m3: no leader" in (quorum_problem(sick) or "")
    split = {**{n: health(n) for n in NAMES}, "m2": health("m2", leader="n1")}
    assert "different leaders" in (quorum_problem(split) or "")


def test_verify_catches_each_way_the_restored_cluster_can_be_wrong():
    p = plan(views())
    good = {n: health(n) for n in NAMES}
    same = {n: 42 for n in NAMES}
    assert verify_problems(p, good, same, "c1") == []
    assert "still the old one" in " ".join(verify_problems(p, {n: health(n, cluster_id="c1") for n in NAMES},
                                                           same, "c1"))
    assert "hashkv differs" in " ".join(verify_problems(p, good, {**same, "m2": 43}, "c1"))
    low = {**good, "m1": health("m1", revision=SNAP.revision)}
    assert "below the expected" in " ".join(verify_problems(p, low, same, "c1"))
    alarm = {**good, "m3": health("m3", alarms=("n2:NOSPACE",))}
    assert "NOSPACE" in " ".join(verify_problems(p, alarm, same, "c1"))
    two = tuple(m for m in good["m1"].members if m.name != "m3")
    assert "member list" in " ".join(verify_problems(p, {**good, "m1": health("m1", members=two)}, same, "c1"))


def test_phases_are_the_design_phases_and_each_destructive_one_can_be_reverted_or_is_after_clients():
    assert CLUSTER_RESTORE.names == DESIGN_PHASES
    seen = False
    for step in CLUSTER_RESTORE.steps:
        seen = seen or step.clients_see
        if step.destructive and not seen:
            assert step.undoable, step.name
    assert CLUSTER_RESTORE.downtime == ("fence", "stop", "swap", "start", "verify", "unfence")


def test_two_members_are_warned_and_an_unstarted_member_is_named():
    two = tuple(m for m in CONFIGURED if m.name != "m3")
    vs = [v for v in views() if v.name != "m3"]
    p = build_plan(vs, two, SNAP, PlanOptions(), op="r2-test")
    assert any("2 members tolerates no failure" in w for w in p.warnings)
    unstarted = {"etcd": {"members": [{"id": "a0", "name": "m1", "peer_urls": ["https://10.0.0.1:2380"]},
                                      {"id": "a1", "name": "m2", "peer_urls": ["https://10.0.0.2:2380"]},
                                      {"id": "a9", "name": "", "peer_urls": ["https://10.0.0.9:2380"]}]}}
    message = next(r.message for r in plan(views(m1=unstarted)).blocking if r.check == "members")
    assert "member list is an unstarted member a9, m1, m2" in message and ", ," not in message


def test_a_snapshot_restores_onto_its_own_minor_or_the_next_one_without_override():
    for snap_version, ok in (("3.5.30", True), ("3.4.23", True), ("3.6.4", False), ("3.3.0", False)):
        p = plan(views(), snapshot=replace(SNAP, etcd_version=snap_version))   # the members run 3.5.16
        assert ("version" not in {r.check for r in p.blocking}) is ok, snap_version


def test_an_unreachable_agent_is_a_refusal_not_a_missing_revision_bump():
    p = plan(views(m2={"unreachable": True}))
    assert ("agent", "m2") in checks(p)
    assert p.bump_revision == 1_000_000_000
    assert not any("no revision bump" in w for w in p.warnings), p.warnings


def test_a_summary_without_the_old_cluster_id_says_it_was_not_known():
    from etcdguard.coordinator.ctl.restore import render_summary

    base = {"op": "r1", "state": "done", "phases": [], "new_cluster_id": "5bf76147a93aa0f"}
    assert "cluster id c1 -> 5bf76147a93aa0f" in render_summary({**base, "old_cluster_id": "c1"})
    text = render_summary({**base, "old_cluster_id": None})
    assert "?" not in text and "new cluster id 5bf76147a93aa0f (the old one was not known" in text
