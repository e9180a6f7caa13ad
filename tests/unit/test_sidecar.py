"""The snapshot sidecar: one type reads the catalog's sidecars (old and new), staged uploads' sidecars and
the same record off the wire, and names the sidecar in every error."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from etcdguard.agent.snapshots.store import SnapshotStore, snapshot_name
from etcdguard.common.snapshot.integrity import Recorded, read_sidecar
from etcdguard.common.snapshot.sidecar import FROM_HEADER, SnapshotMeta
from etcdguard.common.wire.report import SnapshotSummary
from etcdguard.coordinator.vault.entry import Incoming

SHA = "ab" * 32
T = 1_764_583_060.0


def catalog(**kw: object) -> dict[str, object]:
    """A catalog sidecar as the agent writes it (with the hashkv and key count restore drills check)."""
    return {"name": "snap-x.db", "path": "/s/snap-x.db", "size": 10, "sha256": SHA, "revision": 7,
            "created_at": "2025-12-01T09:57:40Z", "created_unix": T, "member": "cp1", "member_id": "a1",
            "cluster_id": "c1", "etcd_version": "3.5.16", "duration_seconds": 1.5,
            "revision_source": "snapshot-status", "total_keys": 3, "etcd_hash": 99, "trailer_verified": True,
            "bundle": None, "pinned": None, "hashkv": 1234567890, "hashkv_compact_revision": 2, "key_count": 3,
            **kw}


def test_a_sidecar_from_before_hashkv_was_recorded_reads_as_not_recorded():
    old = catalog()
    for key in ("hashkv", "hashkv_compact_revision", "key_count"):
        del old[key]
    meta = SnapshotMeta.from_json(old, "old.json")
    assert (meta.hashkv, meta.hashkv_compact_revision, meta.key_count) == (None, None, None)
    assert Incoming.from_agent("cp1", old).hashkv is None
    recorded = Incoming.from_agent("cp1", catalog())
    assert (recorded.hashkv, recorded.hashkv_compact_revision, recorded.key_count) == (1234567890, 2, 3)


def test_a_catalog_sidecar_reads_and_writes_back_the_same_keys():
    meta = SnapshotMeta.from_json(catalog(), "/s/snap-x.db.json")
    assert (meta.where, meta.member, meta.revision, meta.revision_exact, meta.require_revision()) == (
        "/s/snap-x.db.json", "cp1", 7, True, 7)
    assert meta.to_json() == catalog()           # nothing added (no "where"), nothing lost
    assert SnapshotMeta.from_json(catalog(), "elsewhere.json") == meta   # where it was read is not its content
    old = catalog(member_name="cp1")
    del old["member"]
    assert SnapshotMeta.from_json(old, "old.json") == meta


def test_a_staged_uploads_sidecar_has_no_revision():
    staged = {"name": "up1.db", "upload": "up1", "size": 10, "sha256": SHA, "received_at": "2025-12-01T09:57:40Z",
              "received_unix": T, "trailer_verified": True}
    meta = Recorded.from_sidecar(staged, "/st/up1.db.json")
    assert (meta.name, meta.size, meta.sha256, meta.revision, meta.revision_exact, meta.cluster_id, meta.member) == (
        "up1.db", 10, SHA, None, False, "", "")
    with pytest.raises(ValueError, match=r"^/st/up1\.db\.json: no revision recorded"):
        meta.require_revision()


def test_a_lower_bound_revision_is_not_exact():
    assert not SnapshotMeta.from_json(catalog(revision_source=FROM_HEADER), "s.json").revision_exact


@pytest.mark.parametrize(("data", "why"), [
    ([1], "expected an object"),
    ({"size": 1}, "sha256 is missing"),
    ({"sha256": SHA}, "size is missing"),
    ({"sha256": SHA, "size": "10"}, "size: expected an integer"),
    ({"sha256": "AB" * 32, "size": 10}, "are not a digest and a size"),
    ({"sha256": SHA, "size": -1}, "are not a digest and a size"),
    (catalog(revision="7"), "revision: expected an integer"),
    (catalog(member=7), "member: expected a string"),
])
def test_what_is_wrong_is_named_with_the_sidecar(data, why):
    with pytest.raises(ValueError) as info:
        SnapshotMeta.from_json(data, "/s/bad.db.json")
    assert str(info.value).startswith("/s/bad.db.json") and why in str(info.value)


def test_read_sidecar_beside_a_file(tmp_path):
    snap = tmp_path / "s.db"
    assert read_sidecar(snap) is None
    (tmp_path / "s.db.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"s\.db\.json: not JSON"):
        read_sidecar(snap)
    (tmp_path / "s.db.json").write_text(json.dumps(catalog()))
    meta = read_sidecar(snap)
    assert meta is not None and meta.where == str(tmp_path / "s.db.json") and meta.revision == 7


def test_the_vault_reads_the_full_record_and_the_status_summary_alike():
    full = Incoming.from_agent("m1", catalog(bundle="encrypted"))
    summary = SnapshotSummary(name="snap-x.db", size=10, sha256=SHA, revision=7, created_at="2025-12-01T09:57:40Z",
                              created_unix=T, member="cp1", member_id="a1", cluster_id="c1", etcd_version="3.5.16",
                              bundle="encrypted", hashkv=1234567890, hashkv_compact_revision=2, key_count=3)
    assert Incoming.from_agent("m1", summary.to_json()) == full
    assert (full.original_name, full.revision, full.revision_exact, full.bundle) == ("snap-x.db", 7, True, True)
    with pytest.raises(ValueError, match=r"^member m1: snapshot metadata lacks 'name', 'created_unix'$"):
        Incoming.from_agent("m1", {"sha256": SHA, "size": 10})
    with pytest.raises(ValueError, match=r"^member m1: snapshot metadata: sha256 'x'"):
        Incoming.from_agent("m1", catalog(sha256="x"))


def test_the_catalog_lists_only_records_with_a_revision(tmp_path):
    store = SnapshotStore(tmp_path)
    body = os.urandom(64)
    for revision in (5, 6):
        name = snapshot_name(T + revision, revision)
        (tmp_path / name).write_bytes(body + hashlib.sha256(body).digest())
        record = catalog(name=name, path="", revision=revision)
        if revision == 6:
            del record["revision"]   # a staged upload's record copied in by hand, say
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
    listed = store.list()
    assert [(m.revision, m.path) for m in listed] == [(5, str(tmp_path / snapshot_name(T + 5, 5)))]
