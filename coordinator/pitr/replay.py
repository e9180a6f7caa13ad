"""Replaying captured changes into a scratch etcd, one original revision per transaction.

etcd counts one revision per transaction, so applying every captured
revision's events as one transaction, in order, from a snapshot at revision
S, gives the scratch store the same revision numbers the original had: the
replay is checked revision by revision (the revision each transaction made
must be the captured one), so a missing revision or a store that changed on
its own (a lease expiring in the scratch etcd during a long replay) stops it
with the reason instead of producing a store that only looks right.

A put that carried a lease gets it again: leases the snapshot held are still
there, and one granted later is granted again with its original id and the
TTL the capture read; a lease whose TTL was not captured cannot be granted,
so its keys are put without one and counted (Kubernetes recreates node
leases and events within seconds). Every lease the scratch store holds is
renewed each second while the replay runs: a replay longer than a lease's
TTL (kube-apiserver's master leases live 15 s) must not see it expire and
delete its keys on its own; the restored cluster then counts each TTL from
its own start, as etcd does after any restore.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Callable, Optional

from etcdguard.common.base.errors import EtcdguardError
from etcdguard.common.capture.segment import DELETE, LEASE, PUT, Event, by_revision
from etcdguard.common.etcd import pbwire
from etcdguard.common.etcd.writes import DELETE as OP_DELETE
from etcdguard.common.etcd.writes import PUT as OP_PUT
from etcdguard.common.etcd.writes import EtcdWriter, Op

Progress = Callable[[int, int], None]     # (revisions applied, up to revision)
KEEP_ALIVE_EVERY = 1.0                    # seconds between renewals of every lease the scratch store holds


class ReplayError(EtcdguardError):
    """The replay cannot produce the store as it was: a revision is missing or the store moved on its own."""


@dataclass
class ReplayStats:
    revisions: int = 0
    events: int = 0
    leases_granted: int = 0
    unleased_puts: int = 0            # puts whose lease could not be granted again (TTL not captured)
    seconds: float = 0.0
    unleased_leases: set[int] = field(default_factory=set)

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def existing_leases(writer: EtcdWriter) -> set[int]:
    """The lease ids the scratch store holds now (restored from the snapshot)."""
    def parse(message: bytes) -> set[int]:
        out = set()
        for n, v in pbwire.fields(message):
            if n == 2 and isinstance(v, memoryview):
                for m, w in pbwire.fields(v):
                    if m == 1 and isinstance(w, int):
                        out.add(w)
        return out

    leases: set[int] = writer.client.unary("/etcdserverpb.Lease/LeaseLeases", b"", parse, writer.timeout)
    return leases


class Replayer:
    """Applies revisions ``start + 1`` .. ``upto`` from captured events to a scratch store at ``start``."""

    def __init__(self, writer: EtcdWriter, start: int, upto: int, progress: Optional[Progress] = None) -> None:
        if upto < start:
            raise ValueError(f"cannot replay backwards: from revision {start} to {upto}")
        self.writer = writer
        self.expected = start
        self.upto = upto
        self.progress = progress
        self.stats = ReplayStats()
        self._leases = existing_leases(writer)
        self._ttls: dict[int, int] = {}
        self._renewed = time.monotonic()

    def apply(self, events: Iterable[Event]) -> None:
        """Apply every revision of ``events`` up to ``upto`` (earlier ones, already in the store, are skipped)."""
        started = time.monotonic()
        for revision, group in by_revision(events):
            if revision <= self.expected:
                continue
            self._keep_leases()
            if revision > self.upto:
                break
            if revision != self.expected + 1:
                raise ReplayError(f"revision {self.expected + 1} was not captured (the next captured one is "
                                  f"{revision}): the changes in between are unknown, so no point after "
                                  f"{self.expected} can be restored from these segments")
            self._revision(revision, group)
        self.stats.seconds += time.monotonic() - started

    def _revision(self, revision: int, group: list[Event]) -> None:
        for e in group:
            if e.kind == LEASE:
                self._ttls[e.lease] = e.ttl      # known before any put of this revision asks for it
        ops = []
        for e in group:
            if e.kind == PUT:
                ops.append(Op(OP_PUT, e.key, e.value, self._lease_for(e.lease)))
            elif e.kind == DELETE:
                ops.append(Op(OP_DELETE, e.key))
        if not ops:
            raise ReplayError(f"revision {revision} holds no put or delete: the capture is damaged")
        made = self.writer.txn(ops)
        if made != revision:
            raise ReplayError(f"revision {revision} came back as {made} in the scratch store: it changed on its "
                              "own during the replay (a lease it holds expired?); build the point in time again")
        self.expected = revision
        self.stats.revisions += 1
        self.stats.events += len(ops)
        if self.progress is not None and self.stats.revisions % 1000 == 0:
            self.progress(revision, self.upto)

    def _keep_leases(self) -> None:
        now = time.monotonic()
        if now - self._renewed >= KEEP_ALIVE_EVERY:
            self.writer.keep_alive(sorted(self._leases))
            self._renewed = now

    def _lease_for(self, lease: int) -> int:
        if lease == 0 or lease in self._leases:
            return lease
        ttl = self._ttls.get(lease)
        if ttl is None or ttl <= 0:
            self.stats.unleased_puts += 1
            self.stats.unleased_leases.add(lease)
            return 0
        self.writer.lease_grant(ttl, lease)
        self._leases.add(lease)
        self.stats.leases_granted += 1
        return lease

    @property
    def done(self) -> bool:
        return self.expected >= self.upto
