"""Snapshot transfer over the control channel: chunk reads for fetch, the staging area for put.

Both directions are credit-based (the ZeroMQ guide's fileio): the receiver
asks for, or the sender pushes, a bounded number of chunks at a time, each
addressed by its byte offset, so a transfer resumes at any offset and memory
use does not grow with the file. A fetch may ask for its chunks compressed:
each is then sent as one zstd frame of its own (common/snapshot/compression.py),
so the transfer shrinks and stays addressable by offset. Every file is checked end to end: its
sha256 and the SHA-256 trailer etcd appends to a snapshot.

Uploads are written to ``<staging>/<upload>.partial`` and become
``<upload>.db`` (0600, with a ``.db.json`` sidecar) only after the last
chunk is fsync'ed and verified. Partial uploads do not survive an agent
restart: the sender learns ``received = 0`` and starts over.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

from etcdguard.agent.snapshots.store import SnapshotStore
from etcdguard.common.base import fsutil
from etcdguard.common.base.durations import iso_utc
from etcdguard.common.base.errors import EtcdguardError, SnapshotCorrupt, UnsafeRefusal
from etcdguard.common.snapshot import compression
from etcdguard.common.snapshot.integrity import KnownSizeDigest
from etcdguard.common.snapshot.sidecar import read_sidecar
from etcdguard.common.wire.protocol import BAD_REQUEST, BUSY, CONFLICT, ProtocolError

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"
STAGED_SUFFIX = ".db"
SIDECAR_SUFFIX = ".db.json"
MAX_UPLOADS = 4                 # concurrent partial uploads
UPLOAD_IDLE = 3600.0            # seconds without a chunk before a partial upload is dropped
SYNC_EVERY = 32 << 20           # fdatasync a partial upload every this many bytes (keeps the final fsync short)
MAX_OPEN = 8                    # snapshot files kept open for fetch
OPEN_IDLE = 60.0                # seconds before an idle one is closed

Buffer = Union[bytes, bytearray, memoryview]


class NotFound(EtcdguardError):
    """The named snapshot, upload or operation does not exist on this node."""


# ---------------------------------------------------------------------------
# fetch


@dataclass
class _OpenFile:
    fd: int
    path: Path
    size: int
    sha256: str
    last_used: float


class FetchFiles:
    """Serves chunks of catalogued snapshots and staged uploads, keeping hot files open."""

    def __init__(self, staging: Staging) -> None:
        self.staging = staging
        self._open: dict[Path, _OpenFile] = {}

    def _lookup(self, store: SnapshotStore, name: str) -> tuple[Path, int, str]:
        if not name.endswith(STAGED_SUFFIX):
            raise NotFound(f"{name!r} is not a snapshot name (snapshot files end in {STAGED_SUFFIX})")
        path = store.dir / name
        if path.is_file():
            try:
                meta = read_sidecar(path)
            except ValueError as exc:
                raise SnapshotCorrupt(f"snapshot {name}: unreadable metadata: {exc}") from None
            if meta is not None:
                return path, meta.size, meta.sha256
        staged = self.staging.staged(name)
        if staged is not None:
            return staged
        raise NotFound(f"no snapshot or staged upload named {name!r} on this node")

    def _get(self, store: SnapshotStore, name: str, now: float) -> _OpenFile:
        path = store.dir / name
        entry = self._open.get(path) or self._open.get(self.staging.dir / name)
        if entry is not None:
            entry.last_used = now
            return entry
        real, size, sha = self._lookup(store, name)
        fd = os.open(real, os.O_RDONLY | os.O_CLOEXEC)
        actual = os.fstat(fd).st_size
        if actual != size:
            os.close(fd)
            raise SnapshotCorrupt(f"snapshot {name}: file has {actual} bytes, its metadata says {size}")
        with contextlib.suppress(OSError, AttributeError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        if len(self._open) >= MAX_OPEN:
            oldest = min(self._open.values(), key=lambda e: e.last_used)
            self._close(oldest)
        entry = _OpenFile(fd, real, size, sha, now)
        self._open[real] = entry
        return entry

    def read(self, store: SnapshotStore, name: str, offset: int, size: int) -> tuple[dict[str, Any], bytes]:
        """One chunk: (result, data) as the snapshot.fetch reply carries them (plain; ``compress_chunk``
        makes the compressed reply of it)."""
        entry = self._get(store, name, time.monotonic())
        if offset > entry.size:
            raise ProtocolError(BAD_REQUEST, f"offset {offset} is past the end of {name} ({entry.size} bytes)")
        n = min(size, entry.size - offset)
        data = os.pread(entry.fd, n, offset) if n else b""
        if len(data) != n:
            self._close(entry)
            raise SnapshotCorrupt(f"snapshot {name}: short read at offset {offset} (file truncated?)")
        return ({"name": name, "offset": offset, "size": n, "total": entry.size, "sha256": entry.sha256,
                 "eof": offset + n == entry.size}, data)

    def forget(self, path: Path) -> None:
        entry = self._open.get(path)
        if entry is not None:
            self._close(entry)

    def _close(self, entry: _OpenFile) -> None:
        self._open.pop(entry.path, None)
        with contextlib.suppress(OSError):
            os.close(entry.fd)

    def expire(self, now: float) -> None:
        for entry in [e for e in self._open.values() if now - e.last_used > OPEN_IDLE]:
            self._close(entry)

    def close(self) -> None:
        for entry in list(self._open.values()):
            self._close(entry)


def compress_chunk(chunk: tuple[dict[str, Any], Optional[bytes]], level: int) -> tuple[dict[str, Any], bytes]:
    """A fetch reply's chunk as one zstd frame (compression.py); ``size`` still counts the snapshot's bytes.
    Runs off the socket loop (server.py), so the loop reads the next chunk meanwhile."""
    result, data = chunk
    return {**result, "encoding": compression.ZSTD}, compression.compress_frame(data or b"", level)


# ---------------------------------------------------------------------------
# put (staging)


@dataclass
class _Upload:
    name: str
    fd: int
    path: Path
    total: int
    sha256: str
    digest: KnownSizeDigest
    last_used: float
    unsynced: int = 0

    @property
    def received(self) -> int:
        return self.digest.size


class Staging:
    """The staging area for uploaded snapshots (``<state>/staging``)."""

    def __init__(self, directory: Path, in_use: Optional[Callable[[Path], bool]] = None) -> None:
        self.dir = directory
        self.in_use = in_use or (lambda path: False)
        self._uploads: dict[str, _Upload] = {}
        self.on_remove: Optional[Callable[[Path], None]] = None

    def prepare(self) -> list[Path]:
        """Create the directory (0700); drop partial uploads and half-committed files of an earlier run."""
        fsutil.ensure_private_dir(self.dir)
        removed = fsutil.remove_stale_temps(self.dir)
        for entry in self.dir.iterdir():
            name = entry.name
            stale = name.endswith(PARTIAL_SUFFIX) or (
                name.endswith(STAGED_SUFFIX) and not (self.dir / (name + ".json")).exists())
            if stale and entry.is_file():
                entry.unlink()
                removed.append(entry)
        for path in removed:
            log.info("staging: removed leftover of an interrupted upload: %s", path.name)
        if removed:
            fsutil.fsync_dir(self.dir)
        return removed

    def staged_path(self, upload: str) -> Path:
        return self.dir / f"{upload}{STAGED_SUFFIX}"

    def staged(self, name: str) -> Optional[tuple[Path, int, str]]:
        """(path, size, sha256) of a complete upload named ``name`` (``<upload>.db``), else None."""
        if not name.endswith(STAGED_SUFFIX):
            return None
        path = self.dir / name
        if not path.is_file():
            return None
        try:
            meta = read_sidecar(path)   # <upload>.db.json
        except ValueError as exc:
            log.warning("staging: ignoring %s with unreadable metadata: %s", path.name, exc)
            return None
        return (path, meta.size, meta.sha256) if meta is not None else None

    def verified_fingerprint(self, path: Path) -> Optional[list[int]]:
        """The fingerprint a staged file had when its sha256 and trailer were verified, if recorded."""
        try:
            data = json.loads(Path(str(path) + ".json").read_text())
        except (OSError, ValueError):
            return None
        fp = data.get("fingerprint") if isinstance(data, dict) and data.get("trailer_verified") is True else None
        return [int(x) for x in fp] if isinstance(fp, list) and all(isinstance(x, int) for x in fp) else None

    def completed(self) -> list[dict[str, Any]]:
        """Every complete, verified upload (a restore's, or a snapshot pre-staged for one), newest first."""
        out = []
        try:
            names = sorted(p.name for p in self.dir.iterdir() if p.name.endswith(STAGED_SUFFIX))
        except FileNotFoundError:
            return []
        for name in names:
            found = self.staged(name)
            if found is not None:
                path, size, sha = found
                out.append({"name": name, "upload": name[: -len(STAGED_SUFFIX)], "size": size, "sha256": sha,
                            "mtime": path.stat().st_mtime})
        return sorted(out, key=lambda e: -float(e["mtime"]))

    def put(self, args: dict[str, Any], data: bytes) -> dict[str, Any]:
        """One snapshot.put chunk; returns the reply's result."""
        upload, offset, total, sha = args["upload"], args["offset"], args["total_size"], args["sha256"]
        name = f"{upload}{STAGED_SUFFIX}"
        done = self.staged(name)
        if done is not None:
            if done[1] != total or done[2] != sha:
                raise ProtocolError(CONFLICT, f"upload {upload} is already staged with another size or sha256; "
                                              "use a new upload id")
            return {"upload": upload, "received": total, "complete": True, "staged": name}
        u = self._uploads.get(upload)
        now = time.monotonic()
        if u is None:
            if offset != 0:
                raise ProtocolError(BAD_REQUEST, f"upload {upload} is not in progress here (0 bytes received; "
                                                 "the agent may have restarted): start again at offset 0")
            u = self._begin(upload, total, sha, now)
        elif u.total != total or u.sha256 != sha:
            raise ProtocolError(CONFLICT, f"upload {upload} was started with total_size {u.total} and sha256 "
                                          f"{u.sha256[:16]}...; abort it or use a new upload id")
        u.last_used = now
        view = memoryview(data)
        if offset < u.received:
            # a resent chunk: the bytes at an offset never change, so only what is new gets written
            view = view[min(len(view), u.received - offset):]
            offset = u.received
        if offset > u.received:
            raise ProtocolError(BAD_REQUEST, f"upload {upload}: chunk at offset {offset} leaves a gap; "
                                             f"{u.received} bytes received so far, resend from there")
        if len(view):
            self._append(u, view)
        if args["final"] and u.received == u.total:
            return self._finish(u)
        return {"upload": upload, "received": u.received, "complete": False, "staged": None}

    def _begin(self, upload: str, total: int, sha: str, now: float) -> _Upload:
        if len(self._uploads) >= MAX_UPLOADS:
            raise ProtocolError(BUSY, f"{len(self._uploads)} uploads are already in progress "
                                      f"({', '.join(sorted(self._uploads))}); finish or abort one first")
        fsutil.ensure_private_dir(self.dir)
        free = fsutil.free_bytes(self.dir)
        if free < 2 * total:
            raise UnsafeRefusal(f"not enough free disk for upload {upload} in {self.dir}: {free} bytes free, "
                                f"need >= {2 * total} (2x the snapshot)")
        path = self.dir / f"{upload}{PARTIAL_SUFFIX}"
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        u = _Upload(upload, fd, path, total, sha, KnownSizeDigest(total), now)
        self._uploads[upload] = u
        log.info("staging: upload %s started (%d bytes, sha256 %s...)", upload, total, sha[:12])
        return u

    def _append(self, u: _Upload, view: memoryview) -> None:
        try:
            written = 0
            while written < len(view):
                written += os.write(u.fd, view[written:])
            u.digest.update(view)
            u.unsynced += len(view)
            if u.unsynced >= SYNC_EVERY:
                os.fdatasync(u.fd)
                u.unsynced = 0
        except OSError:
            self._drop(u)
            raise

    def _finish(self, u: _Upload) -> dict[str, Any]:
        try:
            sha, trailer_ok = u.digest.finish()
            if sha != u.sha256:
                raise SnapshotCorrupt(f"upload {u.name}: sha256 of the received {u.total} bytes is {sha}, "
                                      f"the sender declared {u.sha256}; the upload was discarded")
            if not trailer_ok:
                raise SnapshotCorrupt(f"upload {u.name}: the SHA-256 trailer does not match the data "
                                      "(not an etcd snapshot, or corrupted); the upload was discarded")
            os.fchmod(u.fd, 0o600)
            final = self.staged_path(u.name)
            fsutil.commit_temp(u.path, final, fd=u.fd)
            os.close(u.fd)
            u.fd = -1
            now = time.time()
            st = os.stat(final)
            fsutil.atomic_write_json(self.dir / f"{u.name}{SIDECAR_SUFFIX}", {
                "name": final.name, "upload": u.name, "size": u.total, "sha256": sha,
                "received_at": iso_utc(now), "received_unix": now, "trailer_verified": True,
                # the file as it was verified: a later change of any of these means it must be hashed again
                "fingerprint": [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]})
        except (EtcdguardError, OSError):
            self._drop(u)
            raise
        self._uploads.pop(u.name, None)
        log.info("staging: upload %s verified and staged as %s", u.name, final.name)
        return {"upload": u.name, "received": u.total, "complete": True, "staged": final.name}

    def _drop(self, u: _Upload) -> None:
        self._uploads.pop(u.name, None)
        if u.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(u.fd)
            u.fd = -1
        with contextlib.suppress(FileNotFoundError):
            u.path.unlink()

    def abort(self, upload: str) -> dict[str, Any]:
        """Drop a partial upload, or a staged one that no running operation uses."""
        removed = False
        u = self._uploads.get(upload)
        if u is not None:
            self._drop(u)
            removed = True
        final = self.staged_path(upload)
        if final.exists():
            if self.in_use(final):
                raise UnsafeRefusal(f"staged snapshot {final.name} belongs to a restore operation in progress; "
                                    "finish or roll back that operation first")
            if self.on_remove is not None:
                self.on_remove(final)
            for path in (self.dir / f"{upload}{SIDECAR_SUFFIX}", final):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            removed = True
        if removed:
            fsutil.fsync_dir(self.dir)
            log.info("staging: upload %s removed", upload)
        return {"removed": removed}

    def expire(self, now: float) -> None:
        for u in [u for u in self._uploads.values() if now - u.last_used > UPLOAD_IDLE]:
            log.warning("staging: upload %s idle for %.0fs after %d of %d bytes; dropped", u.name,
                        now - u.last_used, u.received, u.total)
            self._drop(u)

    def close(self) -> None:
        for u in list(self._uploads.values()):
            self._drop(u)

    def resolve(self, name: str) -> Path:
        """The path of a complete staged upload, for a restore; NotFound otherwise."""
        staged = self.staged(name)
        if staged is None:
            raise NotFound(f"no staged upload named {name!r} in {self.dir}")
        return staged[0]

