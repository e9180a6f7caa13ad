"""Continuous backup's segments in the vault: named, encrypted, listed, read back and pruned.

A segment's object name carries everything a listing needs: the cluster it
belongs to (a restore makes a new cluster, whose revisions are another
history) and the segment's own name, with its revision and time ranges
(common/capture/segment.py): ``<cluster id>/seg-<first>-<last>-<first ms>-
<last ms>[-gap].jsonl``, ``.age`` added when it is stored encrypted. So the
restorable window is known from the listing alone, and a segment is read
only to replay it or to show its changes.

Retention (``to_prune``) keeps every segment a kept full snapshot may need:
of each cluster, those after its oldest kept snapshot; a cluster with no
kept snapshot keeps its segments only while it is the one being captured
(the first snapshot of it will need the newest of them).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from etcdguard.common.base import agekeys
from etcdguard.common.base.errors import EtcdguardError, UsageError
from etcdguard.common.capture.segment import Segment, SegmentError, SegmentInfo, decode
from etcdguard.coordinator.vault.backends import VaultBackendError
from etcdguard.coordinator.vault.entry import POINT_IN_TIME, VaultEntry
from etcdguard.coordinator.vault.segstore import SegmentObjects

log = logging.getLogger(__name__)

AGE_SUFFIX = ".age"
BASE_KINDS_EXCLUDED = (POINT_IN_TIME,)   # derived entries are not bases of a replay

FailureHook = Callable[[str, str], None]


@dataclass(frozen=True)
class StoredSegment:
    """One segment object: its cluster, what its name says, its size as stored, whether it is encrypted."""

    cluster_id: str
    info: SegmentInfo
    size: int = 0
    encrypted: bool = False

    @property
    def name(self) -> str:
        return f"{self.cluster_id}/{self.info.name}{AGE_SUFFIX if self.encrypted else ''}"

    @classmethod
    def parse(cls, name: str, size: int) -> Optional[StoredSegment]:
        """Pure: the segment an object name stands for, or None for anything else."""
        cluster, sep, file = name.partition("/")
        if not sep or not cluster or "/" in file or not all(c in "0123456789abcdef" for c in cluster):
            return None
        encrypted = file.endswith(AGE_SUFFIX)
        info = SegmentInfo.parse(file[: -len(AGE_SUFFIX)] if encrypted else file)
        return None if info is None else cls(cluster, info, size, encrypted)


def is_base(entry: VaultEntry) -> bool:
    """Whether a vault entry can start a replay: a full snapshot taken of the cluster (not a derived one)."""
    return entry.kind not in BASE_KINDS_EXCLUDED and entry.revision > 0 and bool(entry.cluster_id)


def to_prune(segments: Iterable[StoredSegment], kept: Sequence[VaultEntry],
             live_cluster: Optional[str]) -> list[StoredSegment]:
    """Pure: the segments no kept full snapshot needs (see the module's docstring)."""
    oldest: dict[str, int] = {}
    for e in kept:
        if is_base(e):
            oldest[e.cluster_id] = min(oldest.get(e.cluster_id, e.revision), e.revision)
    out = []
    for s in segments:
        base = oldest.get(s.cluster_id)
        if base is None:
            if s.cluster_id != live_cluster:
                out.append(s)
        elif s.info.last <= base:
            out.append(s)
    return out


class SegmentCatalog:
    """The segments as last listed, plus the ones this coordinator wrote or deleted since."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, StoredSegment] = {}
        self._changes: list[tuple[float, str, Optional[StoredSegment]]] = []
        self.listed_at: Optional[float] = None
        self.error: Optional[str] = None

    def answered(self, items: Iterable[StoredSegment], started: float) -> None:
        with self._lock:
            found = {s.name: s for s in items}
            for at, name, changed in self._changes:
                if at >= started:
                    if changed is None:
                        found.pop(name, None)
                    else:
                        found[name] = changed
            self._changes = [c for c in self._changes if c[0] >= started]
            self._items = found
            self.listed_at = time.time()
            self.error = None

    def failed(self, error: str) -> None:
        with self._lock:
            self.error = error

    def put(self, stored: StoredSegment) -> None:
        with self._lock:
            self._items[stored.name] = stored
            self._changes.append((time.time(), stored.name, stored))

    def drop(self, stored: StoredSegment) -> None:
        with self._lock:
            self._items.pop(stored.name, None)
            self._changes.append((time.time(), stored.name, None))

    def view(self) -> tuple[StoredSegment, ...]:
        """Every segment, by cluster then revision."""
        with self._lock:
            return tuple(sorted(self._items.values(), key=lambda s: (s.cluster_id, s.info.first, s.info.last)))

    @property
    def known(self) -> bool:
        return self.listed_at is not None


class SegmentVault:
    """Write, list, read back and prune segments on the vault's backend, encrypted like its snapshots."""

    def __init__(self, objects: SegmentObjects, *, recipients: Sequence[str] = (),
                 identity: Optional[Path] = None, on_failure: Optional[FailureHook] = None) -> None:
        self.objects = objects
        self.recipients = tuple(recipients)
        self.identity = identity
        self.on_failure = on_failure
        self.catalog = SegmentCatalog()
        self.live_cluster: Optional[str] = None    # the cluster the capture reads now (retention keeps it)

    @property
    def location(self) -> str:
        return self.objects.location

    def _failed(self, exc: BaseException, op: str) -> None:
        if self.on_failure is None:
            return
        if isinstance(exc, VaultBackendError):
            self.on_failure(exc.op, exc.reason)
        elif isinstance(exc, agekeys.AgeError):
            self.on_failure(op, "decrypt" if op == "download" else "other")
        elif isinstance(exc, SegmentError):
            self.on_failure(op, "checksum")

    def refresh(self) -> tuple[StoredSegment, ...]:
        """List the backend's segments into the catalog (a failure is recorded there and raised)."""
        started = time.time()
        try:
            listed = self.objects.list_objects()
        except (EtcdguardError, OSError) as exc:
            self._failed(exc, "list")
            self.catalog.failed(str(exc))
            raise
        items = [s for name, size in listed if (s := StoredSegment.parse(name, size)) is not None]
        self.catalog.answered(items, started)
        return self.catalog.view()

    def of_cluster(self, cluster_id: str) -> list[StoredSegment]:
        return [s for s in self.catalog.view() if s.cluster_id == cluster_id]

    def write(self, cluster_id: str, info: SegmentInfo, data: bytes) -> StoredSegment:
        """Store one encoded segment (encrypted to the vault's recipients when it has any)."""
        stored = StoredSegment(cluster_id, info, 0, bool(self.recipients))
        try:
            body = agekeys.encrypt_bytes(data, self.recipients, f"encrypting {info.name}") if self.recipients \
                else data
            self.objects.put(stored.name, body)
        except (EtcdguardError, OSError) as exc:
            self._failed(exc, "upload")
            raise
        stored = StoredSegment(cluster_id, info, len(body), stored.encrypted)
        self.catalog.put(stored)
        return stored

    def read(self, stored: StoredSegment) -> Segment:
        """One segment, decrypted and checked whole (its trailer, its header against its name)."""
        try:
            data = self.objects.get(stored.name)
            if stored.encrypted:
                if self.identity is None:
                    raise UsageError(f"segment {stored.name} is age-encrypted and [vault] age_identity is not set")
                data = agekeys.decrypt_bytes(data, self.identity, f"decrypting {stored.name}")
            segment = decode(data, f"segment {stored.name} ({self.location})")
        except (EtcdguardError, OSError) as exc:
            self._failed(exc, "download")
            raise
        if (segment.first, segment.last, segment.gap) != (stored.info.first, stored.info.last, stored.info.gap) \
                or (segment.cluster_id and segment.cluster_id != stored.cluster_id):
            mismatch = SegmentError(f"segment {stored.name} ({self.location}): its header says cluster "
                                    f"{segment.cluster_id} revisions {segment.first}..{segment.last}, its name "
                                    "another: refused (renamed or replaced?)")
            self._failed(mismatch, "download")
            raise mismatch
        return segment

    def delete(self, stored: StoredSegment) -> None:
        try:
            self.objects.delete(stored.name)
        except (EtcdguardError, OSError) as exc:
            self._failed(exc, "delete")
            raise
        self.catalog.drop(stored)

    def prune(self, kept: Sequence[VaultEntry]) -> list[StoredSegment]:
        """Delete the segments no kept full snapshot needs; a failure is logged (the next pruning retries)."""
        if not self.catalog.known:
            return []          # never from a listing that has not answered: it could be missing the newest
        gone = []
        for stored in to_prune(self.catalog.view(), kept, self.live_cluster):
            try:
                self.delete(stored)
                gone.append(stored)
            except (EtcdguardError, OSError) as exc:
                log.warning("vault retention: segment %s not deleted: %s", stored.name, exc)
                break
        if gone:
            log.info("vault retention: deleted %d segment(s) no kept snapshot needs (up to revision %d)", len(gone),
                     max(s.info.last for s in gone))
        return gone

    def source(self, cluster_id: str) -> ClusterSegments:
        return ClusterSegments(self, cluster_id)


class ClusterSegments:
    """One cluster's segments as a point-in-time build and ``history`` read them (pitr/source.py)."""

    def __init__(self, vault: SegmentVault, cluster_id: str) -> None:
        self.vault = vault
        self.cluster_id = cluster_id
        self._by_info: dict[SegmentInfo, StoredSegment] = {}

    def segment_infos(self) -> list[SegmentInfo]:
        stored = self.vault.of_cluster(self.cluster_id)
        self._by_info = {s.info: s for s in stored}
        return [s.info for s in stored]

    def read_segment(self, info: SegmentInfo) -> Segment:
        stored = self._by_info.get(info)
        if stored is None:
            self.segment_infos()
            stored = self._by_info.get(info)
        if stored is None:
            raise UsageError(f"segment {info.name} of cluster {self.cluster_id} is no longer in the vault "
                             f"({self.vault.location})")
        return self.vault.read(stored)
