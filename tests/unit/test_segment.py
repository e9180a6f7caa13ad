"""The segment format of continuous backup: what goes in comes out, and nothing altered is read."""

from __future__ import annotations

import pytest
from etcdguard.common.capture.segment import (
    DELETE,
    LEASE,
    PUT,
    Event,
    SegmentError,
    SegmentInfo,
    by_revision,
    decode,
    encode,
    window,
)
from hypothesis import given
from hypothesis import strategies as st

EVENTS = [Event(101, 1_700_000_000_000, PUT, b"/registry/pods/a", b"\x00\xffvalue", 7),
          Event(101, 1_700_000_000_000, LEASE, lease=7, ttl=60),
          Event(102, 1_700_000_000_500, DELETE, b"/registry/pods/a"),
          Event(103, 1_700_000_001_000, PUT, b"/k", b"")]


def test_a_segment_round_trips_and_its_name_tells_its_ranges():
    info, data = encode(EVENTS, cluster_id="c1", member="m2", first=101, last=104)
    seg = decode(data)
    assert seg.events == tuple(EVENTS) and (seg.first, seg.last, seg.cluster_id, seg.member) == (101, 104, "c1", "m2")
    assert info == SegmentInfo(101, 104, 1_700_000_000_000, 1_700_000_001_000)
    assert SegmentInfo.parse(info.name) == info
    assert SegmentInfo.parse("seg-1-2-3-4.jsonl") is None and SegmentInfo.parse("snap.db") is None


@pytest.mark.parametrize("damage", ["flip", "truncate", "drop-trailer"])
def test_an_altered_or_cut_segment_is_refused_whole(damage):
    _, data = encode(EVENTS, cluster_id="c1", member="m2", first=101, last=103)
    if damage == "flip":
        data = data[:40] + bytes([data[40] ^ 1]) + data[41:]
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = data[: data.rstrip(b"\n").rfind(b"\n") + 1]
    with pytest.raises(SegmentError):
        decode(data, "s1")


def test_events_are_replayed_one_transaction_per_revision():
    groups = [(rev, [e.kind for e in group]) for rev, group in by_revision(EVENTS)]
    assert groups == [(101, [PUT, LEASE]), (102, [DELETE]), (103, [PUT])]


def test_the_window_reaches_as_far_as_the_segments_are_contiguous_and_stops_at_a_gap():
    segs = [SegmentInfo(101, 150, 1000, 2000), SegmentInfo(151, 180, 2000, 3000),
            SegmentInfo(190, 200, 4000, 5000)]                       # 181..189 missing
    w = window(segs, 100)
    assert (w.first, w.last, w.first_ms, w.last_ms) == (100, 180, 1000, 3000)
    with_gap = window([SegmentInfo(101, 150, 1000, 2000), SegmentInfo(151, 170, 2500, 2500, gap=True),
                       SegmentInfo(171, 200, 3000, 4000)], 100)
    assert (with_gap.last, with_gap.gaps) == (150, ((151, 170),))
    assert window([], 100).last == 100


@given(st.lists(st.tuples(st.binary(min_size=1, max_size=40), st.binary(max_size=200), st.booleans()),
                max_size=30))
def test_any_keys_and_values_survive_the_round_trip(items):
    events = [Event(10 + i, 5 * i, PUT if put else DELETE, k, v if put else b"") for i, (k, v, put)
              in enumerate(items)]
    _, data = encode(events, cluster_id="c", member="m", first=10, last=10 + max(len(events), 1))
    assert decode(data).events == tuple(events)
