"""etcd's watch stream and lease TTLs as continuous backup reads them, against a real etcd."""

from __future__ import annotations

import threading

import pytest
from etcdguard.common.base.errors import EtcdUnavailable
from etcdguard.common.etcd.client import EtcdClient
from etcdguard.common.etcd.watch import Watch, lease_ttl
from etcdguard.common.etcd.watchwire import WatchResponse
from etcdguard.common.etcd.writes import EtcdWriter, Op

from tests.helpers.etcd import EtcdMember

pytestmark = pytest.mark.parametrize("etcd_build", ["3.5", "3.4"], indirect=True)


def collect(watch: Watch, until: int) -> list[WatchResponse]:
    """Responses until one carries an event at revision ``until`` or etcd cancels the watch (a timer closes it
    after 20 s)."""
    timer = threading.Timer(20.0, watch.close)
    timer.start()
    out = []
    try:
        for response in watch:
            out.append(response)
            if response.canceled or any(e.revision >= until for e in response.events):
                break
    finally:
        timer.cancel()
        watch.close()
    return out


def test_every_change_comes_with_its_revision_key_value_and_lease(etcd_member: EtcdMember):
    client = EtcdClient(etcd_member.client_url, timeout=10.0)
    writer = EtcdWriter(client)
    first = writer.txn([Op("put", b"/a", b"1")])
    lease = writer.lease_grant(120, 0)
    leased = writer.txn([Op("put", b"/b", b"2", lease)])
    multi = writer.txn([Op("put", b"/c", b"3"), Op("put", b"/d", b"4"), Op("del", b"/a")])
    gone = writer.txn([Op("del", b"/b")])
    responses = collect(Watch(client, first), gone)
    assert responses[0].created
    events = [e for r in responses for e in r.events]
    assert [(e.revision, e.key, e.deleted, e.value, e.lease) for e in events] == [
        (first, b"/a", False, b"1", 0),
        (leased, b"/b", False, b"2", lease),
        (multi, b"/c", False, b"3", 0), (multi, b"/d", False, b"4", 0), (multi, b"/a", True, b"", 0),
        (gone, b"/b", True, b"", 0),
    ]
    assert lease_ttl(client, lease) == 120
    assert lease_ttl(client, 0x7777) == -1
    client.close()


def test_a_compacted_start_revision_answers_with_the_compaction(etcd_member: EtcdMember):
    client = EtcdClient(etcd_member.client_url, timeout=10.0)
    writer = EtcdWriter(client)
    start = writer.txn([Op("put", b"/k", b"0")])
    for i in range(5):
        last = writer.txn([Op("put", b"/k", str(i).encode())])
    etcd_member.etcdctl("compact", str(last))
    responses = collect(Watch(client, start), last)
    compacted = [r for r in responses if r.compact_revision]
    assert compacted and compacted[0].compact_revision == last and compacted[0].canceled
    assert not [e for r in responses for e in r.events]
    client.close()


def test_a_stopped_etcd_ends_the_watch_with_an_error(etcd_member: EtcdMember):
    client = EtcdClient(etcd_member.client_url, timeout=10.0)
    watch = Watch(client, 1)
    with pytest.raises(EtcdUnavailable):
        for response in watch:
            if response.created:
                etcd_member.stop(kill=True)
    client.close()
