"""The agent's capture against a real etcd: reads from a revision, whole revisions, leases, compaction,
a watch that ends and a read that moves the position."""

from __future__ import annotations

import json
import time

import pytest
from etcdguard.agent.capture.manager import CaptureManager
from etcdguard.common.capture.segment import LEASE, Event
from etcdguard.common.etcd.client import EtcdClient
from etcdguard.common.etcd.writes import EtcdWriter, Op

from tests.helpers.etcd import EtcdMember
from tests.helpers.net import wait_until

pytestmark = pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)


def events_of(data: bytes) -> list[Event]:
    return [Event.from_json(json.loads(line), "t") for line in data.decode().splitlines()]


def read_until(manager: CaptureManager, after: int, until: int, size: int = 1 << 20) -> tuple[list[Event], dict]:
    """Read batch after batch (acknowledging each) until revision ``until`` arrived."""
    got: list[Event] = []
    last_result: dict = {}

    def step():
        nonlocal after, last_result
        result, data = manager.read(after, size)
        last_result = result
        got.extend(events_of(data))
        after = max(after, result["last"])
        return after >= until
    wait_until(step, 20, interval=0.05, what=f"revision {until} captured")
    return got, last_result


def test_reads_hand_out_every_revision_once_with_leases_described(etcd_member: EtcdMember):
    client = EtcdClient(etcd_member.client_url, timeout=10.0)
    writer = EtcdWriter(client)
    base = writer.txn([Op("put", b"/registry/a", b"0")])
    manager = CaptureManager(lambda: EtcdClient(etcd_member.client_url, timeout=10.0))
    try:
        lease = writer.lease_grant(300, 0)
        revs = [writer.txn([Op("put", b"/registry/b", b"1", lease)]),
                writer.txn([Op("put", b"/registry/c", b"2"), Op("del", b"/registry/a")]),
                writer.txn([Op("put", b"/registry/b", b"3", lease)])]
        got, result = read_until(manager, base, revs[-1], size=200)     # small batches: several reads
        assert result["cluster_id"] == f"{client.status().cluster_id:x}"
        assert [(e.revision, e.kind, e.key) for e in got] == [
            (revs[0], LEASE, b""), (revs[0], "put", b"/registry/b"),
            (revs[1], "put", b"/registry/c"), (revs[1], "del", b"/registry/a"), (revs[2], "put", b"/registry/b")]
        assert got[0].lease == lease and got[0].ttl == 300 and got[1].lease == lease
        assert all(abs(e.time_ms - time.time() * 1000) < 60_000 for e in got)
        # a resent read from an earlier revision is no longer answerable by this watch: a new one starts there
        again, _ = manager.read(revs[0], 1 << 20)
        assert again["restarted"] is True
        wait_until(lambda: manager.read(revs[0], 1 << 20)[0]["last"] == revs[2], 10, what="re-read")
        # sync points: the watch delivered everything up to etcd's revision
        wait_until(lambda: (manager.read(revs[2], 1 << 20)[0]["synced_revision"] or 0) >= revs[2], 10,
                   what="a sync point")
    finally:
        manager.close()
        client.close()


def test_a_compacted_start_is_reported_once_the_buffer_is_read(etcd_member: EtcdMember):
    client = EtcdClient(etcd_member.client_url, timeout=10.0)
    writer = EtcdWriter(client)
    first = writer.txn([Op("put", b"/k", b"0")])
    for i in range(5):
        last = writer.txn([Op("put", b"/k", str(i).encode())])
    etcd_member.etcdctl("compact", str(last - 1))
    manager = CaptureManager(lambda: EtcdClient(etcd_member.client_url, timeout=10.0))
    try:
        result = wait_until(lambda: (r := manager.read(first, 1 << 20)[0])["compacted"] and r, 10,
                            what="the compaction reported")
        assert result["compacted"] == last - 1 and result["events"] == 0
        # the reader records the gap and reads on from the compaction: a new watch from there
        got, _ = read_until(manager, last - 1, last)
        assert [e.revision for e in got] == [last]
    finally:
        manager.close()
        client.close()


def test_a_watch_that_ends_reports_why_then_starts_again(etcd_member: EtcdMember):
    client = EtcdClient(etcd_member.client_url, timeout=10.0)
    rev = EtcdWriter(client).txn([Op("put", b"/k", b"0")])
    manager = CaptureManager(lambda: EtcdClient(etcd_member.client_url, timeout=10.0), retry_after=0.2)
    try:
        read_until(manager, rev - 1, rev)
        etcd_member.stop(kill=True)
        result = wait_until(lambda: (r := manager.read(rev, 1 << 20)[0])["error"] and r, 20,
                            what="the error reported")
        assert "etcd" in result["error"]
        etcd_member.start()
        etcd_member.wait_healthy()
        rev2 = EtcdWriter(EtcdClient(etcd_member.client_url, timeout=10.0)).txn([Op("put", b"/k", b"1")])
        got, _ = read_until(manager, rev, rev2)
        assert [e.revision for e in got] == [rev2]
    finally:
        manager.close()
        client.close()


def test_an_unread_session_is_stopped(etcd_member: EtcdMember):
    manager = CaptureManager(lambda: EtcdClient(etcd_member.client_url, timeout=10.0), idle=0.5)
    try:
        manager.read(0, 1024)
        assert manager.session is not None
        wait_until(lambda: manager.session is None, 10, what="the idle session stopped")
    finally:
        manager.close()
