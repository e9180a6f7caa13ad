"""The coordinator's journal after the crashes operators meet: a record torn by a SIGKILL in the middle of
an append, and a record that cannot be read in the middle of a journal (a disk fault, a hand edit).

Three real etcd members, three agents, one coordinator, the restore run for real."""

from __future__ import annotations

import json

import pytest

from tests.e2e.test_cluster_restore import assert_restored, disaster
from tests.helpers.restore_rig import RestoreRig, state_of, step_started

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)]


def test_a_record_torn_by_a_kill_during_start_is_cut_and_the_restore_resumes(rig: RestoreRig):
    cluster = rig.cluster
    old_id = int(cluster.members[0].status()["header"]["cluster_id"])
    entry = rig.backup()
    disaster(cluster)
    ctl = rig.spawn_ctl("restore", "latest", "--yes", "--json")
    op = rig.wait_journal(step_started("start", "m2"), what="start sent to m2")
    rig.kill_coordinator()
    ctl.wait(30)
    journal = rig.state_dir / "restores" / op / "journal.jsonl"
    whole = journal.read_bytes()
    # What a SIGKILL in the middle of an append leaves: the first part of a record, no newline.
    with open(journal, "ab") as fh:
        fh.write(b'{"event": "step", "member": "m3", "phase": "start", "sta')
    rig.start_coordinator()                       # once: it marks the operation interrupted
    records = rig.journal(op)
    assert state_of(records) == "interrupted"
    data = journal.read_bytes()
    assert data.startswith(whole) and data.endswith(b"\n") and b'"sta\n' not in data and b'"sta{' not in data
    assert [r["op"] for r in rig.ctl_json("restores") if r["state"] == "interrupted"] == [op]
    assert "cut a torn last record" in rig.coordinator.log_tail(200)
    out = rig.ctl_json("restore", "--resume", op)
    assert out["state"] == "done", out
    assert_restored(cluster, old_id, entry["revision"], True)


def test_a_garbage_record_in_the_middle_is_damage_resume_refuses_and_rollback_works(rig: RestoreRig):
    cluster = rig.cluster
    rig.backup()
    cluster.members[0].put("/registry/after-backup", "kept by the rollback")
    before = cluster.hashkvs()
    paused = rig.ctl_json("restore", "latest", "--yes", "--until", "prepare")
    assert paused["state"] == "paused"
    op = paused["op"]
    journal = rig.state_dir / "restores" / op / "journal.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join([*lines[:4], b"\x00\x00 not a record\n", *lines[4:]]))

    rows = {r["op"]: r for r in rig.ctl_json("restores")}
    assert rows[op]["state"] == "damaged" and "record 5" in rows[op]["error"]
    status = rig.ctl_json("status")
    assert any(op in d for d in status["restores"]["damaged"])
    assert rig.metrics()["etcdguard_restore_journals_damaged"] == 1
    refused = rig.ctl("restore", "--resume", op)
    assert refused.returncode == 3 and "cannot be resumed" in refused.stderr and "record 5" in refused.stderr
    new = rig.ctl("restore", "latest", "--plan")
    assert new.returncode == 3 and op in new.stdout + new.stderr

    back = rig.ctl_json("restore", "--rollback", op)
    assert back["state"] == "rolled-back", back
    assert cluster.hashkvs() == before
    assert cluster.members[2].get("/registry/after-backup") == "kept by the rollback"
    assert [journal.name for journal in journal.parent.glob("journal.damaged-*.jsonl")]   # kept for a look
    assert {r["op"]: r["state"] for r in rig.ctl_json("restores")}[op] == "rolled-back"
    assert rig.metrics()["etcdguard_restore_journals_damaged"] == 0
    assert json.loads(rig.ctl("restore", "latest", "--plan", "--json").stdout)["refused"] is False
