import dataclasses
from pathlib import Path

import pytest
from etcdguard.agent.restore.plan import STEPS, argv_problems, build_plan, render_plan
from etcdguard.agent.restore.records import KIND_LOCAL, OperationStore, summarize
from etcdguard.agent.restore.safety import (
    ClusterFacts,
    Identity,
    compare_identity,
    initial_cluster_names,
    multi_member_refusal,
)
from etcdguard.agent.restore.swap import aside_member, prepared_member, workspace_dir
from etcdguard.agent.restore.toolproc import is_restore_command
from etcdguard.common.base.errors import UnsafeRefusal, UsageError
from etcdguard.common.journal import check_op_id, new_op_id
from etcdguard.common.ops.bump import bump_for
from etcdguard.common.ops.flows import NODE_RESTORE
from etcdguard.common.ops.params import RestoreParams
from etcdguard.common.ops.states import OpState
from etcdguard.common.snapshot.tools import SnapshotTool, restore_argv


def test_bump_default_and_when_live_is_ahead():
    assert bump_for(1_000_000_000, 500, None) == 1_000_000_000
    assert bump_for(1_000_000_000, 500, 10_000) == 1_000_000_000
    # live store already far beyond snapshot + bump: bump more so revisions never go backwards
    assert bump_for(1_000, 500, 10_000) == 10_000 - 500 + 1_000
    assert 500 + bump_for(1_000, 500, 10_000) > 10_000
    assert bump_for(0, 500, 10_000) == 0


def test_directories_stay_inside_the_data_dir():
    d = Path("/var/lib/etcd")
    for path in (workspace_dir(d, "op1"), prepared_member(d, "op1"), aside_member(d, "op1")):
        assert path.parent == d or path.parent.parent == d or path.parent.parent.parent == d
        assert str(path).startswith("/var/lib/etcd/")
    assert aside_member(d, "op1").name == "member.etcdguard-op1"


def _params(tool: SnapshotTool, bump: int) -> RestoreParams:
    argv = restore_argv(tool, Path("/s.db"), Path("/var/lib/etcd/.etcdguard-op1/data"), name="cp1",
                        initial_cluster="cp1=https://10.0.0.1:2380", token="etcdguard-op1",
                        peer_url="https://10.0.0.1:2380", bump_revision=bump)
    return RestoreParams(op="op1", snapshot="/s.db", snapshot_sha256="ab" * 32, snapshot_size=100,
                         snapshot_revision=42, name="cp1", peer_url="https://10.0.0.1:2380",
                         initial_cluster="cp1=https://10.0.0.1:2380", token="etcdguard-op1",
                         data_dir="/var/lib/etcd", bump_revision=bump if tool.supports_bump else 0,
                         restore_argv=tuple(argv))


def test_restore_argv_uses_bump_only_where_supported():
    new = SnapshotTool(Path("/usr/bin/etcdutl"), "etcdutl", "3.5.16", True)
    old = SnapshotTool(Path("/usr/bin/etcdctl"), "etcdctl", "3.4.23", False)
    argv = list(_params(new, 1000).restore_argv)
    assert argv[:4] == ["/usr/bin/etcdutl", "snapshot", "restore", "/s.db"]
    assert argv[argv.index("--initial-cluster-token") + 1] == "etcdguard-op1"
    assert argv[-3:] == ["--bump-revision", "1000", "--mark-compacted"]
    assert "--bump-revision" not in _params(old, 1000).restore_argv


def test_plan_lists_every_step_and_marks_downtime():
    tool = SnapshotTool(Path("/usr/bin/etcdutl"), "etcdutl", "3.5.16", True)
    p = _params(tool, 1000)
    steps = build_plan(p, "etcd (static-pod): ...", None)
    assert [s.step for s in steps] == list(STEPS)
    assert [s.step for s in steps if s.destructive] == ["fence", "stop", "swap", "start", "unfence"]
    assert p.expected_min_revision == 1042
    text = render_plan(p, steps, ("etcd (static-pod): ...",))
    assert "member.etcdguard-op1" in text and "nothing has been changed" in text
    assert "nothing to fence" in text


def test_params_round_trip():
    tool = SnapshotTool(Path("/usr/bin/etcdctl"), "etcdctl", "3.4.23", False)
    p = _params(tool, 0)
    assert RestoreParams.from_json(p.to_json()) == p


def test_operation_records_steps_and_tolerates_torn_journal(tmp_path):
    tool = SnapshotTool(Path("/usr/bin/etcdutl"), "etcdutl", "3.5.16", True)
    ops = OperationStore(tmp_path)
    op = ops.get("op1")
    log = op.create(kind=KIND_LOCAL, flow=NODE_RESTORE, params=_params(tool, 0))
    assert log.record.step_done("prepare") is None
    log.emit("step", step="prepare", status="started")
    log.emit("step", step="prepare", status="done", result={"bytes": 5})
    with open(op.dir / "journal.jsonl", "a") as fh:
        fh.write('{"t": 1, "event": "torn')  # a crash mid-append
    again = op.log()                          # the torn line is not read ...
    assert again.record.step_done("prepare").result == {"bytes": 5}
    again.emit("forget", step="prepare")      # ... and is cut before the next record
    assert op.log().record.step_done("prepare") is None
    assert [e["event"] for e in op.journal_tail(10)] == ["created", "step", "step", "forget"]
    assert [o.op for o in ops.all()] == ["op1"]
    assert summarize(op.log().record).state is OpState.RUNNING
    assert (op.dir / "journal.jsonl").stat().st_mode & 0o777 == 0o600


def test_one_restore_activity_at_a_time(tmp_path):
    ops = OperationStore(tmp_path)
    with ops.exclusive("restore a"):
        assert ops.locked()
        with pytest.raises(UnsafeRefusal, match="another restore activity"), ops.exclusive("restore b"):
            pass
    assert not ops.locked()


@pytest.mark.parametrize("bad", ["", "..", ".", "-x", "../x", "a/b", "x" * 65, "a b"])
def test_bad_op_ids(bad):
    with pytest.raises(UsageError):
        check_op_id(bad)
    assert check_op_id(new_op_id())


# -- what a resume trusts -------------------------------------------------------------------------


def test_recorded_command_must_name_the_verified_absolute_file():
    tool = SnapshotTool(Path("/usr/bin/etcdutl"), "etcdutl", "3.5.16", True)
    p = _params(tool, 1000)
    assert argv_problems(p) == []
    relative = dataclasses.replace(p, restore_argv=(p.restore_argv[0], "snapshot", "restore", "snap.db",
                                                    *p.restore_argv[4:]))
    assert any("reads 'snap.db', not the verified /s.db" in x for x in argv_problems(relative))
    elsewhere = dataclasses.replace(p, restore_argv=(*p.restore_argv[:5], "/tmp/x", *p.restore_argv[6:]))
    assert any("writes to '/tmp/x'" in x for x in argv_problems(elsewhere))
    rel_tool = dataclasses.replace(p, restore_argv=("etcdutl", *p.restore_argv[1:]))
    assert any("relative path" in x for x in argv_problems(rel_tool))
    assert "not `snapshot restore`" in argv_problems(dataclasses.replace(p, restore_argv=("/bin/true",)))[0]


def test_params_from_an_older_record_without_new_fields():
    tool = SnapshotTool(Path("/usr/bin/etcdctl"), "etcdctl", "3.4.23", False)
    data = _params(tool, 0).to_json()
    del data["live_cluster_id"]
    assert RestoreParams.from_json({**data, "unknown_later_field": 1}).live_cluster_id == ""


def test_leftover_tool_is_recognised_by_its_exact_arguments():
    tool = SnapshotTool(Path("/usr/bin/etcdutl"), "etcdutl", "3.5.16", True)
    argv = list(_params(tool, 1000).restore_argv)
    assert is_restore_command(argv, argv)
    assert is_restore_command(["/bin/sh", "/opt/wrap/etcdutl", *argv[1:]], argv)     # a wrapper script
    assert not is_restore_command(argv[:-1], argv)
    other_op = [a.replace("op1", "op2") for a in argv]
    assert not is_restore_command(other_op, argv)
    assert not is_restore_command(argv[1:], argv)          # the arguments alone are not a process
    assert not is_restore_command(["/usr/bin/etcd", "--data-dir", "/var/lib/etcd"], argv)


# -- identity, membership, rollback -----------------------------------------------------------------


def facts(cids=(), mids=(), names=(), where="x") -> ClusterFacts:
    return ClusterFacts(tuple(cids), tuple(mids), tuple(names), where)


def test_snapshot_of_this_cluster_or_an_earlier_incarnation_is_accepted():
    live = facts(["c1"], ["a"], ["m1"])
    assert compare_identity(facts(["c1"], ["a"]), live, {}).outcome is Identity.SAME
    # a computed cluster id can be off after membership changes; a shared member id still proves it
    assert compare_identity(facts(["cX"], ["a", "b"]), live, {}).outcome is Identity.SAME
    earlier = compare_identity(facts(["c0"], ["z"], ["m1"]), live, {"c0": "r-op1"})
    assert earlier.outcome is Identity.EARLIER and "r-op1" in earlier.sentence
    assert not earlier.refuses


def test_snapshot_of_another_cluster_is_refused_with_names_and_ids():
    verdict = compare_identity(facts(["c9"], ["q"], ["m1"], "its catalog record"), facts(["c1"], ["a"], ["m1"]),
                               {"c0": "r-op1"})
    assert verdict.outcome is Identity.FOREIGN and verdict.refuses
    assert "another cluster" in verdict.sentence and "c9" in verdict.sentence and "c1" in verdict.sentence
    assert "--force" in verdict.sentence
    assert "member names m1 match" in verdict.sentence     # names alone do not prove it


def test_identity_unknown_is_not_a_refusal():
    assert compare_identity(None, facts(["c1"]), {}).outcome is Identity.SNAPSHOT_UNKNOWN
    unknown = compare_identity(facts(["c9"]), None, {})
    assert unknown.outcome is Identity.LIVE_UNKNOWN and not unknown.refuses


def test_multi_member_cluster_is_refused_from_either_source():
    one = "m1=http://10.0.0.1:2380"
    three = "m1=http://10.0.0.1:2380,m2=http://10.0.0.2:2380,m3=http://10.0.0.3:2380"
    assert multi_member_refusal("m1", ["m1"], one) is None
    assert multi_member_refusal("m1", None, None) is None
    live = multi_member_refusal("m1", ["m1", "m2", "m3"], one)
    assert live is not None and "live member list has 3 members" in live and "etcdguardctl restore" in live
    configured = multi_member_refusal("m1", None, three)
    assert configured is not None and "--initial-cluster has 3 (m1, m2, m3)" in configured
    # a member with two peer URLs is still one member
    assert multi_member_refusal("m1", ["m1"], "m1=http://a:2380,m1=http://b:2380") is None
    assert initial_cluster_names(three) == ["m1", "m2", "m3"]


def test_rollback_goes_backwards_once_unfence_started():
    assert NODE_RESTORE.rollback_possible(["preflight", "prepare", "swap", "start", "verify"])
    assert not NODE_RESTORE.rollback_possible(["verify", "unfence"])    # started, maybe failed half-way
