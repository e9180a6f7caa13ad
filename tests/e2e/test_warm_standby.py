"""Warm standby ([restore] warm_standby): the vault's newest snapshot restored ahead on every member, and a
restore of it that prepares by a rename. Three real etcd members, agents and a coordinator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import running_rig
from tests.e2e.test_cluster_restore import assert_restored, disaster
from tests.e2e.test_dead_cluster import prestaged_everywhere
from tests.helpers.etcd import EtcdCluster
from tests.helpers.net import wait_until
from tests.helpers.restore_rig import RestoreRig

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)]


@pytest.fixture
def warm_rig(etcd_cluster3: EtcdCluster, tmp_path: Path) -> Iterator[RestoreRig]:
    with running_rig(etcd_cluster3, tmp_path, restore={"warm_standby": True}) as r:
        yield r


def warm_everywhere(rig: RestoreRig, sha: str) -> bool:
    p = rig.ctl_json("status")["vault"].get("prestage") or {}
    members = p.get("members") or {}
    return prestaged_everywhere(rig, sha) and all(s.get("warm") for s in members.values())


def warm_records(rig: RestoreRig) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for m in rig.cluster.members:
        out[m.name] = [json.loads(p.read_text()) for p in (m.data_dir / ".etcdguard-warm").glob("*/warm.json")]
    return out


def prepare_results(rig: RestoreRig, op: str) -> dict[str, Any]:
    return {r["member"]: r["result"] for r in rig.journal(op)
            if r.get("event") == "step" and r.get("phase") == "prepare" and r.get("status") == "done"}


def test_the_newest_snapshot_is_restored_ahead_and_a_restore_of_it_adopts_the_warm_copy(warm_rig: RestoreRig):
    rig = warm_rig
    cluster = rig.cluster
    old_id = int(cluster.members[0].status()["header"]["cluster_id"])
    entry = rig.backup()
    wait_until(lambda: warm_everywhere(rig, entry["sha256"]), 120, what="the snapshot restored ahead everywhere")
    records = warm_records(rig)
    assert all(len(r) == 1 for r in records.values()), records
    tokens = {r[0]["token"] for r in records.values()}
    assert len(tokens) == 1, records                       # one token for the whole cluster
    assert all(r[0]["sha256"] == entry["sha256"] for r in records.values())
    assert cluster.members[0].get("/registry/demo/k007") == "value-7"   # the live data untouched
    assert "restored ahead" in rig.ctl("status").stdout

    plan = rig.ctl_json("restore", "latest", "--plan")
    assert plan["token"] in tokens and sorted(plan["warm"]) == ["m1", "m2", "m3"], plan
    disaster(cluster)
    out = rig.ctl_json("restore", "latest", "--yes")
    assert out["state"] == "done", out
    results = prepare_results(rig, out["op"])
    assert sorted(results) == ["m1", "m2", "m3"] and all(r.get("warm") for r in results.values()), results
    assert_restored(cluster, old_id, entry["revision"], True)
    # Adopted: moved, not copied; the token is spent. The next warm copy of the same snapshot gets a fresh one.
    assert not [r for rs in warm_records(rig).values() for r in rs if r["token"] == plan["token"]]
    wait_until(lambda: warm_everywhere(rig, entry["sha256"]), 120, what="the snapshot restored ahead again")
    again = rig.ctl_json("restore", "latest", "--plan")
    assert again["token"] != plan["token"] and sorted(again["warm"]) == ["m1", "m2", "m3"], again
