"""Restore drills for real: a coordinator daemon restores vault snapshots of a real etcd member into a
scratch etcd, proves them against what the agent's code recorded at take time, shows the result in
status, snapshots and its metrics, and leaves no process or file behind. A snapshot whose content was
altered and re-signed (its sha256 and etcd's trailer both match again), or whose recorded hashkv was
rewritten, fails with the reason and the failure metric the alert reads."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from etcdguard.agent.discovery.member import ClientTLS
from etcdguard.agent.snapshots.take import Source, save_to_file
from etcdguard.common.snapshot import compression
from etcdguard.common.snapshot.sidecar import SnapshotMeta
from etcdguard.common.snapshot.tools import probe_tool
from etcdguard.coordinator.vault.entry import Incoming
from etcdguard.coordinator.vault.store import Vault

from tests.helpers.agentconf import render_toml
from tests.helpers.coordinator import Coordinator, scrape
from tests.helpers.etcd import EtcdMember
from tests.helpers.net import free_port, wait_until

CANARY = "drill-canary-" + "7" * 40


def take(member: EtcdMember, path: Path) -> SnapshotMeta:
    """A snapshot as the agent takes one: verified, its hashkv and key count recorded at its revision."""
    return save_to_file(Source(member.client_url, ClientTLS(None, None, None), "m1"), path,
                        tool=probe_tool(member.build.restore_tool))


def fill(member: EtcdMember) -> None:
    for i in range(120):
        member.put(f"/registry/configmaps/ns-{i % 5}/cm-{i:04d}", json.dumps({"data": {"i": i, "v": "x" * 300}}))
    member.put("/registry/secrets/kube-system/canary", CANARY)
    member.etcdctl("del", "/registry/configmaps/ns-0/cm-0000")    # history: a delete, then more writes
    member.put("/registry/configmaps/ns-0/cm-0001", "rewritten")


def start_coordinator(tmp_path: Path, member: EtcdMember, port: int) -> Coordinator:
    run = tmp_path / "run"
    run.mkdir(mode=0o750)
    cfg = tmp_path / "coordinator.toml"
    cfg.write_text(render_toml({
        "coordinator": {"state_dir": str(tmp_path / "state"), "insecure": True,
                        "control_socket": str(run / "c.sock"), "request_timeout": "1s"},
        "vault": {"dir": str(tmp_path / "vault")},
        "scratch": {"etcd": str(member.build.etcd), "tool": str(member.build.restore_tool)},
        "drill": {"interval": "1h", "sample_keys": 16},
        "metrics": {"listen": f"127.0.0.1:{port}"},
        "members": [{"name": "m1", "agent": "tcp://127.0.0.1:9"}],   # drills never ask an agent
    }))
    coord = Coordinator(cfg, tmp_path / "coordinator.log")
    coord.start()
    coord.wait_ready()
    return coord


def scratch_leftovers(tmp_path: Path) -> list[str]:
    """Files under the scratch directory and processes whose command line names it: none after a drill."""
    scratch = tmp_path / "state" / "scratch"
    files = [str(p) for p in scratch.rglob("*")] if scratch.exists() else []
    procs = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(scratch) in cmdline:
                procs.append(f"{pid}: {cmdline[:200]}")
    return files + procs


def drill_metrics(port: int) -> dict[str, float]:
    return {k: v for k, v in scrape(port).items() if k.startswith("etcdguard_drill_")}


@pytest.mark.slow
@pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)
def test_a_scheduled_drill_proves_a_good_snapshot_and_altered_ones_fail_with_their_reason(
        tmp_path: Path, etcd_member: EtcdMember) -> None:
    fill(etcd_member)
    snap = tmp_path / "good.db"
    meta = take(etcd_member, snap)
    assert meta.hashkv is not None and meta.key_count is not None and meta.key_count >= 120
    vault = Vault(tmp_path / "vault", compression=compression.ZSTD)
    vault.prepare()
    good, _ = vault.add_file(snap, Incoming.from_agent("m1", meta.to_json()))
    port = free_port()
    coord = start_coordinator(tmp_path, etcd_member, port)
    try:
        # 1. the scheduled drill runs at start (no drill has passed yet) and proves the snapshot
        wait_until(lambda: drill_metrics(port).get("etcdguard_drill_last_result") == 1, 90, interval=0.2,
                   what="the scheduled drill to pass")
        m = drill_metrics(port)
        assert m["etcdguard_drill_last_success_timestamp_seconds"] > 0 and m["etcdguard_drill_enabled"] == 1
        assert m["etcdguard_drill_age_seconds"] < 120 and m["etcdguard_drill_interval_seconds"] == 3600
        assert m["etcdguard_drill_duration_seconds_count"] == 1
        assert sum(v for k, v in m.items() if k.startswith("etcdguard_drill_failures_total{")) == 0
        drills = coord.ctl_json("status")["drills"]
        last = drills["last"]
        assert drills["enabled"] and drills["runnable"] and drills["state"].startswith("on, with ")
        assert (last["ok"], last["sha256"], last["kind"], last["revision"]) == (True, good.sha256, "scheduled",
                                                                                 meta.revision)
        assert {c["name"]: c["ok"] for c in last["checks"]} == {
            "serves": True, "revision": True, "key_count": True, "hashkv": True, "sample": True}
        assert f"hashkv {meta.hashkv} at revision {meta.revision}, as recorded" in json.dumps(last["checks"])
        assert "16 sampled keys read back" in json.dumps(last["checks"])
        assert "removed" in last["cleanup"] and scratch_leftovers(tmp_path) == []
        assert 0 < drills["next_in_seconds"] <= 3600
        text = coord.ctl("status").stdout
        assert "drills: on, with" in text and f"ago ({good.sha256[:12]}, revision {meta.revision}, " in text
        listed = {e["sha256"]: e for e in coord.ctl_json("snapshots")}
        assert listed[good.sha256]["drill"]["ok"] and listed[good.sha256]["proven_unix"] == last["started_unix"]
        assert listed[good.sha256]["compression"] == "zstd" and 0 < listed[good.sha256]["stored_size"] < good.size
        assert "PROVEN" in coord.ctl("snapshots").stdout

        # 2. the recorded hashkv rewritten (the sidecar re-signed): sha256 and trailer still match
        sidecar = tmp_path / "vault" / f"{good.sha256}.json"
        data = json.loads(sidecar.read_text())
        data["hashkv"] = (meta.hashkv + 1) % (1 << 32)
        sidecar.write_text(json.dumps(data))
        r = coord.ctl("drill", good.sha256[:12])
        assert r.returncode == 1, r.stderr + r.stdout
        assert "FAILED (hashkv)" in r.stdout and "the snapshot does not hold the data it was taken with" in r.stdout
        assert "what to do" in r.stdout
        m = drill_metrics(port)
        assert m['etcdguard_drill_failures_total{reason="hashkv"}'] == 1 and m["etcdguard_drill_last_result"] == 0
        assert scratch_leftovers(tmp_path) == []
        row = next(line for line in coord.ctl("snapshots").stdout.splitlines() if line.startswith(good.sha256[:12]))
        assert "FAILED (hashkv), before:" in row
        assert "LAST DRILL FAILED" in coord.ctl("status").stdout
        sidecar.write_text(json.dumps({**data, "hashkv": meta.hashkv}))

        # 3. the content altered and re-signed: a value flipped inside the database, etcd's trailer and the
        #    sha256 computed again, stored with what was recorded when the original was taken
        altered = tmp_path / "altered.db"
        body = snap.read_bytes()[:-32]
        assert CANARY.encode() in body
        # every copy of the value (bbolt keeps stale copies in free pages, which change nothing if flipped alone)
        raw = body.replace(CANARY.encode(), CANARY[:-1].encode() + b"8")
        altered.write_bytes(raw + hashlib.sha256(raw).digest())
        resigned = dataclasses.replace(Incoming.from_agent("m1", meta.to_json()),
                                       sha256=hashlib.sha256(altered.read_bytes()).hexdigest(), kind="manual")
        bad, _ = vault.add_file(altered, resigned)
        reply = json.loads(coord.ctl("drill", bad.sha256[:12], "--json").stdout)
        (result,) = reply["drills"]
        assert reply["ok"] is False and (result["ok"], result["reason"]) == (False, "hashkv")
        checks = {c["name"]: c["ok"] for c in result["checks"]}
        assert checks == {"serves": True, "revision": True, "key_count": True, "hashkv": False, "sample": True}
        m = drill_metrics(port)
        assert m['etcdguard_drill_failures_total{reason="hashkv"}'] == 2 and m["etcdguard_drill_last_result"] == 0
        assert scratch_leftovers(tmp_path) == []

        # 4. the good one again: the metric the alert reads clears
        assert coord.ctl("drill", good.sha256[:12]).returncode == 0
        assert drill_metrics(port)["etcdguard_drill_last_result"] == 1
        persisted = json.loads((tmp_path / "state" / "drills.json").read_text())
        assert persisted["entries"][bad.sha256]["proven_at"] is None
        assert persisted["entries"][good.sha256]["last"]["ok"] is True
    except BaseException:
        print(coord.log_tail(80))
        raise
    finally:
        coord.stop()
    assert scratch_leftovers(tmp_path) == []


@pytest.mark.parametrize("etcd_build", ["3.4"], indirect=True)
def test_an_entry_from_before_hashkv_was_recorded_is_drilled_for_what_it_has(tmp_path: Path,
                                                                           etcd_member: EtcdMember) -> None:
    """An old vault entry (no hashkv or key count recorded, stored uncompressed) is restored, served and read
    back, and the drill says which checks it could not make; etcd 3.4's etcdctl restores it."""
    fill(etcd_member)
    snap = tmp_path / "old.db"
    meta = take(etcd_member, snap)
    old = {k: v for k, v in meta.to_json().items() if k not in ("hashkv", "hashkv_compact_revision", "key_count")}
    vault = Vault(tmp_path / "vault")
    vault.prepare()
    entry, _ = vault.add_file(snap, Incoming.from_agent("m1", old))
    assert entry.hashkv is None and entry.compression == ""
    port = free_port()
    coord = start_coordinator(tmp_path, etcd_member, port)
    try:
        reply: Any = json.loads(coord.ctl("drill", "--json").stdout)
        (result,) = reply["drills"]
        assert result["ok"] and result["unchecked"] == ["key_count", "hashkv"]
        assert "(key_count, hashkv not recorded at take time, not checked)" in result["message"]
        assert "hashkv was not recorded" in coord.ctl("drill", entry.sha256[:8]).stdout
        assert scratch_leftovers(tmp_path) == []
    finally:
        coord.stop()
