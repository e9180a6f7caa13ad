"""Continuous backup and point-in-time restore for real: three etcd members, three agents, a coordinator.

Under a Kubernetes-like load the capture writes segments to the vault; the cluster is then restored to
revisions recorded while the load ran (``etcdctl get --prefix / --rev R`` as data), and every member
must hold exactly that, with one hashkv. The capturing agent is killed mid-stream and another one
continues with no gap; the coordinator restarts and resumes from the vault; etcd compacts past the
capture and the gap is recorded, a full snapshot taken at once, and counted.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest
from etcdguard.common.capture.segment import LEASE
from etcdguard.common.etcd.client import EtcdClient
from etcdguard.common.etcd.writes import EtcdWriter
from etcdguard.coordinator.vault.store import Vault

from tests.helpers.churn import Churn, state_at
from tests.helpers.etcd import EtcdBuild, EtcdCluster
from tests.helpers.net import wait_until
from tests.helpers.restore_rig import RestoreRig

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)]


def sections(build: EtcdBuild, **continuous: Any) -> dict[str, dict[str, Any]]:
    return {"continuous": {"enabled": True, "flush": "1s", **continuous},
            "scratch": {"etcd": str(build.etcd), "tool": str(build.restore_tool)}}


def writer_of(cluster: EtcdCluster, i: int = 0) -> EtcdWriter:
    return EtcdWriter(EtcdClient(cluster.members[i].client_url, timeout=10.0))


def continuous(rig: RestoreRig) -> dict[str, Any]:
    return dict(rig.ctl_json("status")["continuous"])


def wait_written(rig: RestoreRig, revision: int, timeout: float = 60) -> dict[str, Any]:
    """The status once the vault's segments hold ``revision``."""
    return wait_until(lambda: (c := continuous(rig))["written_revision"] and c["written_revision"] >= revision
                      and c, timeout, interval=0.3, what=f"revision {revision} in the vault's segments")


def captured(rig: RestoreRig) -> list[Any]:
    """Every segment in the vault, read back (the coordinator's own reader), by cluster then revision."""
    vault = Vault(rig.tmp / "vault")
    return [vault.segments.read(s) for s in vault.segments.refresh()]


def assert_contiguous(segments: list[Any], first: int, last: int) -> list[Any]:
    """Non-gap segments cover first..last with every revision present once; their events."""
    events = [e for s in segments if not s.gap for e in s.events if first <= e.revision <= last]
    revisions = sorted({e.revision for e in events if e.kind != LEASE})
    assert revisions == list(range(first, last + 1)), (revisions[:5], revisions[-5:], first, last)
    return events


def assert_cluster_at(cluster: EtcdCluster, expected: list[tuple[bytes, bytes, int]]) -> None:
    """Every member holds exactly ``expected`` (keys, values, leases), with one hashkv."""
    for i, m in enumerate(cluster.members):
        got = state_at(writer_of(cluster, i))
        assert got == expected, (m.name, len(got), len(expected),
                                 sorted(set(got) ^ set(expected))[:3])
    revisions = {int(s["header"]["revision"]) for s in cluster.statuses().values()}
    hashes = cluster.hashkvs(min(revisions))
    assert len(set(hashes.values())) == 1, hashes


def test_restore_to_revisions_recorded_under_a_kubernetes_like_load(etcd_cluster3, tmp_path, etcd_build):
    cluster = etcd_cluster3
    rig = RestoreRig(cluster, tmp_path, coordinator_sections=sections(etcd_build))
    try:
        rig.start()
        writer = writer_of(cluster)
        churn = Churn(writer, seed=19)
        churn.run(40)
        base = rig.backup()
        revisions = churn.run(400)
        later = [r for r in revisions if r > base["revision"]]
        points = [later[5], later[len(later) // 2], later[-1]]
        recorded = {r: state_at(writer, r) for r in points}       # before any compaction
        assert all(recorded[r] for r in points)
        wait_written(rig, later[-1])

        # history: every captured change under a prefix, as etcd's own history has it
        pods = rig.ctl_json("history", "/registry/pods/", "--limit", "100000")
        pod_changes = {(c["revision"], c["key"]): c for c in pods["changes"]}
        now = {k: v for k, v, _ in state_at(writer, later[0])}
        for r in later[1:]:
            before, now = now, {k: v for k, v, _ in state_at(writer, r)}
            for key in set(before) | set(now):
                if key.startswith(b"/registry/pods/") and before.get(key) != now.get(key):
                    change = pod_changes[(r, key.decode())]
                    assert change["kind"] == ("delete" if key not in now else "put")
                    assert change["kind"] == "delete" or change["value_size"] == len(now[key])
        assert all(c["key"].startswith("/registry/pods/") for c in pods["changes"])
        text = rig.ctl("history", "/registry/pods/", "--since", "10m").stdout
        assert "REVISION" in text and "restore --to-revision" in text and "gaps: none" in text

        plan = rig.ctl_json("restore", "--to-revision", str(points[1]), "--plan")
        p = plan["point_in_time"]
        assert p["revision"] == points[1] and p["base"]["id"] == base["sha256"]
        assert p["replay"]["revisions"] == points[1] - base["revision"] and p["replay"]["events"] >= p["replay"][
            "revisions"]
        assert plan["discarded_revisions"] == later[-1] - points[1]
        assert p["window"][-1]["first_revision"] <= base["revision"] and p["window"][-1]["last_revision"] >= later[-1]
        text = rig.ctl("restore", "--to-revision", str(points[1]), "--plan")
        assert text.returncode == 0 and "any point from" in text.stdout and "gaps: none" in text.stdout
        # --to-time names the newest revision the capture had seen by then
        every = rig.ctl_json("history", "/", "--limit", "100000")["changes"]
        moment = next(c for c in every if c["revision"] == points[1])["at_ms"]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment // 1000)) + f".{moment % 1000:03d}Z"
        by_time = rig.ctl_json("restore", "--to-time", stamp, "--plan")["point_in_time"]
        assert by_time["revision"] == max(c["revision"] for c in every if c["at_ms"] <= moment)
        assert by_time["asked_at"] and by_time["revision"] >= points[1]
        late = rig.ctl("restore", "--to-time", "2099-01-01T00:00:00Z", "--plan", "--json")
        assert late.returncode == 2 and "outside the restorable window" in json.loads(late.stdout)["error"]

        # a drill of a point in time builds it (stored pinned, as a restore would) and proves it restores
        drilled = rig.ctl("drill", "--to-revision", str(points[0]), "--json")
        assert drilled.returncode == 0, f"{drilled.stderr}\n{drilled.stdout}"
        [result] = json.loads(drilled.stdout)["drills"]
        assert result["ok"] and result["revision"] == points[0] and result["kind"] == "point-in-time"
        assert {c["name"]: c["ok"] for c in result["checks"]}["revision"] is True
        assert "replayed" in drilled.stderr

        used = {}
        for r in points:
            result = rig.ctl("restore", "--to-revision", str(r), "--yes", "--json")
            assert result.returncode == 0, f"{result.stderr}\n{result.stdout}\n{rig.coordinator.log_tail(80)}"
            summary = json.loads(result.stdout)
            assert summary["state"] == "done" and summary["point_in_time"]["revision"] == r
            used[r] = summary["point_in_time"]["snapshot"]
            assert "replayed" in result.stderr or "nothing to build" in result.stderr
            assert_cluster_at(cluster, recorded[r])
        entries = {e["sha256"]: e for e in rig.ctl_json("snapshots")}
        assert all(entries[sha]["revision"] == r for r, sha in used.items())
        # built points are pinned entries of their own kind; the newest point is the pre-restore snapshot the
        # second restore took at exactly that revision, so it was restored as it is, with nothing to build
        assert [entries[used[r]]["kind"] for r in points] == ["point-in-time", "point-in-time", "pre-restore"]
        assert all(entries[used[r]]["pinned"] for r in points)
    except BaseException:
        rig.dump_logs()
        raise
    finally:
        rig.stop()


def test_the_capturing_agent_killed_mid_stream_another_continues_with_no_gap(etcd_cluster3, tmp_path, etcd_build):
    cluster = etcd_cluster3
    rig = RestoreRig(cluster, tmp_path, coordinator_sections=sections(etcd_build))
    try:
        rig.start()
        writer = writer_of(cluster)
        churn = Churn(writer, seed=7)
        churn.run(20)
        rig.backup()
        first = wait_until(lambda: (c := continuous(rig))["running"] and c, 30, what="the capture running")
        start = churn.revisions[-1]
        churn.run(150)
        wait_written(rig, churn.revisions[-1])
        victim = next(a for a in rig.agents if a.member.name == first["member"])
        churn.run(50)                                      # writes the victim may or may not have read
        os.kill(victim.pid, signal.SIGKILL)
        churn.run(150)                                     # the load goes on while the capture moves
        after = wait_written(rig, churn.revisions[-1], timeout=90)
        assert after["member"] != victim.member.name and after["running"]
        assert after["gaps"] == [] and after["gaps_recorded"] == 0
        events = assert_contiguous(captured(rig), start + 1, churn.revisions[-1])
        history = {(e.revision, e.key, e.kind): e.value for e in events if e.kind != LEASE}
        # what the capture stored is what etcd's own history holds, revision by revision
        for r in churn.revisions[-160:]:
            for key, value, _ in state_at(writer, r):
                if (r, key, "put") in history:
                    assert history[(r, key, "put")] == value
        status = rig.ctl("status")
        assert "continuous backup: capturing on member" in status.stdout and "gaps: none" in status.stdout
    except BaseException:
        rig.dump_logs()
        raise
    finally:
        rig.stop()


def test_a_coordinator_restart_resumes_and_a_compaction_past_the_capture_is_a_recorded_gap(
        etcd_cluster3, tmp_path, etcd_build):
    cluster = etcd_cluster3
    rig = RestoreRig(cluster, tmp_path, coordinator_sections=sections(etcd_build))
    try:
        rig.start()
        writer = writer_of(cluster)
        churn = Churn(writer, seed=3)
        churn.run(20)
        rig.backup()
        churn.run(50)
        wait_written(rig, churn.revisions[-1])
        rig.kill_coordinator()
        resumed_from = churn.revisions[-1]
        churn.run(50)                                      # while no coordinator runs
        rig.start_coordinator()
        wait_written(rig, churn.revisions[-1])
        assert_contiguous(captured(rig), resumed_from - 10, churn.revisions[-1])

        # a coordinator down long enough that no agent holds the changes any more (an agent keeps an unread
        # capture for 30 s, so here the agents restart), and etcd compacts meanwhile
        rig.kill_coordinator()
        for agent in rig.agents:
            agent.stop()
            agent.start()
        lost_from = churn.revisions[-1] + 1
        churn.run(50)
        compacted = churn.revisions[-1]
        cluster.etcdctl("compact", str(compacted))
        rig.start_coordinator()
        c = wait_until(lambda: (s := continuous(rig))["gaps"] and s, 60, what="the gap recorded")
        assert c["gaps"][0]["first_revision"] == lost_from and c["gaps"][0]["last_revision"] == compacted
        assert c["gaps_recorded"] == 1
        metrics = rig.metrics()
        assert metrics["etcdguard_continuous_gaps_total"] == 1
        # what EtcdguardContinuousGap reads: a gap found within the hour
        assert 0 < time.time() - metrics["etcdguard_continuous_last_gap_timestamp_seconds"] < 600
        # a full snapshot taken at once, at or past the gap: the window starts again there
        fresh = wait_until(lambda: [e for e in rig.ctl_json("snapshots") if e["revision"] >= compacted], 60,
                           what="a full snapshot after the gap")
        assert fresh
        churn.run(30)
        c = wait_written(rig, churn.revisions[-1])
        window = c["window"][-1]
        assert window["first_revision"] >= compacted and window["last_revision"] >= churn.revisions[-1]
        segments = captured(rig)
        assert [(s.first, s.last) for s in segments if s.gap] == [(lost_from, compacted)]
        refused = rig.ctl("restore", "--to-revision", str(lost_from + 3), "--plan", "--json")
        assert refused.returncode == 2 and "gap" in json.loads(refused.stdout)["error"]
        assert "GAP" in rig.coordinator.log_tail(200)

        # the same with the coordinator up all along: every agent down while etcd compacts
        for agent in rig.agents:
            agent.kill()
        second_from = churn.revisions[-1] + 1
        churn.run(20)
        cluster.etcdctl("compact", str(churn.revisions[-1]))
        for agent in rig.agents:
            agent.start()
        c = wait_until(lambda: len((s := continuous(rig))["gaps"]) == 2 and s, 90, what="the second gap")
        assert (c["gaps"][1]["first_revision"], c["gaps"][1]["last_revision"]) == (second_from, churn.revisions[-1])
        assert rig.metrics()["etcdguard_continuous_gaps_total"] == 2
    except BaseException:
        rig.dump_logs()
        raise
    finally:
        rig.stop()
