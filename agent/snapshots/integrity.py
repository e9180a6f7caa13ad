"""Integrity of etcd snapshot files, as pure functions over bytes and streams.

etcd appends the SHA-256 of the database to the snapshot stream: the last 32
bytes of a snapshot file are the digest of everything before them. Checking
that trailer proves the file is exactly what the member sent.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Optional, Union

from etcdguard.agent.base.errors import SnapshotCorrupt

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
