"""Continuous backup's pure decisions: who captures, when a segment is written, the lag, the window, the
point a time names, what a replay applies, and the moments operators write."""

from __future__ import annotations

import pytest
from etcdguard.common.base.errors import UsageError
from etcdguard.common.capture.segment import DELETE, LEASE, PUT, Event, Segment, SegmentInfo
from etcdguard.common.wire.report import AgentInfo, AgentReport, EtcdHealth, MemberConfig
from etcdguard.coordinator.agents.view import MemberView
from etcdguard.coordinator.continuous.choice import choose_capturer
from etcdguard.coordinator.continuous.lag import SyncPoints
from etcdguard.coordinator.continuous.pending import Discontinuous, Pending, check_batch
from etcdguard.coordinator.pitr.scan import changes, count_replay, revision_at
from etcdguard.coordinator.pitr.times import parse_moment
from etcdguard.coordinator.pitr.window import PointError, choose, revision_at_time, spans
from etcdguard.coordinator.vault.entry import POINT_IN_TIME, SCHEDULED, VaultEntry
from etcdguard.coordinator.vault.segments import StoredSegment

CID = "c1"


def view(name: str, leader: bool = False, healthy: bool = True, cluster: str = CID) -> MemberView:
    import time

    from etcdguard.common.base.durations import iso_utc

    etcd = EtcdHealth(healthy=healthy, is_leader=leader, cluster_id=cluster, revision=100,
                      measured_at=iso_utc(time.time()), age=0.0, leader="1" if healthy else None)
    report = AgentReport(agent=AgentInfo(version="t"), member=MemberConfig(name=name, data_dir="/d"), etcd=etcd)
    return MemberView(name, f"tcp://{name}:7479", True, report=report)


def test_the_capture_prefers_a_follower_and_stays_where_it_is():
    views = [view("m1", leader=True), view("m2"), view("m3")]
    c = choose_capturer(views)
    assert (c.member, c.cluster_id, c.revision) == ("m2", CID, 100) and "follower" in c.sentence
    assert choose_capturer(views, current="m3").member == "m3"
    assert choose_capturer(views, current="m2", avoid={"m2"}).member == "m3"
    assert choose_capturer([view("m1", leader=True), view("m2", healthy=False)]).member == "m1"
    assert choose_capturer([view("m1", healthy=False)]).member is None
    # a member split off into another cluster is no candidate
    split = [view("m1", leader=True), view("m2"), view("m3", cluster="other")]
    assert choose_capturer(split, current="m3").member == "m2"
    assert choose_capturer(views, avoid={"m1", "m2", "m3"}).member == "m2"    # all failed just now: try again


def ev(r: int, key: str = "/k", kind: str = PUT, t: int = 0, value: bytes = b"v", lease: int = 0) -> Event:
    return Event(r, t or r * 1000, kind, key.encode(), value if kind == PUT else b"", lease if kind == PUT else 0)


def test_a_batch_must_continue_exactly_where_the_capture_is():
    check_batch([ev(11), ev(11, "/b"), ev(12), ev(13)], 10, 13)
    check_batch([], 10, 10)
    with pytest.raises(Discontinuous, match="revision 12 where 11"):
        check_batch([ev(12)], 10, 12)
    with pytest.raises(Discontinuous, match="holds revision 13 where 12"):
        check_batch([ev(11), ev(13)], 10, 13)
    with pytest.raises(Discontinuous, match="ends at revision 11, it says 12"):
        check_batch([ev(11)], 10, 12)


def test_segments_are_due_by_time_or_size_and_hold_whole_revisions():
    p = Pending(written=10)
    assert not p.due(100.0, 5.0, 1000)
    p.add([ev(11), ev(11, "/b"), ev(12)], now=100.0)
    assert not p.due(104.0, 5.0, 1 << 20) and p.due(105.0, 5.0, 1 << 20) and p.due(100.0, 5.0, 10)
    first, last, events = p.segment(size=1)          # the size bound never splits a revision
    assert (first, last, [e.revision for e in events]) == (11, 11, [11, 11])
    p.written_through(11, now=106.0)
    assert p.written == 11 and [e.revision for e in p.events] == [12] and p.since == 100.0
    first, last, events = p.segment(size=1 << 20)
    assert (first, last) == (12, 12)
    p.written_through(12, now=107.0)
    assert p.events == [] and p.since is None and p.bytes == 0 and p.last == 12
    p.skip_to(40)
    assert p.written == 40 and p.last == 40


def test_lag_is_the_time_since_the_vault_held_everything_etcd_had():
    s = SyncPoints(started=1000.0)
    assert s.lag(1010.0) == 10.0                    # never caught up: since the capture started
    s.observe(50, at=1001.0)
    s.observe(60, at=1003.0)
    s.stored(55)
    assert s.caught_up_at == 1001.0 and s.lag(1004.0) == 3.0
    s.stored(60)
    assert s.lag(1004.0) == 1.0
    s.observe(60, at=1008.0)                         # the same revision seen later: idle, still caught up
    s.stored(60)
    assert s.lag(1009.0) == 1.0


def entry(revision: int, created: float, cluster: str = CID, kind: str = SCHEDULED) -> VaultEntry:
    return VaultEntry(sha256=f"{revision:064x}", size=10, source_member="m1", original_name="s.db", revision=revision,
                      cluster_id=cluster, member_id="1", etcd_version="3.5.30", created_at="", created_unix=created,
                      pulled_at="", pulled_unix=created, kind=kind)


def seg(first: int, last: int, cluster: str = CID, gap: bool = False) -> StoredSegment:
    return StoredSegment(cluster, SegmentInfo(first, last, first * 1000, last * 1000, gap), 100)


def test_the_window_runs_from_each_snapshot_as_far_as_its_segments_reach():
    entries = [entry(10, 9.0), entry(30, 29.0), entry(70, 69.0), entry(5, 4.0, kind=POINT_IN_TIME)]
    segments = [seg(11, 20), seg(21, 40), seg(41, 50, gap=True), seg(51, 60), seg(71, 80)]
    found = spans(entries, segments)
    assert [(s.first, s.last, s.first_unix, s.last_unix) for s in found] == [(10, 40, 9.0, 40.0), (70, 80, 69.0, 80.0)]
    c = choose(entries, segments, 35)
    assert c.base.revision == 30 and [s.info.first for s in c.segments] == [21]
    c = choose(entries, segments, 15)
    assert c.base.revision == 10 and [s.info.first for s in c.segments] == [11]
    assert choose(entries, segments, 70).segments == ()
    with pytest.raises(PointError, match=r"revision 45 is in a gap \(revisions 41\.\.50.*revisions 10\.\.40"):
        choose(entries, segments, 45)
    with pytest.raises(PointError, match="revision 55 is outside it"):
        choose(entries, segments, 55)          # segments after the gap, but no snapshot before them
    with pytest.raises(PointError, match="revision 81 is outside"):
        choose(entries, segments, 81)
    assert spans([], segments) == []


def segment(events: list[Event], first: int, last: int) -> Segment:
    return Segment(CID, "m1", first, last, False, tuple(events))


def test_a_moment_names_the_newest_revision_the_capture_saw_by_then():
    entries = [entry(10, 9.0)]
    stored = [seg(11, 20), seg(21, 30)]
    events = {11: [ev(r, t=r * 1000) for r in range(11, 21)], 21: [ev(r, t=r * 1000 + 500) for r in range(21, 31)]}
    read = lambda s: segment(events[s.info.first], s.info.first, s.info.last)   # noqa: E731
    assert revision_at_time(entries, stored, 15.2, read) == (CID, 15)
    assert revision_at_time(entries, stored, 21.2, read) == (CID, 20)     # 21 was seen at 21.5
    assert revision_at_time(entries, stored, 9.5, read) == (CID, 10)      # before any change: the snapshot's
    with pytest.raises(PointError, match="outside the restorable window"):
        revision_at_time(entries, stored, 31.0, read)
    # the live cluster's window reaches as far as the capture has caught up
    assert revision_at_time(entries, stored, 31.0, read, caught_up_unix=35.0, live_cluster=CID) == (CID, 30)
    with pytest.raises(PointError):
        revision_at_time(entries, stored, 5.0, read)


def test_counting_a_replay_and_the_keys_that_lose_their_lease():
    events = [ev(11, "/a", lease=7), Event(12, 0, LEASE, lease=8, ttl=60), ev(12, "/b", lease=8),
              ev(13, "/c", lease=9), ev(14, "/a", DELETE), ev(15, "/d", lease=9), ev(16, "/e")]
    count = count_replay([segment(events, 11, 16)], base=10, upto=15)
    # /a's lease 7 was never described, but /a is deleted by 15; /c and /d carry lease 9, never described
    assert (count.revisions, count.events, count.unleased_keys) == (5, 5, 2)
    assert revision_at([segment(events, 11, 16)], 13_500, floor=10) == 13


def test_history_lists_changes_under_a_prefix_newest_kept():
    events = [ev(11, "/registry/ns/prod"), ev(12, "/registry/pods/prod/a"), ev(13, "/registry/ns/prod", DELETE),
              ev(14, "/registry/ns/dev")]
    found, cut = changes([segment(events, 11, 14)], b"/registry/ns/", None, None, limit=10)
    assert [(c.revision, c.kind, c.key) for c in found] == [(11, PUT, b"/registry/ns/prod"),
                                                           (13, DELETE, b"/registry/ns/prod"),
                                                           (14, PUT, b"/registry/ns/dev")] and not cut
    assert found[0].to_json()["kind"] == "put" and found[1].to_json()["kind"] == "delete"
    assert found[0].to_json()["value_size"] == 1
    found, cut = changes([segment(events, 11, 14)], b"/registry/ns/", 12_000, 13_000, limit=10)
    assert [c.revision for c in found] == [13]
    found, cut = changes([segment(events, 11, 14)], b"/", None, None, limit=2)
    assert [c.revision for c in found] == [13, 14] and cut


def test_moments_operators_write():
    now = 1_800_000_000.0
    assert parse_moment("5m ago", now) == now - 300
    assert parse_moment("90s", now) == now - 90
    assert parse_moment("1h30m ago", now) == now - 5400
    assert parse_moment("2027-01-15T08:00:00Z", now) == 1_800_000_000.0
    assert parse_moment("2027-01-15T09:00:00+01:00", now) == 1_800_000_000.0
    assert parse_moment("2027-01-15T08:00:00.5Z", now) == 1_800_000_000.5
    with pytest.raises(UsageError, match="no time zone"):
        parse_moment("2027-01-15T08:00:00", now)
    with pytest.raises(UsageError, match="RFC 3339"):
        parse_moment("yesterday", now)
