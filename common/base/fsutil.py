"""Durable file operations: temp + fsync + rename, and private directories.

Every write that matters goes through here so that a crash leaves either the
old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

from etcdguard.common.base.errors import EXIT_USAGE, DiskError, UsageError

TEMP_PREFIX = ".etcdguard-tmp-"
_WHY = {errno.ENOSPC: "the filesystem is full", errno.EDQUOT: "the disk quota is used up",
        errno.EACCES: "run it as root (the daemons' user) or fix the permissions",
        errno.EPERM: "run it as root (the daemons' user) or fix the permissions",
        errno.EROFS: "the filesystem is mounted read-only"}


def disk_error(what: str, exc: OSError) -> DiskError:
    """One operator-readable line for an OSError: what was being done, the file, the reason and a hint.

    Exit code 1 (the operation failed: a full disk may have room later), 2 for a permission error
    (a usage error: the command runs as a user who may not do this).
    """
    where = f" ({exc.filename})" if exc.filename else ""
    hint = f"; {_WHY[exc.errno]}" if exc.errno in _WHY else ""
    error = DiskError(f"{what}: {exc.strerror or exc}{where}{hint}")
    if exc.errno in (errno.EACCES, errno.EPERM):
        error.exit_code = EXIT_USAGE   # run as the wrong user: retrying (systemd's restart) cannot help
    return error


def refuse_non_regular(path: Path, what: str = "") -> None:
    """Refuse to replace ``path`` when it exists and is not a regular file (a device, FIFO, socket,
    directory or symlink): a rename over /dev/null would replace the system's /dev/null."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISREG(st.st_mode):
        return
    kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a symbolic link" if stat.S_ISLNK(st.st_mode)
            else "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
            else "a device node" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a regular file")
    raise UsageError(f"{what or path}: {path} exists and is {kind}; refusing to replace it (give a new file "
                     "name or a regular file)")


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

    The name starts with TEMP_PREFIX, so remove_stale_temps sweeps what a crash left behind; a label
    that is itself a temp name (a temp written beside another temp) does not repeat the prefix.
    """
    label = label[len(TEMP_PREFIX):] if label.startswith(TEMP_PREFIX) else label
    stem = f"{label}-" if label else ""
    return Path(directory) / f"{TEMP_PREFIX}{stem}{os.getpid()}-{time.time_ns()}.partial"


def commit_temp(temp: Path, final: Path, *, fd: Optional[int] = None, replace: bool = True) -> None:
    """Give a completely written temp file its final name, durably.

    fsyncs the data (through ``fd`` when the caller holds it open, else by
    opening ``temp``), then renames it over ``final`` (``replace=False``: links
    it, so an existing ``final`` is never overwritten and FileExistsError is
    raised), then fsyncs the directory. Both names must be in one directory.
    Only a regular file is ever replaced: anything else at ``final`` is a
    UsageError (see refuse_non_regular). On an error ``temp`` is left for the
    caller to remove.
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
        refuse_non_regular(final)   # checked right before the rename
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
    refuse_non_regular(path)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        refuse_non_regular(path)
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
