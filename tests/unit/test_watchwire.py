"""etcd's watch replies read by hand: every field the capture needs, unknown ones skipped, damage refused."""

from __future__ import annotations

import pytest
from etcdguard.common.etcd import watchwire
from etcdguard.common.etcd.pbwire import WireError
from etcdguard.common.etcd.pbwire import encode_bytes_field as B
from etcdguard.common.etcd.pbwire import encode_varint_field as V

HEADER = B(1, V(1, 0xCDF818194E3A8C32) + V(2, 0x8E9E05C52164694D) + V(3, 88211) + V(4, 7) + V(9, 1))


def kv(key: bytes, revision: int, value: bytes = b"", lease: int = 0) -> bytes:
    return B(1, key) + V(2, 5) + V(3, revision) + V(4, 2) + B(5, value) + V(6, lease) + B(99, b"future field")


def test_a_reply_with_puts_deletes_and_leases():
    events = B(11, B(2, kv(b"/a", 88210, b"v" * 1000, 0x694D))) + B(11, V(1, 1) + B(2, kv(b"/b", 88211)))
    r = watchwire.parse_watch_response(HEADER + V(2, 3) + events + V(12, 1))
    assert (r.header.cluster_id, r.header.member_id, r.header.revision, r.header.raft_term) == (
        0xCDF818194E3A8C32, 0x8E9E05C52164694D, 88211, 7)
    assert r.watch_id == 3 and not r.created and not r.canceled and r.compact_revision == 0
    assert r.events == (watchwire.WatchEvent(88210, b"/a", value=b"v" * 1000, lease=0x694D),
                        watchwire.WatchEvent(88211, b"/b", deleted=True))
    assert r.synced


def test_created_compacted_and_cancelled_replies():
    r = watchwire.parse_watch_response(HEADER + V(3, 1))
    assert r.created and r.events == () and r.synced
    r = watchwire.parse_watch_response(HEADER + V(4, 1) + V(5, 88000) + B(6, b"mvcc: required revision has been "
                                                                          b"compacted"))
    assert r.canceled and r.compact_revision == 88000 and "compacted" in r.cancel_reason
    assert watchwire.parse_watch_response(V(2, (1 << 64) - 1)).watch_id == -1    # int64 on the wire


def test_a_batch_behind_the_store_is_not_a_sync_point():
    r = watchwire.parse_watch_response(HEADER + B(11, B(2, kv(b"/a", 88000))))
    assert not r.synced


@pytest.mark.parametrize("cut", [1, 5, 30, -1])
def test_a_truncated_reply_is_refused(cut):
    whole = HEADER + B(11, B(2, kv(b"/a", 88210, b"v" * 100)))
    with pytest.raises(WireError):
        watchwire.parse_watch_response(whole[:cut] if cut > 0 else whole[:-1])


def test_an_unknown_event_type_is_refused():
    with pytest.raises(WireError, match="neither PUT nor DELETE"):
        watchwire.parse_watch_response(B(11, V(1, 7) + B(2, kv(b"/a", 1))))


def test_lease_ttl_replies():
    assert watchwire.parse_lease_ttl(HEADER + V(2, 9) + V(3, 55) + V(4, 60)) == 60
    assert watchwire.parse_lease_ttl(HEADER + V(2, 9) + V(3, (1 << 64) - 1)) == -1
