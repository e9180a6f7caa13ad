"""The local snapshot catalog: one directory, a JSON sidecar per snapshot.

A snapshot is in the catalog only when both its file and its sidecar exist,
which are written in that order, each by temp + fsync + rename. Anything
else found in the directory is leftover from an interrupted write.

Beside a snapshot: ``<name>.bundle.age`` (its node bundle, age-encrypted) or
``<name>.bundle.tar`` (the same, unencrypted: it never leaves the node), and
``<name>.pin`` (a keep annotation: its reason). Both are read when listing,
so the sidecar, written once, is never rewritten.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import logging
import re
import time
from pathlib import Path
from typing import Optional

from etcdguard.common.base import fsutil, retention
from etcdguard.common.base.errors import EtcdguardError, SnapshotError
from etcdguard.common.snapshot.sidecar import SnapshotMeta, read_sidecar

log = logging.getLogger(__name__)

SNAP_SUFFIX = ".db"
META_SUFFIX = ".db.json"
BUNDLE_ENCRYPTED = ".bundle.age"
BUNDLE_LOCAL = ".bundle.tar"
PIN_SUFFIX = ".pin"
NAME_RE = re.compile(r"^snap-\d{8}T\d{6}(?:\.\d{3})?Z-r\d+\.db$")


def snapshot_name(created_unix: float, revision: int) -> str:
    """Sortable, self-describing file name: snap-20261124T033600.123Z-r4711.db."""
    t = time.gmtime(created_unix)
    ms = int((created_unix % 1) * 1000)
    return f"snap-{time.strftime('%Y%m%dT%H%M%S', t)}.{ms:03d}Z-r{revision}{SNAP_SUFFIX}"


class SnapshotStore:
    """List, add and delete snapshots in one directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def prepare(self) -> list[Path]:
        """Create the directory (0700) and remove leftovers of interrupted writes; DiskError if it cannot."""
        try:
            return self._prepare()
        except OSError as exc:
            raise fsutil.disk_error(f"cannot prepare the snapshot store {self.dir}", exc) from None

    def _prepare(self) -> list[Path]:
        fsutil.ensure_private_dir(self.dir)
        removed = fsutil.remove_stale_temps(self.dir)
        for entry in self.dir.iterdir():
            if NAME_RE.match(entry.name) and not Path(str(entry) + ".json").exists():
                # File renamed in but sidecar never written: it was never in the catalog.
                entry.unlink()
                removed.append(entry)
            for suffix in (BUNDLE_ENCRYPTED, BUNDLE_LOCAL):
                if entry.name.endswith(suffix) and not (self.dir / entry.name[: -len(suffix)]).exists():
                    entry.unlink()   # the bundle of a snapshot that is gone
                    removed.append(entry)
        for path in removed:
            log.info("removed leftover of an interrupted snapshot: %s", path.name)
        return removed

    def temp_path(self) -> Path:
        return fsutil.temp_path(self.dir)

    def list(self) -> builtins.list[SnapshotMeta]:
        """Catalog entries, newest first (by revision: see retention.newest_first). Unreadable sidecars
        are skipped with a warning; a store that cannot be listed at all (permissions) is a DiskError."""
        try:
            if not self.dir.is_dir():
                return []
            entries = builtins.list(self.dir.iterdir())
        except OSError as exc:
            raise fsutil.disk_error(f"cannot list the snapshot store {self.dir}", exc) from None
        out: list[SnapshotMeta] = []
        for entry in entries:
            if not entry.name.endswith(META_SUFFIX):
                continue
            snap = self.dir / entry.name[: -len(".json")]
            meta = _catalog_record(snap) if snap.is_file() else None
            if meta is not None:
                out.append(self._annotate(dataclasses.replace(meta, path=str(snap))))
        return retention.newest_first(out, facts)

    def _annotate(self, meta: SnapshotMeta) -> SnapshotMeta:
        bundle = ("encrypted" if self.bundle_path(meta.name, True).is_file() else
                  "local" if self.bundle_path(meta.name, False).is_file() else None)
        pinned = None
        with contextlib.suppress(FileNotFoundError):
            pinned = self.pin_path(meta.name).read_text(encoding="utf-8", errors="replace").strip() or "pinned"
        return dataclasses.replace(meta, bundle=bundle, pinned=pinned)

    def bundle_path(self, name: str, encrypted: bool) -> Path:
        return self.dir / f"{name}{BUNDLE_ENCRYPTED if encrypted else BUNDLE_LOCAL}"

    def pin_path(self, name: str) -> Path:
        return self.dir / f"{name}{PIN_SUFFIX}"

    def pin(self, name: str, reason: str) -> SnapshotMeta:
        """Keep a snapshot whatever retention says; ``reason`` shows in listings."""
        meta = self.get(name)
        fsutil.atomic_write_bytes(self.pin_path(meta.name), (reason + "\n").encode())
        return dataclasses.replace(meta, pinned=reason)

    def unpin(self, name: str) -> SnapshotMeta:
        meta = self.get(name)
        with contextlib.suppress(FileNotFoundError):
            self.pin_path(meta.name).unlink()
            fsutil.fsync_dir(self.dir)
        return dataclasses.replace(meta, pinned=None)

    def newest(self) -> Optional[SnapshotMeta]:
        items = self.list()
        return items[0] if items else None

    def get(self, name_or_path: str) -> SnapshotMeta:
        name = Path(name_or_path).name
        for meta in self.list():
            if meta.name == name:
                return meta
        raise SnapshotError(f"no snapshot named {name!r} in {self.dir}")

    def commit(self, temp: Path, meta: SnapshotMeta) -> SnapshotMeta:
        """Move a verified temp file (fsync'ed here) into the catalog under ``meta.name``.

        When the sidecar cannot be written (ENOSPC, typically: the disk filled up with the data
        file), the data file is removed at once rather than left for the next start on a full disk.
        """
        final = self.dir / meta.name
        try:
            fsutil.commit_temp(temp, final, replace=False)
        except FileExistsError:
            raise SnapshotError(f"{final} already exists; refusing to overwrite a snapshot") from None
        except OSError as exc:
            raise fsutil.disk_error(f"snapshot not stored in {self.dir}", exc) from None
        meta = dataclasses.replace(meta, path=str(final))
        try:
            fsutil.atomic_write_json(self.dir / (meta.name + ".json"), meta.to_json())
        except (OSError, EtcdguardError) as exc:
            with contextlib.suppress(FileNotFoundError):
                final.unlink()
            with contextlib.suppress(OSError):
                fsutil.fsync_dir(self.dir)
            if isinstance(exc, OSError):
                raise fsutil.disk_error(f"snapshot not stored in {self.dir} (its metadata could not be "
                                        f"written; {final.name} was removed again)", exc) from None
            raise
        return meta

    def delete(self, meta: SnapshotMeta) -> None:
        """Remove the sidecar first (leaving the catalog), then the file."""
        try:
            with contextlib.suppress(FileNotFoundError):
                (self.dir / (meta.name + ".json")).unlink()
            for path in (self.dir / meta.name, self.bundle_path(meta.name, True),
                         self.bundle_path(meta.name, False), self.pin_path(meta.name)):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            fsutil.fsync_dir(self.dir)
        except OSError as exc:
            raise fsutil.disk_error(f"cannot delete {meta.name} from {self.dir}", exc) from None

    def apply_retention(
        self, keep: int, max_age: Optional[float], now: Optional[float] = None
    ) -> builtins.list[retention.Verdict]:
        metas = {m.name: m for m in self.list()}
        verdicts = retention.decide(
            [retention.Aged(m.name, m.created_unix, m.pinned, m.require_revision(), m.cluster_id)
             for m in metas.values()],
            keep, max_age, time.time() if now is None else now,
        )
        for v in verdicts:
            if not v.keep:
                log.info("retention: deleting %s (%s)", v.name, v.reason)
                self.delete(metas[v.name])
        return verdicts

    def total_bytes(self) -> int:
        return sum(m.size for m in self.list())


def facts(meta: SnapshotMeta) -> retention.Facts:
    """How a catalog entry is ordered (newest: highest revision of the latest cluster; see retention)."""
    return retention.Facts(meta.cluster_id, meta.require_revision(), meta.created_unix, meta.name)


def _catalog_record(snap: Path) -> Optional[SnapshotMeta]:
    """The catalog's record of ``snap``; None, with a warning, when its sidecar is gone or unreadable."""
    try:
        meta = read_sidecar(snap)
        if meta is not None:
            meta.require_revision()
    except ValueError as exc:
        log.warning("ignoring snapshot with unreadable metadata %s: %s", snap.name, exc)
        return None
    return meta
