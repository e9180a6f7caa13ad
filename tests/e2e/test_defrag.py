"""Defragmenting for real: three etcd members whose databases hold ~100 MB of deleted, compacted data.

`etcdguardctl defrag --yes` defragments one member at a time, followers first
and the leader last, each after the whole cluster answered healthy again;
every database shrinks to about its in-use size. With a small backend quota
a NOSPACE alarm is raised by the writes; the defragmentation disarms it only
once the space is back, and the cluster takes writes again.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.helpers.etcd import EtcdCluster, load_data
from tests.helpers.restore_rig import RestoreRig

pytestmark = pytest.mark.slow

MB = 1024 * 1024


def fragment(cluster: EtcdCluster, total: int) -> None:
    """Write ``total`` bytes of values, delete them and compact: the space stays in every db file, unused."""
    leader = cluster.leader()
    load_data(leader, total, value_size=(100_000, 200_000), threads=4, prefix="/frag/")
    cluster.etcdctl("del", "--prefix", "/frag/")
    revision = leader.revision()
    cluster.etcdctl("compaction", "--physical", str(revision))


def db_sizes(cluster: EtcdCluster) -> dict[str, tuple[int, int]]:
    return {n: (int(s["dbSize"]), int(s.get("dbSizeInUse", 0))) for n, s in cluster.statuses().items()}


def steps_in_order(rig: RestoreRig, op: str, phase: str) -> list[tuple[str, str]]:
    return [(r["member"], r["status"]) for r in rig.journal(op) if r.get("event") == "step" and r["phase"] == phase]


@pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)
def test_defrag_shrinks_every_member_one_at_a_time_leader_last(rig: RestoreRig) -> None:
    cluster = rig.cluster
    fragment(cluster, 100 * MB)
    before = db_sizes(cluster)
    assert all(size > 90 * MB and in_use < size // 2 for size, in_use in before.values()), before
    leader = cluster.leader().name

    plan = rig.ctl_json("defrag", "--plan")
    assert plan["refused"] is False and [p["phase"] for p in plan["phases"]] == ["defrag-check", "defragment",
                                                                                 "disarm"]
    assert any("reclaimable" in n for n in plan["notes"]), plan["notes"]
    r = rig.ctl("defrag", "--yes", "--json", timeout=300)
    assert r.returncode == 0, f"{r.stderr}\n{r.stdout}"
    summary = json.loads(r.stdout)
    assert summary["state"] == "done"

    after = db_sizes(cluster)
    for name, (size, _) in after.items():
        assert size < 20 * MB and size < before[name][0] // 4, (name, before[name], after[name])
    order = steps_in_order(rig, summary["op"], "defragment")
    # one member at a time: each started only after the one before was done; the leader last
    assert [s for _, s in order] == ["started", "done"] * 3, order
    assert [m for m, _ in order][::2][-1] == leader and len({m for m, _ in order}) == 3
    cluster.wait_healthy(30)


@pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)
def test_defrag_of_one_member_and_a_nospace_alarm_disarmed_once_space_is_back(etcd_factory: Any, etcd_build: Any,
                                                                             tmp_path: Any) -> None:
    from tests.e2e.conftest import seed

    cluster = etcd_factory.cluster(etcd_build, size=3, extra_args=[f"--quota-backend-bytes={40 * MB}"])
    seed(cluster)
    rig = RestoreRig(cluster, tmp_path / "rig")
    try:
        rig.start()
        leader = cluster.leader()
        import etcd3.exceptions
        import grpc

        # the writes fill the quota: etcd raises NOSPACE and refuses them
        with pytest.raises((etcd3.exceptions.Etcd3Exception, grpc.RpcError)):
            load_data(leader, 60 * MB, value_size=(100_000, 200_000), threads=2, prefix="/fill/")
        assert "NOSPACE" in cluster.etcdctl("alarm", "list").stdout
        # only one member, asked by name; the alarm stays: there is no space yet (nothing was deleted)
        r = rig.ctl("defrag", "--member", "m1", "--yes", "--json", timeout=300)
        summary = json.loads(r.stdout)
        assert r.returncode == 1 and summary["failed_phase"] == "disarm", summary
        assert "space is not back" in summary["error"]
        assert [m for m, _ in steps_in_order(rig, summary["op"], "defragment")] == ["m1", "m1"]
        assert "NOSPACE" in cluster.etcdctl("alarm", "list").stdout
        # delete and compact, then every member: the alarm goes once the databases are small again
        cluster.etcdctl("del", "--prefix", "/fill/")
        cluster.etcdctl("compaction", "--physical", str(leader.revision()))
        done = rig.ctl_json("defrag", "--yes")
        assert done["state"] == "done", done
        assert cluster.etcdctl("alarm", "list").stdout.strip() == ""
        cluster.members[0].put("/after/nospace", "writes again")
        assert cluster.members[2].get("/after/nospace") == "writes again"
    except BaseException:
        rig.dump_logs()
        raise
    finally:
        rig.stop()
