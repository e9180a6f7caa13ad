"""What the coordinator itself knows its vault copies to be: the fingerprint of each object it stored or
verified, kept in its own state directory, and the pure checks of a copy against it.

A copy in object storage is checked at plan time without downloading it: a
HEAD gives its ETag, size and metadata. The metadata alone proves nothing
(whoever can rewrite an object can rewrite its metadata), so the coordinator
records, outside the bucket, the ETag and size an object had when the
coordinator uploaded it or last verified it in full (downloaded, decrypted,
sha256 and the etcd snapshot's own checks). A copy whose fingerprint differs
from the record was rewritten since, and is refused before a restore pins,
stops or stages anything. A copy with no record (a new coordinator host, a
record lost) is verified in full once, and recorded.

The record is one JSON file, ``<state_dir>/vault-objects.json``, written
atomically: ``{"format": 1, "objects": {location: {sha256: {"etag", "size",
"at", "how"}}}}``. A record that cannot be read is logged and treated as
empty: every copy is then verified in full again, never trusted unread.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from etcdguard.common.base import fsutil
from etcdguard.common.base.durations import iso_utc
from etcdguard.coordinator.vault.entry import VaultEntry

log = logging.getLogger(__name__)

FILE_NAME = "vault-objects.json"
FORMAT = 1
UPLOADED = "uploaded"
VERIFIED = "verified"


@dataclass(frozen=True)
class ObjectStat:
    """What the backend says of a stored copy without reading it (a HEAD, a stat)."""

    tag: str                         # S3: the ETag; a directory: size and mtime
    size: int                        # bytes as stored (ciphertext when encrypted)
    snapshot_sha256: Optional[str]   # the snapshot sha256 its metadata records (None: none recorded)
    content_sha256: Optional[str]    # the sha256 of its bytes its metadata records (None: none; encrypted)
    recorded_size: Optional[str]     # the snapshot size its metadata records, as text (None: none)


@dataclass(frozen=True)
class Fingerprint:
    """A copy as the coordinator stored or verified it."""

    etag: str
    size: int
    at: float
    how: str   # UPLOADED or VERIFIED

    @classmethod
    def of(cls, stat: ObjectStat, how: str, at: Optional[float] = None) -> Fingerprint:
        return cls(stat.tag, stat.size, time.time() if at is None else at, how)


def metadata_problem(entry: VaultEntry, stat: ObjectStat) -> Optional[str]:
    """Pure: why the copy's own metadata does not describe ``entry`` (missing counts), or None. Worded to
    follow "the vault copy of ID does not verify: "."""
    if stat.snapshot_sha256 is None:
        return ("it carries no snapshot sha256 in its metadata: it was rewritten without it, so it is not what "
                "the coordinator stored")
    if stat.snapshot_sha256 != entry.sha256:
        return f"its metadata records snapshot sha256 {stat.snapshot_sha256[:12]}, another snapshot's"
    if stat.recorded_size is not None and stat.recorded_size != str(entry.size):
        return f"its metadata records a snapshot of {stat.recorded_size} bytes, the vault one of {entry.size}"
    if not entry.encrypted and not entry.compression:   # a compressed copy is checked as it is decompressed
        if stat.content_sha256 != entry.sha256:
            return f"its metadata records content sha256 {str(stat.content_sha256)[:12]}, not the snapshot's"
        if stat.size != entry.size:
            return f"it is {stat.size} bytes, the snapshot {entry.size}"
    return None


def fingerprint_problem(entry: VaultEntry, stat: ObjectStat, known: Fingerprint, record: Path) -> Optional[str]:
    """Pure: why the copy is not the one the coordinator recorded (``record`` names the file), or None."""
    if stat.tag == known.etag and stat.size == known.size:
        return None
    return (f"it changed since the coordinator {known.how} it at {iso_utc(known.at)}: ETag {known.etag} and "
            f"{known.size} bytes then, ETag {stat.tag} and {stat.size} bytes now; it was rewritten in the storage. "
            f"Restore another snapshot (etcdguardctl snapshots); if this copy is genuine, remove its entry "
            f"({entry.sha256}) from {record} and it is verified in full")


class ObjectRecords:
    """The fingerprints of the copies the coordinator stored or verified, per vault location."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._data: Optional[dict[str, dict[str, Fingerprint]]] = None

    def _load(self) -> dict[str, dict[str, Fingerprint]]:
        if self._data is not None:
            return self._data
        data: dict[str, dict[str, Fingerprint]] = {}
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            for location, objects in raw.get("objects", {}).items():
                data[location] = {sha: Fingerprint(str(v["etag"]), int(v["size"]), float(v["at"]), str(v["how"]))
                                  for sha, v in objects.items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("vault: cannot read %s (%s): every copy is verified in full again", self.path, exc)
            data = {}
        self._data = data
        return data

    def get(self, location: str, sha256: str) -> Optional[Fingerprint]:
        with self._lock:
            return self._load().get(location, {}).get(sha256)

    def put(self, location: str, sha256: str, fingerprint: Fingerprint) -> None:
        with self._lock:
            self._load().setdefault(location, {})[sha256] = fingerprint
            self._write()

    def drop(self, location: str, sha256: str) -> None:
        with self._lock:
            if self._load().get(location, {}).pop(sha256, None) is not None:
                self._write()

    def _write(self) -> None:
        assert self._data is not None
        body: dict[str, Any] = {"format": FORMAT, "objects": {
            loc: {sha: asdict(fp) for sha, fp in objects.items()} for loc, objects in self._data.items() if objects}}
        try:
            fsutil.ensure_private_dir(self.path.parent)
            fsutil.atomic_write_json(self.path, body)
        except OSError as exc:   # the copies stay verifiable: in full, at the next plan
            log.warning("vault: cannot write %s: %s", self.path, exc)
