"""Where the data-dir swap happens: the live data set aside and the restored data put in, by rename.

Directory scheme (design.md section 2). Inside the data dir, so every rename
stays on one filesystem even when the data dir is a mount point:

  <data_dir>/member                        live data (etcd's configured data dir is unchanged)
  <data_dir>/.etcdguard-<op>/data/member   prepared (restored) data, made while etcd still runs
  <data_dir>/member.etcdguard-<op>         the pre-restore data, set aside at the swap, kept for rollback
  <data_dir>/.etcdguard-<op>/<label>-member  restored data moved away again by a swap back

With a separate ``--wal-dir`` the WAL files live directly in that directory,
which may itself be a mount point; its swap moves the entries one by one:

  <wal_dir>/.etcdguard-<op>/wal            the prepared WAL (the restore tool's --wal-dir)
  <wal_dir>/.etcdguard-<op>/aside          the pre-restore WAL files, kept for rollback
  <wal_dir>/.etcdguard-<op>/aside.done     written once every old entry is aside
  <wal_dir>/.etcdguard-<op>/<label>        restored WAL files moved away again by a swap back

Every function here is idempotent: run again after a crash at any point it
finishes the job and never moves the old data anywhere but aside or back.
The caller proves etcd stopped first.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Optional

from etcdguard.common.base import fsutil
from etcdguard.common.base.errors import UnsafeRefusal

HIDDEN = ".etcdguard-"


def workspace_dir(data_dir: Path, op: str) -> Path:
    return data_dir / f"{HIDDEN}{op}"


def restore_target(data_dir: Path, op: str) -> Path:
    """The --data-dir given to the restore tool (it must not exist yet)."""
    return workspace_dir(data_dir, op) / "data"


def prepared_member(data_dir: Path, op: str) -> Path:
    return restore_target(data_dir, op) / "member"


def aside_member(data_dir: Path, op: str) -> Path:
    return data_dir / f"member.etcdguard-{op}"


def wal_workspace(wal_dir: Path, op: str) -> Path:
    return wal_dir / f"{HIDDEN}{op}"


def wal_target(wal_dir: Path, op: str) -> Path:
    """The --wal-dir given to the restore tool."""
    return wal_workspace(wal_dir, op) / "wal"


def wal_aside(wal_dir: Path, op: str) -> Path:
    return wal_workspace(wal_dir, op) / "aside"


def _entries(directory: Path) -> list[Path]:
    """What etcd keeps in a WAL dir: everything but our hidden workspaces."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if not p.name.startswith(HIDDEN))


def _move_all(src: Path, dst: Path) -> None:
    fsutil.ensure_private_dir(dst)
    moved = False
    for entry in _entries(src):
        os.rename(entry, dst / entry.name)
        moved = True
    if moved:
        fsutil.fsync_dir(src)
        fsutil.fsync_dir(dst)


def swap_in(data_dir: Path, op: str, wal_dir: Optional[Path] = None) -> dict[str, Optional[str]]:
    """Set the live data aside and rename the prepared data into place; returns what is where."""
    live, prepared, aside = data_dir / "member", prepared_member(data_dir, op), aside_member(data_dir, op)
    if aside.exists():
        # Resumed: the live data was already set aside by this operation.
        if prepared.exists() and live.exists():
            raise UnsafeRefusal(f"{live} reappeared after it was set aside; refusing to swap (is etcd running?)")
        if not prepared.exists() and not live.exists():
            raise UnsafeRefusal(f"neither {prepared} nor {live} exists; the old data is in {aside}")
    elif not prepared.exists():
        raise UnsafeRefusal(f"prepared data {prepared} is missing; nothing was swapped (re-run the restore)")
    elif live.exists():
        os.rename(live, aside)
        fsutil.fsync_dir(data_dir)
    if prepared.exists():
        os.rename(prepared, live)
        fsutil.fsync_dir(data_dir)
        for empty in (prepared.parent, prepared.parent.parent):  # our scratch dirs, now empty
            with contextlib.suppress(OSError):
                os.rmdir(empty)
        fsutil.fsync_dir(data_dir)
    result: dict[str, Optional[str]] = {"live": str(live), "kept": str(aside) if aside.exists() else None}
    if wal_dir is not None:
        _wal_swap_in(wal_dir, op)
        result["wal_kept"] = str(wal_aside(wal_dir, op))
    return result


def _wal_swap_in(wal_dir: Path, op: str) -> None:
    ws, prepared, aside = wal_workspace(wal_dir, op), wal_target(wal_dir, op), wal_aside(wal_dir, op)
    done = ws / "aside.done"
    if not done.exists():
        if not _entries(prepared) and not _entries(aside):
            raise UnsafeRefusal(f"prepared WAL {prepared} is missing; nothing was swapped in {wal_dir}")
        _move_all(wal_dir, aside)
        fsutil.atomic_write_bytes(done, b"")
    _move_all(prepared, wal_dir)


def swap_out(data_dir: Path, op: str, wal_dir: Optional[Path] = None, label: str = "failed") -> list[str]:
    """Put the pre-restore data back; the restored data moves into the workspace as ``<label>-member``."""
    live, aside = data_dir / "member", aside_member(data_dir, op)
    notes: list[str] = []
    if aside.exists():
        if live.exists():
            keep = workspace_dir(data_dir, op) / f"{label}-member"
            fsutil.ensure_private_dir(keep.parent)
            if keep.exists():
                raise UnsafeRefusal(f"{keep} already exists; move it away and retry")
            os.rename(live, keep)
            notes.append(f"restored data moved to {keep}")
        os.rename(aside, live)
        fsutil.fsync_dir(data_dir)
        notes.append(f"pre-restore data back in {live}")
    else:
        notes.append(f"{aside} does not exist: the live data was never set aside, nothing to swap back")
    if wal_dir is not None:
        ws, aside_wal = wal_workspace(wal_dir, op), wal_aside(wal_dir, op)
        if (ws / "aside.done").exists() or _entries(aside_wal):
            _move_all(wal_dir, ws / label)
            _move_all(aside_wal, wal_dir)
            with contextlib.suppress(FileNotFoundError):
                (ws / "aside.done").unlink()
            notes.append(f"pre-restore WAL back in {wal_dir}")
    return notes


def kept_paths(data_dir: Path, op: str, wal_dir: Optional[Path] = None) -> list[Path]:
    """What an operation keeps on disk (for `restores` and `cleanup`)."""
    paths = [aside_member(data_dir, op), workspace_dir(data_dir, op)]
    if wal_dir is not None:
        paths.append(wal_workspace(wal_dir, op))
    return [p for p in paths if p.exists()]


def remove_prepared(data_dir: Path, op: str, wal_dir: Optional[Path] = None) -> list[str]:
    """Delete the restored copies (never the old data): the data workspace and the prepared WAL."""
    import shutil

    removed = []
    ws = workspace_dir(data_dir, op)
    if ws.exists():
        shutil.rmtree(ws)
        removed.append(str(ws))
    if wal_dir is not None:
        wws = wal_workspace(wal_dir, op)
        if _entries(wal_aside(wal_dir, op)):
            # the old WAL is still aside (the swap was not undone): only the restored copies go
            for sub in [p for p in wws.iterdir() if p.name not in ("aside", "aside.done")] if wws.exists() else []:
                shutil.rmtree(sub) if sub.is_dir() else sub.unlink()
                removed.append(str(sub))
        elif wws.exists():
            shutil.rmtree(wws)
            removed.append(str(wws))
    return removed


# -- a replaced member: its data set aside (the member rejoins empty), or put back -------------------------


def set_aside(data_dir: Path, op: str, wal_dir: Optional[Path] = None) -> dict[str, Optional[str]]:
    """Rename the live data (and the WAL files) aside, kept as ``member.etcdguard-<op>``; a member whose data is
    gone has nothing to set aside. Idempotent; the caller proves etcd stopped first."""
    live, aside = data_dir / "member", aside_member(data_dir, op)
    if live.exists():
        if aside.exists():
            raise UnsafeRefusal(f"{live} reappeared after it was set aside as {aside}; refusing (is etcd running?)")
        os.rename(live, aside)
        fsutil.fsync_dir(data_dir)
    result: dict[str, Optional[str]] = {"kept": str(aside) if aside.exists() else None}
    if wal_dir is not None and wal_dir.is_dir():
        ws, aside_wal = wal_workspace(wal_dir, op), wal_aside(wal_dir, op)
        done = ws / "aside.done"
        if not done.exists():
            _move_all(wal_dir, aside_wal)
            fsutil.atomic_write_bytes(done, b"")
        result["wal_kept"] = str(aside_wal) if _entries(aside_wal) else None
    return result


def put_back(data_dir: Path, op: str, wal_dir: Optional[Path] = None) -> list[str]:
    """Undo ``set_aside``: the data set aside back in place; anything etcd made meanwhile moves into the
    operation's workspace (``discarded-member``). Idempotent; the caller proves etcd stopped first."""
    live, aside = data_dir / "member", aside_member(data_dir, op)
    notes: list[str] = []
    if aside.exists():
        if live.exists():
            keep = workspace_dir(data_dir, op) / "discarded-member"
            fsutil.ensure_private_dir(keep.parent)
            if keep.exists():
                raise UnsafeRefusal(f"{keep} already exists; move it away and retry")
            os.rename(live, keep)
            notes.append(f"data made since moved to {keep}")
        os.rename(aside, live)
        fsutil.fsync_dir(data_dir)
        notes.append(f"the data set aside is back in {live}")
    else:
        notes.append(f"{aside} does not exist: nothing was set aside")
    if wal_dir is not None:
        ws, aside_wal = wal_workspace(wal_dir, op), wal_aside(wal_dir, op)
        if (ws / "aside.done").exists() or _entries(aside_wal):
            _move_all(wal_dir, ws / "discarded")
            _move_all(aside_wal, wal_dir)
            with contextlib.suppress(FileNotFoundError):
                (ws / "aside.done").unlink()
            notes.append(f"the WAL set aside is back in {wal_dir}")
    return notes
