"""Cancelling a running restore: it stops at the next step boundary and rolls every member back while no
client has seen the restored data, and says so. Three real etcd members, agents, a coordinator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import running_rig
from tests.helpers.etcd import EtcdCluster
from tests.helpers.net import wait_until
from tests.helpers.restore_rig import RestoreRig, state_of, step_started
from tests.helpers.standins import livez

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)]


@pytest.fixture
def slow_fence_rig(etcd_cluster3: EtcdCluster, tmp_path: Path) -> Iterator[RestoreRig]:
    """A fence that waits 4 s for the revision to stand still: a window in which the restore is running."""
    with running_rig(etcd_cluster3, tmp_path, apiservers=True, restore={"fence_settle": "4s"}) as r:
        yield r


def test_a_cancelled_restore_rolls_back_and_the_cluster_keeps_its_data(slow_fence_rig: RestoreRig):
    rig = slow_fence_rig
    cluster = rig.cluster
    rig.backup()
    cluster.members[0].put("/registry/after-the-backup", "kept")
    before = cluster.statuses()
    old_id = {int(s["header"]["cluster_id"]) for s in before.values()}
    revision = int(before["m1"]["header"]["revision"])
    hashes = cluster.hashkvs(revision)

    running = rig.spawn_ctl("restore", "latest", "--yes", "--json")
    try:
        op = rig.wait_journal(step_started("fence", "m1"), what="the fence phase started")
        cancelled = rig.ctl("restore", "--cancel", op, "--json", timeout=120)
        out, err = running.communicate(timeout=120)
    finally:
        if running.poll() is None:
            running.kill()
    assert cancelled.returncode == 0, cancelled.stderr
    summary = json.loads(cancelled.stdout)
    assert summary["op"] == op and summary["state"] == "rolled-back", summary
    assert state_of(rig.journal(op)) == "rolled-back"
    assert json.loads(out)["state"] == "rolled-back", (out, err)
    assert "cancelled by the operator" in json.dumps(rig.journal(op))
    # Nothing the restore would have changed is changed: same cluster, same data, every apiserver back.
    after = cluster.statuses()
    assert {int(s["header"]["cluster_id"]) for s in after.values()} == old_id
    assert cluster.hashkvs(revision) == hashes
    assert all(m.get("/registry/after-the-backup") == "kept" for m in cluster.members)
    wait_until(lambda: all(livez(port) for port in rig.apiserver_ports.values()), 30,
               what="every kube-apiserver serving again")
    # A cancelled operation is over: nothing to cancel any more.
    again = rig.ctl("restore", "--cancel", op)
    assert again.returncode == 2 and "is not running" in again.stderr
