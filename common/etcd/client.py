"""The agent's only door to etcd's gRPC API.

Kept small on purpose: status, the snapshot stream, hashkv and the key count at
a revision (what a snapshot records for its restore drills), alarms and member
list; and the few administrative calls a replacement and a defragmentation
make (member add, remove and promote, defragment, disarm an alarm). gRPC
alone makes the calls: requests are encoded and replies read by pbwire, so
neither python-etcd3's generated messages nor the protobuf runtime is
imported (they cost a one-shot command like `etcdguard-agent snapshot`
about a tenth of a second at start-up, and python-etcd3 0.12's messages lack
fields etcd >= 3.4 sends). Everything else in the agent works on the plain
values returned here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable, Optional

import grpc
from etcdguard.common.base.addresses import Address, parse_url
from etcdguard.common.base.errors import EtcdUnavailable
from etcdguard.common.etcd import pbwire
from etcdguard.common.etcd.pbwire import parse_member_list, parse_status, snapshot_blob
from etcdguard.common.etcd.tls import ETCD_CLIENT_PORT, ClientTLS

MAX_RECEIVE = 64 * 1024 * 1024
STREAM_WINDOW = 4 << 20

try:
    from grpc.experimental import ChannelOptions

    SINGLE_THREADED_UNARY_STREAM = ChannelOptions.SingleThreadedUnaryStream
except (ImportError, AttributeError):  # older grpcio: the option name is stable
    SINGLE_THREADED_UNARY_STREAM = "SingleThreadedUnaryStream"


@dataclass(frozen=True)
class EtcdStatus:
    endpoint: str
    version: str
    db_size: int
    leader: int
    member_id: int
    cluster_id: int
    revision: int
    raft_term: int
    raft_index: int
    errors: tuple[str, ...]
    is_learner: bool = False
    raft_applied_index: Optional[int] = None   # None: this etcd does not report it
    db_size_in_use: Optional[int] = None

    @property
    def is_leader(self) -> bool:
        return self.leader == self.member_id

    @property
    def healthy(self) -> bool:
        return self.leader != 0 and not self.errors


@dataclass(frozen=True)
class MemberInfo:
    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool = False


@dataclass(frozen=True)
class HashKVResult:
    """A member's HashKV answer: ``revision`` is its store's revision when it answered (the header's);
    ``hash_revision`` the revision the hash covers (etcd >= 3.6 sends it; None from 3.4 and 3.5)."""

    hash: int
    revision: int
    compact_revision: int
    hash_revision: Optional[int] = None


class Cancellation:
    """A cancel request that can reach a blocked gRPC stream from another thread."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], Any]] = []
        self.reason = ""

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def cancel(self, reason: str = "cancelled") -> None:
        with self._lock:
            self.reason = reason
            self._event.set()
            callbacks = list(self._callbacks)
        for cb in callbacks:
            cb()

    def on_cancel(self, cb: Callable[[], Any]) -> None:
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(cb)
                return
        cb()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)


def _describe(exc: Exception, endpoint: str) -> str:
    if isinstance(exc, grpc.RpcError):
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        name = code.name if code is not None else "ERROR"
        return f"etcd at {endpoint} did not answer: {name}: {details}"
    return f"etcd at {endpoint} did not answer: {exc}"


def describe_rpc_error(exc: Exception, endpoint: str) -> str:
    """An operator's sentence for a failed call to etcd at ``endpoint``."""
    return _describe(exc, endpoint)


def client_address(endpoint: str) -> Address:
    """Host and port of an etcd client URL (``http(s)://host[:port]``); ValueError if it has no host."""
    address = parse_url(endpoint, default_port=ETCD_CLIENT_PORT)
    if not address.host:
        raise ValueError(f"{endpoint!r} is not an http(s) URL with a host")
    return address


class EtcdClient:
    """A connection to one member. Every call has a deadline."""

    def __init__(self, endpoint: str, tls: Optional[ClientTLS] = None, timeout: float = 5.0) -> None:
        tls = tls or ClientTLS()
        address = client_address(endpoint)
        https = address.scheme == "https"
        self.endpoint = endpoint
        self.timeout = timeout
        if https and tls.cacert is None:
            raise EtcdUnavailable(f"{endpoint} is https but no CA file is configured (etcd.cacert / --cacert)")
        if https and (tls.cert is None) != (tls.key is None):
            raise EtcdUnavailable(f"{endpoint}: a client certificate needs its key and a key its certificate")
        # the gRPC target is host:port: an IPv6 host needs its brackets
        target = f"{address.bracketed_host}:{address.port}"
        options = [("grpc.max_receive_message_length", MAX_RECEIVE),
                   # unary-stream calls (the snapshot) run on the calling thread:
                   # no thread hand-off per 32 KiB message
                   (SINGLE_THREADED_UNARY_STREAM, 1),
                   # a fixed 4 MiB HTTP/2 window instead of BDP probing, which let gRPC buffer tens of MB
                   # of the snapshot stream ahead of the writer (peak RSS 65-118 MiB at 300 MB, now ~59,
                   # measured at the same speed)
                   ("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", STREAM_WINDOW)]
        if https:
            try:
                credentials = grpc.ssl_channel_credentials(
                    root_certificates=_read(tls.cacert),
                    private_key=_read(tls.key) if tls.cert is not None else None,
                    certificate_chain=_read(tls.cert) if tls.cert is not None else None)
            except OSError as exc:
                raise EtcdUnavailable(f"cannot read TLS file for {endpoint}: {exc}") from None
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> EtcdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unary(self, method: str, request: bytes, parse: Callable[[bytes], Any],
               timeout: Optional[float] = None) -> Any:
        """One unary call: ``request`` is the encoded message, the reply is read by ``parse`` (pbwire);
        ``timeout`` is this call's deadline (default: the client's)."""
        call = self._channel.unary_unary(method, request_serializer=None, response_deserializer=parse)
        try:
            return call(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as exc:
            raise EtcdUnavailable(_describe(exc, self.endpoint)) from None

    def unary(self, method: str, request: bytes, parse: Callable[[bytes], Any], timeout: Optional[float] = None) -> Any:
        """One unary call of any etcd RPC (for modules that encode their own requests with pbwire)."""
        return self._unary(method, request, parse, timeout)

    def reply_stream(self, method: str, request: bytes, parse: Callable[[bytes], Any],
                     timeout: Optional[float] = None) -> Any:
        """One request, then a stream of replies read on the calling thread (no thread hand-off per reply):
        the grpc call (iterate it, ``cancel()`` it to end). Also for a bidirectional method whose client has
        nothing more to send (etcd's watch keeps sending after the client closed its side)."""
        call = self._channel.unary_stream(method, request_serializer=None, response_deserializer=parse)
        try:
            return call(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise EtcdUnavailable(_describe(exc, self.endpoint)) from None

    def stream(self, method: str, requests: Iterator[bytes], parse: Callable[[bytes], Any],
               timeout: Optional[float] = None) -> Any:
        """A bidirectional stream (etcd's watch): ``requests`` are sent as the iterator yields them, the
        replies read by ``parse``; the grpc call (iterate it for replies, ``cancel()`` it to end)."""
        call = self._channel.stream_stream(method, request_serializer=None, response_deserializer=parse)
        try:
            return call(requests, timeout=timeout)
        except grpc.RpcError as exc:
            raise EtcdUnavailable(_describe(exc, self.endpoint)) from None

    def status(self, timeout: Optional[float] = None) -> EtcdStatus:
        """The member's own view (served locally: it answers also without quorum)."""
        r = self._unary("/etcdserverpb.Maintenance/Status", b"", parse_status, timeout)
        return EtcdStatus(
            endpoint=self.endpoint,
            version=r.version,
            db_size=r.db_size,
            leader=r.leader,
            member_id=r.header.member_id,
            cluster_id=r.header.cluster_id,
            revision=r.header.revision,
            raft_term=r.raft_term,
            raft_index=r.raft_index,
            errors=r.errors,
            is_learner=r.is_learner,
            raft_applied_index=r.raft_applied_index or None,
            db_size_in_use=r.db_size_in_use or None,
        )

    def members(self, timeout: Optional[float] = None) -> list[MemberInfo]:
        """The member list as this member knows it (served locally, as etcdctl's default)."""
        _, members = self._unary("/etcdserverpb.Cluster/MemberList", b"", parse_member_list, timeout)
        return [_member(m) for m in members]

    def alarms(self, timeout: Optional[float] = None) -> list[str]:
        """Active alarms cluster-wide, as ``<member id hex>:<ALARM>`` (e.g. ``8e9e05c52164694d:NOSPACE``).

        A raft request: without quorum it gets no answer until its deadline."""
        # AlarmRequest{action: GET, memberID: 0 (all), alarm: NONE (any)}: every field is its default
        alarms = self._unary("/etcdserverpb.Maintenance/Alarm", b"", pbwire.parse_alarms, timeout)
        return [f"{member:x}:{pbwire.ALARM_NAMES.get(alarm, str(alarm))}" for member, alarm in alarms]

    def hashkv(self, revision: int = 0) -> tuple[int, int]:
        """(hash, revision) of the key-value store, as `etcdctl endpoint hashkv`."""
        reply = self.hashkv_full(revision)
        return reply.hash, reply.revision

    def hashkv_full(self, revision: int = 0, timeout: Optional[float] = None) -> HashKVResult:
        """Everything a HashKV reply says, with the revision the hash covers where etcd (>= 3.6) sends it."""
        r: pbwire.HashKV = self._unary("/etcdserverpb.Maintenance/HashKV", pbwire.hashkv_request(revision),
                                       pbwire.parse_hashkv, timeout)
        return HashKVResult(hash=r.hash, revision=r.header.revision, compact_revision=r.compact_revision,
                            hash_revision=r.hash_revision or None)

    def count(self, revision: int = 0, timeout: Optional[float] = None) -> int:
        """How many keys the store held at ``revision`` (0: now), answered by this member alone."""
        _, n = self._unary("/etcdserverpb.KV/Range", pbwire.count_request(revision), pbwire.parse_range_count,
                           timeout)
        return int(n)

    # -- the cluster's administration (the coordinator asks an agent to make these calls) --------
    def member_add(self, peer_urls: tuple[str, ...], learner: bool,
                   timeout: Optional[float] = None) -> tuple[MemberInfo, list[MemberInfo]]:
        """Add a member (a learner with ``learner``): (the new member, the member list after the add).
        A raft request: it needs quorum."""
        added, members = self._unary("/etcdserverpb.Cluster/MemberAdd",
                                     pbwire.member_add_request(peer_urls, learner), pbwire.parse_member_add, timeout)
        return _member(added), [_member(m) for m in members]

    def member_remove(self, member_id: int, timeout: Optional[float] = None) -> list[MemberInfo]:
        """Remove a member by its id: the member list after the removal."""
        _, members = self._unary("/etcdserverpb.Cluster/MemberRemove", pbwire.member_id_request(member_id),
                                 parse_member_list, timeout)
        return [_member(m) for m in members]

    def member_promote(self, member_id: int, timeout: Optional[float] = None) -> list[MemberInfo]:
        """Make a learner a voting member (etcd refuses while it is not in sync with the leader)."""
        _, members = self._unary("/etcdserverpb.Cluster/MemberPromote", pbwire.member_id_request(member_id),
                                 parse_member_list, timeout)
        return [_member(m) for m in members]

    def defragment(self, timeout: float) -> None:
        """Defragment this member's backend (it stops serving while it rewrites its db file)."""
        self._unary("/etcdserverpb.Maintenance/Defragment", b"", bytes, timeout)

    def alarm_disarm(self, member_id: int, alarm: str, timeout: Optional[float] = None) -> list[str]:
        """Deactivate ``alarm`` (NOSPACE, CORRUPT) of the member ``member_id``; the alarms left, as ``alarms``."""
        number = pbwire.ALARM_NUMBERS.get(alarm)
        if number is None or number == 0:
            raise ValueError(f"unknown alarm {alarm!r} (known: NOSPACE, CORRUPT)")
        left = self._unary("/etcdserverpb.Maintenance/Alarm",
                           pbwire.alarm_request(pbwire.ALARM_DEACTIVATE, member_id, number), pbwire.parse_alarms,
                           timeout)
        return [f"{member:x}:{pbwire.ALARM_NAMES.get(kind, str(kind))}" for member, kind in left]

    def snapshot_stream(self, cancel: Optional[Cancellation] = None, timeout: float = 1800.0) -> Iterator[memoryview]:
        """Yield the snapshot's bytes as etcd sends them (about 32 KiB a message).

        The stream is cancelled when ``cancel`` fires; the caller then sees
        EtcdUnavailable (or Aborted from its own check).
        """
        # each message is reduced to its blob by pbwire, a view into the received bytes (no copy)
        method = self._channel.unary_stream("/etcdserverpb.Maintenance/Snapshot", request_serializer=None,
                                            response_deserializer=snapshot_blob)
        try:
            call = method(b"", timeout=timeout)
        except grpc.RpcError as exc:
            raise EtcdUnavailable(_describe(exc, self.endpoint)) from None
        if cancel is not None:
            cancel.on_cancel(call.cancel)
        try:
            yield from call
        except grpc.RpcError as exc:
            raise EtcdUnavailable(_describe(exc, self.endpoint)) from None
        finally:
            call.cancel()

    def put(self, key: str, value: str) -> None:
        """For tools and tests; the agent itself never writes to etcd."""
        self._unary("/etcdserverpb.KV/Put", pbwire.put_request(key.encode(), value.encode()), bytes)

    def get(self, key: str) -> Optional[bytes]:
        values = self._unary("/etcdserverpb.KV/Range", pbwire.range_request(key.encode()),
                             pbwire.parse_range_values)
        return values[0] if values else None


def _member(m: pbwire.Member) -> MemberInfo:
    return MemberInfo(m.id, m.name, m.peer_urls, m.client_urls, m.is_learner)


def _read(path: Any) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()
