"""One capture session on an agent: a watch of every key from a revision, buffered for the coordinator.

Why the coordinator pulls (``capture.read``) instead of the agent pushing:
the control channel is request/reply and only its socket loop may send, so
a pull fits it without a second channel, and it is the ZeroMQ guide's
credit rule: the agent never sends what was not asked for. Each read names
the last revision the coordinator holds (``after``), which acknowledges
everything up to it, so a retried or repeated read gets the same answer and
a read from another coordinator (after a restart) or after a failover starts
exactly where the vault stops. Memory is bounded on both sides: the agent
holds at most ``limit`` bytes of changes and stops reading etcd while full
(etcd then holds the rest in its history, as for any slow watcher), and the
coordinator asks for at most a batch at a time.

Two threads: one reads the watch, describes each new lease's TTL
(LeaseTimeToLive) and buffers every revision whole; the other asks etcd's
revision every ``sync_every`` seconds, and when the watch has delivered up
to it records a sync point (that revision, when it was asked): the
coordinator's capture lag is measured from the newest sync point it has
stored. A watch whose start revision was compacted away ends with
``compacted``; any other failure ends it with ``error``; both are reported
once every buffered change has been read.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any, Callable, Optional

from etcdguard.agent.capture.buffer import RevisionBuffer
from etcdguard.agent.capture.lines import revision_lines
from etcdguard.common.base.errors import EtcdguardError
from etcdguard.common.capture.segment import by_revision
from etcdguard.common.etcd.client import EtcdClient
from etcdguard.common.etcd.pbwire import WireError
from etcdguard.common.etcd.watch import Watch, lease_ttl

log = logging.getLogger(__name__)

BUFFER_LIMIT = 8 << 20      # bytes of encoded changes held for the coordinator
SYNC_EVERY = 1.0            # seconds between sync points (one Status call each)
MAX_LEASES = 100_000        # leases described in one session (an LRU of the newest)


class CaptureSession:
    """Watch every key from ``start`` on; ``read`` hands out whole revisions after the one the reader has."""

    def __init__(self, connect: Callable[[], EtcdClient], start: int, *, limit: int = BUFFER_LIMIT,
                 sync_every: float = SYNC_EVERY) -> None:
        self.start = start
        self.buffer = RevisionBuffer(start, limit)
        self._connect = connect
        self._sync_every = sync_every
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self.cluster_id = ""
        self.member_id = ""
        self.compacted: Optional[int] = None
        self.error: Optional[str] = None
        self.error_reported = False
        self.ended_at: Optional[float] = None
        self.synced: Optional[tuple[int, float]] = None     # (revision, monotonic time it was etcd's)
        self.last_read = time.monotonic()
        self._described: dict[int, int] = {}
        self._client: Optional[EtcdClient] = None
        self._watch: Optional[Watch] = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------
    def begin(self) -> None:
        self._client = self._connect()
        self._watch = Watch(self._client, self.start)
        for target, name in ((self._run_watch, "capture-watch"), (self._run_sync, "capture-sync")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            self._threads.append(thread)
            thread.start()

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.close()
        with self._cond:
            self._cond.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)
        if self._client is not None:
            self._client.close()

    def _end(self, error: Optional[str] = None, compacted: Optional[int] = None) -> None:
        with self._cond:
            if self.ended_at is None:
                self.error = error
                self.compacted = compacted
                self.ended_at = time.monotonic()
            self._cond.notify_all()
        self._stop.set()

    # -- the watch ---------------------------------------------------------
    def _run_watch(self) -> None:
        assert self._watch is not None
        try:
            for response in self._watch:
                if self._stop.is_set():
                    return
                if not self.cluster_id and response.header.cluster_id:
                    self.cluster_id = f"{response.header.cluster_id:x}"
                    self.member_id = f"{response.header.member_id:x}"
                if response.compact_revision:
                    self._end(compacted=response.compact_revision)
                    return
                if response.canceled:
                    self._end(error=f"etcd cancelled the watch: {response.cancel_reason or 'no reason given'}")
                    return
                self._buffer(response.events, int(time.time() * 1000))
                if response.synced and response.events:
                    self._sync(response.header.revision, time.monotonic())
            self._end(error=None if self._stop.is_set() else "the watch ended")
        except (EtcdguardError, WireError, ValueError) as exc:
            self._end(error=f"watching etcd: {exc}")
        except Exception as exc:   # a bug must end the session visibly, not silently
            log.exception("capture: internal error in the watch")
            self._end(error=f"internal error in the agent's watch: {exc!r}")

    def _buffer(self, events: Any, time_ms: int) -> None:
        for revision, group in by_revision(events):
            count, data = revision_lines(revision, group, time_ms, self._ttl_of, self._described)
            with self._cond:
                while self.buffer.full and not self._stop.is_set():
                    self._cond.wait(0.5)
                if self._stop.is_set():
                    return
                self.buffer.add(revision, count, data)
            if len(self._described) > MAX_LEASES:
                for lease in list(self._described)[: MAX_LEASES // 2]:
                    del self._described[lease]

    def _ttl_of(self, lease: int) -> Optional[int]:
        assert self._client is not None
        try:
            return lease_ttl(self._client, lease)
        except EtcdguardError as exc:
            log.warning("capture: the TTL of lease %x could not be read: %s", lease, exc)
            return None

    # -- sync points -------------------------------------------------------
    def _sync(self, revision: int, at: float) -> None:
        with self._cond:
            if self.synced is None or revision >= self.synced[0]:
                self.synced = (revision, at)

    def _run_sync(self) -> None:
        while not self._stop.wait(self._sync_every):
            assert self._client is not None
            asked = time.monotonic()
            try:
                revision = self._client.status(2.0).revision
            except EtcdguardError:
                continue
            with self._cond:
                delivered = self.buffer.received
            if revision <= delivered:
                self._sync(revision, asked)

    # -- the coordinator's read ----------------------------------------------
    def read(self, after: int, max_bytes: int) -> tuple[dict[str, Any], bytes]:
        """Everything after ``after`` that fits ``max_bytes``; forgets what is at or before it."""
        now = time.monotonic()
        with self._cond:
            self.last_read = now
            self.buffer.drop_through(after)
            taken = self.buffer.take(after, max_bytes)
            self._cond.notify_all()
            result: dict[str, Any] = {
                "cluster_id": self.cluster_id, "member_id": self.member_id, "start": self.start,
                "first": taken.first, "last": taken.last, "events": taken.lines, "more": taken.more,
                "buffered": self.buffer.bytes, "compacted": None, "error": None,
                "synced_revision": self.synced[0] if self.synced else None,
                "synced_age_ms": int((now - self.synced[1]) * 1000) if self.synced else None,
            }
            if self.ended and taken.lines == 0 and after >= self.buffer.received:
                result["compacted"] = self.compacted
                if self.error is not None and not self.error_reported:
                    result["error"] = self.error
                    self.error_reported = True
        return result, taken.data

    def needs_restart(self, after: int, now: float, retry_after: float) -> bool:
        """Whether a read from ``after`` needs a new watch: it asks for revisions this session no longer
        holds (or never will), or the session ended and what ended it has been reported."""
        with self._cond:
            if after + 1 < self.buffer.floor or after > self.buffer.received:
                return True
            if not self.ended:
                return False
            if self.compacted is not None:
                return after != self.buffer.received
            return self.error_reported and self.ended_at is not None and now - self.ended_at >= retry_after


def close_quietly(session: Optional[CaptureSession], wait: float) -> None:
    """Stop ``session`` (if any), waiting at most ``wait`` seconds for its threads (0: not at all; they end
    on their own once the watch is cancelled)."""
    if session is not None:
        with contextlib.suppress(EtcdguardError, OSError, RuntimeError):
            session.stop(wait)
