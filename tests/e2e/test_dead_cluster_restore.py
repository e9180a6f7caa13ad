"""A cluster that is already dead (quorum lost: two of three members killed, their data gone): what the
operator sees, and the restore from the snapshot pre-staged on every member, waiting on nothing."""

from __future__ import annotations

import shutil
import time

import pytest

from tests.e2e.conftest import KEYS
from tests.e2e.test_cluster_restore import assert_restored, disaster
from tests.e2e.test_dead_cluster import prestaged_everywhere, stage_results
from tests.helpers.net import wait_until
from tests.helpers.restore_rig import RestoreRig

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)]


def test_a_dead_cluster_shows_as_dead_and_is_restored_from_the_prestaged_snapshot(rig: RestoreRig):
    cluster = rig.cluster
    old_id = int(cluster.members[0].status()["header"]["cluster_id"])
    entry = rig.backup()
    wait_until(lambda: prestaged_everywhere(rig, entry["sha256"]), 60, what="the snapshot pre-staged everywhere")
    disaster(cluster)
    # Quorum lost: two members killed, their data gone with their disks.
    for m in cluster.members[1:]:
        m.stop(kill=True)
        shutil.rmtree(m.data_dir / "member")
    time.sleep(2)   # the scenario's own pause: the operator looks 2 s after the disaster (not synchronisation)
    status = rig.ctl_json("status")
    assert not any(row["healthy"] for row in status["members"]), status["members"]
    assert status["cluster"]["quorum"]["state"] == "lost", status["cluster"]
    assert "quorum lost" in rig.ctl("status").stdout

    plan = rig.ctl_json("restore", "latest", "--plan")
    assert plan["cluster_down"] is True and plan["safety_snapshot"] is False
    assert plan["quorum"].startswith("quorum lost")
    assert any("no pre-restore safety snapshot" in w for w in plan["warnings"])
    prepare = next(p for p in plan["phases"] if p["phase"] == "prepare")
    assert "full priority" in prepare["what"]

    started = time.monotonic()
    out = rig.ctl_json("restore", "latest", "--yes")
    took = time.monotonic() - started
    assert out["state"] == "done", out
    assert out["down_before"] is True and out["time_to_healthy_seconds"] is not None
    assert out["pre_restore_snapshot"] is None
    assert all(r.get("from_store") for r in stage_results(rig, out["op"]).values())
    assert_restored(cluster, old_id, entry["revision"], True)
    assert len({cluster.members[i].get(f"/registry/demo/k{KEYS - 1:03d}") for i in range(3)}) == 1
    # Nothing waited out a timeout on the member without quorum: the whole restore is a few seconds here.
    phases = {p["phase"]: p["seconds"] for p in out["phases"]}
    assert phases["preflight"] < 4.0 and phases["fence"] < 4.0, phases   # not a 5 s request timeout
    assert took < 60, took
    text = rig.ctl("restore", "--attach", out["op"]).stdout
    assert "the cluster was down before the restore started" in text
