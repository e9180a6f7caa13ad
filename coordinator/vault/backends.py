"""Where the vault keeps its objects: one small interface (Gardener's SnapStore) and the directory backend.

A backend stores bytes it is given and lists what it holds with the metadata
a listing needs; it knows nothing of agents, encryption or retention policy
(the Vault in store.py does that). Each stored snapshot is a VaultEntry;
``kind`` is ``snapshot`` or ``bundle`` (the node bundle beside it, already
encrypted by the agent). A save is atomic: a failed or partial save never
lists as an entry.

The directory backend keeps the layout the vault always had, so existing
vaults read unchanged: ``<sha256>.db`` (``.db.zst`` when compressed,
``.db.age`` or ``.db.zst.age`` when encrypted) with its ``<sha256>.json``
sidecar (its metadata, the entry's kind among them), the data renamed in
first and the sidecar written last (each by temp + fsync + rename);
``<sha256>.bundle.age`` beside it; ``<sha256>.pin`` holding a pin's reason.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import IO, Any, Optional, Protocol, Union

from etcdguard.common.base import fsutil
from etcdguard.common.base.errors import SnapshotError
from etcdguard.coordinator.vault.entry import ZSTD, VaultEntry, derive_kind
from etcdguard.coordinator.vault.verified import ObjectStat

log = logging.getLogger(__name__)

DATA_SUFFIX = ".db"
AGE_DATA_SUFFIX = ".db.age"
ZST_DATA_SUFFIX = ".db.zst"          # the snapshot compressed (zstd frames)
AGE_ZST_DATA_SUFFIX = ".db.zst.age"  # ... then age-encrypted
DATA_SUFFIXES = (AGE_ZST_DATA_SUFFIX, ZST_DATA_SUFFIX, AGE_DATA_SUFFIX, DATA_SUFFIX)   # longest first
META_SUFFIX = ".json"
BUNDLE_SUFFIX = ".bundle.age"
PIN_SUFFIX = ".pin"
SNAPSHOT = "snapshot"
BUNDLE = "bundle"
_SHA_RE = re.compile(r"[0-9a-f]{64}")

class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


Data = Union[Path, Readable]


class VaultBackendError(SnapshotError):
    """The backend refused or could not be reached; ``op`` and ``reason`` label the failure metric.

    reason: ``credentials`` (rejected or missing), ``denied`` (no permission),
    ``no_bucket``, ``unreachable``, ``checksum`` (stored bytes do not match
    their recorded sha256), ``decrypt``, ``disk``, ``other``.
    """

    def __init__(self, message: str, op: str, reason: str) -> None:
        super().__init__(message)
        self.op = op
        self.reason = reason


class VaultDiskError(VaultBackendError):
    """The vault's filesystem has no room for a snapshot; nothing was written."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "upload", "disk")


class SnapStore(Protocol):
    """List, fetch, save, delete (and keep annotations), for one storage."""

    name: str            # the metrics' backend label: "dir" or "s3"
    location: str        # for messages: a path or s3://bucket/prefix

    def prepare(self) -> builtins.list[PurePath]: ...

    def list(self) -> builtins.list[VaultEntry]: ...

    def get(self, sha256: str) -> Optional[VaultEntry]: ...

    def open_read(self, entry: VaultEntry, kind: str) -> contextlib.AbstractContextManager[IO[bytes]]: ...

    def save(self, entry: VaultEntry, kind: str, data: Data) -> None: ...

    def delete(self, entry: VaultEntry) -> None: ...

    def set_pin(self, sha256: str, reason: Optional[str]) -> None: ...

    def ensure_space(self, size: int) -> None: ...

    def stat(self, entry: VaultEntry) -> Optional[ObjectStat]: ...

    @property
    def leftovers(self) -> bool: ...

    def sweep(self, now: Optional[float] = None, everything: bool = False) -> builtins.list[PurePath]: ...


class DirStore:
    """The vault in one local directory (the embedded default)."""

    name = "dir"

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.location = str(directory)

    # -- paths -------------------------------------------------------------
    def data_path(self, sha256: str, encrypted: bool = False, compressed: bool = False) -> Path:
        return self.dir / f"{sha256}{DATA_SUFFIX}{'.zst' if compressed else ''}{'.age' if encrypted else ''}"

    def entry_path(self, entry: VaultEntry) -> Path:
        """Where ``entry``'s data is (or goes), by its encryption and compression."""
        return self.data_path(entry.sha256, entry.encrypted, bool(entry.compression))

    def meta_path(self, sha256: str) -> Path:
        return self.dir / f"{sha256}{META_SUFFIX}"

    def bundle_path(self, sha256: str) -> Path:
        return self.dir / f"{sha256}{BUNDLE_SUFFIX}"

    def pin_path(self, sha256: str) -> Path:
        return self.dir / f"{sha256}{PIN_SUFFIX}"

    def temp_path(self) -> Path:
        return fsutil.temp_path(self.dir)

    # -- opening -----------------------------------------------------------
    def prepare(self) -> builtins.list[PurePath]:
        """Create the directory (0700) and remove leftovers of interrupted saves.

        Temp files go; a data file without its sidecar was never in the
        catalog (the save stopped between the two renames) and goes too, and
        so does a bundle without its snapshot. A sidecar without its data
        file is left alone and reported: something else removed the data.
        """
        fsutil.ensure_private_dir(self.dir)
        removed = fsutil.remove_stale_temps(self.dir)
        for entry in self.dir.iterdir():
            sha = _sha_of(entry.name, (*DATA_SUFFIXES, BUNDLE_SUFFIX))
            if sha is not None and not self.meta_path(sha).exists():
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
                    removed.append(entry)
        for path in removed:
            log.info("vault: removed leftover of an interrupted pull: %s", path.name)
        if removed:
            fsutil.fsync_dir(self.dir)
        for entry in self.dir.iterdir():
            sha = _sha_of(entry.name, (META_SUFFIX,))
            if sha is not None and self._data_of(sha) is None:
                log.warning("vault: %s has no data file %s%s; it is not listed", entry.name, sha, DATA_SUFFIX)
        return list(removed)

    def _data_of(self, sha256: str) -> Optional[Path]:
        for suffix in DATA_SUFFIXES:
            path = self.dir / f"{sha256}{suffix}"
            if path.is_file():
                return path
        return None

    # -- reading -----------------------------------------------------------
    def _read(self, sha256: str, meta: Path) -> Optional[VaultEntry]:
        data = self._data_of(sha256)
        if data is None:
            return None
        try:
            entry = VaultEntry.from_json(json.loads(meta.read_text()), str(meta))
        except (OSError, ValueError) as exc:
            log.warning("vault: ignoring %s: unreadable metadata: %s", meta.name, exc)
            return None
        if entry.sha256 != sha256:
            log.warning("vault: ignoring %s: it describes sha256 %s", meta.name, entry.sha256)
            return None
        pin = self.pin_path(sha256)
        reason = None
        with contextlib.suppress(FileNotFoundError):
            reason = _pin_reason(pin.read_text(encoding="utf-8", errors="replace"))
        try:
            stored = data.stat().st_size
        except FileNotFoundError:   # deleted between the two looks: not an entry any more
            return None
        return entry.with_(path=str(data), encrypted=data.name.endswith(".age"), pinned=reason,
                           bundle=self.bundle_path(sha256).is_file(), kind=derive_kind(entry.kind, reason),
                           compression=ZSTD if ZST_DATA_SUFFIX in data.name else "", stored_size=stored)

    def list(self) -> builtins.list[VaultEntry]:
        if not self.dir.is_dir():
            return []
        out: list[VaultEntry] = []
        for entry in self.dir.iterdir():
            sha = _sha_of(entry.name, (META_SUFFIX,))
            if sha is not None:
                item = self._read(sha, entry)
                if item is not None:
                    out.append(item)
        return out

    def get(self, sha256: str) -> Optional[VaultEntry]:
        meta = self.meta_path(sha256)
        return self._read(sha256, meta) if meta.is_file() else None

    @contextlib.contextmanager
    def open_read(self, entry: VaultEntry, kind: str) -> Iterator[IO[bytes]]:
        path = self.bundle_path(entry.sha256) if kind == BUNDLE else self.entry_path(entry)
        if not path.is_file():
            raise VaultBackendError(f"vault {self.dir}: {path.name} is missing", "download", "other")
        with open(path, "rb") as fh:
            yield fh

    # -- writing -----------------------------------------------------------
    def save(self, entry: VaultEntry, kind: str, data: Data) -> None:
        if kind == BUNDLE:
            self._put(self.bundle_path(entry.sha256), data)
            return
        final = self.entry_path(entry)
        self._put(final, data)
        fsutil.atomic_write_json(self.meta_path(entry.sha256), entry.sidecar())

    def _put(self, final: Path, data: Data) -> None:
        if isinstance(data, Path) and data.parent == self.dir:
            os.chmod(data, 0o600)
            os.replace(data, final)   # same content by construction if it is already there
            fsutil.fsync_dir(self.dir)
            return
        with contextlib.ExitStack() as stack:
            src: Any = stack.enter_context(open(data, "rb")) if isinstance(data, Path) else data
            with fsutil.atomic_writer(final) as out:
                shutil.copyfileobj(src, out, 1 << 20)

    def delete(self, entry: VaultEntry) -> None:
        """Sidecar first (the entry leaves the catalog), then the data and its bundle."""
        for path in (self.meta_path(entry.sha256), *(self.dir / f"{entry.sha256}{s}" for s in DATA_SUFFIXES),
                     self.bundle_path(entry.sha256)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        fsutil.fsync_dir(self.dir)

    def set_pin(self, sha256: str, reason: Optional[str]) -> None:
        path = self.pin_path(sha256)
        if reason is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                fsutil.fsync_dir(self.dir)
            return
        fsutil.atomic_write_bytes(path, (reason + "\n").encode())

    def ensure_space(self, size: int) -> None:
        ensure_space(self.dir, size, "vault")

    def stat(self, entry: VaultEntry) -> Optional[ObjectStat]:
        """The data file's size and modification time (its fingerprint) and what its sidecar records."""
        recorded = self.get(entry.sha256)
        path = self.entry_path(entry)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return ObjectStat(tag=f"{st.st_size}:{st.st_mtime_ns}", size=st.st_size,
                          snapshot_sha256=recorded.sha256 if recorded else None,
                          content_sha256=None if entry.encrypted or entry.compression else entry.sha256,
                          recorded_size=str(recorded.size) if recorded else None)

    @property
    def leftovers(self) -> bool:
        return False

    def sweep(self, now: Optional[float] = None, everything: bool = False) -> builtins.list[PurePath]:
        """A save that failed left only a temp file, removed when the vault is opened (``prepare``)."""
        return []


def ensure_space(directory: Path, size: int, what: str) -> None:
    """Refuse a copy that would not fit (with a little headroom for sidecars and the filesystem)."""
    fsutil.ensure_private_dir(directory)
    free = fsutil.free_bytes(directory)
    need = size + (16 << 20)
    if free < need:
        raise VaultDiskError(f"{what} {directory}: {free} bytes free, a {size}-byte snapshot needs {need}; "
                             "lower [vault] keep or give the vault more space")


def _sha_of(name: str, suffixes: tuple[str, ...]) -> Optional[str]:
    for suffix in suffixes:
        if name.endswith(suffix):
            stem = name[: -len(suffix)]
            return stem if _SHA_RE.fullmatch(stem) else None
    return None


def _pin_reason(text: str) -> str:
    """A pin file's reason: its text (a JSON object's ``reason`` in the first pin format)."""
    text = text.strip()
    if text.startswith("{"):
        with contextlib.suppress(ValueError, AttributeError):
            return str(json.loads(text).get("reason") or "pinned")
    return text or "pinned"
