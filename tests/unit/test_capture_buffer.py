"""The agent's capture buffer and event lines: whole revisions, acknowledged by the next read (pure)."""

from __future__ import annotations

import json

import pytest
from etcdguard.agent.capture.buffer import RevisionBuffer
from etcdguard.agent.capture.lines import revision_lines
from etcdguard.common.capture.segment import LEASE, PUT, Event, by_revision
from etcdguard.common.etcd.watchwire import WatchEvent


def test_reads_take_whole_revisions_and_acknowledge_what_is_before_them():
    b = RevisionBuffer(floor=10, limit=100)
    for rev in (10, 11, 12):
        assert b.add(rev, 2, bytes([rev]) * 10)
    first = b.take(9, 25)
    assert (first.first, first.last, first.lines, first.more) == (10, 11, 4, True)
    assert first.data == bytes([10]) * 10 + bytes([11]) * 10
    again = b.take(9, 25)                      # a resent read answers the same
    assert again == first
    b.drop_through(11)
    assert b.bytes == 10 and b.floor == 12
    rest = b.take(11, 5)                       # one revision even when it is larger than asked for
    assert (rest.first, rest.last, rest.lines, rest.more, rest.data) == (12, 12, 2, False, bytes([12]) * 10)
    nothing = b.take(12, 100)
    assert nothing.last < nothing.first and nothing.data == b""


def test_a_revision_at_or_before_an_acknowledged_one_is_not_held():
    b = RevisionBuffer(floor=1, limit=100)
    b.drop_through(50)                          # the reader had these from another agent
    assert not b.add(40, 1, b"x") and b.bytes == 0
    assert b.add(51, 1, b"y") and b.received == 51
    with pytest.raises(ValueError, match="in order"):
        b.add(51, 1, b"z")


def test_full_counts_bytes():
    b = RevisionBuffer(floor=1, limit=20)
    b.add(1, 1, b"a" * 15)
    assert not b.full
    b.add(2, 1, b"b" * 10)
    assert b.full
    b.drop_through(1)
    assert not b.full


def test_lines_describe_each_new_lease_once_before_its_puts():
    events = [WatchEvent(7, b"/a", value=b"1", lease=0x10), WatchEvent(7, b"/b", deleted=True),
              WatchEvent(8, b"/c", value=b"2", lease=0x10), WatchEvent(8, b"/d", value=b"3", lease=0x20)]
    ttls = {0x10: 60, 0x20: -1}
    asked = []

    def ttl_of(lease):
        asked.append(lease)
        return ttls[lease]

    described: dict[int, int] = {}
    groups = list(by_revision(events))
    assert [r for r, _ in groups] == [7, 8]
    n7, d7 = revision_lines(7, groups[0][1], 1000, ttl_of, described)
    n8, d8 = revision_lines(8, groups[1][1], 2000, ttl_of, described)
    lines = [Event.from_json(json.loads(line), "t") for line in (d7 + d8).decode().splitlines()]
    assert (n7, n8) == (3, 2)
    assert lines[0] == Event(7, 1000, LEASE, lease=0x10, ttl=60)
    assert lines[1] == Event(7, 1000, PUT, b"/a", b"1", 0x10)
    assert lines[2].kind == "del" and lines[2].key == b"/b"
    # lease 0x10 is described already; 0x20 expired (no TTL to give): its put keeps the id, with no lease line
    assert lines[3:] == [Event(8, 2000, PUT, b"/c", b"2", 0x10), Event(8, 2000, PUT, b"/d", b"3", 0x20)]
    assert asked == [0x10, 0x20] and described == {0x10: 60}
