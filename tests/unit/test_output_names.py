"""One name for a member (`member`) and one timestamp format in every JSON etcdguard writes or prints;
records and sidecars written under the old names (`member_name`, `source_member`) are still read."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
from etcdguard.common.base.durations import iso_utc, stamp_times
from etcdguard.common.snapshot.integrity import Recorded
from etcdguard.common.snapshot.sidecar import SnapshotMeta
from etcdguard.common.wire.report import SnapshotSummary
from etcdguard.common.wire.typed import from_json, renamed, to_json
from etcdguard.coordinator.agents.view import MemberView, member_row
from etcdguard.coordinator.restore.plan import SnapshotRef
from etcdguard.coordinator.vault.entry import VaultEntry

SHA = "ab" * 32
T = 1_764_583_060.0   # 2025-12-01T09:57:40Z


def _sidecar(**names: str) -> dict:
    return {"name": "snap-x.db", "path": "/s/snap-x.db", "size": 10, "sha256": SHA, "revision": 7,
            "created_at": iso_utc(T), "created_unix": T, "member_id": "a", "cluster_id": "c",
            "etcd_version": "3.5.16", "duration_seconds": 1.0, "revision_source": "snapshot-status", **names}


def test_agent_sidecars_say_member_and_old_ones_are_read():
    new = SnapshotMeta.from_json(_sidecar(member="cp1"), "new.json")
    old = SnapshotMeta.from_json(_sidecar(member_name="cp1"), "old.json")
    assert new == old and new.member == "cp1"
    written = new.to_json()
    assert written["member"] == "cp1" and "member_name" not in written
    assert Recorded.from_sidecar(_sidecar(member_name="cp1"), "old.json").member == "cp1"
    assert Recorded.from_sidecar(written, "new.json").member == "cp1"


def test_status_summaries_and_plans_read_either_name():
    summary = {"name": "s.db", "size": 1, "sha256": SHA, "revision": 1, "created_at": "", "created_unix": 0.0}
    assert from_json(SnapshotSummary, {**summary, "member_name": "cp1"}).member == "cp1"
    assert to_json(from_json(SnapshotSummary, {**summary, "member": "cp2"}))["member"] == "cp2"
    ref = {"id": SHA, "size": 1, "revision": 1, "created_at": "", "created_unix": 0.0}
    old = from_json(SnapshotRef, {**ref, "source_member": "cp3"})   # a journal written before the rename
    assert old.member == "cp3" and from_json(SnapshotRef, {**ref, "member": "cp3"}) == old
    assert "source_member" not in to_json(old) and to_json(old)["member"] == "cp3"
    with pytest.raises(ValueError, match=r"plan\.member is missing"):
        from_json(SnapshotRef, ref, "plan")


def test_renamed_fields_prefer_the_new_name():
    @dataclass(frozen=True)
    class Thing:
        new: str = field(default="", metadata=renamed("older", "oldest"))

    assert from_json(Thing, {"oldest": "a"}).new == "a"
    assert from_json(Thing, {"new": "b", "older": "a"}).new == "b"
    assert from_json(Thing, {}).new == ""


def test_vault_entries_say_member_and_old_sidecars_are_read():
    e = VaultEntry(sha256=SHA, size=1, source_member="cp1", original_name="s.db", revision=1, cluster_id="c",
                   member_id="m", etcd_version="3.5.16", created_at=iso_utc(T), created_unix=T,
                   pulled_at=iso_utc(T), pulled_unix=T)
    side = e.sidecar()
    assert side["member"] == "cp1" and "source_member" not in side
    assert e.to_json()["member"] == "cp1" and "source_member" not in e.to_json()
    old = {**side, "source_member": side.pop("member")}
    assert VaultEntry.from_json(old, "old.json") == VaultEntry.from_json(e.sidecar(), "new.json") == e


def test_status_rows_name_the_member_once():
    row = member_row(MemberView("cp1", "tcp://a:1", False, error="down"), now=T)
    assert row["member"] == "cp1" and "name" not in row


def test_timestamps_are_iso_utc_with_the_number_beside():
    out = stamp_times({"op": "r1", "created_at": T, "finished_at": T + 60, "created_unix": T,
                       "steps": [{"started_at": T}], "pulled_at": "2025-12-01T09:57:40Z", "ok_at": True})
    assert out == {"op": "r1", "created_at": "2025-12-01T09:57:40Z", "created_unix": T,
                   "finished_at": "2025-12-01T09:58:40Z", "finished_unix": T + 60,
                   "steps": [{"started_at": "2025-12-01T09:57:40Z", "started_unix": T}],
                   "pulled_at": "2025-12-01T09:57:40Z", "ok_at": True}
    json.dumps(out)
