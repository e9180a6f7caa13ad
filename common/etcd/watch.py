"""A watch of every key from one revision on: etcd's bidirectional watch stream as an iterator.

What continuous backup reads (agent/capture/): every change etcd makes, in
revision order, from a start revision the caller chooses; progress
notifications (asked for with ``request_progress``) tell the caller that
every change up to the store's revision has arrived. A start revision that
compaction removed comes back as one response with ``compact_revision`` set
(etcd cancels the watch): the caller decides what to do about the changes
it can no longer read.

The stream's requests come from a queue a generator drains, so another
thread may ask for progress while the reading thread waits for events;
``close`` (from any thread) cancels the call and ends the iteration.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any, Optional

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
        self._requests: queue.SimpleQueue[Optional[bytes]] = queue.SimpleQueue()
        self._requests.put(watchwire.create_request(start_revision))
        self._lock = threading.Lock()
        self._call: Any = None
        self._closed = False

    def _outgoing(self) -> Iterator[bytes]:
        while True:
            item = self._requests.get()
            if item is None:
                return
            yield item

    def __iter__(self) -> Iterator[WatchResponse]:
        with self._lock:
            if self._closed:
                return
            self._call = self.client.stream(WATCH, self._outgoing(), watchwire.parse_watch_response)
        try:
            yield from self._call
        except grpc.RpcError as exc:
            if self._closed:
                return
            raise EtcdUnavailable(describe_rpc_error(exc, self.client.endpoint)) from None
        finally:
            self.close()

    def request_progress(self) -> None:
        """Ask etcd for a progress notification (thread-safe)."""
        if not self._closed:
            self._requests.put(watchwire.progress_request())

    def close(self) -> None:
        """End the stream (thread-safe, idempotent): the iteration stops."""
        with self._lock:
            self._closed = True
            call = self._call
        self._requests.put(None)
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
