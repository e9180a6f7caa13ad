"""The cluster-wide restore for real: three etcd members on loopback, three agents, one coordinator.

Each test backs up a recognisable data set into the vault, makes a disaster
(keys deleted, garbage written), restores with etcdguardctl and checks the
data on every member: the snapshot's keys back, later keys gone, one hashkv,
a new cluster id, the old data kept on every node.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import KEYS
from tests.helpers.etcd import EtcdCluster
from tests.helpers.net import wait_until
from tests.helpers.restore_rig import RestoreRig, phase_done, state_of, step_started

pytestmark = pytest.mark.slow

def disaster(cluster: EtcdCluster) -> None:
    cluster.etcdctl("del", "--prefix", "/registry/demo/")
    cluster.members[1].put("/registry/garbage", "oops")


def keys_on(member: Any, prefix: str = "/registry/") -> list[str]:
    out = member.etcdctl("get", "--prefix", prefix, "--keys-only").stdout
    return sorted(line for line in out.splitlines() if line.strip())


def assert_restored(cluster: EtcdCluster, old_cluster_id: int, snapshot_revision: int, bumped: bool) -> None:
    expected = sorted(f"/registry/demo/k{i:03d}" for i in range(KEYS))
    for m in cluster.members:
        assert keys_on(m) == expected, m.name          # the snapshot's keys back, the garbage gone
        assert m.get("/registry/demo/k007") == "value-7"
    statuses = cluster.statuses()
    assert sorted(statuses) == ["m1", "m2", "m3"]
    ids = {int(s["header"]["cluster_id"]) for s in statuses.values()}
    assert len(ids) == 1 and ids != {old_cluster_id}
    revisions = {int(s["header"]["revision"]) for s in statuses.values()}
    rev = min(revisions)
    if bumped:
        assert rev >= snapshot_revision + 1_000_000
    hashes = cluster.hashkvs(rev)
    assert len(set(hashes.values())) == 1, hashes
    members = json.loads(cluster.etcdctl("member", "list", "-w", "json").stdout)["members"]
    assert sorted(m["name"] for m in members) == ["m1", "m2", "m3"]
    assert not any(m.get("isLearner") for m in members)


def kept_dirs(cluster: EtcdCluster, op: str) -> list[Path]:
    return [m.data_dir / f"member.etcdguard-{op}" for m in cluster.members]


def test_plan_then_restore_brings_the_snapshot_back_on_every_member(rig: RestoreRig, etcd_build):
    cluster = rig.cluster
    old_id = int(cluster.members[0].status()["header"]["cluster_id"])
    entry = rig.backup()
    cluster.members[0].put("/registry/after-backup", "lost")
    disaster(cluster)

    plan = rig.ctl_json("restore", "latest", "--plan")
    assert plan["refused"] is False and plan["snapshot"]["id"] == entry["sha256"]
    assert plan["phases"][0]["phase"] == "preflight" and plan["members"][0]["member"] == "m1"
    assert plan["discarded_revisions"] > 0
    text = rig.ctl("restore", "latest", "--plan")
    assert text.returncode == 0 and plan["plan_id"] in text.stdout and "prepare" in text.stdout
    assert all(m.is_running() for m in cluster.members)     # --plan changed nothing
    assert keys_on(cluster.members[0]) == ["/registry/after-backup", "/registry/garbage"]

    r = rig.ctl("restore", entry["sha256"][:12], "--yes", "--plan-id", plan["plan_id"], "--json")
    assert r.returncode == 0, f"{r.stderr}\n{r.stdout}"
    summary = json.loads(r.stdout)
    assert summary["state"] == "done" and summary["op"]
    for word in ("stage", "prepare", "fence", "swap", "verify"):
        assert word in r.stderr, word                        # live progress on stderr
    bumped = etcd_build.supports_bump_revision
    assert_restored(cluster, old_id, entry["revision"], bumped)
    assert summary["new_cluster_id"] and summary["new_cluster_id"] != summary["old_cluster_id"]
    assert summary["downtime_seconds"] is not None and 0 < summary["downtime_seconds"] < summary["total_seconds"]
    assert [p["phase"] for p in summary["phases"]] == ["preflight", "stage", "prepare", "fence", "stop", "swap",
                                                       "start", "verify", "unfence", "restart-controllers"]
    for d in kept_dirs(cluster, summary["op"]):
        assert (d / "snap" / "db").is_file(), d                # the old data kept on every node
    # systemctl status showed the restore's phases while it ran
    lines = wait_until(lambda: [ln for ln in rig.status_lines() if ln.startswith(f"restore {summary['op']}")],
                       10, what="STATUS= lines of the restore")
    assert any("prepare" in ln for ln in lines) and any("start" in ln for ln in lines), lines
    assert sorted(m for m, _ in summary["kept"]) == ["m1", "m2", "m3"]
    # the safety net: a pinned pre-restore snapshot of the live (broken) cluster is in the vault
    pre = summary["pre_restore_snapshot"]
    assert pre and pre != entry["sha256"]
    assert any(e["sha256"] == pre for e in rig.ctl_json("snapshots"))
    # the apiservers were fenced and are back
    from tests.helpers.standins import livez
    assert all(livez(port) for port in rig.apiserver_ports.values())
    # listings and metrics
    restores = rig.ctl_json("restores")
    assert [(r_["op"], r_["state"]) for r_ in restores] == [(summary["op"], "done")]
    m = rig.metrics()
    assert m["etcdguard_restore_last_result"] == 1 and m["etcdguard_restore_in_progress"] == 0
    assert m["etcdguard_restore_downtime_seconds"] == pytest.approx(summary["downtime_seconds"], abs=0.01)
    # the staged copies are gone; the agents' operations are closed (backups may run again)
    for a in rig.agents:
        assert not list(a.staging_dir.glob(f"{summary['op']}*")), a.member.name
    # cleanup: shows, then deletes the kept data everywhere
    shown = rig.ctl_json("restore", "--cleanup", summary["op"])
    assert sorted(shown["members"]) == ["m1", "m2", "m3"] and shown["deleted"] is False
    assert all(d.exists() for d in kept_dirs(cluster, summary["op"]))
    rig.ctl_json("restore", "--cleanup", summary["op"], "--yes")
    assert not any(d.exists() for d in kept_dirs(cluster, summary["op"]))


@pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)
def test_refusals_change_nothing_and_list_every_reason(rig: RestoreRig):
    cluster = rig.cluster
    entry = rig.backup()
    before = cluster.hashkvs()
    dead = rig.agents[2]
    dead.kill()
    r = rig.ctl("restore", "latest", "--yes")
    assert r.returncode == 3, r.stderr
    assert "m3" in r.stderr and "unreachable" in r.stderr
    plan = rig.ctl_json("restore", "latest", "--plan", expect=3)
    assert plan["refused"] and any(x["member"] == "m3" and x["check"] == "agent" for x in plan["refusals"])
    assert all(m.is_running() for m in cluster.members)
    from tests.helpers.standins import livez
    assert all(livez(port) for port in rig.apiserver_ports.values())   # nothing fenced
    assert cluster.hashkvs() == before
    assert rig.ops() == []                                              # no operation was even created
    dead.start()
    # a stale plan id is refused
    r = rig.ctl("restore", "latest", "--yes", "--plan-id", "000000000000")
    assert r.returncode == 3 and "is not the plan" in r.stderr
    assert rig.ops() == []
    # a vault copy that no longer verifies is refused before anything is sent anywhere
    vault_file = Path(entry["path"])
    data = bytearray(vault_file.read_bytes())
    data[100] ^= 0xFF
    vault_file.write_bytes(bytes(data))
    r = rig.ctl("restore", "latest", "--yes")
    assert r.returncode == 3 and "does not verify" in r.stderr, r.stderr
    assert rig.ops() == [] and cluster.hashkvs() == before


@pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)
def test_coordinator_killed_at_every_phase_boundary_resumes_to_the_end(rig: RestoreRig):
    cluster = rig.cluster
    old_id = int(cluster.members[0].status()["header"]["cluster_id"])
    entry = rig.backup()
    disaster(cluster)
    ctl = rig.spawn_ctl("restore", "latest", "--yes", "--json")
    phases = ["preflight", "stage", "prepare", "fence", "stop", "swap", "start", "verify", "unfence"]
    op = ""
    for i, phase in enumerate(phases):
        op = rig.wait_journal(phase_done(phase), what=f"phase {phase} done")
        rig.kill_coordinator()
        if i == 0:
            ctl.wait(30)   # the ctl loses its daemon: the restore is not abandoned, it is interrupted
        rig.start_coordinator()
        assert state_of(rig.journal(op)) == "interrupted"
        assert any(r["op"] == op and r["state"] == "interrupted" for r in rig.ctl_json("restores"))
        if i == 0:
            status = rig.ctl_json("status")
            assert [w["op"] for w in status["restores"]["waiting"]] == [op]
            text = rig.ctl("status")
            assert f"restore {op} is INTERRUPTED" in text.stdout, text.stdout
        assert rig.metrics()["etcdguard_restore_interrupted"] == 1
        ctl = rig.spawn_ctl("restore", "--resume", op, "--json")
        # the next phase may be done already: kill the coordinator only once this resume has reached it
        rig.wait_journal(lambda records: state_of(records) not in (None, "interrupted"), what="the resume")
    out, err = ctl.communicate(timeout=300)
    assert ctl.returncode == 0, f"{err}\n{out}"
    assert json.loads(out)["state"] == "done"
    assert_restored(cluster, old_id, entry["revision"], True)


@pytest.mark.parametrize("etcd_build", ["3.4"], indirect=True)
def test_rollback_after_a_crash_puts_every_member_back_on_its_old_data(rig: RestoreRig):
    cluster = rig.cluster
    rig.backup()
    cluster.members[0].put("/registry/after-backup", "kept by the rollback")
    before = cluster.hashkvs()
    old_id = int(cluster.members[0].status()["header"]["cluster_id"])
    ctl = rig.spawn_ctl("restore", "latest", "--yes")
    op = rig.wait_journal(phase_done("swap"), what="swap done")
    rig.kill_coordinator()
    ctl.wait(30)
    rig.start_coordinator()
    r = rig.ctl("restore", "--rollback", op, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["state"] == "rolled-back"
    cluster.wait_healthy(30)
    assert cluster.members[2].get("/registry/after-backup") == "kept by the rollback"
    assert cluster.hashkvs() == before
    assert int(cluster.members[1].status()["header"]["cluster_id"]) == old_id
    assert not any(d.exists() for d in kept_dirs(cluster, op))      # the old data is live again
    from tests.helpers.standins import livez
    assert all(livez(port) for port in rig.apiserver_ports.values())


@pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)
def test_a_member_that_cannot_start_rolls_the_whole_cluster_back(rig: RestoreRig):
    cluster = rig.cluster
    rig.backup()
    before = cluster.hashkvs()
    r = rig.ctl("restore", "latest", "--yes", "--until", "prepare", "--json")
    assert r.returncode == 0, r.stderr
    op = json.loads(r.stdout)["op"]
    assert json.loads(r.stdout)["state"] == "paused"
    db = cluster.members[1].data_dir / f".etcdguard-{op}" / "data" / "member" / "snap" / "db"
    db.write_bytes(b"not a bolt database" * 100)              # this member's restored data is damaged
    r = rig.ctl("restore", "--resume", op, "--json")
    assert r.returncode == 1, r.stderr
    summary = json.loads(r.stdout)
    assert summary["state"] == "failed" and summary["failed_phase"] == "start"
    assert "etcd on m2 exited" in summary["error"], summary["error"]     # told at once, not after a timeout
    cluster.wait_healthy(30)
    assert cluster.hashkvs() == before                          # every member is on its old data again
    assert rig.metrics()["etcdguard_restore_last_result"] == 0


@pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)
def test_a_corrupt_staged_copy_aborts_before_anything_is_stopped(rig: RestoreRig):
    cluster = rig.cluster
    rig.backup()
    r = rig.ctl("restore", "latest", "--yes", "--until", "stage", "--json")
    assert r.returncode == 0, r.stderr
    op = json.loads(r.stdout)["op"]
    # The copy a member restores from: the one sent in stage, or the one the vault staged ahead of time.
    agent, staged = next((a, p) for a in rig.agents
                         for p in [a.staging_dir / f"{op}.db", *sorted(a.staging_dir.glob("pre-*.db"))]
                         if p.exists())
    data = bytearray(staged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    staged.write_bytes(bytes(data))
    r = rig.ctl("restore", "--resume", op, "--json")
    assert r.returncode == 1
    summary = json.loads(r.stdout)
    assert summary["failed_phase"] == "prepare" and agent.member.name in summary["error"]
    for m in cluster.members:
        assert not (m.data_dir / f".etcdguard-{op}").exists(), m.name     # prepared dirs removed everywhere
    assert all(m.is_running() for m in cluster.members)
    for a in rig.agents:
        assert not list(a.staging_dir.glob(f"{op}*")), a.member.name
    records = rig.journal(op)
    assert not any(r_.get("phase") in ("fence", "stop") for r_ in records if r_.get("event") == "step")


@pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)
@pytest.mark.parametrize("phase", ["prepare", "swap", "start"])
def test_an_agent_killed_mid_phase_is_waited_for(rig: RestoreRig, phase: str):
    cluster = rig.cluster
    old_id = int(cluster.members[0].status()["header"]["cluster_id"])
    entry = rig.backup()
    disaster(cluster)
    victim = rig.agents[1]
    ctl = rig.spawn_ctl("restore", "latest", "--yes", "--json")
    rig.wait_journal(step_started(phase, victim.member.name), what=f"{phase} sent to {victim.member.name}")
    victim.kill()
    victim.start()                       # back again: the coordinator re-sends the step
    out, err = ctl.communicate(timeout=300)
    assert ctl.returncode == 0, f"{err}\n{out}"
    assert json.loads(out)["state"] == "done"
    assert_restored(cluster, old_id, entry["revision"], True)


@pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)
def test_a_second_restore_while_one_runs_is_refused(rig: RestoreRig):
    rig.backup()
    r = rig.ctl("restore", "latest", "--yes", "--until", "stage", "--json")
    assert r.returncode == 0, r.stderr
    op = json.loads(r.stdout)["op"]
    second = rig.ctl("restore", "latest", "--yes")
    assert second.returncode == 3 and op in second.stderr
    assert rig.ops() == [op]
    r = rig.ctl("restore", "--rollback", op, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["state"] == "rolled-back", r.stderr
    assert rig.ctl("restore", "--resume", op).returncode == 2        # a rolled-back operation is final


@pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)
def test_rollback_after_unfence_is_a_forward_restore_of_the_pre_restore_snapshot(rig: RestoreRig):
    cluster = rig.cluster
    rig.backup()
    cluster.members[0].put("/registry/written-after-the-backup", "wanted back")
    done = rig.ctl_json("restore", "latest", "--yes")
    assert done["state"] == "done" and done["pre_restore_snapshot"]
    assert cluster.members[1].get("/registry/written-after-the-backup") is None
    restored_rev = int(cluster.members[0].status()["header"]["revision"])

    shown = rig.ctl_json("restore", "--rollback", done["op"])           # without --yes: the plan only
    assert shown["needs_yes"] is True
    plan = shown["plan"]
    assert plan["kind"] == "rollback-forward" and plan["rollback_of"] == done["op"]
    assert plan["snapshot"]["id"] == done["pre_restore_snapshot"]
    assert plan["expected_min_revision"] > restored_rev                 # forward: above today's revision
    assert len(rig.ops()) == 1                                           # nothing was started

    back = rig.ctl_json("restore", "--rollback", done["op"], "--yes")
    assert back["state"] == "done" and back["op"] != done["op"]
    for m in cluster.members:
        assert m.get("/registry/written-after-the-backup") == "wanted back"
    assert min(int(s["header"]["revision"]) for s in cluster.statuses().values()) >= plan["expected_min_revision"]
