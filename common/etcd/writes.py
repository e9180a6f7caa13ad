"""Writing to an etcd: transactions of puts and deletes, leases and compaction, as a point-in-time replay
and a restore drill need them.

Only a scratch etcd is ever written to (common/etcd/scratch.py): etcdguard
never writes to a live cluster. A replay applies each captured revision as
one transaction, so the scratch store counts the same revisions the original
did; a put that carried a lease gets that lease again (granted with its
original id) where its TTL was captured.

Messages (field numbers from etcd's rpc.proto):
  TxnRequest {1 compare (repeated), 2 success (repeated RequestOp), 3 failure}
  RequestOp {1 request_range, 2 request_put, 3 request_delete_range}
  PutRequest {1 key, 2 value, 3 lease}   DeleteRangeRequest {1 key, 2 range_end}
  TxnResponse {1 header, 2 succeeded}    LeaseGrantRequest {1 TTL, 2 ID}   LeaseGrantResponse {1 header, 2 ID, 3 TTL}
  LeaseKeepAliveRequest {1 ID} (a stream)   LeaseKeepAliveResponse {1 header, 2 ID, 3 TTL}
  RangeRequest {1 key, 2 range_end, 3 limit, 4 revision, 8 keys_only}  RangeResponse {1 header, 2 kvs, 3 more, 4 count}
  CompactionRequest {1 revision, 2 physical}
  KeyValue {1 key, 2 create_revision, 3 mod_revision, 4 version, 5 value, 6 lease}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional, Union

from etcdguard.common.etcd import pbwire
from etcdguard.common.etcd.client import EtcdClient

PUT, DELETE = "put", "del"


@dataclass(frozen=True)
class Op:
    """One write of a transaction: a put (with its lease, 0: none) or a delete of one key."""

    kind: str
    key: bytes
    value: bytes = b""
    lease: int = 0


def _put(op: Op) -> bytes:
    return (pbwire.encode_bytes_field(1, op.key) + pbwire.encode_bytes_field(2, op.value)
            + pbwire.encode_varint_field(3, op.lease))


def txn_request(ops: Sequence[Op]) -> bytes:
    """A transaction with no compares whose success branch does every op, in order."""
    out = []
    for op in ops:
        if op.kind == PUT:
            out.append(pbwire.encode_bytes_field(2, pbwire.encode_bytes_field(2, _put(op))))
        elif op.kind == DELETE:
            out.append(pbwire.encode_bytes_field(2, pbwire.encode_bytes_field(3, pbwire.encode_bytes_field(1, op.key))))
        else:
            raise ValueError(f"op kind {op.kind!r} is not put or del")
    return b"".join(out)


def lease_grant_request(ttl: int, lease_id: int) -> bytes:
    return pbwire.encode_varint_field(1, ttl) + pbwire.encode_varint_field(2, lease_id)


def prefix_end(prefix: bytes) -> bytes:
    """The range end that makes [prefix, end) every key starting with ``prefix`` (etcd's rule)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\x00"   # every key


def range_request(key: bytes, range_end: bytes = b"", revision: int = 0, limit: int = 0,
                  keys_only: bool = False) -> bytes:
    return (pbwire.encode_bytes_field(1, key) + (pbwire.encode_bytes_field(2, range_end) if range_end else b"")
            + pbwire.encode_varint_field(3, limit) + pbwire.encode_varint_field(4, revision)
            + pbwire.encode_varint_field(8, 1 if keys_only else 0))


def compaction_request(revision: int) -> bytes:
    """CompactionRequest {1 revision, 2 physical}: physical, so the call returns once it is done."""
    return pbwire.encode_varint_field(1, revision) + pbwire.encode_varint_field(2, 1)


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


def _kv(message: Union[bytes, memoryview]) -> KeyValue:
    f: dict[int, Union[int, memoryview]] = {}
    for n, v in pbwire.fields(message):
        f[n] = v
    def b(n: int) -> bytes:
        v = f.get(n)
        return bytes(v) if isinstance(v, memoryview) else b""
    def i(n: int) -> int:
        v = f.get(n)
        return v if isinstance(v, int) else 0
    return KeyValue(b(1), b(5), i(2), i(3), i(4), i(6))


def parse_range(message: bytes) -> tuple[int, list[KeyValue]]:
    """(the reply's revision, every key-value) of a RangeResponse."""
    revision, kvs = 0, []
    for n, v in pbwire.fields(message):
        if n == 1 and isinstance(v, memoryview):
            revision = pbwire.parse_header(v).revision
        elif n == 2 and isinstance(v, memoryview):
            kvs.append(_kv(v))
    return revision, kvs


class EtcdWriter:
    """Transactions and leases on one (scratch) etcd, through an EtcdClient's channel."""

    def __init__(self, client: EtcdClient, timeout: float = 30.0) -> None:
        self.client = client
        self.timeout = timeout

    def txn(self, ops: Sequence[Op]) -> int:
        """Apply ``ops`` as one transaction (one revision); the revision it made."""
        header = self.client.unary("/etcdserverpb.KV/Txn", txn_request(ops), pbwire.parse_header_of, self.timeout)
        return int(header.revision)

    def lease_grant(self, ttl: int, lease_id: int) -> int:
        """Grant a lease with this id (etcd keeps the id); its id."""
        reply = self.client.unary("/etcdserverpb.Lease/LeaseGrant", lease_grant_request(ttl, lease_id),
                                  lambda m: dict(pbwire.fields(m)), self.timeout)
        granted = reply.get(2)
        return int(granted) if isinstance(granted, int) else lease_id

    def keep_alive(self, lease_ids: Sequence[int]) -> None:
        """Renew every lease in ``lease_ids`` once (one LeaseKeepAlive stream, one request and reply each), so
        none expires in the scratch store while a replay runs longer than its TTL."""
        if not lease_ids:
            return
        call = self.client.stream("/etcdserverpb.Lease/LeaseKeepAlive",
                                  iter([pbwire.encode_varint_field(1, i) for i in lease_ids]), bytes, self.timeout)
        try:
            for answered, _ in enumerate(call, 1):
                if answered >= len(lease_ids):
                    break
        finally:
            call.cancel()

    def range(self, key: bytes, range_end: bytes = b"", revision: int = 0,
              timeout: Optional[float] = None, *, limit: int = 0,
              keys_only: bool = False) -> tuple[int, list[KeyValue]]:
        """Every key-value in [key, range_end) at ``revision`` (0: now), at most ``limit`` (0: all) in key
        order, without values with ``keys_only``; (the store's revision, the kvs)."""
        result: tuple[int, list[KeyValue]] = self.client.unary(
            "/etcdserverpb.KV/Range", range_request(key, range_end, revision, limit, keys_only), parse_range,
            timeout or self.timeout)
        return result

    def compact(self, revision: int, timeout: Optional[float] = None) -> None:
        """Compact the (scratch) store's history up to ``revision``, physically."""
        self.client.unary("/etcdserverpb.KV/Compact", compaction_request(revision), pbwire.parse_header_of,
                          timeout or self.timeout)
