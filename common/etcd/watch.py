"""A watch of every key from one revision on: etcd's watch stream as an iterator.

What continuous backup reads (agent/capture/): every change etcd makes, in
revision order, from a start revision the caller chooses. A start revision
that compaction removed comes back as one response with
``compact_revision`` set (etcd cancels the watch): the caller decides what to
do about the changes it can no longer read.

etcd's Watch is a bidirectional stream, but this client has nothing to send
after the one create request, so it calls it as one request and a stream of
replies: etcd keeps sending events after the client closes its side (3.4 and
3.5 alike, tested), and grpc then reads each reply on the calling thread,
with no thread hand-off per message, which at a thousand revisions a second
is most of the capture's cost. ``close`` (from any thread) cancels the call
and ends the iteration.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc
from etcdguard.common.base.errors import EtcdUnavailable
from etcdguard.common.etcd import watchwire
from etcdguard.common.etcd.client import EtcdClient, describe_rpc_error
from etcdguard.common.etcd.watchwire import WatchResponse

WATCH = "/etcdserverpb.Watch/Watch"
LEASE_TTL = "/etcdserverpb.Lease/LeaseTimeToLive"


class Watch:
    """One watch stream on ``client`` from ``start_revision``; iterate for WatchResponses."""

    def __init__(self, client: EtcdClient, start_revision: int) -> None:
        self.client = client
        self.start_revision = start_revision
        self._lock = threading.Lock()
        self._call: Any = None
        self._closed = False

    def __iter__(self) -> Iterator[WatchResponse]:
        with self._lock:
            if self._closed:
                return
            self._call = self.client.reply_stream(WATCH, watchwire.create_request(self.start_revision),
                                                  watchwire.parse_watch_response)
        try:
            yield from self._call
        except grpc.RpcError as exc:
            if self._closed:
                return
            raise EtcdUnavailable(describe_rpc_error(exc, self.client.endpoint)) from None
        finally:
            self.close()

    def close(self) -> None:
        """End the stream (thread-safe, idempotent): the iteration stops."""
        with self._lock:
            self._closed = True
            call = self._call
        if call is not None:
            call.cancel()


def lease_ttl(client: EtcdClient, lease_id: int, timeout: float = 5.0) -> int:
    """The TTL ``lease_id`` was granted with; -1 when it has expired or was revoked (EtcdUnavailable when
    etcd does not answer)."""
    try:
        ttl: int = client.unary(LEASE_TTL, watchwire.lease_ttl_request(lease_id), watchwire.parse_lease_ttl,
                                timeout)
    except EtcdUnavailable as exc:
        if "NOT_FOUND" in str(exc) or "lease not found" in str(exc):
            return -1
        raise
    return ttl
