"""Durable file operations: temp + fsync + rename, and private directories.

Every write that matters goes through here so that a crash leaves either the
old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

TEMP_PREFIX = ".etcdguard-tmp-"


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename or create inside it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_private_dir(path: Path, mode: int = 0o700) -> Path:
    """Create ``path`` (and parents) if needed; a new leaf directory gets ``mode``."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True, mode=mode)
        os.chmod(path, mode)
        fsync_dir(path.parent)
    return path


def temp_path(directory: Path, label: str = "") -> Path:
    """A fresh temp file name in ``directory`` for a file written in place and then committed.

    The name starts with TEMP_PREFIX, so remove_stale_temps sweeps what a crash left behind.
    """
    stem = f"{label}-" if label else ""
    return Path(directory) / f"{TEMP_PREFIX}{stem}{os.getpid()}-{time.time_ns()}.partial"


def commit_temp(temp: Path, final: Path, *, fd: Optional[int] = None, replace: bool = True) -> None:
    """Give a completely written temp file its final name, durably.

    fsyncs the data (through ``fd`` when the caller holds it open, else by
    opening ``temp``), then renames it over ``final`` (``replace=False``: links
    it, so an existing ``final`` is never overwritten and FileExistsError is
    raised), then fsyncs the directory. Both names must be in one directory.
    On an error ``temp`` is left for the caller to remove.
    """
    if fd is not None:
        os.fsync(fd)
    else:
        own = os.open(temp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(own)
        finally:
            os.close(own)
    if replace:
        os.replace(temp, final)
    else:
        os.link(temp, final)
        os.unlink(temp)
    fsync_dir(final.parent)


@contextlib.contextmanager
def atomic_writer(path: Path, mode: int = 0o600) -> Iterator[Any]:
    """Yield a binary file that replaces ``path`` atomically on success.

    On any exception the temp file is removed and ``path`` is untouched.
    """
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o600) -> None:
    with atomic_writer(path, mode) as fh:
        fh.write(data)


def atomic_write_json(path: Path, obj: Any, mode: int = 0o600) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), mode)


def remove_stale_temps(directory: Path) -> list[Path]:
    """Delete temp files a crashed writer left behind; return what was removed."""
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        if entry.name.startswith(TEMP_PREFIX) and entry.is_file():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


def free_bytes(path: Path) -> int:
    """Free bytes available to this user on the filesystem holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize
