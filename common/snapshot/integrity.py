"""Integrity of etcd snapshot files, as pure functions over bytes and streams.

etcd appends the SHA-256 of the database to the snapshot stream: the last 32
bytes of a snapshot file are the digest of everything before them. Checking
that trailer proves the file is exactly what the member sent, but not that it
is an etcd database ("hello" followed by its digest passes).
``verify_restorable`` adds what makes a file restorable: bbolt's meta pages
(pure code, bbolt.py) and, where an etcd tool is present, ``snapshot status``.
``sidecar_problems`` compares a file with what its sidecar (sidecar.py) recorded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Optional, Union

from etcdguard.common.base.errors import SnapshotCorrupt, ToolError
from etcdguard.common.snapshot import bbolt
from etcdguard.common.snapshot.sidecar import SnapshotMeta, read_sidecar

if TYPE_CHECKING:
    from etcdguard.common.snapshot.tools import SnapshotTool

TRAILER_SIZE = 32
READ_CHUNK = 1 << 20


class TrailerHasher:
    """Hashes a snapshot stream chunk by chunk without holding it in memory.

    One SHA-256 pass over the body: the newest 32 bytes are held back (they may
    be the trailer), and the whole file's digest is the body digest continued
    with those 32 bytes, so no byte is hashed twice.
    """

    def __init__(self) -> None:
        self._body = hashlib.sha256()
        self._held = b""
        self.size = 0

    def update(self, chunk: Union[bytes, bytearray, memoryview]) -> None:
        if not chunk:
            return
        self.size += len(chunk)
        if len(chunk) >= TRAILER_SIZE:
            if self._held:
                self._body.update(self._held)
            view = memoryview(chunk)
            self._body.update(view[:-TRAILER_SIZE])
            self._held = bytes(view[-TRAILER_SIZE:])
        else:
            data = self._held + bytes(chunk)
            self._body.update(data[:-TRAILER_SIZE])
            self._held = data[-TRAILER_SIZE:]

    @property
    def sha256(self) -> str:
        """Hex digest of everything seen so far (the whole file)."""
        whole = self._body.copy()
        whole.update(self._held)
        return whole.hexdigest()

    def trailer_ok(self) -> bool:
        return len(self._held) == TRAILER_SIZE and self._body.digest() == self._held

    def check(self, what: str) -> None:
        """Raise SnapshotCorrupt unless the last 32 bytes are the digest of the rest."""
        if self.size <= TRAILER_SIZE:
            raise SnapshotCorrupt(f"{what}: {self.size} bytes is too short to be an etcd snapshot")
        if not self.trailer_ok():
            raise SnapshotCorrupt(
                f"{what}: SHA-256 trailer does not match the data "
                "(the file is truncated, corrupted, or not an etcd snapshot)"
            )


class KnownSizeDigest(TrailerHasher):
    """TrailerHasher for a transfer whose size was declared up front: more bytes than
    declared is an error, and finish() insists every byte arrived."""

    def __init__(self, total: int) -> None:
        if total < 0:
            raise ValueError("total must be >= 0")
        super().__init__()
        self.total = total

    def update(self, data: Union[bytes, bytearray, memoryview]) -> None:
        if self.size + len(data) > self.total:
            raise ValueError(f"{self.size + len(data)} bytes is more than the declared {self.total}")
        super().update(data)

    def finish(self) -> tuple[str, bool]:
        """(sha256 hex of the whole file, trailer ok). Call once, after all bytes."""
        if self.size != self.total:
            raise ValueError(f"digest finished after {self.size} of {self.total} bytes")
        return self.sha256, self.total > TRAILER_SIZE and self.trailer_ok()


@dataclass(frozen=True)
class FileDigest:
    size: int
    sha256: str
    trailer_ok: bool


def digest_stream(fh: BinaryIO) -> FileDigest:
    hasher = TrailerHasher()
    while True:
        chunk = fh.read(READ_CHUNK)
        if not chunk:
            break
        hasher.update(chunk)
    return FileDigest(size=hasher.size, sha256=hasher.sha256, trailer_ok=hasher.trailer_ok())


def digest_file(path: Path) -> FileDigest:
    with open(path, "rb") as fh:
        return digest_stream(fh)


def verify_file(path: Path, expect_sha256: Optional[str] = None, expect_size: Optional[int] = None) -> FileDigest:
    """Check a snapshot file's trailer (and, when given, its recorded size and sha256)."""
    try:
        d = digest_file(path)
    except FileNotFoundError:
        raise SnapshotCorrupt(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SnapshotCorrupt(f"{path}: is a directory, not a snapshot file") from None
    except PermissionError:
        raise SnapshotCorrupt(f"{path}: not readable (permission denied)") from None
    if d.size <= TRAILER_SIZE:
        raise SnapshotCorrupt(f"{path}: {d.size} bytes is too short to be an etcd snapshot")
    if not d.trailer_ok:
        raise SnapshotCorrupt(
            f"{path}: SHA-256 trailer does not match the data "
            "(the file is truncated, corrupted, or not an etcd snapshot)"
        )
    if expect_size is not None and d.size != expect_size:
        raise SnapshotCorrupt(f"{path}: size {d.size} differs from the recorded {expect_size}")
    if expect_sha256 is not None and d.sha256 != expect_sha256:
        raise SnapshotCorrupt(f"{path}: sha256 {d.sha256} differs from the recorded {expect_sha256}")
    return d


@dataclass(frozen=True)
class SnapshotCheck:
    """What a restorable snapshot file was found to be."""

    digest: FileDigest
    revision: Optional[int]                   # from `snapshot status`; None without a tool
    total_keys: Optional[int]
    members: tuple[bbolt.BoltMember, ...]     # from the database's members bucket
    members_problem: Optional[str] = None     # why the members could not be read (not fatal)
    tool: Optional[str] = None                # "etcdutl 3.5.30" when `snapshot status` ran

    @property
    def computed_cluster_id(self) -> Optional[str]:
        """The cluster id etcd derives from these members (exact while the membership is unchanged)."""
        return f"{bbolt.cluster_id_of([m.id for m in self.members]):x}" if self.members else None


def verify_restorable(path: Path, expect_sha256: Optional[str] = None, expect_size: Optional[int] = None,
                      tool: Optional[SnapshotTool] = None) -> SnapshotCheck:
    """verify_file, then prove the file is an etcd database: bbolt meta pages, and
    `snapshot status` where ``tool`` is given. Raises SnapshotCorrupt naming the file."""
    from etcdguard.common.snapshot.tools import snapshot_status

    d = verify_file(path, expect_sha256, expect_size)
    db_size = d.size - TRAILER_SIZE
    members: tuple[bbolt.BoltMember, ...] = ()
    members_problem = None
    try:
        with open(path, "rb") as fh:
            problem = bbolt.meta_problem(fh.read(min(db_size, bbolt.HEAD_BYTES)))
        if problem is not None:
            raise SnapshotCorrupt(f"{path}: not an etcd snapshot: {problem}")
        try:
            members = tuple(bbolt.read_file_members(path, db_size))
        except bbolt.BoltError as exc:
            members_problem = str(exc)
    except OSError as exc:
        raise SnapshotCorrupt(f"{path}: cannot read it: {exc.strerror or exc}") from None
    revision = total_keys = None
    label = None
    if tool is not None:
        label = f"{tool.kind} {tool.version}"
        try:
            st = snapshot_status(tool, path)
        except ToolError as exc:
            raise SnapshotCorrupt(f"{path}: not restorable: {exc}") from None
        revision, total_keys = st.revision, st.total_keys
    return SnapshotCheck(d, revision, total_keys, members, members_problem, label)


# The sidecar's one type, under the names the restore reads it by.
Recorded = SnapshotMeta


def sidecar_problems(recorded: SnapshotMeta, digest: FileDigest, file_revision: Optional[int]) -> list[str]:
    """How a snapshot file differs from what its sidecar recorded (pure; [] when it matches).

    A sidecar revision read from the file itself must be equal; one from etcd's
    status header before the stream started is a lower bound.
    """
    problems = []
    if digest.size != recorded.size:
        problems.append(f"size {digest.size} differs from the recorded {recorded.size}")
    if digest.sha256 != recorded.sha256:
        problems.append(f"sha256 {digest.sha256} differs from the recorded {recorded.sha256}")
    if file_revision is not None and recorded.revision is not None:
        if recorded.revision_exact and file_revision != recorded.revision:
            problems.append(f"revision {file_revision} (snapshot status) differs from the recorded "
                            f"{recorded.revision}")
        elif not recorded.revision_exact and file_revision < recorded.revision:
            problems.append(f"revision {file_revision} (snapshot status) is below the recorded lower bound "
                            f"{recorded.revision}")
    return problems


__all__ = ["READ_CHUNK", "TRAILER_SIZE", "FileDigest", "KnownSizeDigest", "Recorded", "SnapshotCheck", "SnapshotMeta",
           "TrailerHasher", "digest_file", "digest_stream", "read_sidecar", "sidecar_problems", "verify_file",
           "verify_restorable"]
