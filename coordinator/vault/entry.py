"""What the vault knows of a snapshot (VaultEntry), what an agent offers (Incoming), and the pure
decisions over them: resolving an id, and whether an offered snapshot adds anything.

Every entry has a kind, stored with it: ``scheduled`` (the schedule's
pulls), ``manual`` (``etcdguardctl backup``), ``pre-restore`` (the safety
snapshot a restore takes of the live cluster first) and ``point-in-time`` (a
snapshot derived from a full one and captured changes). ``latest`` is the
newest ``scheduled`` or ``manual`` one: a safety snapshot is taken of the
cluster a restore is about to replace, often of the very data the operator
restores away from, so ``latest`` must never name it; those are chosen by
id. Entries stored before kinds were recorded get one from their pin
(``derive_kind``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Optional

from etcdguard.common.base import retention
from etcdguard.common.base.durations import iso_utc
from etcdguard.common.base.errors import UsageError

FORMAT = 1
MIN_PREFIX = 4
SCHEDULED = "scheduled"
MANUAL = "manual"
PRE_RESTORE = "pre-restore"
POINT_IN_TIME = "point-in-time"
KINDS = (SCHEDULED, MANUAL, PRE_RESTORE, POINT_IN_TIME)
LATEST_KINDS = (SCHEDULED, MANUAL)   # what 'latest' may name
SHA_RE = re.compile(r"[0-9a-f]{64}")
_HEX_RE = re.compile(r"[0-9a-f]+")
# Not in the sidecar: where the data is now, and what the backend derives from its files or keys.
DERIVED = ("path", "pinned", "bundle", "encrypted", "compression", "stored_size")
# Absent from records written before them: "" kind, recorded before kinds were; None, not recorded.
OPTIONAL: dict[str, Any] = {"revision_exact": True, "kind": "", "hashkv": None, "hashkv_compact_revision": None,
                            "key_count": None}
ZSTD = "zstd"            # the one compression a vault object has ("": stored as the snapshot itself)


@dataclass(frozen=True)
class VaultEntry:
    """One snapshot in the vault."""

    sha256: str
    size: int
    source_member: str       # the member whose agent sent it
    original_name: str       # its file name in that agent's store
    revision: int
    cluster_id: str
    member_id: str
    etcd_version: str
    created_at: str          # when the agent took it (ISO 8601 UTC)
    created_unix: float
    pulled_at: str           # when the vault received it
    pulled_unix: float
    path: str = ""           # dir backend: where the data file is now; else ""
    pinned: Optional[str] = None   # the pin's reason; None: retention may remove it
    bundle: bool = False     # a node bundle (PKI, manifests) is stored beside it
    encrypted: bool = False  # stored age-encrypted
    revision_exact: bool = True    # revision read from the file (False: a lower bound from etcd's header)
    kind: str = SCHEDULED          # one of KINDS ("" only while a backend reads a record without one)
    # What the source member answered right after the snapshot, at ``revision`` (restore drills check
    # them; None: not recorded, e.g. by an older agent):
    hashkv: Optional[int] = None
    hashkv_compact_revision: Optional[int] = None
    key_count: Optional[int] = None
    compression: str = ""          # ZSTD: the object is the snapshot as zstd frames; "": the snapshot itself
    stored_size: int = 0           # bytes the backend holds (compressed, encrypted); 0: not known

    @property
    def id(self) -> str:
        return self.sha256

    def with_(self, **changes: Any) -> VaultEntry:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        data = _member_named(asdict(self))
        data["id"] = self.sha256
        return data

    def sidecar(self) -> dict[str, Any]:
        data = _member_named(asdict(self))
        for key in DERIVED:
            data.pop(key)
        data["format"] = FORMAT
        return data

    @classmethod
    def from_json(cls, data: Any, where: str) -> VaultEntry:
        """Parse a sidecar; ValueError names what is wrong with it."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: metadata is not a JSON object")
        if "source_member" not in data and "member" in data:
            data = {**data, "source_member": data["member"]}
        types: dict[str, Any] = {
            "sha256": str, "size": int, "source_member": str, "original_name": str, "revision": int,
            "cluster_id": str, "member_id": str, "etcd_version": str, "created_at": str,
            "created_unix": (int, float), "pulled_at": str, "pulled_unix": (int, float), "revision_exact": bool,
            "kind": str, "hashkv": (int, type(None)), "hashkv_compact_revision": (int, type(None)),
            "key_count": (int, type(None)),
        }
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in DERIVED:
                continue
            if f.name in OPTIONAL and f.name not in data:
                values[f.name] = OPTIONAL[f.name]
                continue
            value = data.get(f.name)
            if (isinstance(value, bool) and types[f.name] is not bool) or not isinstance(value, types[f.name]):
                raise ValueError(f"{where}: field {f.name!r} is missing or mistyped")
            values[f.name] = float(value) if f.name.endswith("_unix") else value
        if not SHA_RE.fullmatch(values["sha256"]):
            raise ValueError(f"{where}: field 'sha256' is not a sha256 hex digest")
        if values["kind"] and values["kind"] not in KINDS:
            raise ValueError(f"{where}: field 'kind' is {values['kind']!r}, not one of {', '.join(KINDS)}")
        return cls(**values)


def derive_kind(recorded: str, pinned: Optional[str]) -> str:
    """Pure: an entry's kind: the recorded one, else (an entry from before kinds were recorded)
    ``pre-restore`` when its pin's reason says a restore took it, ``scheduled`` otherwise."""
    if recorded:
        return recorded
    return PRE_RESTORE if pinned is not None and pinned.startswith(PRE_RESTORE) else SCHEDULED


def _member_named(data: dict[str, Any]) -> dict[str, Any]:
    """JSON names the sending member ``member``, as every etcdguard output does (sidecars from before
    that say ``source_member``; both are read)."""
    data["member"] = data.pop("source_member")
    return data


def facts(e: VaultEntry) -> retention.Facts:
    """How a vault entry is ordered: retention.newest_first, the order of the agent's store too."""
    return retention.Facts(e.cluster_id, e.revision, e.created_unix, e.sha256)


def newest_first(entries: Iterable[VaultEntry]) -> list[VaultEntry]:
    """Pure: newest first by revision within a cluster, clusters by their latest snapshot (see retention)."""
    return retention.newest_first(entries, facts)


def newest_first_key(e: VaultEntry) -> tuple[int, float, str]:
    """A sort key for entries of one cluster (by revision, then time); across clusters use ``newest_first``."""
    return (e.revision, e.created_unix, e.sha256)


def resolve_ref(entries: Sequence[VaultEntry], ref: str, where: str = "the vault") -> VaultEntry:
    """Pure: ``latest`` or a unique sha256 prefix (at least 4 hex digits) -> the entry.

    ``latest`` is the newest entry of kind ``scheduled`` or ``manual`` (never a
    pre-restore safety snapshot or a point-in-time one: those by id). Unknown,
    ambiguous or malformed references raise UsageError (exit 2).
    """
    ordered = newest_first(entries)
    text = ref.strip().lower()
    if text == "latest":
        candidates = [e for e in ordered if e.kind in LATEST_KINDS]
        if not ordered:
            raise UsageError(f"{where} holds no snapshots yet, so 'latest' names none "
                             "(take one with `etcdguardctl backup`)")
        if not candidates:
            raise UsageError(f"{where} holds no scheduled or manual snapshot yet, so 'latest' names none; its "
                             f"{len(ordered)} snapshot(s) ({', '.join(sorted({e.kind for e in ordered}))}) are "
                             "chosen by id (see `etcdguardctl snapshots`), or take one with `etcdguardctl backup`")
        return candidates[0]
    if len(text) < MIN_PREFIX or len(text) > 64 or not _HEX_RE.fullmatch(text):
        raise UsageError(f"{ref!r} is not a snapshot id: give 'latest' or a sha256 prefix of at least "
                         f"{MIN_PREFIX} hex digits (see `etcdguardctl snapshots`)")
    matches = [e for e in ordered if e.sha256.startswith(text)]
    if not matches:
        raise UsageError(f"no snapshot {ref!r} in {where} (see `etcdguardctl snapshots`)")
    if len(matches) > 1:
        shown = ", ".join(m.sha256[:16] for m in matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise UsageError(f"{ref!r} is ambiguous: {len(matches)} snapshots start with it ({shown}); "
                         "give more digits")
    return matches[0]


@dataclass(frozen=True)
class Incoming:
    """What the source agent says about a snapshot before it is pulled."""

    sha256: str
    size: int
    source_member: str
    original_name: str
    revision: int
    cluster_id: str
    member_id: str
    etcd_version: str
    created_at: str
    created_unix: float
    revision_exact: bool = True
    bundle: bool = False     # the agent holds an encrypted node bundle beside it
    kind: str = SCHEDULED    # why it is copied (KINDS): stored with the entry
    hashkv: Optional[int] = None
    hashkv_compact_revision: Optional[int] = None
    key_count: Optional[int] = None

    @classmethod
    def from_agent(cls, member: str, meta: dict[str, Any], kind: str = SCHEDULED) -> Incoming:
        """From an agent's snapshot record (its catalog sidecar, as snapshot.take and its status report send
        it, read by the sidecar's one type); ValueError if it lacks what the vault records."""
        from etcdguard.common.snapshot.sidecar import FROM_FILE, SnapshotMeta

        missing = [key for key in ("sha256", "size", "name", "created_unix") if key not in meta]
        if missing:
            raise ValueError(f"member {member}: snapshot metadata lacks {', '.join(map(repr, missing))}")
        record = SnapshotMeta.from_json(meta, f"member {member}: snapshot metadata")
        return cls(
            sha256=record.sha256, size=record.size, source_member=member, original_name=record.name,
            revision=record.revision or 0, cluster_id=record.cluster_id, member_id=record.member_id,
            etcd_version=record.etcd_version, created_at=record.created_at or iso_utc(record.created_unix),
            created_unix=record.created_unix, revision_exact=record.revision_source == FROM_FILE,
            bundle=record.bundle == "encrypted", kind=kind, hashkv=record.hashkv,
            hashkv_compact_revision=record.hashkv_compact_revision, key_count=record.key_count,
        )

    def entry(self, pulled_unix: float, *, encrypted: bool = False, path: str = "",
              compression: str = "") -> VaultEntry:
        return VaultEntry(
            sha256=self.sha256, size=self.size, source_member=self.source_member,
            original_name=self.original_name, revision=self.revision, cluster_id=self.cluster_id,
            member_id=self.member_id, etcd_version=self.etcd_version, created_at=self.created_at,
            created_unix=self.created_unix, pulled_at=iso_utc(pulled_unix), pulled_unix=pulled_unix,
            path=path, encrypted=encrypted, revision_exact=self.revision_exact, kind=self.kind,
            hashkv=self.hashkv, hashkv_compact_revision=self.hashkv_compact_revision, key_count=self.key_count,
            compression=compression,
        )


def revision_exact(meta: Any) -> bool:
    """Whether an agent's snapshot metadata has the revision read from the file itself.

    Without etcdutl/etcdctl the agent records etcd's header revision from
    before the snapshot, a lower bound: two such snapshots with the same
    number may hold different data.
    """
    return isinstance(meta, dict) and meta.get("revision_source", "snapshot-status") == "snapshot-status"


def same_data(entries: Sequence[VaultEntry], cluster_id: str, revision: int, exact: bool) -> Optional[VaultEntry]:
    """Pure: an entry holding the same data as a snapshot of (cluster_id, revision), or None.

    etcd bumps the revision on every write, so two snapshots of one cluster at
    one revision hold the same keys and values, though their bytes differ
    (bbolt page layout, free pages). Only an exact revision can be trusted
    that way; leases granted and auth changes made without a key write do not
    bump it and wait for the next write to be copied.
    """
    if not exact or not cluster_id or revision <= 0:
        return None
    for e in newest_first(entries):
        if e.cluster_id == cluster_id and e.revision == revision and e.revision_exact:
            return e
    return None
