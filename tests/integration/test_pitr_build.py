"""Building a point in time for real: a snapshot of a real etcd plus the changes made after it, replayed
into a scratch etcd up to a revision, gives exactly the store the live member had at that revision."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from etcdguard.common.capture.segment import DELETE, LEASE, PUT, Event, decode, encode
from etcdguard.common.etcd.client import EtcdClient
from etcdguard.common.etcd.scratch import EtcdBinaries, serving
from etcdguard.common.etcd.writes import EtcdWriter, Op, prefix_end
from etcdguard.common.snapshot.tools import probe_tool, snapshot_status
from etcdguard.coordinator.pitr.build import build
from etcdguard.coordinator.pitr.replay import ReplayError

from tests.helpers.etcd import EtcdMember

pytestmark = pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)


def everything(writer: EtcdWriter, revision: int = 0) -> list[tuple[bytes, bytes, int, int, int]]:
    _, kvs = writer.range(b"/", prefix_end(b"/"), revision)
    return [(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version) for kv in kvs]


def workload(writer: EtcdWriter, rng: random.Random, n: int) -> list[Event]:
    """Puts, deletes, multi-key transactions and leased puts; the events as a capture would record them."""
    events: list[Event] = []
    keys = [f"/registry/pods/ns{i % 3}/p{i}".encode() for i in range(40)]
    lease = writer.lease_grant(3600, 0)
    leased = False
    for i in range(n):
        choice = rng.random()
        t = 1_700_000_000_000 + i
        if choice < 0.15:
            batch = rng.sample(keys, 3)
            ops = [Op("put", k, f"txn-{i}".encode()) for k in batch]
            rev = writer.txn(ops)
            events += [Event(rev, t, PUT, k, f"txn-{i}".encode()) for k in batch]
        elif choice < 0.3:
            k = rng.choice(keys)
            before = writer.range(k)[0]
            rev = writer.txn([Op("del", k)])
            if rev != before:                     # deleting a key that is not there makes no revision
                events.append(Event(rev, t, DELETE, k))
        else:
            k, v = rng.choice(keys), rng.randbytes(rng.randint(0, 300))
            use = lease if choice > 0.9 else 0
            rev = writer.txn([Op("put", k, v, use)])
            if use and not leased:
                events.append(Event(rev, t, LEASE, lease=use, ttl=3600))
                leased = True
            events.append(Event(rev, t, PUT, k, v, use))
    return events


def test_a_point_in_time_equals_the_live_store_at_that_revision(etcd_member: EtcdMember, tmp_path: Path):
    writer = EtcdWriter(EtcdClient(etcd_member.client_url, timeout=10.0))
    rng = random.Random(7)
    workload(writer, rng, 30)                                 # before the snapshot
    base = tmp_path / "base.db"
    etcd_member.etcdctl("snapshot", "save", str(base), timeout=120)
    tool = probe_tool(etcd_member.build.restore_tool)
    base_rev = snapshot_status(tool, base).revision
    events = [e for e in workload(writer, rng, 400) if e.revision > base_rev]
    last = max(e.revision for e in events)
    points = [base_rev + 1, base_rev + 137, (base_rev + last) // 2, last]
    expected = {r: everything(writer, r) for r in points}
    hashes = {r: EtcdClient(etcd_member.client_url).hashkv(r)[0] for r in points}
    half = len(events) // 2
    cut = next(i for i in range(half, len(events)) if events[i].revision != events[i - 1].revision)
    _, s1 = encode(events[:cut], cluster_id="c", member=etcd_member.name, first=base_rev + 1,
                   last=events[cut - 1].revision)
    _, s2 = encode(events[cut:], cluster_id="c", member=etcd_member.name, first=events[cut].revision, last=last)
    segments = [decode(s1), decode(s2)]
    binaries = EtcdBinaries(etcd_member.build.etcd, tool)
    for r in points:
        built = build(binaries, base, base_rev, segments, upto=r, out=tmp_path / f"pit-{r}.db", workdir=tmp_path)
        assert built.revision == r and built.stats.unleased_puts == 0
        with serving(binaries, built.path, tmp_path) as (_, client):
            got = everything(EtcdWriter(client), r)
            assert got == expected[r], r
            assert client.hashkv(r)[0] == hashes[r], r                # the same history, byte for byte
    assert not list(tmp_path.glob("etcdguard-scratch-*"))


def test_a_missing_revision_stops_the_replay_with_the_reason(etcd_member: EtcdMember, tmp_path: Path):
    writer = EtcdWriter(EtcdClient(etcd_member.client_url, timeout=10.0))
    etcd_member.put("/registry/seed", "1")
    base = tmp_path / "base.db"
    etcd_member.etcdctl("snapshot", "save", str(base), timeout=120)
    tool = probe_tool(etcd_member.build.restore_tool)
    base_rev = snapshot_status(tool, base).revision
    events = workload(writer, random.Random(3), 20)
    holed = [e for e in events if e.revision != base_rev + 5]
    _, data = encode(holed, cluster_id="c", member="m", first=base_rev + 1, last=events[-1].revision)
    binaries = EtcdBinaries(etcd_member.build.etcd, tool)
    with pytest.raises(ReplayError, match=f"revision {base_rev + 5} was not captured"):
        build(binaries, base, base_rev, [decode(data)], upto=events[-1].revision, out=tmp_path / "x.db",
              workdir=tmp_path)
    assert not (tmp_path / "x.db").exists() and not list(tmp_path.glob("etcdguard-scratch-*"))


def test_a_replay_longer_than_a_lease_ttl_keeps_the_lease_and_its_keys(etcd_member: EtcdMember, tmp_path: Path):
    """kube-apiserver's master leases live 15 s: a replay that takes longer must not see them expire (their
    keys would vanish in the scratch store and every later revision would come back one off)."""
    import time

    from etcdguard.coordinator.pitr.replay import Replayer

    writer = EtcdWriter(EtcdClient(etcd_member.client_url, timeout=10.0))
    lease = writer.lease_grant(3, 0)
    writer.txn([Op("put", b"/registry/masterleases/10.0.0.1", b"x", lease)])
    base = tmp_path / "base.db"
    etcd_member.etcdctl("snapshot", "save", str(base), timeout=120)
    tool = probe_tool(etcd_member.build.restore_tool)
    base_rev = snapshot_status(tool, base).revision
    binaries = EtcdBinaries(etcd_member.build.etcd, tool)
    with serving(binaries, base, tmp_path) as (_, client):
        scratch = EtcdWriter(client)
        replayer = Replayer(scratch, base_rev, base_rev + 7)
        for i in range(1, 8):                      # about 7 s of replay, more than twice the lease's TTL
            replayer.apply([Event(base_rev + i, 0, PUT, f"/registry/pods/p{i}".encode(), b"v")])
            time.sleep(1.0)
        assert replayer.done
        _, kvs = scratch.range(b"/registry/masterleases/", prefix_end(b"/registry/masterleases/"))
        assert [(kv.key, kv.lease) for kv in kvs] == [(b"/registry/masterleases/10.0.0.1", lease)]
