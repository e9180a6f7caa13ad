"""The whole path of a compressed snapshot, for real: an agent takes it (recording hashkv and key count), the
coordinator pulls it compressed into the vault, a scheduled drill proves it in a scratch etcd, and a cluster
restore stages it decompressed to every member and brings the data back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import KEYS, seed
from tests.e2e.test_cluster_restore import assert_restored, disaster
from tests.helpers.etcd import EtcdCluster
from tests.helpers.net import wait_until
from tests.helpers.restore_rig import RestoreRig

pytestmark = pytest.mark.slow


def leftovers(scratch: Path) -> list[str]:
    return [str(p) for p in scratch.rglob("*")] if scratch.exists() else []


@pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)
def test_a_pulled_compressed_snapshot_is_drilled_then_restored_on_every_member(etcd_cluster3: EtcdCluster,
                                                                             tmp_path: Path) -> None:
    cluster = etcd_cluster3
    seed(cluster)
    build = cluster.members[0].build
    rig = RestoreRig(cluster, tmp_path, coordinator_sections={
        "drill": {"enabled": True, "interval": "1h"},
        "scratch": {"etcd": str(build.etcd), "tool": str(build.restore_tool)}})
    try:
        rig.start()
        entry: dict[str, Any] = rig.backup()
        assert entry["compression"] == "zstd" and 0 < entry["stored_size"] < entry["size"]
        assert entry["hashkv"] is not None and entry["key_count"] >= KEYS
        vault_file = Path(entry["path"])
        assert vault_file.name == f"{entry['sha256']}.db.zst"

        # the scheduled drill (due at start, none passed yet) proves the newest entry; after a backup it drills
        # the new one (a newer snapshot after a round is drilled at the next interval, or at once by hand)
        r = rig.ctl("drill", "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        (drilled,) = json.loads(r.stdout)["drills"]
        assert drilled["sha256"] == entry["sha256"] and drilled["ok"]
        assert {c["name"]: c["ok"] for c in drilled["checks"]} == {
            "serves": True, "revision": True, "key_count": True, "hashkv": True, "sample": True}
        metrics = rig.metrics()
        assert metrics["etcdguard_drill_last_result"] == 1
        assert metrics["etcdguard_drill_last_success_timestamp_seconds"] > 0
        listed = {e["sha256"]: e for e in rig.ctl_json("snapshots")}
        assert listed[entry["sha256"]]["proven_at"] is not None
        assert leftovers(rig.state_dir / "scratch") == []

        # the restore stages the snapshot decompressed (checked by its sha256 on every agent) and restores it
        old_id = int(cluster.members[0].status()["header"]["cluster_id"])
        disaster(cluster)
        done = rig.ctl_json("restore", entry["sha256"][:12], "--yes", "--force")
        assert done["state"] == "done", done
        assert_restored(cluster, old_id, entry["revision"], bumped=True)
        wait_until(lambda: not [p for p in vault_file.parent.iterdir() if p.name.startswith(".etcdguard-tmp")], 10,
                   what="the decompressed copy to be removed")
    except BaseException:
        rig.dump_logs()
        raise
    finally:
        rig.stop()
