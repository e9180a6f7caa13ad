"""HashKV replies read from the wire, with the hash_revision etcd >= 3.6 sends (rpc.proto:
HashKVResponse {1 header, 2 hash, 3 compact_revision, 4 hash_revision})."""

from __future__ import annotations

from etcdguard.common.etcd.client import EtcdClient, HashKVResult
from etcdguard.common.etcd.pbwire import HashKV, Header, parse_hashkv

from tests.helpers.fake_etcd import FakeEtcd, hashkv_reply

HEADER = bytes.fromhex("08 c1 01  10 a1 01  18 d2 09  20 02")   # cluster c1, member a1, revision 1234, term 2
HASH = bytes.fromhex("10 ef fd b6 f5 0d")                       # field 2: hash 0xdeadbeef
COMPACT = bytes.fromhex("18 64")                                # field 3: compact_revision 100
HASH_REVISION = bytes.fromhex("20 b0 09")                       # field 4: hash_revision 1200
REPLY_36 = bytes([0x0A, len(HEADER)]) + HEADER + HASH + COMPACT + HASH_REVISION
REPLY_35 = bytes([0x0A, len(HEADER)]) + HEADER + HASH + COMPACT


def test_a_3_6_reply_carries_the_revision_the_hash_covers() -> None:
    assert parse_hashkv(REPLY_36) == HashKV(Header(0xC1, 0xA1, 1234, 2), 0xDEADBEEF, 100, 1200)


def test_a_3_4_or_3_5_reply_has_no_hash_revision() -> None:
    assert parse_hashkv(REPLY_35) == HashKV(Header(0xC1, 0xA1, 1234, 2), 0xDEADBEEF, 100, 0)


def test_field_order_and_fields_of_later_releases_do_not_matter() -> None:
    later = bytes.fromhex("28 07") + bytes.fromhex("32 02 68 69")   # field 5 varint, field 6 bytes: unknown
    shuffled = HASH_REVISION + COMPACT + later + HASH + bytes([0x0A, len(HEADER)]) + HEADER
    assert parse_hashkv(shuffled) == parse_hashkv(REPLY_36)


def test_the_hand_encoded_reply_is_what_the_fake_member_sends() -> None:
    assert hashkv_reply(0xDEADBEEF, 100, 1200, 1234) == REPLY_36
    assert hashkv_reply(0xDEADBEEF, 100, None, 1234) == REPLY_35


def test_the_client_returns_hash_revision_and_keeps_hashkv_as_it_was() -> None:
    with FakeEtcd({"HashKV": lambda request: REPLY_36}) as fake:
        with EtcdClient(fake.url) as client:
            assert client.hashkv_full(1200) == HashKVResult(hash=0xDEADBEEF, revision=1234, compact_revision=100,
                                                            hash_revision=1200)
            assert client.hashkv(1200) == (0xDEADBEEF, 1234)
        assert [r for _, r in fake.requests] == [bytes.fromhex("08 b0 09")] * 2   # HashKVRequest{revision: 1200}
    with FakeEtcd({"HashKV": lambda request: REPLY_35}) as fake, EtcdClient(fake.url) as client:
        assert client.hashkv_full().hash_revision is None
        assert fake.requests == [("HashKV", b"")]                                  # revision 0: the latest


def test_never_compacted_is_minus_one_as_etcd_sends_it() -> None:
    never = bytes.fromhex("18 ff ff ff ff ff ff ff ff ff 01")   # field 3: int64 -1, ten bytes
    assert parse_hashkv(bytes([0x0A, len(HEADER)]) + HEADER + HASH + never).compact_revision == -1
