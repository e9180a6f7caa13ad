"""What is recorded about a snapshot file: its sidecar ``<file>.json``, one type with one reader.

The agent's catalog writes every field when it takes a snapshot (how and when
it was taken, its revision, the member and cluster it came from, and the
member's hashkv and key count at that revision, which restore drills check) and sends
the same record over the wire (``snapshot.take``, ``snapshot.list``); the
coordinator's vault reads it there. The agent's staging area writes a
sidecar for each verified upload with what it knows: name, sha256, size,
``trailer_verified`` (and ``upload``, ``received_at``, ``received_unix``,
which no reader needs). All of them are read by `SnapshotMeta.from_json`,
built on the typed JSON reader, so no reader re-parses a dict by hand:
sha256 and size are required, anything else not recorded takes its default,
and an older sidecar's ``member_name`` is read as ``member``.

integrity.sidecar_problems compares a file with its record (the restore and
``etcdguard-agent verify`` refuse a file that is not the one recorded).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from etcdguard.common.wire.typed import from_json, renamed, to_json

FROM_FILE = "snapshot-status"      # the revision was read from the file itself (etcdutl/etcdctl)
FROM_HEADER = "status-header"      # etcd's status before the stream started: a lower bound
SIDECAR_SUFFIX = ".json"
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class SnapshotMeta:
    """What is recorded about a snapshot file (the sidecar's content)."""

    sha256: str
    size: int
    name: str = ""
    path: str = ""
    revision: Optional[int] = None   # None: not recorded (a staged upload)
    created_at: str = ""             # ISO 8601 UTC
    created_unix: float = 0.0
    member: str = field(default="", metadata=renamed("member_name"))   # the etcd member it was taken on
    member_id: str = ""              # hex, as etcdctl prints it
    cluster_id: str = ""
    etcd_version: str = ""
    duration_seconds: float = 0.0
    revision_source: str = FROM_FILE   # FROM_FILE (the tool read the file) or FROM_HEADER (a lower bound)
    total_keys: Optional[int] = None
    etcd_hash: Optional[int] = None
    # Asked of the member right after the snapshot, at its exact revision, so that a restore drill can prove
    # the restored store holds the same data (None: not recorded, e.g. by an older agent):
    hashkv: Optional[int] = None                    # etcd's HashKV of the key-value store at ``revision``
    hashkv_compact_revision: Optional[int] = None   # the compaction that hash counts from
    key_count: Optional[int] = None                 # keys in the store at ``revision``
    trailer_verified: bool = True
    bundle: Optional[str] = None     # "encrypted" (may go to the vault), "local" (stays here), None
    pinned: Optional[str] = None     # the pin's reason; retention keeps it
    where: str = field(default="", compare=False)   # the sidecar it was read from (for messages; not written)

    @property
    def revision_exact(self) -> bool:
        """Is the recorded revision the file's own (not a lower bound, and recorded at all)?"""
        return self.revision is not None and self.revision_source == FROM_FILE

    def require_revision(self) -> int:
        """The recorded revision, which every catalog entry has; ValueError naming the sidecar otherwise."""
        if self.revision is None:
            raise ValueError(f"{self.where or self.name or 'snapshot record'}: no revision recorded "
                             "(a staged upload's record, not a catalog entry)")
        return self.revision

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = to_json(self)
        del data["where"]
        return data

    @classmethod
    def from_json(cls, data: Any, where: str) -> SnapshotMeta:
        """Read a sidecar (or the same record off the wire); ValueError naming ``where`` and the field."""
        meta = dataclasses.replace(from_json(cls, data, where), where=where)
        if not _SHA256.fullmatch(meta.sha256) or meta.size < 0:
            raise ValueError(f"{where}: sha256 {meta.sha256[:80]!r} / size {meta.size} are not a digest and a size")
        return meta

    from_sidecar = from_json   # the name the restore reads it by


def sidecar_path(snapshot: Path) -> Path:
    return Path(str(snapshot) + SIDECAR_SUFFIX)


def read_sidecar(snapshot: Path) -> Optional[SnapshotMeta]:
    """The sidecar beside ``snapshot`` (``<file>.json``), None if there is none; ValueError if unreadable."""
    sidecar = sidecar_path(snapshot)
    try:
        text = sidecar.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(f"{sidecar}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{sidecar}: not JSON ({exc})") from None
    return SnapshotMeta.from_json(data, str(sidecar))

