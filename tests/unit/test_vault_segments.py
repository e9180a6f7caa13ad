"""Continuous backup's segments in a directory vault: names, listing, reading back, retention."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from etcdguard.common.capture.segment import PUT, Event, SegmentError, SegmentInfo, encode
from etcdguard.coordinator.vault.backends import VaultBackendError
from etcdguard.coordinator.vault.entry import POINT_IN_TIME, PRE_RESTORE, SCHEDULED, VaultEntry
from etcdguard.coordinator.vault.segments import StoredSegment, to_prune
from etcdguard.coordinator.vault.store import Vault

CID = "7e3a1c0f"


def entry(revision: int, cluster: str = CID, kind: str = SCHEDULED) -> VaultEntry:
    return VaultEntry(sha256=f"{revision:064x}", size=1, source_member="m1", original_name="s.db", revision=revision,
                      cluster_id=cluster, member_id="1", etcd_version="3.5.30", created_at="", created_unix=0.0,
                      pulled_at="", pulled_unix=0.0, kind=kind)


def seg(first: int, last: int, cluster: str = CID, gap: bool = False) -> StoredSegment:
    return StoredSegment(cluster, SegmentInfo(first, last, first * 10, last * 10, gap))


def encoded(first: int, last: int, cluster: str = CID) -> tuple[SegmentInfo, bytes]:
    events = [Event(r, 1_700_000_000_000 + r, PUT, f"/k{r}".encode(), b"v") for r in range(first, last + 1)]
    return encode(events, cluster_id=cluster, member="m1", first=first, last=last)


def test_object_names_carry_cluster_ranges_and_encryption():
    s = StoredSegment(CID, SegmentInfo(5, 9, 1000, 2000), 10, True)
    assert s.name == f"{CID}/seg-{5:020d}-{9:020d}-1000-2000.jsonl.age"
    assert StoredSegment.parse(s.name, 10) == s
    gap = seg(3, 4, gap=True)
    assert StoredSegment.parse(gap.name, 0) == gap
    for bad in ("seg-x.jsonl", f"{CID}/other.txt", f"XY/{gap.info.name}", f"{CID}/a/{gap.info.name}", ""):
        assert StoredSegment.parse(bad, 0) is None, bad


def test_retention_keeps_segments_after_the_oldest_kept_snapshot_of_each_cluster():
    segments = [seg(1, 10), seg(11, 20), seg(21, 30), seg(31, 35, gap=True), seg(36, 40),
                seg(5, 9, cluster="aa"), seg(1, 4, cluster="bb")]
    kept = [entry(20), entry(38), entry(15, kind=PRE_RESTORE), entry(2, kind=POINT_IN_TIME)]
    gone = to_prune(segments, kept, live_cluster="bb")
    # cluster CID: oldest base 15 (a point-in-time entry is no base) -> 1..10 goes; 11..20 is needed from 15 on;
    # cluster aa has no kept snapshot and is not captured: all go; bb is the one captured now: kept
    assert gone == [seg(1, 10), seg(5, 9, cluster="aa")]
    assert to_prune(segments, [], live_cluster=CID) == [seg(5, 9, cluster="aa"), seg(1, 4, cluster="bb")]


def test_write_list_read_back_and_delete(tmp_path: Path):
    vault = Vault(tmp_path / "vault")
    vault.prepare()
    info, data = encoded(5, 9)
    stored = vault.segments.write(CID, info, data)
    assert (tmp_path / "vault" / "segments" / CID / info.name).read_bytes() == data
    assert stored.size == len(data) and not stored.encrypted
    again = Vault(tmp_path / "vault")          # a restarted coordinator knows it from the listing alone
    assert again.segments.refresh() == (stored,)
    assert [e.revision for e in again.segments.read(stored).events] == [5, 6, 7, 8, 9]
    assert vault.list() == []                  # segments are not snapshots
    again.segments.delete(stored)
    assert not (tmp_path / "vault" / "segments" / CID).exists()
    assert again.segments.catalog.view() == ()


def test_an_altered_or_renamed_segment_is_refused(tmp_path: Path):
    vault = Vault(tmp_path / "vault")
    info, data = encoded(5, 9)
    stored = vault.segments.write(CID, info, data)
    path = tmp_path / "vault" / "segments" / CID / info.name
    path.write_bytes(data.replace(b'"dg=="', b'"dw=="', 1))
    with pytest.raises(SegmentError, match="sha256"):
        vault.segments.read(stored)
    _, other = encoded(10, 12)
    path.write_bytes(other)
    with pytest.raises(SegmentError, match="its name another"):
        vault.segments.read(stored)
    path.unlink()
    with pytest.raises(VaultBackendError, match="missing"):
        vault.segments.read(stored)


def test_a_listing_that_started_before_a_write_keeps_it(tmp_path: Path):
    vault = Vault(tmp_path / "vault")
    catalog = vault.segments.catalog
    catalog.answered([], started=0.0)
    info, data = encoded(1, 2)
    stored = vault.segments.write(CID, info, data)
    catalog.answered([], started=0.0)           # that listing began before the write
    assert catalog.view() == (stored,)
    later = dataclasses.replace(stored, size=stored.size)
    catalog.answered([later], started=1e12)
    assert catalog.view() == (later,)


def test_retention_prunes_segments_with_the_snapshots(tmp_path: Path):
    vault = Vault(tmp_path / "vault")
    vault.prepare()
    for first, last in ((1, 4), (5, 9)):
        vault.segments.write(CID, *encoded(first, last))
    vault.segments.refresh()
    vault.segments.prune([entry(4)])
    assert [s.info.first for s in vault.segments.refresh()] == [5]
