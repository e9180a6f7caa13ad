"""A cluster that is already dead, restored: the snapshot already on every member, nothing waited out,
and the same cluster's older backups restorable after a restore. Three real etcd members, agents and a
coordinator."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.test_cluster_restore import disaster
from tests.helpers.net import wait_until
from tests.helpers.restore_rig import RestoreRig

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)]


def prestaged_everywhere(rig: RestoreRig, sha: str) -> bool:
    p = rig.ctl_json("status")["vault"].get("prestage") or {}
    members = p.get("members") or {}
    return p.get("newest") == sha and len(members) == 3 and all(s["holds_newest"] for s in members.values())


def stage_results(rig: RestoreRig, op: str) -> dict[str, Any]:
    return {r["member"]: r["result"] for r in rig.journal(op)
            if r.get("event") == "step" and r.get("phase") == "stage" and r.get("status") == "done"}


def test_every_new_vault_snapshot_is_prestaged_and_a_restore_sends_nothing(rig: RestoreRig):
    first = rig.backup()
    wait_until(lambda: prestaged_everywhere(rig, first["sha256"]), 60, what="the snapshot pre-staged everywhere")
    staged = {a.member.name: sorted(p.name for p in a.staging_dir.glob("pre-*.db")) for a in rig.agents}
    assert sum(1 for names in staged.values() if names) >= 2, staged   # the member that took it holds it already
    assert rig.metrics()["etcdguard_vault_prestaged{member=\"m1\"}"] == 1

    rig.cluster.members[0].put("/registry/second", "x")
    second = rig.backup()
    wait_until(lambda: prestaged_everywhere(rig, second["sha256"]), 60, what="the second snapshot pre-staged")
    for a in rig.agents:                       # one pre-staged snapshot per member: the newest
        names = [p.name for p in a.staging_dir.glob("pre-*.db")]
        assert all(second["sha256"][:16] in n for n in names), (a.member.name, names)

    disaster(rig.cluster)
    out = rig.ctl_json("restore", "latest", "--yes")
    assert out["state"] == "done"
    results = stage_results(rig, out["op"])
    assert sorted(results) == ["m1", "m2", "m3"]
    assert all(r.get("from_store") for r in results.values()), results    # nothing was sent at restore time
    assert rig.cluster.members[2].get("/registry/second") == "x"


def test_an_older_backup_of_this_cluster_restores_after_a_restore_without_any_override(rig: RestoreRig):
    older = rig.backup()
    rig.cluster.members[0].put("/registry/newer", "1")
    newer = rig.backup()
    first = rig.ctl_json("restore", newer["sha256"][:12], "--yes")
    assert first["state"] == "done"
    new_id = first["new_cluster_id"]
    assert new_id and new_id != older["cluster_id"]
    plan = json.loads(rig.ctl("restore", older["sha256"][:12], "--plan", "--json").stdout)
    assert plan["refused"] is False and not [r for r in plan["refusals"] if r["check"] == "cluster"], plan
    again = rig.ctl_json("restore", older["sha256"][:12], "--yes")
    assert again["state"] == "done"
    assert rig.cluster.members[1].get("/registry/newer") is None
