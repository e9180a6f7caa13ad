"""The agent's gRPC client against a real etcd (3.4 and 3.5): HashKV as `etcdctl endpoint hashkv` sees it."""

from __future__ import annotations

from etcdguard.common.etcd.client import EtcdClient

from tests.helpers.etcd import EtcdMember


def test_hashkv_matches_etcdctl_and_3_4_or_3_5_send_no_hash_revision(etcd_member: EtcdMember) -> None:
    for i in range(10):
        etcd_member.put(f"/k/{i}", f"v{i}")
    at = etcd_member.revision()
    etcd_member.put("/k/later", "x")
    with EtcdClient(etcd_member.client_url) as client:
        full = client.hashkv_full(at)
        assert full.hash == etcd_member.hashkv(at)
        assert full.revision == at + 1             # the header: the store's revision when it answered
        assert full.compact_revision == -1        # never compacted (an int64 on the wire)
        assert full.hash_revision is None          # HashKVResponse.hash_revision is new in etcd 3.6
        assert client.hashkv(at) == (full.hash, at + 1)
