"""Replacing one lost member while the others keep quorum: for real, three etcd members, agents, a coordinator.

m3's etcd is SIGKILLed and its data dir deleted: the cluster keeps serving on
m1 and m2. `etcdguardctl replace m3 --yes` removes it, sets what is left of
its data aside, adds it back as a learner, starts it to join, waits until it
caught up, promotes it and confirms the cluster whole: one cluster id as
before, no key and no revision lost, the same hashkv everywhere, and every
write acknowledged during the replacement present on all three.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest

from tests.e2e.conftest import KEYS
from tests.helpers.etcd import EtcdCluster, EtcdMember
from tests.helpers.restore_rig import RestoreRig, phase_done, state_of
from tests.helpers.writer import Writer

pytestmark = pytest.mark.slow


def lose(member: EtcdMember) -> None:
    """The member's VM or disk is gone: its etcd killed, its data dir deleted."""
    member.stop(kill=True)
    shutil.rmtree(member.data_dir)


def cluster_id(m: EtcdMember) -> int:
    return int(m.status()["header"]["cluster_id"])


def assert_whole(cluster: EtcdCluster, old_cluster_id: int, revision_before: int, writer: Writer) -> None:
    statuses = cluster.statuses()
    assert sorted(statuses) == ["m1", "m2", "m3"], statuses
    assert {int(s["header"]["cluster_id"]) for s in statuses.values()} == {old_cluster_id}
    revisions = {int(s["header"]["revision"]) for s in statuses.values()}
    assert min(revisions) >= revision_before
    hashes = cluster.hashkvs(min(revisions))
    assert len(set(hashes.values())) == 1, hashes
    members = json.loads(cluster.etcdctl("member", "list", "-w", "json").stdout)["members"]
    assert sorted((m["name"], m["peerURLs"][0]) for m in members) == sorted(
        (m.name, m.peer_url) for m in cluster.members)
    assert not any(m.get("isLearner") for m in members)
    for m in cluster.members:
        assert m.get("/registry/demo/k007") == "value-7", m.name
        keys = m.etcdctl("get", "--prefix", "/registry/demo/", "--keys-only").stdout.split()
        assert len(keys) == KEYS, m.name
        assert writer.missing_on(m) == [], m.name


def replace(rig: RestoreRig, *args: str) -> dict[str, Any]:
    r = rig.ctl("replace", *args, "--json", timeout=300)
    assert r.returncode == 0, f"{r.stderr}\n{r.stdout}"
    return dict(json.loads(r.stdout))


@pytest.mark.parametrize("etcd_build", ["3.5", "3.4"], indirect=True)
def test_a_lost_member_is_replaced_while_writes_go_on(rig: RestoreRig) -> None:
    cluster = rig.cluster
    m1, m2, m3 = cluster.members
    old_id = cluster_id(m1)
    lose(m3)
    revision_before = int(m1.status()["header"]["revision"])

    plan = rig.ctl_json("replace", "m3", "--plan")
    assert plan["refused"] is False, plan["refusals"]
    assert [p["phase"] for p in plan["phases"]] == ["health-check", "retire", "set-aside", "remove", "add-learner",
                                                    "join", "catch-up", "promote", "settle", "confirm"]
    assert m3.is_running() is False                 # --plan changed nothing

    with Writer([m1, m2]) as writer:
        summary = replace(rig, "m3", "--yes", "--plan-id", plan["plan_id"])
    assert summary["state"] == "done", summary
    assert len(writer.acked) > 20 and summary["time_to_healthy_seconds"] > 0
    cluster.wait_healthy(30)
    assert_whole(cluster, old_id, revision_before, writer)
    # the agent's own operation is closed; the coordinator lists it as done
    assert [(r["op"], r["state"]) for r in rig.ctl_json("restores")] == [(summary["op"], "done")]
    # nothing but the start command of the process runtime changed: the agent config is as it was
    assert rig.agents[2].sections["etcd"]["start_command"] == m3.command
