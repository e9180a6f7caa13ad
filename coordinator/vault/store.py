"""The vault: the coordinator's off-node copy of snapshots, in one local directory.

Content-addressed: a snapshot is ``<dir>/<sha256>.db`` with its metadata in
``<dir>/<sha256>.json``. The name is the checksum, so the same snapshot pulled
twice is stored once, and a catalog entry is a listing of the directory with
no separate index to corrupt. An entry exists only when both files do: the
data file is renamed in first, then the sidecar is written (each by temp +
fsync + rename); retention deletes in the reverse order. Temp files left by a
crash are removed when the vault is opened.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Optional

from etcdguard.agent.base import fsutil, retention
from etcdguard.agent.base.errors import SnapshotCorrupt, SnapshotError, UsageError
from etcdguard.agent.snapshots.integrity import verify_file
from etcdguard.agent.snapshots.store import iso_utc

log = logging.getLogger(__name__)

DATA_SUFFIX = ".db"
META_SUFFIX = ".json"
MIN_PREFIX = 4
FORMAT = 1
_SHA_RE = re.compile(r"[0-9a-f]{64}")
_HEX_RE = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class VaultEntry:
    """One snapshot in the vault (the sidecar's content, plus its path)."""

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
    path: str = ""           # not stored: where the data file is now

    @property
    def id(self) -> str:
        return self.sha256

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["id"] = self.sha256
        return data

    def sidecar(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("path")
        data["format"] = FORMAT
        return data

    @classmethod
    def from_json(cls, data: Any, where: str) -> VaultEntry:
        """Parse a sidecar; ValueError names what is wrong with it."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: metadata is not a JSON object")
        types: dict[str, Any] = {
            "sha256": str, "size": int, "source_member": str, "original_name": str, "revision": int,
            "cluster_id": str, "member_id": str, "etcd_version": str, "created_at": str,
            "created_unix": (int, float), "pulled_at": str, "pulled_unix": (int, float),
        }
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "path":
                continue
            value = data.get(f.name)
            if isinstance(value, bool) or not isinstance(value, types[f.name]):
                raise ValueError(f"{where}: field {f.name!r} is missing or mistyped")
            values[f.name] = float(value) if f.name.endswith("_unix") else value
        if not _SHA_RE.fullmatch(values["sha256"]):
            raise ValueError(f"{where}: field 'sha256' is not a sha256 hex digest")
        return cls(**values)


def newest_first_key(e: VaultEntry) -> tuple[float, str]:
    """The order retention uses too (agent/base/retention.py), so "newest" means the same everywhere."""
    return (e.created_unix, e.sha256)


def resolve_ref(entries: list[VaultEntry], ref: str, where: str = "the vault") -> VaultEntry:
    """Pure: ``latest`` or a unique sha256 prefix (at least 4 hex digits) -> the entry.

    Unknown, ambiguous or malformed references raise UsageError (exit 2).
    """
    ordered = sorted(entries, key=newest_first_key, reverse=True)
    text = ref.strip().lower()
    if text == "latest":
        if not ordered:
            raise UsageError(f"{where} holds no snapshots yet, so 'latest' names none "
                             "(take one with `etcdguardctl backup`)")
        return ordered[0]
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

    @classmethod
    def from_agent(cls, member: str, meta: dict[str, Any]) -> Incoming:
        """From an agent's SnapshotMeta JSON; ValueError if it lacks what the vault records."""
        try:
            sha = str(meta["sha256"])
            if not _SHA_RE.fullmatch(sha):
                raise ValueError(f"member {member}: snapshot sha256 {sha!r} is not a sha256 hex digest")
            created_unix = float(meta["created_unix"])
            return cls(
                sha256=sha, size=int(meta["size"]), source_member=member, original_name=str(meta["name"]),
                revision=int(meta.get("revision") or 0), cluster_id=str(meta.get("cluster_id") or ""),
                member_id=str(meta.get("member_id") or ""), etcd_version=str(meta.get("etcd_version") or ""),
                created_at=str(meta.get("created_at") or iso_utc(created_unix)), created_unix=created_unix,
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"member {member}: snapshot metadata lacks {exc}") from None


# fetch(dest, progress) writes a verified file at dest or raises, leaving no dest.
Fetcher = Callable[[Path], None]


class Vault:
    """List, add, resolve and prune snapshots in one directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    # -- paths -------------------------------------------------------------
    def data_path(self, sha256: str) -> Path:
        return self.dir / f"{sha256}{DATA_SUFFIX}"

    def meta_path(self, sha256: str) -> Path:
        return self.dir / f"{sha256}{META_SUFFIX}"

    def temp_path(self) -> Path:
        return self.dir / f"{fsutil.TEMP_PREFIX}{os.getpid()}-{time.time_ns()}.partial"

    # -- opening -----------------------------------------------------------
    def prepare(self) -> list[Path]:
        """Create the directory (0700) and remove leftovers of interrupted pulls.

        Temp files go; a data file without its sidecar was never in the
        catalog (the pull stopped between the two renames) and goes too. A
        sidecar without its data file is left alone and reported: the data
        was removed by something else, and that is for an operator to see.
        """
        fsutil.ensure_private_dir(self.dir)
        removed = fsutil.remove_stale_temps(self.dir)
        for entry in self.dir.iterdir():
            stem, suffix = entry.name[: -len(DATA_SUFFIX)], entry.name[-len(DATA_SUFFIX):]
            if suffix == DATA_SUFFIX and _SHA_RE.fullmatch(stem) and not self.meta_path(stem).exists():
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
                    removed.append(entry)
        for path in removed:
            log.info("vault: removed leftover of an interrupted pull: %s", path.name)
        if removed:
            fsutil.fsync_dir(self.dir)
        for entry in self.dir.iterdir():
            stem = entry.name[: -len(META_SUFFIX)]
            if entry.name.endswith(META_SUFFIX) and _SHA_RE.fullmatch(stem) and not self.data_path(stem).exists():
                log.warning("vault: %s has no data file %s%s; it is not listed", entry.name, stem, DATA_SUFFIX)
        return removed

    # -- reading -----------------------------------------------------------
    def _entries(self) -> Iterator[VaultEntry]:
        if not self.dir.is_dir():
            return
        for entry in self.dir.iterdir():
            if not entry.name.endswith(META_SUFFIX):
                continue
            sha = entry.name[: -len(META_SUFFIX)]
            if not _SHA_RE.fullmatch(sha):
                continue
            data = self.data_path(sha)
            if not data.is_file():
                continue
            try:
                meta = VaultEntry.from_json(json.loads(entry.read_text()), str(entry))
            except (OSError, ValueError) as exc:
                log.warning("vault: ignoring %s: unreadable metadata: %s", entry.name, exc)
                continue
            if meta.sha256 != sha:
                log.warning("vault: ignoring %s: it describes sha256 %s", entry.name, meta.sha256)
                continue
            yield _with_path(meta, data)

    def list(self) -> builtins.list[VaultEntry]:
        """Catalog entries, newest first (by when the agent took them)."""
        return sorted(self._entries(), key=newest_first_key, reverse=True)

    def newest(self) -> Optional[VaultEntry]:
        items = self.list()
        return items[0] if items else None

    def has(self, sha256: str) -> Optional[VaultEntry]:
        meta = self.meta_path(sha256)
        if not (meta.is_file() and self.data_path(sha256).is_file()):
            return None
        try:
            return _with_path(VaultEntry.from_json(json.loads(meta.read_text()), str(meta)), self.data_path(sha256))
        except (OSError, ValueError):
            return None

    def resolve(self, ref: str) -> VaultEntry:
        """``latest`` or a unique sha256 prefix; UsageError (exit 2) otherwise."""
        return resolve_ref(self.list(), ref, f"the vault ({self.dir})")

    def total_bytes(self) -> int:
        return sum(e.size for e in self.list())

    @contextlib.contextmanager
    def materialize(self, entry: VaultEntry) -> Iterator[Path]:
        """A local, plaintext file of ``entry`` for as long as the block runs (here: the stored file)."""
        path = self.data_path(entry.sha256)
        if not path.is_file():
            raise SnapshotError(f"vault {self.dir}: {entry.sha256[:12]} has no data file")
        yield path

    # -- pins ----------------------------------------------------------------
    def pin_path(self, sha256: str) -> Path:
        return self.dir / f"{sha256}.pin"

    def pin(self, sha256: str, reason: str) -> None:
        """Keep an entry whatever retention says, until ``unpin``."""
        if self.has(sha256) is None:
            raise UsageError(f"no snapshot {sha256[:12]} in the vault ({self.dir})")
        fsutil.atomic_write_json(self.pin_path(sha256), {"reason": reason, "at": time.time()})

    def unpin(self, sha256: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.pin_path(sha256).unlink()
            fsutil.fsync_dir(self.dir)

    def pinned(self, sha256: str) -> Optional[str]:
        try:
            data = json.loads(self.pin_path(sha256).read_text())
        except (OSError, ValueError):
            return None
        return str(data.get("reason", "pinned")) if isinstance(data, dict) else "pinned"

    # -- writing -----------------------------------------------------------
    def pull(self, incoming: Incoming, fetch: Fetcher, verify: bool = False,
             now: Optional[Callable[[], float]] = None) -> tuple[VaultEntry, bool]:
        """Add a snapshot unless the vault has it; return (entry, pulled).

        ``fetch(temp)`` writes the snapshot at a temp path in the vault
        directory (verified end to end) or raises leaving nothing behind. The
        temp is then checked for size (and, with ``verify``, re-hashed), renamed
        to ``<sha256>.db`` and the sidecar written. Any failure removes the
        temp: a failed pull never appears in the catalog.
        """
        existing = self.has(incoming.sha256)
        if existing is not None:
            return existing, False
        clock = now or time.time
        self.ensure_space(incoming.size)
        temp = self.temp_path()
        try:
            fetch(temp)
            size = temp.stat().st_size
            if size != incoming.size:
                raise SnapshotCorrupt(f"received {size} bytes of {incoming.original_name} from member "
                                      f"{incoming.source_member}, expected {incoming.size}")
            if verify:
                verify_file(temp, incoming.sha256, incoming.size)
            entry = self._commit(temp, incoming, clock())
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        return entry, True

    def add_file(self, path: Path, incoming: Incoming, now: Optional[float] = None) -> tuple[VaultEntry, bool]:
        """Copy a local, verified snapshot file into the vault (sha256, size and trailer checked)."""
        import shutil

        def copy(dest: Path) -> None:
            with open(path, "rb") as src, fsutil.atomic_writer(dest) as out:
                shutil.copyfileobj(src, out, 1 << 20)

        return self.pull(incoming, copy, verify=True, now=(lambda: now) if now is not None else None)

    def _commit(self, temp: Path, incoming: Incoming, pulled_unix: float) -> VaultEntry:
        final = self.data_path(incoming.sha256)
        os.chmod(temp, 0o600)
        os.replace(temp, final)   # same content by construction if it is already there
        fsutil.fsync_dir(self.dir)
        entry = VaultEntry(
            sha256=incoming.sha256, size=incoming.size, source_member=incoming.source_member,
            original_name=incoming.original_name, revision=incoming.revision, cluster_id=incoming.cluster_id,
            member_id=incoming.member_id, etcd_version=incoming.etcd_version, created_at=incoming.created_at,
            created_unix=incoming.created_unix, pulled_at=iso_utc(pulled_unix), pulled_unix=pulled_unix,
            path=str(final),
        )
        fsutil.atomic_write_json(self.meta_path(incoming.sha256), entry.sidecar())
        log.info("vault: stored %s (%d bytes, revision %d) from member %s", incoming.sha256[:16],
                 incoming.size, incoming.revision, incoming.source_member)
        return entry

    def ensure_space(self, size: int) -> None:
        """Refuse a pull that would not fit (with a little headroom for the sidecar and the filesystem)."""
        free = fsutil.free_bytes(self.dir)
        need = size + (16 << 20)
        if free < need:
            raise VaultDiskError(f"vault {self.dir}: {free} bytes free, a {size}-byte snapshot needs {need}; "
                                 "lower [vault] keep or give the vault more space")

    def delete(self, entry: VaultEntry) -> None:
        """Sidecar first (the entry leaves the catalog), then the data file."""
        with contextlib.suppress(FileNotFoundError):
            self.meta_path(entry.sha256).unlink()
        with contextlib.suppress(FileNotFoundError):
            self.data_path(entry.sha256).unlink()
        fsutil.fsync_dir(self.dir)

    def apply_retention(self, keep: int) -> builtins.list[retention.Verdict]:
        """Keep the ``keep`` newest entries (the newest always); delete the rest."""
        entries = {e.sha256: e for e in self.list() if self.pinned(e.sha256) is None}
        verdicts = retention.decide(
            [retention.Aged(e.sha256, e.created_unix) for e in entries.values()], keep, None, time.time())
        for v in verdicts:
            if not v.keep:
                log.info("vault retention: deleting %s (%s)", v.name[:16], v.reason)
                self.delete(entries[v.name])
        return verdicts


class VaultDiskError(SnapshotError):
    """The vault's filesystem has no room for a snapshot; nothing was written."""


def _with_path(entry: VaultEntry, path: Path) -> VaultEntry:
    data = asdict(entry)
    data["path"] = str(path)
    return VaultEntry(**data)
