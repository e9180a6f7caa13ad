"""Durable writes: temp names that the sweep finds, and the commit that makes a temp file final."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from etcdguard.common.base import fsutil


def test_temp_names_are_fresh_and_swept(tmp_path: Path) -> None:
    a, b = fsutil.temp_path(tmp_path), fsutil.temp_path(tmp_path, "snap.db")
    assert a != b and a.parent == b.parent == tmp_path
    assert a.name.startswith(fsutil.TEMP_PREFIX) and b.name.startswith(f"{fsutil.TEMP_PREFIX}snap.db-")
    a.write_bytes(b"partial")
    b.write_bytes(b"partial")
    (tmp_path / "keep.db").write_bytes(b"final")
    assert sorted(fsutil.remove_stale_temps(tmp_path)) == sorted([a, b])
    assert os.listdir(tmp_path) == ["keep.db"]


def test_commit_temp_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    final = tmp_path / "out.db"
    final.write_bytes(b"old")
    temp = fsutil.temp_path(tmp_path)
    temp.write_bytes(b"new")
    fsutil.commit_temp(temp, final)
    assert final.read_bytes() == b"new" and os.listdir(tmp_path) == ["out.db"]

    temp = fsutil.temp_path(tmp_path)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"through the open fd")
        fsutil.commit_temp(temp, final, fd=fd)
    finally:
        os.close(fd)
    assert final.read_bytes() == b"through the open fd"
    assert final.stat().st_mode & 0o777 == 0o600


def test_commit_temp_without_replace_never_overwrites(tmp_path: Path) -> None:
    final = tmp_path / "key"
    temp = fsutil.temp_path(tmp_path)
    temp.write_bytes(b"first")
    fsutil.commit_temp(temp, final, replace=False)
    assert final.read_bytes() == b"first" and not temp.exists()
    temp = fsutil.temp_path(tmp_path)
    temp.write_bytes(b"second")
    with pytest.raises(FileExistsError):
        fsutil.commit_temp(temp, final, replace=False)
    assert final.read_bytes() == b"first" and temp.read_bytes() == b"second"  # the temp is the caller's to remove
