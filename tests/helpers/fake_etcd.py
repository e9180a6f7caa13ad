"""An in-process gRPC server that answers a few of etcd's Maintenance calls with fixed replies.

For what no installable etcd can show here: a member that says it is etcd 3.6 or 3.7, a HashKV
reply with the fields a newer etcd sends. Replies are encoded by hand, field by field from etcd's
rpc.proto, exactly as a real member puts them on the wire.
"""

from __future__ import annotations

from concurrent import futures
from typing import Any, Callable, Optional

import grpc
from etcdguard.common.etcd.pbwire import encode_bytes_field, encode_varint_field


def header(cluster_id: int = 0xC1, member_id: int = 0xA1, revision: int = 0, raft_term: int = 2) -> bytes:
    """ResponseHeader {1 cluster_id, 2 member_id, 3 revision, 4 raft_term}."""
    return (encode_varint_field(1, cluster_id) + encode_varint_field(2, member_id) + encode_varint_field(3, revision)
            + encode_varint_field(4, raft_term))


def status_reply(version: str, revision: int = 42, member_id: int = 0xA1, leader: int = 0xA1) -> bytes:
    """StatusResponse {1 header, 2 version, 3 dbSize, 4 leader, 5 raftIndex, 6 raftTerm, ...}."""
    return (encode_bytes_field(1, header(member_id=member_id, revision=revision))
            + encode_bytes_field(2, version.encode()) + encode_varint_field(3, 20480)
            + encode_varint_field(4, leader) + encode_varint_field(5, 9) + encode_varint_field(6, 2))


def hashkv_reply(hash_: int, compact_revision: int, hash_revision: Optional[int], revision: int) -> bytes:
    """HashKVResponse {1 header, 2 hash, 3 compact_revision, 4 hash_revision (etcd >= 3.5.? / 3.6)}."""
    out = (encode_bytes_field(1, header(revision=revision)) + encode_varint_field(2, hash_)
           + encode_varint_field(3, compact_revision))
    if hash_revision is not None:
        out += encode_varint_field(4, hash_revision)
    return out


class FakeEtcd:
    """Serves Maintenance/<name> for each name in ``replies`` (request bytes -> reply bytes) on 127.0.0.1."""

    def __init__(self, replies: dict[str, Callable[[bytes], bytes]]) -> None:
        self.requests: list[tuple[str, bytes]] = []
        handlers = {name: grpc.unary_unary_rpc_method_handler(self._answer(name, reply))
                    for name, reply in replies.items()}
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("etcdserverpb.Maintenance",
                                                                                    handlers),))
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    def _answer(self, name: str, reply: Callable[[bytes], bytes]) -> Callable[[bytes, Any], bytes]:
        def handle(request: bytes, context: Any) -> bytes:
            self.requests.append((name, request))
            return reply(request)

        return handle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeEtcd:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(grace=None)
