"""The coordinator's client for one agent: requests with deadlines, and snapshot transfers.

One DEALER socket per agent, a CURVE client that knows the agent's public
key, so the coordinator talks only to the real agent and the agent admits
only known coordinators. Every request carries a fresh id and a reply is
taken only when its id matches; after a deadline passes the socket is closed
(LINGER 0) and a new one made, so a late reply to an abandoned request can
never be mistaken for the answer to a new one.

Retries resend the same request id: the agent answers a repeat with the
reply it recorded, or attaches it to the still running request, so a retry
never runs anything twice. By default exactly the ops whose spec in the wire
protocol says ``idempotent`` are retried; ``snapshot.take`` is not.

Transfers follow the ZeroMQ guide's credit-based file transfer (fileio3):
``credit`` chunk requests are kept in flight, each addressed by offset, so
throughput does not wait on round trips, memory stays at ``credit`` chunks,
and a broken connection is resumed from the last contiguous byte. A fetched
file is written to a temp file next to ``dest``, verified (sha256, and etcd's
SHA-256 trailer for a snapshot), fsync'ed and renamed; on failure nothing is
left behind. Snapshots (``snapshot.fetch``) and the node bundle beside one
(``bundle.fetch``) go through the same transfer. A snapshot may be fetched
compressed: every chunk comes as one zstd frame, written as it comes and
checked by what it decompresses to.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import zmq
from etcdguard.common.base import fsutil
from etcdguard.common.base.addresses import zmq_endpoint_is_ipv6
from etcdguard.common.base.errors import ConfigError, EtcdguardError, SnapshotCorrupt, UsageError
from etcdguard.common.snapshot import compression
from etcdguard.common.snapshot.integrity import KnownSizeDigest
from etcdguard.common.snapshot.sink import HashingSink
from etcdguard.common.wire import protocol as P

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]   # (bytes done, total bytes)

DEFAULT_RETRIES = 2       # for the ops the protocol declares idempotent; others are sent once
STALL_PROBE = 5.0          # seconds without any reply before a transfer reconnects and resumes
MAX_RESYNCS = 5            # put: gap errors in a row (without progress) before giving up
READ_CHUNK = 1 << 20
SINK_DEPTH = 16            # fetch: received chunks queued for the writer thread (memory: that many chunks)
WRITEBACK = 8 << 20        # fetch: start writeback every this many bytes (0: only the closing fsync)
MAX_MESSAGE = P.MAX_CHUNK + P.MAX_HEADER + 4096
_SHA256 = re.compile(P.SHA256_PATTERN)


class AgentUnreachable(EtcdguardError):
    """The agent did not answer within the deadline: down, unreachable, or refusing this coordinator's key."""


class AgentClient:
    """Requests to one agent. Not for concurrent use from several threads at once: calls are serialised,
    so use a second client for a transfer that should not hold up heartbeats."""

    def __init__(
        self,
        name: str,
        endpoint: str,
        *,
        server_public_key: Optional[bytes],
        client_public: Optional[bytes],
        client_secret: Optional[bytes],
        insecure: bool = False,
        context: Optional[zmq.Context[Any]] = None,
    ) -> None:
        if not insecure:
            missing = [n for n, v in (("the agent's public key", server_public_key),
                                      ("the coordinator's public key", client_public),
                                      ("the coordinator's secret key", client_secret)) if not v]
            if missing:
                raise ConfigError(f"agent {name} ({endpoint}): CURVE needs {', '.join(missing)} "
                                  "(or insecure = true for plain TCP)")
        self.name = name
        self.endpoint = endpoint
        self.insecure = insecure
        self._server_key = server_public_key
        self._public = client_public
        self._secret = client_secret
        self._ctx: zmq.Context[Any] = context if context is not None else zmq.Context.instance()
        self._sock: Optional[zmq.Socket[Any]] = None
        self._lock = threading.RLock()
        self.reconnects = 0        # sockets thrown away after a deadline or a stall (for tests and metrics)

    # -- socket --------------------------------------------------------------
    def _socket(self) -> zmq.Socket[Any]:
        if self._sock is None:
            sock: zmq.Socket[Any] = self._ctx.socket(zmq.DEALER)
            sock.linger = 0
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
            sock.setsockopt(zmq.RECONNECT_IVL, 100)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
            sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
            sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 60)
            sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, 10)
            sock.ipv6 = zmq_endpoint_is_ipv6(self.endpoint)  # libzmq refuses tcp://[::1]:port without it
            if not self.insecure:
                assert self._server_key and self._public and self._secret
                sock.curve_serverkey = self._server_key
                sock.curve_publickey = self._public
                sock.curve_secretkey = self._secret
            sock.connect(self.endpoint)
            self._sock = sock
        return self._sock

    def _reset(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None
            self.reconnects += 1

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close(0)
                self._sock = None

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, sock: zmq.Socket[Any], frames: list[bytes], until: float) -> bool:
        """Queue a message; False if it could not be queued before ``until`` (the socket is mute)."""
        while True:
            try:
                sock.send_multipart(frames, zmq.NOBLOCK, copy=len(frames) < 2)
                return True
            except zmq.Again:
                left = until - time.monotonic()
                if left <= 0 or not sock.poll(max(1, int(left * 1000)), zmq.POLLOUT):
                    return False

    @staticmethod
    def _decode(frames: list[zmq.Frame]) -> Optional[tuple[P.Reply, Optional[memoryview]]]:
        """(reply, data) of a received message; None (logged) if it breaks the protocol."""
        try:
            if len(frames) > P.MAX_FRAMES:
                raise P.ProtocolError(P.BAD_REQUEST, f"reply has {len(frames)} frames")
            # The header is decoded on its own so a data chunk is never copied; MAXMSGSIZE bounds it.
            reply = P.decode_reply([frames[0].bytes])
        except P.ProtocolError as exc:
            log.warning("ignoring a malformed reply: %s", exc.message)
            return None
        data = frames[1].buffer if len(frames) == 2 else None
        if data is not None and (not reply.ok or len(data) > P.MAX_CHUNK):
            log.warning("ignoring a reply with an unexpected data frame (%d bytes)", len(data))
            return None
        return reply, data

    # -- requests ------------------------------------------------------------
    def request(
        self, op: str, args: Optional[Mapping[str, Any]] = None, *, timeout: float = 10.0,
        retries: Optional[int] = None, data: Optional[bytes] = None, request_id: Optional[str] = None,
    ) -> tuple[P.Reply, Optional[memoryview]]:
        """Send one request and wait for its reply (ok or error) and data frame.

        ``timeout`` is the deadline for the whole call; it is shared evenly by
        the attempts. Raises AgentUnreachable when no attempt got an answer.
        ``request_id``: a caller re-sending the same request after a timeout passes
        the id it used before, so the agent joins it to the running request (or
        answers it from its record) and the reply carries the id awaited here.
        """
        if retries is None:
            retries = DEFAULT_RETRIES if P.is_idempotent(op) else 0
        rid = request_id or P.new_request_id()
        frames = P.encode_request(op, args or {}, rid, data)
        attempts = max(1, retries + 1)
        deadline = time.monotonic() + timeout
        with self._lock:
            for attempt in range(attempts):
                now = time.monotonic()
                if now >= deadline:
                    break
                until = now + (deadline - now) / (attempts - attempt)
                sock = self._socket()
                if self._send(sock, frames, until):
                    got = self._await(sock, rid, until)
                    if got is not None:
                        return got
                log.debug("agent %s: no answer to %s (attempt %d of %d)", self.name, op, attempt + 1, attempts)
                self._reset()
        raise AgentUnreachable(
            f"agent {self.name} at {self.endpoint} did not answer {op} within {timeout:g}s "
            f"({attempts} attempt{'s' if attempts > 1 else ''}); is the agent running and reachable, "
            "and is this coordinator's public key in its authorized_keys?")

    def _await(self, sock: zmq.Socket[Any], rid: str, until: float) -> Optional[tuple[P.Reply, Optional[memoryview]]]:
        while True:
            left = until - time.monotonic()
            if left <= 0 or not sock.poll(max(1, int(left * 1000)), zmq.POLLIN):
                return None
            got = self._decode(sock.recv_multipart(copy=False))
            if got is None:
                continue
            reply = got[0]
            # An error reply without an id answers a request the agent could not read: on this socket
            # only ours is outstanding (stale requests died with the sockets they were sent on).
            if reply.id == rid or (reply.id is None and not reply.ok):
                return got
            log.debug("agent %s: dropping a stale reply %s", self.name, reply.id)

    def call(
        self, op: str, args: Optional[Mapping[str, Any]] = None, *, timeout: float = 10.0,
        retries: Optional[int] = None, data: Optional[bytes] = None, request_id: Optional[str] = None,
    ) -> dict[str, Any]:
        """The result of ``op``; RemoteError for an error reply, AgentUnreachable after the deadline."""
        reply, _ = self.request(op, args, timeout=timeout, retries=retries, data=data, request_id=request_id)
        return reply.raise_for_error()

    def status(self, timeout: float = 5.0, retries: Optional[int] = None) -> dict[str, Any]:
        """The agent's status report; ``retries`` within ``timeout`` (default: the idempotent ops' count)."""
        return self.call("status", timeout=timeout, retries=retries)

    def capture_read(self, after: int, size: int, timeout: float = 5.0) -> tuple[dict[str, Any], bytes]:
        """Continuous backup: the agent's captured changes after revision ``after`` (at most ``size`` bytes of
        whole revisions) and what its watch reports; RemoteError, AgentUnreachable as ``call``."""
        reply, data = self.request("capture.read", {"after": after, "size": size}, timeout=timeout)
        result = reply.raise_for_error()
        return result, bytes(data) if data is not None else b""

    # -- fetch ---------------------------------------------------------------
    def fetch_snapshot(
        self, name: str, dest: Path, *, expected_sha256: str, expected_size: int,
        progress: Optional[Progress] = None, credit: int = 4, chunk: int = 1 << 20, timeout: float = 30.0,
        zstd_level: Optional[int] = None,
    ) -> str:
        """Copy snapshot ``name`` from the agent to ``dest``, verified end to end; the encoding written.

        With ``zstd_level`` the agent compresses every chunk as it sends it and
        ``dest`` holds the snapshot as zstd frames (compression.py): each frame
        is decompressed as it is written, and the snapshot's sha256 and trailer
        are checked on what it decompresses to. An agent that cannot compress
        (one from before compression) is asked again for plain chunks. Returns
        ``"zstd"`` or ``""`` (plain). ``timeout`` bounds the time without
        progress: the transfer reconnects and resumes at the last contiguous
        byte after a stall, and gives up (AgentUnreachable) when no data arrived
        for ``timeout`` seconds. On any failure no file exists at ``dest``
        (unless one was there before) and no temp file is left.
        """
        _check_transfer_args(credit, chunk, fetch=True)
        if expected_size <= 0:
            raise UsageError(f"expected_size must be > 0, got {expected_size}")
        if zstd_level is not None and chunk > P.MAX_COMPRESSED_CHUNK:
            raise UsageError(f"a compressed fetch takes chunks of at most {P.MAX_COMPRESSED_CHUNK} bytes, got {chunk}")
        f = _Fetch("snapshot.fetch", name, name, expected_sha256, expected_size, trailer=True, zstd_level=zstd_level)
        try:
            self._fetch(f, Path(dest), progress=progress, credit=credit, chunk=chunk, timeout=timeout)
        except P.RemoteError as exc:
            if zstd_level is None or exc.code != P.BAD_REQUEST or "zstd_level" not in exc.message:
                raise
            log.info("agent %s sends no compressed chunks (an older agent): fetching %s plain", self.name, name)
            f = dataclasses.replace(f, zstd_level=None)
            self._fetch(f, Path(dest), progress=progress, credit=credit, chunk=chunk, timeout=timeout)
        return compression.ZSTD if f.zstd_level is not None else ""

    def fetch_bundle(
        self, name: str, dest: Path, *, max_size: int, progress: Optional[Progress] = None, credit: int = 4,
        chunk: int = 1 << 20, timeout: float = 30.0,
    ) -> None:
        """Copy the encrypted node bundle beside snapshot ``name`` to ``dest``, verified end to end.

        A bundle's size and sha256 are not in the snapshot's metadata, so a
        one-byte ``bundle.fetch`` asks for them first; the transfer then runs
        as for a snapshot, every chunk's reply checked against them, and the
        received file's sha256 against the agent's. A bundle larger than
        ``max_size`` is refused before anything is transferred. Same
        guarantees as ``fetch_snapshot`` otherwise.
        """
        _check_transfer_args(credit, chunk, fetch=True)
        what = f"the node bundle of {name}"
        info = self.call("bundle.fetch", {"name": name, "offset": 0, "size": 1}, timeout=timeout)
        total, sha256 = info.get("total"), info.get("sha256")
        if not isinstance(total, int) or not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            raise P.ProtocolError(P.BAD_REQUEST, f"{what}: agent {self.name} described it as {total!r} bytes with "
                                                 f"sha256 {sha256!r}")
        if not 0 < total <= max_size:
            raise SnapshotCorrupt(f"{what}: refused a {total}-byte node bundle from agent {self.name} (a bundle is "
                                  f"1 to {max_size} bytes)")
        self._fetch(_Fetch("bundle.fetch", name, what, sha256, total, trailer=False), Path(dest), progress=progress,
                    credit=credit, chunk=chunk, timeout=timeout)

    def _fetch(self, f: _Fetch, dest: Path, *, progress: Optional[Progress], credit: int, chunk: int,
               timeout: float) -> None:
        """The transfer into a temp file beside ``dest``, checked, fsync'ed and renamed; nothing left on failure."""
        tmp = fsutil.temp_path(dest.parent, dest.name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with self._lock:
                sha, trailer_ok = self._pull(f, fd, progress=progress, credit=credit, chunk=chunk, timeout=timeout)
            if sha != f.sha256:
                raise SnapshotCorrupt(f"{f.what} from agent {self.name}: received data has sha256 {sha}, "
                                      f"expected {f.sha256}")
            if f.trailer and not trailer_ok:
                raise SnapshotCorrupt(f"{f.what} from agent {self.name}: the SHA-256 trailer does not match "
                                      "(not an etcd snapshot, or corrupted)")
            fsutil.commit_temp(tmp, dest, fd=fd)
            os.close(fd)
            fd = -1
        except BaseException:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _pull(self, f: _Fetch, fd: int, *, progress: Optional[Progress], credit: int, chunk: int,
              timeout: float) -> tuple[str, bool]:
        digest = KnownSizeDigest(f.total)
        # compressed: the frames are written as they come, and hashed by what they decompress to
        hasher = digest if f.zstd_level is None else compression.FrameHasher(digest)
        with HashingSink(fd, hasher, batch_bytes=1, depth=SINK_DEPTH, writeback=WRITEBACK,
                         name="fetch-writer") as sink:
            self._pull_into(sink, f, progress=progress, credit=credit, chunk=chunk, timeout=timeout)
        return digest.finish()

    def _pull_into(self, sink: HashingSink, f: _Fetch, *, progress: Optional[Progress], credit: int, chunk: int,
                   timeout: float) -> None:
        p = _Pull(f, credit, chunk, timeout)
        sock = self._socket()
        while p.received < f.total:
            self._ask(sock, p)
            now = time.monotonic()
            if now - p.last_progress > timeout:
                raise AgentUnreachable(f"agent {self.name} at {self.endpoint}: no data for {timeout:g}s while "
                                       f"fetching {f.what} ({p.received} of {f.total} bytes received)")
            wait = min(p.stall, p.last_progress + timeout - now)
            if not sock.poll(max(1, int(wait * 1000)), zmq.POLLIN):
                # Nothing for a while: the connection may have broken with requests in it. Start a
                # fresh socket and ask again from the last contiguous byte.
                self._reset()
                sock = self._socket()
                p.restart(p.received)
                continue
            self._receive(sink, p, sock.recv_multipart(copy=False), progress)

    def _ask(self, sock: zmq.Socket[Any], p: _Pull) -> None:
        """Request chunks until ``credit`` are in flight, the whole file is asked for, or the socket is mute."""
        while len(p.inflight) < p.credit and p.next_offset < p.f.total:
            size = min(p.chunk, p.f.total - p.next_offset)
            rid = f"{p.prefix}-{p.generation}-{p.next_offset}"
            args: dict[str, Any] = {"name": p.f.name, "offset": p.next_offset, "size": size}
            if p.f.zstd_level is not None:
                args["zstd_level"] = p.f.zstd_level
            frames = P.encode_request(p.f.op, args, rid)
            if not self._send(sock, frames, time.monotonic() + p.stall):
                return
            p.inflight[rid] = p.next_offset
            p.next_offset += size

    def _receive(self, sink: HashingSink, p: _Pull, message: list[zmq.Frame], progress: Optional[Progress]) -> None:
        """One reply: its chunk is written in order (or kept until the missing ones before it arrive);
        stale and malformed replies are dropped, an error reply raises."""
        got = self._decode(message)
        if got is None:
            return
        reply, data = got
        offset = p.inflight.pop(reply.id, None) if reply.id is not None else None
        if offset is None:
            return   # stale
        result = reply.raise_for_error()
        n = _check_chunk(p.f.what, result, offset, data, sha256=p.f.sha256, total=p.f.total,
                         compressed=p.f.zstd_level is not None)
        assert data is not None
        if offset == p.received:
            sink.write(data)
            p.received += n
            while p.received in p.early:
                frame, size = p.early.pop(p.received)
                sink.write(frame.buffer)
                p.received += size
            p.last_progress = time.monotonic()
            if progress is not None:
                progress(p.received, p.f.total)
        elif offset > p.received:
            p.early[offset] = (message[1], n)

    # -- put -----------------------------------------------------------------
    def put_snapshot(
        self, src: Path, upload: str, *, progress: Optional[Progress] = None, chunk: int = 1 << 20,
        credit: int = 4, timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Upload ``src`` into the agent's staging area as ``upload``; returns the final put result
        (``staged`` names the file for a restore). The file is checked (trailer) before it is sent;
        the agent checks sha256 and trailer again before it accepts it. ``timeout`` bounds the
        time without progress, as for fetch_snapshot."""
        _check_transfer_args(credit, chunk)
        src = Path(src)
        fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
        try:
            total = os.fstat(fd).st_size
            sha256 = _digest_fd(fd, total, src)
            with self._lock:
                return self._push(fd, upload, total=total, sha256=sha256, progress=progress, credit=credit,
                                  chunk=chunk, timeout=timeout)
        finally:
            os.close(fd)

    def _probe(self, upload: str, total: int, sha256: str, timeout: float) -> dict[str, Any]:
        """Ask where the upload stands (an empty chunk at offset 0 is acknowledged with ``received``)."""
        return self.call("snapshot.put", {"upload": upload, "offset": 0, "total_size": total, "sha256": sha256,
                                          "final": total == 0}, data=b"", timeout=timeout)

    def _push(self, fd: int, upload: str, *, total: int, sha256: str, progress: Optional[Progress], credit: int,
              chunk: int, timeout: float) -> dict[str, Any]:
        state = self._probe(upload, total, sha256, timeout)
        if state["complete"]:
            return state
        p = _Push(upload, total, sha256, credit, chunk, timeout, acked=int(state["received"]))
        sock = self._socket()
        while True:
            self._fill(sock, fd, p)
            now = time.monotonic()
            if now - p.last_progress > timeout:
                raise AgentUnreachable(f"agent {self.name} at {self.endpoint}: no progress for {timeout:g}s "
                                       f"while uploading {upload} ({p.acked} of {total} bytes acknowledged)")
            wait = min(p.stall, p.last_progress + timeout - now)
            if not sock.poll(max(1, int(wait * 1000)), zmq.POLLIN):
                sock, done = self._resync(p)
                if done is not None:
                    return done
                continue
            got = self._decode(sock.recv_multipart(copy=False))
            if got is None:
                continue
            reply, _ = got
            if reply.id is None or p.inflight.pop(reply.id, None) is None:
                continue   # stale
            if not reply.ok and reply.error_code == P.BAD_REQUEST and p.resyncs < MAX_RESYNCS:
                # Most likely a gap after a lost message: ask where the agent stands and go on from there.
                p.resyncs += 1
                log.info("agent %s: upload %s: %s; resuming", self.name, upload, reply.error_message)
                sock, done = self._resync(p)
                if done is not None:
                    return done
                continue
            result = reply.raise_for_error()
            p.acknowledge(int(result.get("received", 0)), progress)
            if result.get("complete"):
                return result

    def _fill(self, sock: zmq.Socket[Any], fd: int, p: _Push) -> None:
        """Send chunks until ``credit`` are in flight, the final one is sent, or the socket is mute."""
        while len(p.inflight) < p.credit and not p.sent_final:
            n = min(p.chunk, p.total - p.next_offset)   # 0 only for an empty final chunk (all bytes already there)
            data = os.pread(fd, n, p.next_offset)
            if len(data) != n:
                raise SnapshotCorrupt(f"upload {p.upload}: the source file shrank while it was being sent")
            final = p.next_offset + n == p.total
            rid = f"{p.prefix}-{p.generation}-{p.next_offset}"
            frames = P.encode_request("snapshot.put", {"upload": p.upload, "offset": p.next_offset,
                                                       "total_size": p.total, "sha256": p.sha256, "final": final},
                                      rid, data)
            if not self._send(sock, frames, time.monotonic() + p.stall):
                return
            p.inflight[rid] = p.next_offset
            p.next_offset += n
            p.sent_final = final

    def _resync(self, p: _Push) -> tuple[zmq.Socket[Any], Optional[dict[str, Any]]]:
        """A fresh socket, and where the agent stands: (socket, the final result if it has everything)."""
        self._reset()
        left = max(0.5, p.last_progress + p.timeout - time.monotonic())
        st = self._probe(p.upload, p.total, p.sha256, left)
        sock = self._socket()
        p.generation += 1
        p.inflight.clear()
        p.acked = max(p.acked, int(st["received"])) if not st["complete"] else p.total
        p.next_offset = int(st["received"])
        p.sent_final = False
        return sock, (st if st["complete"] else None)


@dataclass(frozen=True)
class _Fetch:
    """One file to fetch: the op that reads its chunks, the name it is asked by, how errors name it,
    the sha256 and size it must have, and whether it ends in etcd's SHA-256 trailer (a snapshot)."""

    op: str
    name: str
    what: str
    sha256: str
    total: int
    trailer: bool
    zstd_level: Optional[int] = None   # chunks asked for as zstd frames (written as they come)


@dataclass
class _Pull:
    """Where one fetch stands: the chunk requests in flight, chunks that came ahead of a missing one, and
    the request ids' generation (a new one after each reconnect, so replies to old requests are stale)."""

    f: _Fetch
    credit: int
    chunk: int
    timeout: float
    next_offset: int = 0
    received: int = 0        # bytes of the file written, in order (compressed: the bytes they stand for)
    prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    generation: int = 0
    inflight: dict[str, int] = field(default_factory=dict)      # request id -> offset
    early: dict[int, tuple[zmq.Frame, int]] = field(default_factory=dict)   # offset -> (chunk, bytes it stands for)
    last_progress: float = field(default_factory=time.monotonic)

    @property
    def stall(self) -> float:
        return max(0.2, min(STALL_PROBE, self.timeout / 3))

    def restart(self, received: int) -> None:
        """On a fresh socket: new request ids, and ask again from byte ``received``."""
        self.generation += 1
        self.inflight.clear()
        self.early.clear()
        self.next_offset = received


@dataclass
class _Push:
    """Where one upload stands: what is acknowledged, what is in flight, and the request ids' generation."""

    upload: str
    total: int
    sha256: str
    credit: int
    chunk: int
    timeout: float
    acked: int
    next_offset: int = -1
    prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    generation: int = 0
    resyncs: int = 0
    inflight: dict[str, int] = field(default_factory=dict)   # request id -> offset
    sent_final: bool = False
    last_progress: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.next_offset < 0:
            self.next_offset = self.acked

    @property
    def stall(self) -> float:
        return max(0.2, min(STALL_PROBE, self.timeout / 3))

    def acknowledge(self, received: int, progress: Optional[Progress]) -> None:
        if received > self.acked:
            self.acked = received
            self.resyncs = 0
            self.last_progress = time.monotonic()
            if progress is not None:
                progress(self.acked, self.total)


def _check_transfer_args(credit: int, chunk: int, fetch: bool = False) -> None:
    if not 1 <= chunk <= P.MAX_CHUNK:
        raise UsageError(f"chunk must be 1 to {P.MAX_CHUNK} bytes, got {chunk}")
    if not 1 <= credit <= 64:
        raise UsageError(f"credit must be 1 to 64 chunks, got {credit}")
    if fetch and credit * chunk > P.FETCH_WINDOW:
        # the agent refuses (busy) a chunk beyond this many bytes in flight to one coordinator
        raise UsageError(f"credit x chunk must be at most {P.FETCH_WINDOW} bytes (the agent's fetch window), "
                         f"got {credit} x {chunk}")


def _check_chunk(name: str, result: dict[str, Any], offset: int, data: Optional[memoryview], *, sha256: str,
                 total: int, compressed: bool = False) -> int:
    """A fetch reply must describe the file we expect and carry the bytes we asked for: how many of the
    file's bytes it carries (compressed: the size its frame declares, which must be the reply's)."""
    if result.get("total") != total:
        raise SnapshotCorrupt(f"{name}: the agent's file has {result.get('total')} bytes, expected {total}")
    if result.get("sha256") != sha256:
        raise SnapshotCorrupt(f"{name}: the agent's file has sha256 {result.get('sha256')}, expected {sha256}")
    if compressed and result.get("encoding") != compression.ZSTD:
        raise P.ProtocolError(P.BAD_REQUEST, f"{name}: asked for zstd frames, the reply for offset {offset} "
                                             f"is encoded {result.get('encoding')!r}")
    n = len(data) if data is not None else -1
    if compressed and data is not None and n > 0:
        try:
            n = compression.frame_size(data)
        except SnapshotCorrupt as exc:
            raise SnapshotCorrupt(f"{name}: the chunk at offset {offset}: {exc}") from None
    if result.get("offset") != offset or result.get("size") != n or n <= 0:
        raise P.ProtocolError(P.BAD_REQUEST, f"{name}: reply for offset {offset} carries {n} bytes at offset "
                                             f"{result.get('offset')} (size {result.get('size')})")
    return n


def _digest_fd(fd: int, total: int, path: Path) -> str:
    """sha256 of a snapshot file; refuses one whose etcd trailer does not match."""
    digest = KnownSizeDigest(total)
    buf = bytearray(READ_CHUNK)
    view = memoryview(buf)
    offset = 0
    while offset < total:
        n = os.preadv(fd, [view[: min(READ_CHUNK, total - offset)]], offset)
        if n <= 0:
            raise SnapshotCorrupt(f"{path}: the file shrank while it was being read")
        digest.update(view[:n])
        offset += n
    sha, trailer_ok = digest.finish()
    if not trailer_ok:
        raise SnapshotCorrupt(f"{path}: the SHA-256 trailer does not match (not an etcd snapshot, or corrupted); "
                              "refusing to upload it")
    return sha
