"""Where the vault keeps continuous backup's segments: byte objects under ``segments/``, by backend.

A segment is small (seconds of changes) and written whole, so a backend
here stores named byte strings: list (name and size), put (atomic: a failed
put never lists), get, delete. Names are ``<cluster id>/<segment name>``
(vault/segments.py decides them); the directory backend keeps them under
``<vault dir>/segments/``, the S3 backend under ``<prefix>segments/``
(s3.py), beside the snapshots, so the same vault, credentials and listing
hold both.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Protocol

from etcdguard.common.base import fsutil
from etcdguard.coordinator.vault.backends import DirStore, SnapStore, VaultBackendError

SEGMENTS = "segments"


class SegmentObjects(Protocol):
    location: str

    def list_objects(self) -> list[tuple[str, int]]:
        """Every object under segments/: (name relative to it, size in bytes)."""
        ...

    def put(self, name: str, data: bytes) -> None: ...

    def get(self, name: str) -> bytes: ...

    def delete(self, name: str) -> None: ...


class DirSegments:
    """Segments as files in ``<vault dir>/segments/<cluster id>/`` (0700 directories, 0600 files)."""

    def __init__(self, vault_dir: Path) -> None:
        self.root = vault_dir / SEGMENTS
        self.location = str(self.root)

    def _path(self, name: str) -> Path:
        parts = name.split("/")
        if len(parts) != 2 or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"segment name {name!r} is not <cluster id>/<file>")
        return self.root / parts[0] / parts[1]

    def list_objects(self) -> list[tuple[str, int]]:
        if not self.root.is_dir():
            return []
        out = []
        for cluster in self.root.iterdir():
            if not cluster.is_dir():
                continue
            for f in cluster.iterdir():
                if f.is_file() and not f.name.startswith("."):
                    with contextlib.suppress(FileNotFoundError):
                        out.append((f"{cluster.name}/{f.name}", f.stat().st_size))
        return out

    def put(self, name: str, data: bytes) -> None:
        path = self._path(name)
        try:
            fsutil.ensure_private_dir(self.root)
            fsutil.ensure_private_dir(path.parent)
            fsutil.atomic_write_bytes(path, data)
        except OSError as exc:
            raise VaultBackendError(str(fsutil.disk_error(f"cannot write segment {name} in {self.root}", exc)),
                                    "upload", "disk") from None

    def get(self, name: str) -> bytes:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            raise VaultBackendError(f"vault {self.root}: segment {name} is missing", "download", "other") from None
        except OSError as exc:
            raise VaultBackendError(f"vault {self.root}: reading segment {name}: {exc}", "download",
                                    "disk") from None

    def delete(self, name: str) -> None:
        path = self._path(name)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            fsutil.fsync_dir(path.parent)
        with contextlib.suppress(OSError):
            os.rmdir(path.parent)    # the cluster's last segment: its directory goes too


def segment_objects(store: SnapStore) -> SegmentObjects:
    """The segment objects of the vault backend ``store``."""
    if isinstance(store, DirStore):
        return DirSegments(store.dir)
    from etcdguard.coordinator.vault.s3 import S3Segments, S3Store

    if isinstance(store, S3Store):
        return S3Segments(store)
    raise TypeError(f"no segment storage for vault backend {type(store).__name__}")
